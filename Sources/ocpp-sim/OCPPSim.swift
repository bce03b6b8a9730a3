import ArgumentParser
import DevPKI
import Foundation
import NIOCore
import NIOPosix
import OCPP
import Simulators
import Transport

@main
struct OCPPSim: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ocpp-sim",
        abstract: "Development peers for ocpp-gateway: a PKI, a CSMS with mutual TLS, and legacy 1.6J chargers.",
        subcommands: [PKI.self, CSMS.self, Charger.self, ValidatePayloads.self]
    )
}

/// Prints the flow one line per frame, with a timestamp, flushed at once (the demo interleaves processes).
@Sendable func printLine(_ text: String) {
    let time = String(ocppTimestamp().dropFirst(11).prefix(12))
    FileHandle.standardOutput.write(Data("\(time) \(text)\n".utf8))
}

struct PKI: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a development CA, the CSMS's server certificate and chargers' client certificates under STATE.")

    @Option(name: .long, help: "The gateway's state_dir.")
    var state: String = "state"

    @Option(name: .long, parsing: .upToNextOption, help: "Charger ids to issue client certificates for.")
    var charger: [String] = ["CP001"]

    @Flag(name: .long, help: "Make a new CA even if one exists.")
    var fresh = false

    func run() throws {
        let pki = try DevPKI(directory: state, reuse: !fresh)
        for id in charger where fresh || !FileManager.default.fileExists(atPath: pki.chargerCertificate(id)) {
            try pki.issueChargerCertificate(id)
        }
        print("development PKI in \(state)/pki (CA: \(pki.caCertificate)); client certificates for \(charger.joined(separator: ", "))")
    }
}

struct CSMS: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the development CSMS over wss:// with mutual TLS.")

    @Option(name: .long, help: "Where `ocpp-sim pki` put the certificates.")
    var state: String = "state"

    @Option(name: .long) var host = "127.0.0.1"
    @Option(name: .long) var port = 9443

    @Flag(name: .long, help: "Do not print frames.")
    var quiet = false

    @Flag(name: .long, help: "After a charger's BootNotification, ask it for its configuration (a CSMS-initiated CALL).")
    var askConfiguration = false

    @Option(name: .long, help: "The OCPP version the CSMS speaks: 1.6 or 2.0.1 (a gateway with north.ocpp_version: \"2.0.1\").")
    var ocppVersion = "1.6"

    func run() async throws {
        let pki = try DevPKI(directory: state)
        var options = DevelopmentCSMS.Options(certificateFile: pki.serverCertificate, keyFile: pki.serverKey, clientCAFile: pki.caCertificate)
        options.host = host
        options.port = port
        options.askConfigurationAfterBoot = askConfiguration
        let bound: Int
        switch ocppVersion {
        case "1.6": bound = try await DevelopmentCSMS(options: options, trace: quiet ? nil : printLine).start(group: MultiThreadedEventLoopGroup.singleton)
        case "2.0.1": bound = try await DevelopmentCSMS201(options: options, trace: quiet ? nil : printLine).start(group: MultiThreadedEventLoopGroup.singleton)
        default: throw ValidationError("--ocpp-version must be 1.6 or 2.0.1")
        }
        printLine("CSMS: OCPP \(ocppVersion), listening on wss://\(host):\(bound)/ocpp/<id> (client certificate required)")
        while true { try await Task.sleep(for: .seconds(3600)) }
    }
}

struct Charger: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run legacy 1.6J chargers through a charging session.")

    @Option(name: .long, help: "The gateway's south endpoint, without the charger id.")
    var endpoint = "ws://127.0.0.1:9000/ocpp"

    @Option(name: .long, help: "Charger id (with --count: the prefix, numbered 001, 002, …).")
    var id = "CP001"

    @Option(name: .long, help: "Basic auth password (Security Profile 1).")
    var password: String?

    @Option(name: .long, help: "Number of chargers.")
    var count = 1

    @Option(name: .long, help: "Seconds to keep retrying while the gateway refuses (502 while the CSMS is away).")
    var retryFor: Double = 30

    @Flag(name: .long, help: "Stay connected after the session, sending heartbeats.")
    var stay = false

    @Flag(name: .long, help: "Do not print frames.")
    var quiet = false

    func run() async throws {
        let ids = count == 1 ? [id] : (1...count).map { id + String(format: "%03d", $0) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for chargerId in ids {
                group.addTask {
                    try await runOne(chargerId)
                }
            }
            try await group.waitForAll()
        }
    }

    func runOne(_ chargerId: String) async throws {
        let charger = LegacyCharger(options: .init(endpoint: endpoint, chargerId: chargerId, password: password),
                                    trace: quiet ? nil : printLine)
        let deadline = Date().addingTimeInterval(retryFor)
        let peer: OCPPPeer
        while true {
            do {
                peer = try await charger.connect(on: MultiThreadedEventLoopGroup.singleton.next())
                break
            } catch {
                guard Date() < deadline else { throw SimulatorError("\(chargerId): cannot connect: \(error)") }
                if !quiet { printLine("\(chargerId): \(error); retrying") }
                try await Task.sleep(for: .seconds(1))
            }
        }
        if !quiet { printLine("\(chargerId): connected to \(endpoint)/\(chargerId)") }
        try await charger.runChargingSession(on: peer)
        if !quiet { printLine("\(chargerId): charging session complete") }
        while stay {
            try await Task.sleep(for: .seconds(30))
            _ = try await peer.call("Heartbeat", [:]).get()
        }
        peer.close()
    }
}

struct ValidatePayloads: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate-payloads",
        abstract: "Check OCPP payloads against the gateway's validator: one JSON object a line on stdin "
            + "({\"action\", \"response\", \"payload\"}, optional \"version\": ocpp1.6 | ocpp2.0.1), one verdict a line on stdout.")

    func run() throws {
        while let line = readLine(strippingNewline: true) {
            guard !line.isEmpty else { continue }
            let verdict: JSONValue
            do {
                let item = try JSONValue(parsing: line)
                guard let action = item["action"]?.stringValue, let payload = item["payload"] else {
                    throw SimulatorError("each line needs 'action' and 'payload'")
                }
                guard let version = OCPPVersion(rawValue: item["version"]?.stringValue ?? OCPPVersion.v16.rawValue) else {
                    throw SimulatorError("unknown version '\(item["version"]?.stringValue ?? "")'; use ocpp1.6 or ocpp2.0.1")
                }
                if let schema = PayloadSchema.schema(for: action, version: version, response: item["response"]?.boolValue ?? false) {
                    if let problem = schema.validate(payload) {
                        verdict = ["valid": false, "code": .string(problem.code.rawValue), "path": .string(problem.path),
                                   "reason": .string(problem.reason)]
                    } else {
                        verdict = ["valid": true]
                    }
                } else {
                    verdict = ["valid": false, "code": "NotImplemented", "reason": .string("unknown action \(action)")]
                }
            } catch {
                verdict = ["valid": false, "code": "FormationViolation", "reason": .string("\(error)")]
            }
            print(verdict.jsonText)
        }
    }
}
