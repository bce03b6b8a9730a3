import Foundation
import Logging
import OCPP
import StageKit
import Synchronization

/// Security events the gateway raises for its chargers (Security Whitepaper §8).
enum SecurityEvent: String {
    case startupOfTheDevice = "StartupOfTheDevice"
    case invalidChargePointCertificate = "InvalidChargePointCertificate"
    case invalidCentralSystemCertificate = "InvalidCentralSystemCertificate"
    case invalidTLSVersion = "InvalidTLSVersion"
    case reconfigurationOfSecurityParameters = "ReconfigurationOfSecurityParameters"

    /// The whitepaper's table of security events marks these critical (A04.FR.02: queued with
    /// guaranteed delivery). Of them, the gateway raises StartupOfTheDevice.
    static let critical: Set<String> = [
        "FirmwareUpdated", "SettingSystemTime", "StartupOfTheDevice", "ResetOrReboot", "SecurityLogWasCleared",
        "MemoryExhaustion", "TamperDetectionActivated",
    ]

    var isCritical: Bool { Self.critical.contains(rawValue) }
}

/// Sends `SecurityEventNotification`s north.
///
/// Critical events, and events raised while a charger has no session (its north link failed), are
/// written to `chargers/<id>/pending-events.json` (through the `StageStore`: off the event loop,
/// atomic) before they are sent, and removed once the CSMS acknowledged them. Other events are sent
/// once. A write that fails is logged with the event's type and counted
/// (`ocpp_gateway_state_errors_total`); the event is still sent.
struct SecurityEventOutbox: Sendable {
    let files: StageStore
    let logger: Logger
    static let fileName = "pending-events.json"
    /// Events kept per charger: a CSMS that never acknowledges must not fill the disk.
    static let limit = 64

    struct Pending: Codable, Equatable, Sendable {
        /// Tells apart two events of one type and second; absent in files of older versions.
        var id: String?
        var type: String
        var timestamp: String
        var techInfo: String?
    }

    /// What is (or is on its way to be) in each charger's file, for the whole process, so that
    /// read-modify-write is atomic across sessions, tasks and the stage instances of a reload.
    private static let memory = Mutex<[String: [Pending]]>([:])

    private func key(_ id: String) -> String { files.root + "/" + id }

    func pending(_ id: String) -> [Pending] {
        Self.memory.withLock { memory in memory[key(id)] ?? read(id, into: &memory) }
    }

    private func read(_ id: String, into memory: inout [String: [Pending]]) -> [Pending] {
        var events: [Pending] = []
        do throws(StateStoreError) {
            events = try files.load([Pending].self, charger: id, name: Self.fileName) ?? []
        } catch {
            // Kept aside for the operator; new events are kept from here on.
            logger.error("pending security events unreadable; moved aside as \(Self.fileName).corrupt",
                         metadata: ["charger": "\(id)", "error": "\(error)"])
            if let raw = try? files.load(charger: id, name: Self.fileName) {
                files.save(raw, charger: id, name: Self.fileName + ".corrupt")
            }
        }
        memory[key(id)] = events
        return events
    }

    /// Changes the charger's pending events and queues the write, under one lock.
    private func modify(_ id: String, _ change: (inout [Pending]) -> Void) {
        let logger = self.logger
        Self.memory.withLock { memory in
            var events = memory[key(id)] ?? read(id, into: &memory)
            let before = events
            change(&events)
            if events.count > Self.limit {
                let dropped = events.prefix(events.count - Self.limit).map(\.type)
                events.removeFirst(events.count - Self.limit)
                logger.error("too many unacknowledged security events; the oldest were dropped",
                             metadata: ["charger": "\(id)", "dropped": "\(dropped.joined(separator: ","))"])
            }
            guard events != before else { return }
            memory[key(id)] = events
            let types = events.map(\.type).joined(separator: ",")
            let completion: WriteCompletion = { result in
                if case .failure(let error) = result {
                    logger.error("security events not persisted", metadata: ["charger": "\(id)", "pending": "\(types)", "error": "\(error)"])
                }
            }
            if events.isEmpty {
                files.remove(charger: id, name: Self.fileName, completion: completion)
            } else {
                files.save(events, charger: id, name: Self.fileName, completion: completion)
            }
        }
    }

    func raise(_ event: SecurityEvent, techInfo: String?, in session: any SessionContext) {
        let entry = Pending(id: UUID().uuidString, type: event.rawValue, timestamp: isoTimestamp(session.wallTime),
                            techInfo: techInfo.map { String($0.prefix(255)) })
        if event.isCritical { modify(session.chargerId) { $0.append(entry) } }
        send(entry, persisted: event.isCritical, in: session)
    }

    /// Keeps an event for a charger with no session (its north link failed); sent when one starts.
    func record(_ event: SecurityEvent, techInfo: String, chargerId: String, at seconds: Double) {
        let entry = Pending(id: UUID().uuidString, type: event.rawValue, timestamp: isoTimestamp(seconds),
                            techInfo: String(techInfo.prefix(255)))
        // One of a kind is enough while the link stays down: a charger retrying every few seconds must not fill the disk.
        modify(chargerId) { events in
            if !events.contains(where: { $0.type == entry.type }) { events.append(entry) }
        }
    }

    /// Delivers what an outage held back.
    func flush(in session: any SessionContext) {
        for entry in pending(session.chargerId) { send(entry, persisted: true, in: session) }
    }

    private func send(_ entry: Pending, persisted: Bool, in session: any SessionContext) {
        var payload: JSONValue = ["type": .string(entry.type), "timestamp": .string(entry.timestamp)]
        if let techInfo = entry.techInfo { payload["techInfo"] = .string(techInfo) }
        let id = session.chargerId
        session.logger.notice("security event", metadata: ["type": "\(entry.type)", "info": "\(LogSafe.escape(entry.techInfo ?? ""))"])
        session.sendCall("SecurityEventNotification", payload: payload, to: .csms) { outcome in
            guard persisted, case .result = outcome else { return }
            modify(id) { events in
                if let index = events.firstIndex(of: entry) { events.remove(at: index) }
            }
        }
    }
}

func isoTimestamp(_ seconds: Double) -> String {
    Date(timeIntervalSince1970: seconds).formatted(.iso8601)
}
