import Foundation
import HealthChannel
import NIOCore
import OCPP
import Router
import StageKit
import Synchronization
import Transport

// The status snapshot behind `/`, `/api/status` and `ocpp-gateway status` (docs/operations.md).
// Each session is read on its own event loop; the disk (dashcam captures) is read in a task,
// never on an event loop. Every list is bounded.

/// Text from a peer (or a file) made fit for the page, the JSON and a terminal: at most `limit` characters
/// (with the full length noted), control characters (C0, DEL, C1, line separators) shown as `\u{…}` so none can
/// move a terminal's cursor or forge a line. Quotes and markup stay as they are: the page HTML-escapes.
func displaySafe(_ text: some StringProtocol, limit: Int) -> String {
    var out = ""
    var count = 0
    for scalar in text.unicodeScalars {
        if count == limit { return out + "…(\(text.utf8.count) bytes)" }
        count += 1
        if scalar.value < 0x20 || scalar.value == 0x7F || (0x80...0x9F).contains(scalar.value) || scalar.value == 0x2028 || scalar.value == 0x2029 {
            out += "\\u{\(String(scalar.value, radix: 16))}"
        } else {
            out.unicodeScalars.append(scalar)
        }
    }
    return out
}

/// The last security events that went to the CSMS, for all chargers: a ring of `capacity` entries.
final class SecurityEventLog: Sendable {
    let capacity: Int
    private let ring: Mutex<(entries: [SecurityEventEntry], next: Int)>

    init(capacity: Int = 50) {
        self.capacity = capacity
        ring = Mutex(([], 0))
    }

    func record(_ entry: SecurityEventEntry) {
        ring.withLock { ring in
            if ring.entries.count < capacity {
                ring.entries.append(entry)
            } else {
                ring.entries[ring.next] = entry
            }
            ring.next = (ring.next + 1) % capacity
        }
    }

    /// Newest first.
    var recent: [SecurityEventEntry] {
        ring.withLock { ring in
            guard ring.entries.count == capacity else { return ring.entries.reversed() }
            return Array((ring.entries[ring.next...] + ring.entries[..<ring.next]).reversed())
        }
    }

    /// A frame on its way to the CSMS: when it is a `SecurityEventNotification` CALL (the gateway's own or the
    /// charger's), it is recorded. Frames are only parsed when their first bytes name that action, so the cost
    /// per frame is a scan of at most 160 bytes.
    func inspect(_ bytes: [UInt8], chargerId: String) {
        guard Self.mayBeSecurityEvent(bytes), let frame = try? Frame.parse(bytes), frame.messageType == .call,
              frame.action == "SecurityEventNotification"
        else { return }
        let payload = frame.payload()
        let type = payload["type"]?.stringValue ?? "?"
        let timestamp = payload["timestamp"]?.stringValue
        record(SecurityEventEntry(at: displaySafe(timestamp ?? Date().formatted(.iso8601), limit: 40),
                                  charger: displaySafe(chargerId, limit: 48), type: displaySafe(type, limit: 64),
                                  techInfo: payload["techInfo"]?.stringValue.map { displaySafe($0, limit: 255) }))
    }

    private static let needle = Array("\"SecurityEventNotification\"".utf8)

    static func mayBeSecurityEvent(_ bytes: [UInt8]) -> Bool {
        let end = min(bytes.count, 160)
        guard end >= needle.count else { return false }
        let first = needle[0]
        var index = 0
        while index <= end - needle.count {
            if bytes[index] == first, bytes[index ..< index + needle.count].elementsEqual(needle) { return true }
            index += 1
        }
        return false
    }
}

/// What a `SessionLink` remembers for the status page: cheap to keep up per frame (a reference to the
/// frame's bytes and a time; for a frame over 4 KiB a copy of its first 128 bytes, so a large frame is not
/// kept alive), summarised only when a page asks.
struct LinkActivity {
    struct Received {
        var at: Double
        var bytes: [UInt8]
        var truncated: Bool
    }

