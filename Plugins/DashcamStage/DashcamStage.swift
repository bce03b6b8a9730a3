import Foundation
import Logging
public import OCPP
public import StageKit
import Synchronization

/// A "dashcam" of each charger's message stream: a ring buffer of recent frames, and when
/// something goes wrong (a CALLERROR either way, a Faulted status or an error code, a session
/// that ends mid-transaction, a CALL timeout, a firewall refusal) a capture of the window before and after, written as JSON Lines
/// under `<state_dir>/dashcam/<charger>/` and announced on the health channel.
///
/// Put it first in the pipeline: it then sees every frame from the charger before any other stage
/// can drop it. It never changes or holds a frame.
public struct DashcamStage: Stage {
    public struct Configuration: Decodable, Sendable {
        /// Frames kept before a trigger: at most this many…
        public var beforeFrames: Int?
        /// …and none older than this many seconds.
        public var beforeSeconds: Double?
        /// Frames recorded after a trigger (the capture closes at whichever limit comes first).
        public var afterFrames: Int?
        public var afterSeconds: Double?
        /// Disk bound per charger: older captures are deleted beyond these.
        public var maxCaptures: Int?
        public var maxBytes: Int?
        /// Captures started per charger in any 60 s; further triggers are skipped (and counted).
        public var maxCapturesPerMinute: Int?
        /// Captures waiting to be written, for all chargers; beyond it a finished capture is dropped (and counted).
        public var maxPendingWrites: Int?
    }

    public static let type = "dashcam"
    public static let summary = "Records each charger's recent frames and writes the window around a fault to state_dir/dashcam."
    /// Frame and capture times keep milliseconds: frames a few ms apart stay in their order when read back.
    static let milliseconds = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    let beforeFrames: Int
    let beforeSeconds: Double
    let afterFrames: Int
    let afterSeconds: Double
    let maxCapturesPerMinute: Int
    let budget: CaptureBudget
    package let writer: CaptureWriter

    public init(configuration: Configuration, context: StageSetupContext) throws {
        beforeFrames = configuration.beforeFrames ?? 200
        beforeSeconds = configuration.beforeSeconds ?? 120
        afterFrames = configuration.afterFrames ?? 50
        afterSeconds = configuration.afterSeconds ?? 30
        guard beforeFrames > 0, afterFrames >= 0, beforeSeconds > 0, afterSeconds >= 0 else {
            throw DashcamError("'before_frames' and 'before_seconds' must be positive, 'after_*' not negative")
        }
        maxCapturesPerMinute = configuration.maxCapturesPerMinute ?? 6
        let maxPendingWrites = configuration.maxPendingWrites ?? 16
        guard maxCapturesPerMinute >= 1, maxPendingWrites >= 1 else {
            throw DashcamError("'max_captures_per_minute' and 'max_pending_writes' must be at least 1")
        }
        budget = CaptureBudget()
        let store = CaptureStore(folder: context.stateDirectory + "/dashcam", maxCaptures: configuration.maxCaptures ?? 20,
                                 maxBytes: configuration.maxBytes ?? 20 * 1024 * 1024)
        writer = CaptureWriter(store: store, publisher: context.publisher, maxPending: maxPendingWrites, logger: context.logger)
    }

    /// Captures written, skipped by the per-charger rate, dropped by the write queue, failed on disk.
    package var statistics: CaptureWriter.Statistics { writer.statistics }

    /// Waits until every queued capture is on disk.
    public func shutdown() async { await writer.drain() }

    struct Entry {
        var wallTime: Double
        var direction: Direction
        /// The frame's bytes as received: shared with the frame, neither copied nor decoded per frame
        /// (only a capture turns them into text).
        var bytes: [UInt8]
    }

    final class Recorder {
        /// The recent frames, oldest first: `kept[start...]`. Dropping the oldest lets go of its bytes and
        /// moves `start`; the dropped entries are removed 32 at a time (`removeFirst` per frame moved all
        /// 200 entries every frame).
        private(set) var kept: [Entry] = []
        private(set) var start = 0
        var recent: ArraySlice<Entry> { kept[start...] }
        static let compactionBatch = 32

        var count: Int { kept.count - start }
        var oldestTime: Double? { start < kept.count ? kept[start].wallTime : nil }

