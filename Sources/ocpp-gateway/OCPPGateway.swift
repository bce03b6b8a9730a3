import ArgumentParser
import AuthStage
import CertsStage
import Foundation
import Gateway
import GatewayStages
import HealthChannel
import Logging
import Metrics
import NIOCore
import OCPP
import NIOPosix
import Prometheus
import Router
import StageKit
import UnixSignals

/// `EX_CONFIG` from sysexits.h: what `validate` and `run` exit with on a bad configuration.
let exitConfigurationError: Int32 = 78

@main
struct OCPPGateway: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ocpp-gateway",
        abstract: "Edge security gateway for legacy OCPP 1.6J chargers: ws:// (SP0/SP1) in, wss:// mutual TLS (SP3) out.",
        subcommands: [Run.self, Validate.self, Stages.self, HashPassword.self, Certs.self, Dashcam.self, OutboxCommand.self, StatusCommand.self, Report.self]
    )

    /// The arena limit is set here, on the main thread before the concurrency pool's first thread allocates
    /// (a thread's first allocation picks its arena for good); `run` raises it for `--event-loop-threads`.
    static func main() async {
        EventLoopSizing.limitMallocArenas(to: EventLoopSizing.defaultThreads())
        await main(nil)
    }
}

/// Reads gateway.yaml and the pipeline, printing every problem as `file:line:col: error: …`.
func loadConfiguration(_ file: String) throws -> ResolvedGatewayConfiguration {
    do {
        return try ResolvedGatewayConfiguration.load(file: file)
    } catch {
        FileHandle.standardError.write(Data((error.description + "\n").utf8))
        throw ExitCode(exitConfigurationError)
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway. SIGHUP reloads the pipeline; SIGTERM drains and exits 0.")

    @Option(name: .long, help: "Path to gateway.yaml.")
    var config: String

    @Option(name: .long, help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    @Option(name: .long, help: "text (one line per record) or json (one JSON object per line, for journald and Loki).")
    var logFormat: String = "text"

    @Option(name: .long, help: "Event loops (threads) for the chargers' links; default: one per CPU the process may run on.")
    var eventLoopThreads: Int?

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown log level '\(logLevel)'; use trace, debug, info, notice, warning, error or critical")
        }
        guard ["text", "json"].contains(logFormat) else {
            throw ValidationError("unknown log format '\(logFormat)'; use text or json")
        }
        if let eventLoopThreads, !(1...256).contains(eventLoopThreads) {
            throw ValidationError("--event-loop-threads must be between 1 and 256, not \(eventLoopThreads)")
        }
    }

    func run() async throws {
        // A peer that closes a socket mid-write must cost an error, not the process: libmosquitto
        // writes with plain write(2), where SIGPIPE's default action would end the gateway silently.
        signal(SIGPIPE, SIG_IGN)
        let level = Logger.Level(rawValue: logLevel) ?? .info
        let json = logFormat == "json"
        LoggingSystem.bootstrap { label in
            var handler: any LogHandler = json ? JSONLogHandler(label: label) : StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let prometheus = PrometheusCollectorRegistry()
        var metricsFactory = PrometheusMetricsFactory(registry: prometheus)
        // A stage takes microseconds; the default buckets start at 5 ms and would hide everything.
        metricsFactory.durationHistogramBuckets["ocpp_gateway_stage_duration_seconds"] = [
            .microseconds(1), .microseconds(5), .microseconds(10), .microseconds(50), .microseconds(100),
            .microseconds(500), .milliseconds(1), .milliseconds(5), .milliseconds(25),
        ]
        MetricsSystem.bootstrap(metricsFactory)
        let logger = Logger(label: "ocpp-gateway")

        let configuration = try loadConfiguration(config)
        for warning in configuration.warnings { logger.warning("\(warning)") }

        // One loop per CPU the process may use (not per CPU of the machine), and no more malloc arenas than loops
        // (docs/scaling.md, "Memory"); the limit was set in `main` for the default count.
        let threads = eventLoopThreads ?? EventLoopSizing.defaultThreads()
        EventLoopSizing.limitMallocArenas(to: threads)
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let runtime: GatewayRuntime
        do {
            runtime = try GatewayRuntime(configuration: configuration, registry: makeStageRegistry(), group: group, logger: logger)
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(exitConfigurationError)
        }
        // Trap the signals before listening, so an early SIGHUP or SIGTERM is not lost.
        let signals = await UnixSignalsSequence(trapping: .sighup, .sigterm, .sigint)
        try await runtime.start()
        var admin: (any Channel)?
        if let host = configuration.adminHost, let port = configuration.adminPort {
            admin = try await AdminServer.start(host: host, port: port, group: group, endpoints: runtime.adminEndpoints(
                metrics: { prometheus.emitToBuffer() }, verifyPassword: { PasswordHash.verify(password: $0, hash: $1) }))
            logger.info("admin endpoint up", metadata: ["url": "http://\(host):\(admin?.localAddress?.port ?? port)/metrics"])
        }
        for await signal in signals {
            if signal == .sighup {
                logger.info("SIGHUP: reloading the pipeline", metadata: ["file": "\(configuration.pipelineFile)"])
                await runtime.reload()
                continue
            }
            logger.info("\(signal == .sigterm ? "SIGTERM" : "SIGINT"): draining")
            break
        }
        await runtime.shutdown()
        try? await admin?.close()
        try await group.shutdownGracefully()
    }
}

struct Validate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check gateway.yaml and its pipeline. Exit 0, or 78 with file:line:col: error: … lines.")

    @Option(name: .long, help: "Path to gateway.yaml.")
    var config: String

    func run() async throws {
        let configuration = try loadConfiguration(config)
        let publisher: OfflinePublisher?
        do {
            publisher = try configuration.mqtt.map { OfflinePublisher(topicRoot: try MQTTSettings($0, configurationFile: config).topicRoot) }
        } catch {
            FileHandle.standardError.write(Data("\(config):1:1: error: mqtt: \(error)\n".utf8))
            throw ExitCode(exitConfigurationError)
        }
        let loader = PipelineLoader(registry: makeStageRegistry(), southSettings: configuration.southSettings,
                                    northSettings: configuration.northSettings, stateDirectory: configuration.stateDirectory,
                                    logger: Logger(label: "validate", factory: { _ in SwiftLogNoOpLogHandler() }), publisher: publisher)
        do {
            let pipeline = try loader.load(file: configuration.pipelineFile)
            for warning in configuration.warnings { print("warning: \(warning)") }
            let chain = pipeline.stages.map { "\($0.id) (\($0.type))" }.joined(separator: " → ")
            print("\(config): ok")
            print("\(configuration.pipelineFile): ok: \(pipeline.stages.count) stage\(pipeline.stages.count == 1 ? "" : "s")\(chain.isEmpty ? "" : ": " + chain)")
            for stage in pipeline.stages { await stage.instance.shutdown() }
        } catch {
            FileHandle.standardError.write(Data((error.description + "\n").utf8))
            throw ExitCode(exitConfigurationError)
        }
    }
}