    let startedAt = Date().timeIntervalSince1970
    var fromCharger: Received?
    var fromCSMS: Received?
    /// The last CALL sent to each side (one is in flight at a time): it names the action of that side's answer.
    var callToCharger: [UInt8]?
    var callToCSMS: [UInt8]?
    /// Where security events going north are recorded; nil in tests that have no runtime.
    var securityEvents: SecurityEventLog?

    mutating func received(_ bytes: [UInt8], from side: Side) {
        let truncated = bytes.count > 4096
        let entry = Received(at: Date().timeIntervalSince1970, bytes: truncated ? Array(bytes.prefix(128)) : bytes, truncated: truncated)
        if side == .charger { fromCharger = entry } else { fromCSMS = entry }
    }

    /// A frame on its way to `side`: a CALL is remembered (by reference; a large one as a prefix).
    mutating func sent(_ bytes: [UInt8], to side: Side) {
        guard let first = bytes.prefix(8).first(where: { $0 != UInt8(ascii: " ") && $0 != UInt8(ascii: "[") && $0 != 10 && $0 != 13 && $0 != 9 }),
              first == UInt8(ascii: "2")
        else { return }
        let kept = bytes.count > 4096 ? Array(bytes.prefix(128)) : bytes
        if side == .charger { callToCharger = kept } else { callToCSMS = kept }
    }

    /// A CALL's action, or `CALLRESULT` / `CALLERROR` with the action of the CALL it answers when that was
    /// the last CALL sent to that side.
    static func summary(_ last: Received?, answering call: [UInt8]? = nil) -> FrameSummary? {
        guard let last else { return nil }
        let message: String
        if !last.truncated, let frame = try? Frame.parse(last.bytes) {
            message = frame.action.map { displaySafe($0, limit: 64) } ?? frame.messageType.description
                + (call.flatMap { try? Frame.parse($0) }.flatMap { $0.messageId == frame.messageId ? $0.action : nil }
                    .map { " (\(displaySafe($0, limit: 64)))" } ?? "")
        } else if last.truncated, let headline = headline(last.bytes) {
            message = headline
        } else {
            message = "malformed"
        }
        return FrameSummary(at: Date(timeIntervalSince1970: last.at).formatted(.iso8601), message: message)
    }

    /// What the first bytes of a large frame say: `[2,"<id>","<action>"…`, `[3,…` or `[4,…`.
    static func headline(_ prefix: [UInt8]) -> String? {
        let parts = String(decoding: prefix, as: UTF8.self).split(separator: "\"", omittingEmptySubsequences: false)
        guard let opening = parts.first?.filter({ !$0.isWhitespace }) else { return nil }
        switch opening {
        case "[2,": return parts.count > 4 && parts[2].allSatisfy({ $0.isWhitespace || $0 == "," }) ? displaySafe(parts[3], limit: 64) : nil
        case "[3,": return "CALLRESULT"
        case "[4,": return "CALLERROR"
        default: return nil
        }
    }
}

extension SessionLink {
    /// This charger's row of the status page. Must run on `eventLoop`.
    func status() -> ChargerStatus {
        let remote = south.channel.remoteAddress.map { address in
            address.ipAddress.map { "\($0):\(address.port ?? 0)" } ?? "\(address)"
        } ?? "?"
        let northLink = north != nil && session?.isNorthUp != false ? "up" : (buffer != nil ? "reconnecting" : "down")
        var stages: [String: [String: String]] = [:]
        var certificateExpiry: String?
        var currentLimit: String?
        for (stage, fields) in session?.stageStatus() ?? [] {
            // Bounded: a stage says a few things, each a line at most.
            let bounded = Dictionary(fields.prefix(16).map { (displaySafe($0.key, limit: 48), displaySafe($0.value, limit: 200)) },
                                     uniquingKeysWith: { first, _ in first })
            stages[stage] = bounded
            certificateExpiry = certificateExpiry ?? bounded["certificate_expiry"]
            currentLimit = currentLimit ?? bounded["current_limit"]
        }
        let towardsCharger = session?.queuedCalls(towards: .charger) ?? 0
        let towardsCSMS = session?.queuedCalls(towards: .csms) ?? 0
        return ChargerStatus(
            id: chargerId, connectedSince: Date(timeIntervalSince1970: activity.startedAt).formatted(.iso8601), remoteAddress: remote,
            southSecurityProfile: southSecurityProfile, northSecurityProfile: credentials.securityProfile, northLink: northLink,
            lastFromCharger: LinkActivity.summary(activity.fromCharger, answering: activity.callToCharger),
            lastFromCSMS: LinkActivity.summary(activity.fromCSMS, answering: activity.callToCSMS),
            certificateExpiry: certificateExpiry, currentLimit: currentLimit, queuedTowardsCharger: towardsCharger,
            queuedTowardsCSMS: towardsCSMS, callsPending: session?.callsPending ?? 0, stages: stages)
    }
}

