import ArgumentParser
import DevPKI
import Foundation
import Histogram
import NIOCore
import NIOPosix
import NIOSSL
import OCPP
import Simulators
import Synchronization
import Transport

/// `make bench`: the same load through four paths, in one run so the ratios are fair —
/// (A) charger → CSMS directly, (B) through nginx as a ws → wss mTLS proxy, (C) through the gateway
/// with a minimal pipeline, (D) through the gateway with the full default pipeline.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ocpp-bench", abstract: "Latency, throughput, memory and scale, side by side with nginx.")

    @Flag(name: .long, help: "The long version (minutes per scenario).") var full = false
    @Flag(name: .long, help: "A few seconds per scenario, to check the harness itself.") var smoke = false
    @Option(name: .long, help: "Connect/disconnect cycles of the soak (S).") var soakCycles = 10_000
    @Flag(name: .long, help: "Run the soak (S) with the minimal pipeline (auth only), to tell the stages' share from the core's.")
    var soakMinimal = false
    @Option(name: .long, help: "Pause the soak (S) for 40 s after this many cycles, to tell memory held for a while from memory kept.")
    var soakPauseAt: Int?
    @Flag(name: .long, help: "Only the outbox benchmark (SQLite, no network).") var outbox = false
    @Option(name: .long, help: "Where the gateway binary is.") var gateway = ".build/release/ocpp-gateway"
    @Option(name: .long, help: "Results file.") var out = "bench/results/latest.json"
    @Option(name: .long, help: "Markdown report.") var report = "docs/benchmarks.md"
    @Option(name: .long, help: "Scratch folder (PKI, configurations, logs).") var work = ".build-bench/work"
    @Option(name: .long, help: "Which scenarios to run, e.g. ABCDGEFRS or C (for profiling one).") var scenarios = "ABCDGEFRS"
    @Flag(name: .long, help: "Scenario R against a gateway from before 'max_replay_ids' existed (its replay table had no cap).")
    var replayLegacy = false
    @Option(name: .long, help: "Scenario R: CALLs per measured window.")
    var replayWindow = 2_000
    @Option(name: .long, help: "Scenario R: ids sent between the two measured windows.") var replayFill = 22_000
    @Flag(name: .long, help: "Only the telemetry compression benchmark (no network).") var compressionOnly = false
    @Option(name: .long, help: "Pin the proxy under test (nginx, the gateway) to this CPU with taskset; run ocpp-bench itself on the others (`taskset -c 1 ocpp-bench --proxy-cpu 0`, as `make bench` does).")
    var proxyCPU: Int?
    @Option(name: .long, help: "Only the profile: this many round trips (CALLs) through the gateway, Authorize on one charger or the mix (see --load, --callgrind).")
    var profile: Int?
    @Option(name: .long, help: "The profile's pipeline: minimal (auth), default (ids, auth, certs) or full (… smart_charging, compressor, mqtt_tap, dashcam).")
    var pipeline = "default"
    @Flag(name: .long, help: "Run the profiled gateway under valgrind --tool=callgrind and report instructions per relayed frame.")
    var callgrind = false
    @Flag(name: .long, help: "Only the memory figures of one gateway (--pipeline): idle RSS and KiB per charger with the scale step's chargers connected, with a breakdown from /proc/<pid>/smaps.")
    var memoryOnly = false
    @Option(name: .long, help: "With --memory-only: before the scale step, this many seconds of closed-loop CALLs from the latency chargers (as the full run does), so what load leaves behind counts too.")
    var memoryWarmup: Double = 0
    @Option(name: .long, help: "With --memory-only: run the gateway under this command, e.g. \"heaptrack -o /tmp/gw\" (split at spaces; after taskset).")
    var memoryPrefix: String?
    @Option(name: .long, help: "With --memory-only: keep the chargers connected this many seconds after the measurement (to inspect the gateway).")
    var memoryHold: Double = 0
    @Option(name: .long, help: "With --memory-only: chargers to connect (default: the plan's scale step, 1000).") var memoryChargers: Int?
    @Flag(name: .long, help: "Only print docs/benchmarks.md's Profile section from the profile files next to --out.")
    var profileReport = false
    @Option(name: .long, help: "The profile's load: authorize (one charger, Authorize after Authorize) or mix (the benchmark's charger mix, as in G, over --chargers chargers).")
    var load = "authorize"
    @Option(name: .long, help: "The profile's chargers with --load mix (default 100, as many as scenario G drives).")
    var chargers = 100

    func run() async throws {
        if outbox { return try OutboxBench.write(out: (out as NSString).deletingLastPathComponent + "/outbox.json") }
        if profileReport { return print(Report.profileSection(out: out)) }
        if let profile {
            let (yaml, needsBroker) = try Pipelines.named(pipeline)
            guard let load = ProfileRun.Load(rawValue: load) else { throw BenchError("unknown load '\(load)': authorize or mix") }
            guard chargers >= 1 else { throw BenchError("--chargers must be at least 1") }
            let result = try await ProfileRun(roundTrips: profile, pipeline: yaml, pipelineName: pipeline, callgrind: callgrind,
                                              gateway: gateway, work: work, out: out, needsBroker: needsBroker, load: load,
                                              chargers: chargers).run()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let json = try encoder.encode(result)
            print(String(decoding: json, as: UTF8.self))
            if callgrind {
                // Kept for the report of the next full run (docs/benchmarks.md, "Profile").
                let file = (out as NSString).deletingLastPathComponent + "/profile-\(result.name).json"
                try FileManager.default.createDirectory(atPath: (file as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                try json.write(to: URL(fileURLWithPath: file))
                log("wrote \(file)")
            }
            return
        }
        if memoryOnly {
            var plan = smoke ? Plan.smoke : full ? Plan.full : Plan.quick
            if let memoryChargers { plan.scaleChargers = max(1, memoryChargers) }
            let result = try await MemoryRun(plan: plan, pipeline: try Pipelines.named(pipeline), pipelineName: pipeline, gateway: gateway,
                                             work: work, warmupSeconds: memoryWarmup, holdSeconds: memoryHold, prefix: (proxyCPU.map { ["/usr/bin/taskset", "-c", "\($0)"] } ?? [])
                                                + (memoryPrefix?.split(separator: " ").map(String.init) ?? [])).run()
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(result), as: UTF8.self))
            return
        }
        // Telemetry compression: pure computation on generated traces, seconds.
        try CompressionBench.write(out: (out as NSString).deletingLastPathComponent + "/compression.json",
                                   markdown: (report as NSString).deletingLastPathComponent + "/compression.md")
        log("wrote compression results")
        if compressionOnly { return }
        let plan = smoke ? Plan.smoke : full ? Plan.full : Plan.quick
        let bench = try await BenchStart.prepare(work: work, chargers: plan.scaleChargers)
        let (work, pki, chargerIds, csms, csmsPort) = (bench.work, bench.pki, bench.chargerIds, bench.csms, bench.csmsPort)
        log("development CSMS on \(csmsPort)")

        var results: [ScenarioResult] = []
        // A: no proxy at all.
        let pkiFolder = pki.directory
        let caFile = pki.caCertificate
        if scenarios.contains("A") {
            results.append(try await measure("A", "direct (no proxy)", plan: plan, process: nil, chargerIds: chargerIds) { id in
                .direct(url: "wss://127.0.0.1:\(csmsPort)/ocpp/\(id)", certificate: "\(pkiFolder)/chargers/\(id)/cert.pem",
                        key: "\(pkiFolder)/chargers/\(id)/key.pem", ca: caFile)
            })
        }
        // B: nginx, ws in, wss + client certificate out.
        let pin = proxyCPU.map { ["/usr/bin/taskset", "-c", "\($0)"] } ?? []
        if let proxyCPU { log("the proxy under test runs on CPU \(proxyCPU); ocpp-bench on \(Self.ownCPUs())") }
        if scenarios.contains("B") {
            let nginx = try Nginx(work: work, csmsPort: csmsPort, pki: pki, prefix: pin)
            try nginx.start()
            let nginxPort = nginx.port
            results.append(try await measure("B", "nginx ws→wss mTLS proxy", plan: plan, process: nginx.process, chargerIds: chargerIds) { id in
                .plain(url: "ws://127.0.0.1:\(nginxPort)/ocpp/\(id)", password: nil)
            })
            nginx.stop()
        }
        // C, D and G: the gateway (G with a mosquitto broker for mqtt_tap).
        for (name, label, pipeline) in [("C", "gateway, minimal pipeline (auth)", Pipelines.minimal),
                                         ("D", "gateway, default pipeline (ids, auth, certs)", Pipelines.full),
                                         ("G", "gateway, full pipeline (+ smart_charging, compressor, mqtt_tap, dashcam)", Pipelines.everything)]
        where scenarios.contains(name) {
            var broker: MosquittoBroker?
            var extra = ""
            if name == "G" {
                let started = try MosquittoBroker(work: work)
                try await started.start()
                broker = started
                extra = "mqtt: { url: \"mqtt://127.0.0.1:\(started.port)\", client_id: bench, topic_prefix: ocpp }\n"
            }
            let gateway = try GatewayProcess(binary: self.gateway, work: work, name: name, csmsPort: csmsPort, pki: pki,
                                             chargers: chargerIds, pipeline: pipeline, extraConfiguration: extra, prefix: pin)
            try await gateway.start()
            let gatewayPort = gateway.port
            results.append(try await measure(name, label, plan: plan, process: gateway.process, chargerIds: chargerIds) { id in
                .plain(url: "ws://127.0.0.1:\(gatewayPort)/ocpp/\(id)", password: "bench-\(id)")
            })
            gateway.stop()
            broker?.stop()
        }
        // E: the firewall under a flood from one source.
        var flood: FloodResult?
        if scenarios.contains("E") {
            let gateway = try GatewayProcess(binary: self.gateway, work: work, name: "E", csmsPort: csmsPort, pki: pki,
                                             chargers: chargerIds, pipeline: Pipelines.firewall, messageBudget: true)
            try await gateway.start()
            flood = try await measureFlood(gatewayPort: gateway.port, gateway: gateway.process, seconds: plan.latencySeconds / 1.5,
                                           badFramesPerSecond: 20_000, attemptsPerSecond: 500, callsPerSecond: 20_000)
            gateway.stop()
        }
        // R: the firewall's replay table as it fills (per-frame cost at ~24k ids).
        var replayTable: ReplayTableResult?
        if scenarios.contains("R") {
            let adminPort = try freePort()
            let gateway = try GatewayProcess(binary: self.gateway, work: work, name: "R", csmsPort: csmsPort, pki: pki,
                                             chargers: chargerIds, pipeline: ReplayPipeline.yaml(legacy: replayLegacy),
                                             extraConfiguration: "admin: { listen: \"127.0.0.1:\(adminPort)\" }\n")
            try await gateway.start()
            try await waitForPort(adminPort)
            replayTable = try await measureReplayTable(gatewayPort: gateway.port, adminPort: adminPort, gateway: gateway.process,
                                                       window: replayWindow, fill: replayFill)
            if let replayTable { log("R: \(String(describing: replayTable))") }
            gateway.stop()
        }
        // F: the health channel under telemetry load.
        var healthLoad: HealthLoadResult?
        if scenarios.contains("F") {
            let broker = try MosquittoBroker(work: work)
            try await broker.start()
            let gateway = try GatewayProcess(binary: self.gateway, work: work, name: "F", csmsPort: csmsPort, pki: pki,
                                             chargers: chargerIds, pipeline: Pipelines.healthChannel,
                                             extraConfiguration: "mqtt: { url: \"mqtt://127.0.0.1:\(broker.port)\", client_id: bench, topic_prefix: ocpp }\n")
            try await gateway.start()
            healthLoad = try await measureHealthLoad(gatewayPort: gateway.port, chargerIds: chargerIds, seconds: plan.latencySeconds / 1.5)
            gateway.stop()
            broker.stop()
        }
        // S: 10,000 connect/disconnect cycles; memory must stay flat.
        var soak: SoakResult?
        if scenarios.contains("S") {
            let adminPort = try freePort()
            let gateway = try GatewayProcess(binary: self.gateway, work: work, name: "S", csmsPort: csmsPort, pki: pki,
                                             chargers: chargerIds, pipeline: soakMinimal ? Pipelines.minimal : Pipelines.full,
                                             extraConfiguration: "admin: { listen: \"127.0.0.1:\(adminPort)\" }\n")
            try await gateway.start()
            soak = await measureSoak(gatewayPort: gateway.port, gateway: gateway.process, chargerIds: chargerIds,
                                     cycles: smoke ? 500 : soakCycles, pauseAt: soakPauseAt)
            // Every charger has left: the gateway must say so (a session it still counts is one it still holds).
            try? await Task.sleep(for: .seconds(1))
            if let health = try? httpGet(port: adminPort, path: "/healthz"),
               let match = health.range(of: #""sessions":\d+"#, options: .regularExpression) {
                soak?.sessionsLeft = Int(health[match].split(separator: ":").last ?? "")
            }
            gateway.stop()
        }
        await csms.stop()
        try Report(results: results, flood: flood, healthLoad: healthLoad, replayTable: replayTable, soak: soak, plan: plan, out: out,
                   markdown: report, proxyCPU: proxyCPU, benchCPUs: Self.ownCPUs()).write()
        log("wrote \(out) and \(report)")
    }
}

extension Bench {
    /// The CPUs this process may run on (its affinity, as `taskset` set it).
    static func ownCPUs() -> String {
        let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
        return status.split(separator: "\n").first { $0.hasPrefix("Cpus_allowed_list:") }?
            .split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "?"
    }
}

func log(_ text: String) {
    FileHandle.standardError.write(Data("[bench] \(text)\n".utf8))
}
