import ArgumentParser
import Foundation
import NapExportStage
import Router

/// `ocpp-gateway report uptime --month 2026-11 --config gateway.yaml`: the `nap_export` stage's
/// per-EVSE availability for a month (NEVI, 23 CFR 680.116(b)), as CSV on stdout.
struct Report: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reports from the gateway's state (docs/regulatory.md).", subcommands: [Uptime.self])

    struct Uptime: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Per-EVSE uptime of one month from the nap_export stage's history, as CSV (minutes; NEVI formula with exemptions).")
        @Option(name: .long, help: "The month, YYYY-MM (UTC).") var month: String
        @Option(name: .long, help: "Path to gateway.yaml (for state_dir).") var config: String = "gateway.yaml"

        func run() throws {
            let stateDirectory = try loadConfiguration(config).stateDirectory
            do {
                print(try UptimeReport.csv(stateDirectory: stateDirectory, month: month, now: Date().timeIntervalSince1970), terminator: "")
            } catch let error as ReportError {
                throw ValidationError(error.description)
            }
        }
    }
}