/// The dashcam's captures on disk: `<state_dir>/dashcam/<folder>/<file>.jsonl`. Read off the event loops.
struct CaptureFolder: Sendable {
    let root: String
    /// Newest captures listed on the page, over all chargers.
    static let listLimit = 50
    /// Larger files are not served (the dashcam's own bound is 20 MiB per charger by default).
    static let maxServedBytes = 64 << 20

    init(stateDirectory: String) { root = stateDirectory + "/dashcam" }

    /// Newest first, at most `listLimit`.
    func list() -> [CaptureEntry] {
        let fileManager = FileManager.default
        let folders = ((try? fileManager.contentsOfDirectory(atPath: root)) ?? []).sorted().prefix(10_000)
        var found: [(folder: String, file: String)] = []
        for folder in folders {
            let files = ((try? fileManager.contentsOfDirectory(atPath: root + "/" + folder)) ?? []).filter { $0.hasSuffix(".jsonl") }
            found += files.map { (folder, $0) }
        }
        // Names start with the capture's UTC time: newest first by name.
        found.sort { $0.file > $1.file }
        return found.prefix(Self.listLimit).map { entry in
            let path = root + "/" + entry.folder + "/" + entry.file
            let header = Self.firstLine(path).flatMap { try? JSONValue(parsing: $0) }
            let size = (try? fileManager.attributesOfItem(atPath: path)[.size] as? Int) ?? 0
            return CaptureEntry(charger: displaySafe(header?["charger"]?.stringValue ?? entry.folder, limit: 48),
                                at: displaySafe(header?["at"]?.stringValue ?? "?", limit: 40),
                                trigger: displaySafe(header?["trigger"]?.stringValue ?? "?", limit: 120),
                                frames: header?["frames"]?.intValue, bytes: size,
                                path: "/captures/\(Self.encode(entry.folder))/\(Self.encode(entry.file))")
        }
    }

    /// The bytes of a capture, or nil unless `folder`/`file` name a regular file the dashcam's folder lists
    /// (no `/`, no `..`, no symbolic link, `.jsonl`, not over `maxServedBytes`).
    func read(folder: String, file: String) -> [UInt8]? {
        guard Self.isPlainName(folder), Self.isPlainName(file), file.hasSuffix(".jsonl"),
              ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).contains(folder),
              ((try? FileManager.default.contentsOfDirectory(atPath: root + "/" + folder)) ?? []).contains(file)
        else { return nil }
        let path = root + "/" + folder + "/" + file
        var info = stat()
        guard lstat(root + "/" + folder, &info) == 0, (info.st_mode & S_IFMT) == S_IFDIR,
              lstat(path, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG, Int(info.st_size) <= Self.maxServedBytes,
              let data = FileManager.default.contents(atPath: path)
        else { return nil }
        return Array(data)
    }

    static func isPlainName(_ name: String) -> Bool {
        !name.isEmpty && name.count <= 255 && name != "." && name != ".." && !name.contains("/") && !name.contains("\0")
            && !name.contains("\\")
    }

    static func firstLine(_ path: String) -> String? {
        guard let handle = FileHandle(forReadingAtPath: path) else { return nil }
        defer { try? handle.close() }
        guard let data = try? handle.read(upToCount: 4096) else { return nil }
        return String(decoding: data.prefix { $0 != UInt8(ascii: "\n") }, as: UTF8.self)
    }

