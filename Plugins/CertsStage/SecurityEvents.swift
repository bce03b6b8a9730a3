import Foundation
import Logging
import OCPP
import StageKit

/// Security events the gateway raises for its chargers (Security Whitepaper §8).
enum SecurityEvent: String {
    case startupOfTheDevice = "StartupOfTheDevice"
    case invalidChargePointCertificate = "InvalidChargePointCertificate"
    case invalidCentralSystemCertificate = "InvalidCentralSystemCertificate"
    case invalidTLSVersion = "InvalidTLSVersion"
    case reconfigurationOfSecurityParameters = "ReconfigurationOfSecurityParameters"

    /// Critical events (whitepaper §8) must reach the CSMS even across an outage, so they are kept
    /// on disk until acknowledged. Events raised while no link exists are kept the same way (`record`).
    var isCritical: Bool { self == .startupOfTheDevice }
}

/// Sends `SecurityEventNotification`s north; critical ones are written to
/// `chargers/<id>/pending-events.json` first and removed once the CSMS answered.
struct SecurityEventOutbox: Sendable {
    let paths: IdentityPaths

    struct Pending: Codable, Equatable {
        var type: String
        var timestamp: String
        var techInfo: String?
    }

    private func file(_ id: String) -> String { paths.folder(id) + "/pending-events.json" }

    func pending(_ id: String) -> [Pending] {
        guard let data = FileManager.default.contents(atPath: file(id)) else { return [] }
        return (try? JSONDecoder().decode([Pending].self, from: data)) ?? []
    }

    private func save(_ id: String, _ events: [Pending]) {
        if events.isEmpty {
            unlink(file(id))
        } else if let data = try? JSONEncoder().encode(events) {
            try? AtomicFile.write(data, to: file(id), mode: 0o600)
        }
    }

    func raise(_ event: SecurityEvent, techInfo: String?, in session: any SessionContext) {
        let entry = Pending(type: event.rawValue, timestamp: isoTimestamp(session.wallTime), techInfo: techInfo.map { String($0.prefix(255)) })
        if event.isCritical { save(session.chargerId, pending(session.chargerId) + [entry]) }
        send(entry, in: session)
    }

    /// Keeps an event for a charger with no session (its north link failed); sent when one starts.
    func record(_ event: SecurityEvent, techInfo: String, chargerId: String, at seconds: Double) {
        let entry = Pending(type: event.rawValue, timestamp: isoTimestamp(seconds), techInfo: String(techInfo.prefix(255)))
        var events = pending(chargerId)
        // One of a kind is enough while the link stays down: a charger retrying every few seconds must not fill the disk.
        guard !events.contains(where: { $0.type == entry.type }) else { return }
        events.append(entry)
        save(chargerId, events)
    }

    /// Delivers what an outage held back.
    func flush(in session: any SessionContext) {
        for entry in pending(session.chargerId) { send(entry, in: session) }
    }

    private func send(_ entry: Pending, in session: any SessionContext) {
        var payload: JSONValue = ["type": .string(entry.type), "timestamp": .string(entry.timestamp)]
        if let techInfo = entry.techInfo { payload["techInfo"] = .string(techInfo) }
        let id = session.chargerId
        session.logger.notice("security event", metadata: ["type": "\(entry.type)", "info": "\(entry.techInfo ?? "")"])
        session.sendCall("SecurityEventNotification", payload: payload, to: .csms) { outcome in
            guard case .result = outcome else { return }
            save(id, pending(id).filter { $0 != entry })
        }
    }
}

func isoTimestamp(_ seconds: Double) -> String {
    Date(timeIntervalSince1970: seconds).formatted(.iso8601)
}