        /// How many of the oldest frames came before `time`.
        func countOlder(than time: Double) -> Int {
            var index = start
            while index < kept.count, kept[index].wallTime < time { index += 1 }
            return index - start
        }

        func append(_ entry: Entry) { kept.append(entry) }

        func dropOldest(_ count: Int) {
            let end = min(start + count, kept.count)
            for index in start..<end { kept[index].bytes = [] }
            start = end
            if start >= Self.compactionBatch || start == kept.count {
                kept.removeFirst(start)
                start = 0
            }
        }

        var rateLog = LogThrottle(limit: 1, window: .seconds(60))
        var capture: (trigger: String, at: Double, frames: [Entry], remaining: Int, timer: (any ScheduledWork)?)?
        var inTransaction = false
        /// OCPP 2.0.1: the transactions (by id) a TransactionEvent opened and none ended yet; at most 64.
        var openTransactions: Set<String> = []
        var transactionRunning: Bool { inTransaction || !openTransactions.isEmpty }
    }

    enum Key: SessionStateKey { typealias Value = Recorder }

    func recorder(_ session: any SessionContext) -> Recorder {
        if let recorder = session[Key.self] { return recorder }
        let recorder = Recorder()
        session[Key.self] = recorder
        return recorder
    }

    public func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        let recorder = recorder(session)
        let entry = Entry(wallTime: session.wallTime, direction: envelope.direction, bytes: envelope.frame.bytes)
        record(entry, recorder, session)
        if let trigger = trigger(envelope, recorder) { start(trigger, recorder, session) }
        return .forward
    }

    public func incidentReported(_ description: String, in session: any SessionContext) {
        start(description, recorder(session), session)
    }

    public func sessionEnded(_ session: any SessionContext) {
        guard let recorder = session[Key.self] else { return }
        // Only a charger that really left is "disconnected"; a reload that retires this stage just closes the capture.
        if session.isClosed, recorder.transactionRunning, recorder.capture == nil { start("disconnected during a transaction", recorder, session) }
        finish(recorder, session)
    }

    private func record(_ entry: Entry, _ recorder: Recorder, _ session: any SessionContext) {
        recorder.append(entry)
        let oldest = entry.wallTime - beforeSeconds
        // No slice of the frames held here: dropping would copy them all.
        if recorder.count > beforeFrames || (recorder.oldestTime ?? oldest) < oldest {
            recorder.dropOldest(max(recorder.count - beforeFrames, recorder.countOlder(than: oldest)))
        }
        if recorder.capture != nil {
            recorder.capture!.frames.append(entry)
            recorder.capture!.remaining -= 1
            if recorder.capture!.remaining <= 0 { finish(recorder, session) }
        }
    }

    func trigger(_ envelope: Envelope, _ recorder: Recorder) -> String? {
        switch (envelope.messageType, envelope.action ?? "") {
        case (.callError, _):
            return "CALLERROR \(envelope.frame.errorCode ?? "") \(envelope.direction == .fromCharger ? "from the charger" : "from the CSMS")"
        case (.call, "StatusNotification"):
            // Most report no fault, which the bytes tell without decoding the payload.
            if Self.reportsNoFault(envelope.frame.payloadBytes) { return nil }
            return Self.statusTrigger(envelope.payload())
        case (.call, "StartTransaction"):
            recorder.inTransaction = true
        case (.call, "StopTransaction"):
            recorder.inTransaction = false
        case (.call, "TransactionEvent"):
            let payload = envelope.payload()
            guard let id = payload["transactionInfo"]?["transactionId"]?.stringValue else { break }
            if payload["eventType"]?.stringValue == "Ended" {
                recorder.openTransactions.remove(id)
            } else if recorder.openTransactions.count < 64 {
                recorder.openTransactions.insert(id)
            }
        case (.call, "NotifyEvent"):
            return Self.problem(in: envelope.payload())
        default:
            break
        }
        return nil
    }

    /// What a StatusNotification triggers: 1.6 `status` or 2.0.1 `connectorStatus` Faulted, or a 1.6 `errorCode`
    /// other than NoError.
    static func statusTrigger(_ payload: JSONValue) -> String? {
        if payload["status"]?.stringValue == "Faulted" || payload["connectorStatus"]?.stringValue == "Faulted" { return "Faulted" }
        if let code = payload["errorCode"]?.stringValue, code != "NoError" { return "errorCode \(code)" }
        return nil
    }

    /// True when a StatusNotification's payload certainly triggers nothing (`statusTrigger` is nil): no
    /// escape anywhere (so every name and value is spelled as it reads), no `Faulted` anywhere, and
    /// `"errorCode"` either absent or once, as a member whose value is `"NoError"`. Anything else: false,
    /// and the payload is decoded.
    static func reportsNoFault(_ bytes: ArraySlice<UInt8>) -> Bool {
        bytes.withUnsafeBufferPointer { buffer in
            guard let base = buffer.baseAddress, memchr(base, Int32(UInt8(ascii: "\\")), buffer.count) == nil,
                  find(faulted, in: buffer, from: 0) == nil
            else { return false }
            guard let start = find(errorCode, in: buffer, from: 0) else { return true }
            guard find(errorCode, in: buffer, from: start + errorCode.count) == nil else { return false }
            var index = skipSpace(buffer, start + errorCode.count)
            guard index < buffer.count, buffer[index] == UInt8(ascii: ":") else { return false }
            index = skipSpace(buffer, index + 1)
            return find(noError, in: buffer, from: index) == index
        }
    }

    private static let faulted = Array("Faulted".utf8)
    private static let errorCode = Array("\"errorCode\"".utf8)
    private static let noError = Array("\"NoError\"".utf8)

    /// Where `needle` first occurs in `buffer` at or after `start` (its first byte found with `memchr`,
    /// the rest compared with `memcmp`).
    private static func find(_ needle: [UInt8], in buffer: UnsafeBufferPointer<UInt8>, from start: Int) -> Int? {
        guard let base = buffer.baseAddress, let first = needle.first else { return nil }
        return needle.withUnsafeBytes { needle -> Int? in
            guard let needleBase = needle.baseAddress else { return nil }
            var index = start
            while buffer.count - index >= needle.count {
                guard let hit = memchr(base + index, Int32(first), buffer.count - index - needle.count + 1) else { return nil }
                index = UnsafePointer(hit.assumingMemoryBound(to: UInt8.self)) - base
                if memcmp(base + index, needleBase, needle.count) == 0 { return index }
                index += 1
            }
            return nil
        }
    }

    private static func skipSpace(_ buffer: UnsafeBufferPointer<UInt8>, _ start: Int) -> Int {
        var index = start
        while index < buffer.count, buffer[index] == 0x20 || buffer[index] == 0x09 || buffer[index] == 0x0A || buffer[index] == 0x0D {
            index += 1
        }
        return index
    }

    /// A NotifyEvent's first alert that is not a clearing: a monitor's threshold crossed (trigger
    /// `Alerting`), or a component reporting `Problem` (or `Fault`, `Tripped`) true.
    static func problem(in payload: JSONValue) -> String? {
        for event in payload["eventData"]?.arrayValue ?? [] where event["cleared"]?.boolValue != true {
            let component = event["component"]?["name"]?.stringValue ?? ""
            let variable = event["variable"]?["name"]?.stringValue ?? ""
            let value = event["actualValue"]?.stringValue?.lowercased()
            if ["Problem", "Fault", "Tripped"].contains(variable), value == "true" {
                return "NotifyEvent \(component)/\(variable)"
            }
            if event["trigger"]?.stringValue == "Alerting" {
                return "NotifyEvent Alerting \(component)/\(variable)"
            }
        }
        return nil
    }

    private func start(_ trigger: String, _ recorder: Recorder, _ session: any SessionContext) {
        guard recorder.capture == nil else { return }  // one capture at a time; the ongoing one already covers it
        // A peer's error code can be long: the trigger names the fault, it does not carry it.
        let trigger = String(trigger.prefix(200))
        guard budget.admit(chargerId: session.chargerId, now: session.now, perMinute: maxCapturesPerMinute) else {
            writer.countRateLimited()
            let (log, suppressed) = recorder.rateLog.admit(now: session.now)
            if log {
                session.logger.notice("dashcam: too many captures for this charger; skipping", metadata: [
                    "trigger": "\(LogSafe.escape(trigger))", "max_captures_per_minute": "\(maxCapturesPerMinute)",
                    "similar_lines_left_out": "\(suppressed)",
                ])
            }
            return
        }
        let timer = afterSeconds > 0 ? session.schedule(after: .milliseconds(Int64(afterSeconds * 1000))) { [recorder] in
            finish(recorder, session)
        } : nil
        // The trigger frame itself is the last of the "before" frames.
        recorder.capture = (trigger, session.wallTime, Array(recorder.recent), afterFrames, timer)
        session.logger.notice("dashcam: capture started", metadata: ["trigger": "\(LogSafe.escape(trigger))"])
        if afterFrames == 0, afterSeconds == 0 { finish(recorder, session) }
    }

    private func finish(_ recorder: Recorder, _ session: any SessionContext) {
        guard let capture = recorder.capture else { return }
        recorder.capture = nil
        capture.timer?.cancel()
        let chargerId = session.chargerId
        let lines = capture.frames.map { entry -> String in
            var line: JSONValue = ["time": .string(Date(timeIntervalSince1970: entry.wallTime).formatted(Self.milliseconds)),
                                   "direction": .string(entry.direction.rawValue)]
            line["frame"] = (try? JSONValue(parsing: entry.bytes)) ?? .string(String(decoding: entry.bytes, as: UTF8.self))
            return line.jsonText
        }
        let header: JSONValue = ["v": 1, "charger": .string(chargerId), "ocpp": .string(session.version == .v201 ? "2.0.1" : "1.6"),
                                 "trigger": .string(capture.trigger),
                                 "at": .string(Date(timeIntervalSince1970: capture.at).formatted(Self.milliseconds)), "frames": .number(lines.count)]
        // Disk work off the event loop, through one bounded queue: a burst of faults cannot become a burst of writers.
        if !writer.submit(CaptureWriter.Job(chargerId: chargerId, at: capture.at, trigger: capture.trigger, header: header,
                                             lines: [header.jsonText] + lines)) {
            session.logger.warning("dashcam: the write queue is full; capture dropped", metadata: ["trigger": "\(LogSafe.escape(capture.trigger))"])
        }
    }
}

