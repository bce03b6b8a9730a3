import Foundation
import Logging
public import OCPP
public import StageKit

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
    }

    public static let type = "dashcam"
    public static let summary = "Records each charger's recent frames and writes the window around a fault to state_dir/dashcam."

    let beforeFrames: Int
    let beforeSeconds: Double
    let afterFrames: Int
    let afterSeconds: Double
    let store: CaptureStore
    let publisher: (any MessagePublisher)?

    public init(configuration: Configuration, context: StageSetupContext) throws {
        beforeFrames = configuration.beforeFrames ?? 200
        beforeSeconds = configuration.beforeSeconds ?? 120
        afterFrames = configuration.afterFrames ?? 50
        afterSeconds = configuration.afterSeconds ?? 30
        guard beforeFrames > 0, afterFrames >= 0, beforeSeconds > 0, afterSeconds >= 0 else {
            throw DashcamError("'before_frames' and 'before_seconds' must be positive, 'after_*' not negative")
        }
        store = CaptureStore(folder: context.stateDirectory + "/dashcam", maxCaptures: configuration.maxCaptures ?? 20,
                             maxBytes: configuration.maxBytes ?? 20 * 1024 * 1024)
        publisher = context.publisher
    }

    struct Entry {
        var wallTime: Double
        var direction: Direction
        var text: String
    }

    final class Recorder {
        var recent: [Entry] = []
        var capture: (trigger: String, at: Double, frames: [Entry], remaining: Int, timer: (any ScheduledWork)?)?
        var inTransaction = false
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
        let entry = Entry(wallTime: session.wallTime, direction: envelope.direction, text: envelope.frame.text)
        record(entry, recorder, session)
        if let trigger = trigger(envelope, recorder) { start(trigger, recorder, session) }
        return .forward
    }

    public func incidentReported(_ description: String, in session: any SessionContext) {
        start(description, recorder(session), session)
    }

    public func sessionEnded(_ session: any SessionContext) {
        guard let recorder = session[Key.self] else { return }
        if recorder.inTransaction, recorder.capture == nil { start("disconnected during a transaction", recorder, session) }
        finish(recorder, session)
    }

    private func record(_ entry: Entry, _ recorder: Recorder, _ session: any SessionContext) {
        recorder.recent.append(entry)
        let oldest = entry.wallTime - beforeSeconds
        if recorder.recent.count > beforeFrames || (recorder.recent.first?.wallTime ?? oldest) < oldest {
            recorder.recent.removeFirst(max(recorder.recent.count - beforeFrames, recorder.recent.prefix { $0.wallTime < oldest }.count))
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
            let payload = envelope.payload()
            if payload["status"]?.stringValue == "Faulted" { return "Faulted" }
            if let code = payload["errorCode"]?.stringValue, code != "NoError" { return "errorCode \(code)" }
        case (.call, "StartTransaction"):
            recorder.inTransaction = true
        case (.call, "StopTransaction"):
            recorder.inTransaction = false
        default:
            break
        }
        return nil
    }

    private func start(_ trigger: String, _ recorder: Recorder, _ session: any SessionContext) {
        guard recorder.capture == nil else { return }  // one capture at a time; the ongoing one already covers it
        let timer = afterSeconds > 0 ? session.schedule(after: .milliseconds(Int64(afterSeconds * 1000))) { [recorder] in
            finish(recorder, session)
        } : nil
        // The trigger frame itself is the last of the "before" frames.
        recorder.capture = (trigger, session.wallTime, recorder.recent, afterFrames, timer)
        session.logger.notice("dashcam: capture started", metadata: ["trigger": "\(trigger)"])
        if afterFrames == 0, afterSeconds == 0 { finish(recorder, session) }
    }

    private func finish(_ recorder: Recorder, _ session: any SessionContext) {
        guard let capture = recorder.capture else { return }
        recorder.capture = nil
        capture.timer?.cancel()
        let chargerId = session.chargerId
        let lines = capture.frames.map { entry -> String in
            var line: JSONValue = ["time": .string(Date(timeIntervalSince1970: entry.wallTime).formatted(.iso8601)),
                                   "direction": .string(entry.direction.rawValue)]
            line["frame"] = (try? JSONValue(parsing: entry.text)) ?? .string(entry.text)
            return line.jsonText
        }
        let header: JSONValue = ["v": 1, "charger": .string(chargerId), "trigger": .string(capture.trigger),
                                 "at": .string(Date(timeIntervalSince1970: capture.at).formatted(.iso8601)), "frames": .number(lines.count)]
        let store = self.store
        let publisher = self.publisher
        let trigger = capture.trigger
        let at = capture.at
        // Disk work off the event loop.
        Task.detached {
            do {
                let file = try store.write(chargerId: chargerId, at: at, trigger: trigger, lines: [header.jsonText] + lines)
                var announcement = header
                announcement["file"] = .string(file)
                if let publisher {
                    publisher.publish(topic: "\(publisher.topicRoot)/\(chargerId)/dashcam", payload: announcement.serialized(), retain: false)
                }
            } catch {
                Logger(label: "ocpp-gateway.dashcam").error("dashcam: cannot write a capture", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// The captures on disk, with the bound on their number and size per charger.
struct CaptureStore: Sendable {
    let folder: String
    let maxCaptures: Int
    let maxBytes: Int

    func write(chargerId: String, at: Double, trigger: String, lines: [String]) throws -> String {
        let safe = String(chargerId.map { $0.isLetter || $0.isNumber || "-_.".contains($0) ? $0 : "_" })
        let directory = folder + "/" + safe
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let stamp = Date(timeIntervalSince1970: at).formatted(.iso8601).replacingOccurrences(of: ":", with: "")
        let slug = String(trigger.lowercased().map { $0.isLetter || $0.isNumber ? $0 : "-" }.prefix(40))
        let path = directory + "/\(stamp)-\(slug).jsonl"
        guard FileManager.default.createFile(atPath: path, contents: Data((lines.joined(separator: "\n") + "\n").utf8),
                                             attributes: [.posixPermissions: 0o600]) else {
            throw DashcamError("cannot write \(path)")
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