struct Stages: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "List the stage types this gateway can put in a pipeline.")

    func run() {
        let registry = makeStageRegistry()
        let width = registry.types.map(\.count).max() ?? 0
        for type in registry.types {
            print(type.padding(toLength: width + 2, withPad: " ", startingAt: 0) + (registry.entries[type]?.summary ?? ""))
        }
    }
}

struct HashPassword: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-password",
        abstract: "Hash a charger's password for south.chargers.<id>.password_hash (reads stdin if no --password).")

    @Option(name: .long, help: "The password; omit to read one line from standard input (keeps it out of shell history).")
    var password: String?

    func run() throws {
        guard let secret = password ?? readLine(strippingNewline: true), !secret.isEmpty else {
            throw ValidationError("no password given")
        }
        print(try PasswordHash.make(password: secret))
    }
}


struct Certs: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Inspect and manage the chargers' certificates in state_dir.",
        subcommands: [List.self, CSR.self, Import.self, Roots.self])

    struct Options: ParsableArguments {
        @Option(name: .long, help: "Path to gateway.yaml.")
        var config: String

        func inventory() throws -> CertificateInventory {
            let configuration = try loadConfiguration(config)
            return CertificateInventory(stateDirectory: configuration.stateDirectory,
                                        northSecurityProfile: configuration.northSecurityProfile, caFile: configuration.northCAFile)
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Each charger's certificate: subject, issuer, expiry, key type, profile.")
        @OptionGroup var options: Options

        func run() throws {
            let inventory = try options.inventory()
            let now = Date()
            print(["CHARGER", "PROFILE", "KEY", "NOT AFTER", "DAYS LEFT", "SUBJECT", "ISSUER"].joined(separator: "\t"))
            for id in inventory.chargerIds {
                let entry = inventory.entry(id)
                let days = entry.notAfter.map { String(Int($0.timeIntervalSince(now) / 86400)) } ?? "-"
                var columns: [String] = [id, "SP\(entry.securityProfile)", entry.keyType ?? "-"]
                columns += [entry.notAfter.map { $0.formatted(.iso8601) } ?? "(no certificate)", days]
                columns += [entry.subject ?? "-", entry.issuer ?? "-"]
                if entry.hasPendingKey { columns.append("(CSR pending)") }
                if let problem = entry.settingsProblem { columns.append("(settings.json unreadable: \(problem))") }
                if let mode = entry.exposedKeyMode { columns.append("(key.pem readable by group/others, mode bits \(mode): refused; chmod 600)") }
                print(columns.joined(separator: "\t"))
            }
        }
    }

    struct CSR: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Make a new key pair for a charger and print its CSR (manual enrolment).")
        @OptionGroup var options: Options
        @Argument(help: "Charge point id.") var chargerId: String
        @Option(name: .long, help: "The O of the subject (CpoName).") var cpoName: String
        @Option(name: .long, help: "The CN of the subject; defaults to the charge point id.") var commonName: String?
        @Option(name: .long, help: "ec-p256, ec-p384, rsa-2048 or rsa-3072.") var keyType: String = "ec-p256"

        func run() throws {
            guard let type = KeyType(rawValue: keyType) else {
                throw ValidationError("unknown key type '\(keyType)'; use \(KeyType.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            print(try options.inventory().makeCSR(chargerId: chargerId, cpoName: cpoName, commonName: commonName, keyType: type))
        }
    }

    struct Import: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Install a signed certificate; only one that matches the charger's key.")
        @OptionGroup var options: Options
        @Argument(help: "Charge point id.") var chargerId: String
        @Option(name: .long, help: "PEM file with the certificate (and its chain).") var cert: String

        func run() throws {
            guard let pem = try? String(contentsOfFile: cert, encoding: .utf8) else { throw ValidationError("cannot read \(cert)") }
            do {
                print("\(chargerId): " + (try options.inventory().importCertificate(chargerId: chargerId, pem: pem)))
            } catch {
                FileHandle.standardError.write(Data("error: \(error)\n".utf8))
                throw ExitCode.failure
            }
        }
    }

    struct Roots: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The root certificates each charger trusts (north.ca_file and installed ones).")
        @OptionGroup var options: Options

        func run() throws {
            let inventory = try options.inventory()
            for id in inventory.chargerIds {
                for root in inventory.roots(id) {
                    print([id, root.type, root.provisioned ? "north.ca_file" : "installed", root.notAfter.formatted(.iso8601),
                           root.serialNumber, root.subject].joined(separator: "\t"))
                }
            }
        }
    }
}