/// How many captures each charger started in the last minute (shared by its sessions, so a charger
/// that reconnects does not start afresh). Bounded: chargers idle for a minute are forgotten.
final class CaptureBudget: Sendable {
    private struct Table {
        var starts: [String: [Duration]] = [:]
        var pruneAbove = 1024
    }
    private let table = Mutex(Table())

    func admit(chargerId: String, now: Duration, perMinute: Int) -> Bool {
        table.withLock { table in
            var starts = (table.starts[chargerId] ?? []).filter { now - $0 < .seconds(60) }
            defer { table.starts[chargerId] = starts }
            guard starts.count < perMinute else { return false }
            starts.append(now)
            if table.starts.count > table.pruneAbove {
                table.starts = table.starts.filter { _, times in times.contains { now - $0 < .seconds(60) } }
                table.pruneAbove = max(1024, 2 * table.starts.count)
            }
            return true
        }
    }
}

/// Writes finished captures one at a time on a task of its own, from a queue of at most
/// `maxPending` captures; what does not fit is dropped and counted. Announces each on MQTT.
package final class CaptureWriter: Sendable {
    struct Job: Sendable {
        var chargerId: String
        var at: Double
        var trigger: String
        var header: JSONValue
        var lines: [String]
    }

    package struct Statistics: Sendable, Equatable {
        package var written = 0
        package var rateLimited = 0
        package var dropped = 0
        package var failed = 0
    }

    private struct State {
        var queue: [Job] = []
        var running = false
        var held = false
        var statistics = Statistics()
        var failureLog = LogThrottle(limit: 5, window: .seconds(60))
    }

    private let state = Mutex(State())
    private let store: CaptureStore
    private let publisher: (any MessagePublisher)?
    private let maxPending: Int
    private let logger: Logger
    private let clock = ContinuousClock()
    private let start = ContinuousClock.now

    init(store: CaptureStore, publisher: (any MessagePublisher)?, maxPending: Int, logger: Logger) {
        self.store = store
        self.publisher = publisher
        self.maxPending = maxPending
        self.logger = logger
    }

    package var statistics: Statistics { state.withLock { $0.statistics } }

    func countRateLimited() { state.withLock { $0.statistics.rateLimited += 1 } }

    /// Queues a capture; false (counted) when the queue is full.
    func submit(_ job: Job) -> Bool {
        let startWorker = state.withLock { state -> Bool? in
            guard state.queue.count < maxPending else {
                state.statistics.dropped += 1
                return nil
            }
            state.queue.append(job)
            guard !state.running, !state.held else { return false }
            state.running = true
            return true
        }
        guard let startWorker else { return false }
        if startWorker { Task.detached { [self] in self.work() } }
        return true
    }

    /// Holds the writes back (they queue, up to the bound) until `release()`: for tests of the bound.
    package func hold() { state.withLock { $0.held = true } }

    package func release() {
        let startWorker = state.withLock { state -> Bool in
            state.held = false
            guard !state.running, !state.queue.isEmpty else { return false }
            state.running = true
            return true
        }
        if startWorker { Task.detached { [self] in self.work() } }
    }

    private func work() {
        while let job = state.withLock({ state -> Job? in
            guard !state.queue.isEmpty else {
                state.running = false
                return nil
            }
            return state.queue.removeFirst()
        }) {
            do {
                let file = try store.write(chargerId: job.chargerId, at: job.at, trigger: job.trigger, lines: job.lines)
                state.withLock { $0.statistics.written += 1 }
                var announcement = job.header
                announcement["file"] = .string(file)
                if let publisher {
                    publisher.publish(topic: "\(publisher.topicRoot)/\(Topics.level(job.chargerId))/dashcam", payload: announcement.serialized(),
                                      retain: false)
                }
            } catch {
                let now = clock.now - start
                let (log, suppressed) = state.withLock { state in
                    state.statistics.failed += 1
                    return state.failureLog.admit(now: now)
                }
                if log {
                    logger.error("dashcam: cannot write a capture", metadata: ["error": "\(error)", "similar_lines_left_out": "\(suppressed)"])
                }
            }
        }
    }

    /// Waits (up to 10 s) until the queue is empty and the last capture is written.
    func drain() async {
        let deadline = ContinuousClock.now + .seconds(10)
        while state.withLock({ $0.running }), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// The captures on disk, with the bound on their number and size per charger.
struct CaptureStore: Sendable {
    let folder: String
    let maxCaptures: Int
    let maxBytes: Int

    func write(chargerId: String, at: Double, trigger: String, lines: [String]) throws -> String {
        var safe = String(chargerId.map { $0.isLetter || $0.isNumber || "-_.".contains($0) ? $0 : "_" })
        if safe.isEmpty || safe == "." || safe == ".." { safe = "_" + safe }
        let directory = folder + "/" + safe
        let stamp = Date(timeIntervalSince1970: at).formatted(.iso8601).replacingOccurrences(of: ":", with: "")
        let slug = String(trigger.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" }.prefix(40))
        let data = Data((lines.joined(separator: "\n") + "\n").utf8)
        // Created 0600 from the first byte (never chmod'ed after); a second capture in the same second gets a suffix.
        var path = directory + "/\(stamp)-\(slug).jsonl"
        var attempt = 1
        while true {
            do {
                try AtomicFile.create(data, at: path, mode: 0o600)
                break
            } catch {
                guard attempt < 100, FileManager.default.fileExists(atPath: path) else { throw error }
                attempt += 1
                path = directory + "/\(stamp)-\(slug)-\(attempt).jsonl"
            }
        }
        try prune(directory)
        return path
    }

    private func prune(_ directory: String) throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".jsonl") }.sorted()
        var sizes = files.map { (try? FileManager.default.attributesOfItem(atPath: directory + "/" + $0)[.size] as? Int) ?? 0 }
        var names = files
        while names.count > maxCaptures || (sizes.reduce(0, +) > maxBytes && names.count > 1) {
            try FileManager.default.removeItem(atPath: directory + "/" + names.removeFirst())
            sizes.removeFirst()
        }
    }
}

struct DashcamError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
