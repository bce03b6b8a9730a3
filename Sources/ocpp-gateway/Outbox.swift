import ArgumentParser
import Foundation
import OCPP
import Outbox
import Router

/// `ocpp-gateway outbox list|show`: what waits in the chargers' outboxes (state_dir/chargers/<id>/outbox.sqlite).
struct OutboxCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outbox",
        abstract: "The chargers' outboxes (north.offline_mode: buffer): what waits for the CSMS.", subcommands: [List.self, Show.self])

    static func chargersFolder(_ config: String) throws -> String {
        try loadConfiguration(config).stateDirectory + "/chargers"
    }

    static func time(_ seconds: Double) -> String { Date(timeIntervalSince1970: seconds).formatted(.iso8601) }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every charger with an outbox: waiting CALLs, failed ones, bytes, the oldest's age.")
        @Option(name: .long, help: "Path to gateway.yaml.") var config: String

        func run() throws {
            let folder = try OutboxCommand.chargersFolder(config)
            let chargers = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
            let now = Date().timeIntervalSince1970
            print(["CHARGER", "WAITING", "FAILED", "BYTES", "OLDEST_AGE_S"].joined(separator: "\t"))
            for charger in chargers {
                let path = folder + "/" + charger + "/outbox.sqlite"
                guard FileManager.default.fileExists(atPath: path) else { continue }
                do {
                    let figures = try OutboxDatabase(path: path, readOnly: true).figures()
                    print([LogSafe.escape(charger), "\(figures.depth)", "\(figures.failed)", "\(figures.bytes)",
                           figures.oldest.map { String(Int(max(0, now - $0))) } ?? "-"].joined(separator: "\t"))
                } catch {
                    print([LogSafe.escape(charger), "?", "?", "?", "unreadable: \(error)"].joined(separator: "\t"))
                }
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One charger's queued CALLs, oldest first (replay order), and failed ones with their error.")
        @Option(name: .long, help: "Path to gateway.yaml.") var config: String
        @Argument(help: "The charge point id.") var charger: String

        func run() throws {
            if let problem = ChargerIdentity.problem(with: charger) { throw ValidationError("invalid charger id: \(problem)") }
            let path = try OutboxCommand.chargersFolder(config) + "/" + charger + "/outbox.sqlite"
            guard FileManager.default.fileExists(atPath: path) else { throw ValidationError("no outbox for \(charger) (\(path))") }
            let database = try OutboxDatabase(path: path, readOnly: true)
            print(["SEQ", "STATE", "KIND", "ACTION", "CONNECTOR", "TRANSACTION", "ENQUEUED", "ATTEMPTS", "LAST_ERROR", "PAYLOAD"]
                .joined(separator: "\t"))
            for row in try database.rows() {
                print(["\(row.seq)", row.state.rawValue, row.kind.rawValue, row.action, row.connector.map(String.init) ?? "-",
                       row.localTransactionId.map(String.init) ?? "-", OutboxCommand.time(row.enqueuedAt), "\(row.attempts)",
                       row.lastError.map { LogSafe.escape($0, limit: 200) } ?? "-",
                       LogSafe.escape(String(decoding: row.payload, as: UTF8.self), limit: 2000)].joined(separator: "\t"))
            }
            let mappings = try database.transactionMappings()
            if !mappings.isEmpty {
                print("\nTRANSACTION IDS (gateway → CSMS)")
                for mapping in mappings.sorted(by: { $0.localId < $1.localId }) {
                    print("\(mapping.localId)\t\(mapping.csmsId.map(String.init) ?? "refused by the CSMS")")
                }
            }
        }
    }
}