    static func encode(_ component: String) -> String {
        var allowed = CharacterSet.alphanumerics.intersection(CharacterSet(charactersIn: Unicode.Scalar(0)..<Unicode.Scalar(128)))
        allowed.insert(charactersIn: "-_.~")
        return component.addingPercentEncoding(withAllowedCharacters: allowed) ?? ""
    }
}

extension GatewayRuntime {
    /// The status snapshot: every session read on its own loop, the captures read from disk here (in a task).
    public func statusSnapshot() async -> StatusSnapshot {
        var chargers: [ChargerStatus] = []
        for future in liveSessionStatuses(only: nil) {
            if let status = try? await future.get() { chargers.append(status) }
        }
        chargers.sort { $0.id < $1.id }
        let pipeline = self.pipeline
        let stages = pipeline.stages.map { stage in
            let tally = stage.tally
            return StageStatus(id: stage.id, type: stage.type, frames: tally.frames, verdicts: tally.verdicts)
        }
        let captures = pipeline.stages.contains { $0.type == "dashcam" } || FileManager.default.fileExists(atPath: captureFolder.root)
            ? captureFolder.list() : []
        return StatusSnapshot(generatedAt: Date().formatted(.iso8601), gateway: gatewayStatus(sessions: chargers.count), chargers: chargers,
                              pipeline: PipelineStatus(file: pipeline.file, stages: stages), securityEvents: securityEvents.recent,
                              captures: captures, healthChannel: healthChannelStatus)
    }

    /// One charger, or nil when it is not connected.
    public func chargerStatus(_ id: String) async -> ChargerStatus? {
        guard let future = liveSessionStatuses(only: id).first else { return nil }
        return try? await future.get()
    }

    var captureFolder: CaptureFolder { CaptureFolder(stateDirectory: configuration.stateDirectory) }

    private func gatewayStatus(sessions: Int) -> GatewayStatus {
        let (healthy, body) = health()
        var checks: [String: GatewayStatus.HealthCheck] = [:]
        if let json = try? JSONValue(parsing: body), case .object(let entries)? = json["checks"] {
            for (name, check) in entries {
                checks[name] = GatewayStatus.HealthCheck(ok: check["ok"]?.boolValue ?? false, detail: check["detail"]?.stringValue ?? "")
            }
        }
        return GatewayStatus(ready: readiness.ready, health: healthy ? "ok" : "degraded", checks: checks,
                             south: "ws://\(configuration.southHost):\(configuration.southPort)\(configuration.southPath)/<id>",
                             north: configuration.northURL.absoluteString, sessions: sessions)
    }

    private var healthChannelStatus: HealthChannelStatus? {
        guard let publisher else { return nil }
        let statistics = publisher.statistics
        return HealthChannelStatus(broker: "\(publisher.settings.host):\(publisher.settings.port)", connected: statistics.connected,
                                   queued: statistics.inFlight, queueLimit: publisher.settings.queueLimit,
                                   acknowledged: statistics.acknowledged, dropped: statistics.dropped)
    }

    /// `/readyz`: listening for chargers, a pipeline loaded, and not draining.
    public var readiness: (ready: Bool, body: String) {
        let listening = isListening
        let draining = isDraining
        let ready = listening && !draining
        let reason = !listening ? "not listening for chargers" : draining ? "draining" : "ready"
        return (ready, "{\"ready\":\(ready),\"detail\":\"\(reason)\",\"pipeline\":\"\(pipeline.stages.count) stages\"}\n")
    }

    /// What the admin listener serves for this runtime (docs/operations.md).
    public func adminEndpoints(metrics: @escaping @Sendable () -> [UInt8],
                               verifyPassword: @escaping @Sendable (_ password: String, _ hash: String) -> Bool) -> AdminServer.Endpoints {
        var endpoints = AdminServer.Endpoints(metrics: metrics, health: { [self] in health() })
        endpoints.ready = { [self] in readiness }
        endpoints.status = { [self] in await statusSnapshot() }
        endpoints.charger = { [self] id in await chargerStatus(id) }
        let captures = captureFolder
        endpoints.capture = { folder, file in captures.read(folder: folder, file: file) }
        endpoints.access = AdminAccess(credentials: configuration.adminCredentials, verifyPassword: verifyPassword)
        return endpoints
    }
}