struct Dashcam: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The dashcam's captures (state_dir/dashcam): the frames around each fault.", subcommands: [List.self, Show.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Every capture: charger, time, trigger, frames, file.")
        @Option(name: .long, help: "Path to gateway.yaml.") var config: String

        func run() throws {
            let folder = try loadConfiguration(config).stateDirectory + "/dashcam"
            let chargers = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
            print(["CHARGER", "AT", "TRIGGER", "FRAMES", "FILE"].joined(separator: "\t"))
            for charger in chargers {
                let files = ((try? FileManager.default.contentsOfDirectory(atPath: folder + "/" + charger)) ?? []).filter { $0.hasSuffix(".jsonl") }.sorted()
                for file in files {
                    let path = folder + "/" + charger + "/" + file
                    let header = (try? String(contentsOfFile: path, encoding: .utf8))?.split(separator: "\n").first
                        .flatMap { try? JSONValue(parsing: String($0)) }
                    print([header?["charger"]?.stringValue ?? charger, header?["at"]?.stringValue ?? "?",
                           header?["trigger"]?.stringValue ?? "?", header?["frames"]?.intValue.map(String.init) ?? "?", path].joined(separator: "\t"))
                }
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One capture, a frame a line.")
        @Argument(help: "A capture file from 'dashcam list'.") var file: String

        func run() throws {
            guard let text = try? String(contentsOfFile: file, encoding: .utf8) else { throw ValidationError("cannot read \(file)") }
            var lines = text.split(separator: "\n").makeIterator()
            if let header = lines.next().flatMap({ try? JSONValue(parsing: String($0)) }) {
                print("\(header["charger"]?.stringValue ?? "?") — \(header["trigger"]?.stringValue ?? "?") at \(header["at"]?.stringValue ?? "?")")
            }
            while let line = lines.next() {
                guard let entry = try? JSONValue(parsing: String(line)) else { continue }
                let arrow = entry["direction"]?.stringValue == "from_charger" ? "charger →" : "→ charger"
                print("\(entry["time"]?.stringValue ?? "")  \(arrow)  \(entry["frame"]?.jsonText ?? "")")
            }
        }
    }
}
