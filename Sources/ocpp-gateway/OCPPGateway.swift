import ArgumentParser
import AuthStage
import Foundation
import Gateway
import GatewayStages
import Logging
import Metrics
import NIOCore
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
        subcommands: [Run.self, Validate.self, Stages.self, HashPassword.self]
    )
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

    func validate() throws {
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("unknown log level '\(logLevel)'; use trace, debug, info, notice, warning, error or critical")
        }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
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

        let group = MultiThreadedEventLoopGroup(numberOfThreads: System.coreCount)
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
            admin = try await AdminServer.start(host: host, port: port, group: group, endpoints: .init(
                metrics: { prometheus.emitToBuffer() },
                health: {
                    let chargers = runtime.connectedChargers.map { "\"\($0)\"" }.joined(separator: ",")
                    return (true, "{\"status\":\"ok\",\"sessions\":\(runtime.sessionCount),\"chargers\":[\(chargers)]}\n")
                }))
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
        let loader = PipelineLoader(registry: makeStageRegistry(), southSettings: configuration.southSettings,
                                    northSettings: configuration.northSettings, stateDirectory: configuration.stateDirectory,
                                    logger: Logger(label: "validate", factory: { _ in SwiftLogNoOpLogHandler() }))
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

