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

/// How big each part of a run is.
struct Plan: Sendable {
    var latencyChargers: Int
    var ratePerCharger: Double
    var latencySeconds: Double
    var saturationSeconds: Double
    var scaleChargers: Int
    /// The latency window is cut into this many runs; p99 and p99.9 are reported per run and as their median.
    var latencyRuns = 3

    static let quick = Plan(latencyChargers: 50, ratePerCharger: 10, latencySeconds: 15, saturationSeconds: 10, scaleChargers: 1000)
    static let smoke = Plan(latencyChargers: 5, ratePerCharger: 10, latencySeconds: 3, saturationSeconds: 2, scaleChargers: 50)
    static let full = Plan(latencyChargers: 100, ratePerCharger: 10, latencySeconds: 120, saturationSeconds: 60, scaleChargers: 1000)
}

/// How a simulated charger reaches the CSMS in a scenario.
enum Target: Sendable {
    /// wss:// with the charger's own client certificate: what the charger would do if it could.
    case direct(url: String, certificate: String, key: String, ca: String)
    /// ws://, through a proxy, with Basic auth when a password is given.
    case plain(url: String, password: String?)
}

func connect(_ target: Target, chargerId: String, group: any EventLoopGroup) async throws -> OCPPPeer {
    let options: WebSocketClientOptions
    switch target {
    case .direct(let url, let certificate, let key, let ca):
        options = WebSocketClientOptions(url: URL(string: url)!, tls: try NorthTLS.clientConfiguration(caFile: ca, certificateFile: certificate, keyFile: key),
                                         serverName: "localhost", connectTimeout: .seconds(30))
    case .plain(let url, let password):
        options = WebSocketClientOptions(url: URL(string: url)!, basicAuth: password.map { (chargerId, $0) }, connectTimeout: .seconds(30))
    }
    let connection = try await WebSocketClient.connect(options, on: group.next()).get()
    return OCPPPeer(connection: connection, name: chargerId)
}

/// Round-trip times in microseconds, and how many CALLs completed.
final class Recorder: Sendable {
    let histogram = Mutex(Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three))
    let completed = Mutex(0)
    let failed = Mutex(0)

    func record(since start: NIODeadline) {
        let micros = UInt64(max(1, (NIODeadline.now() - start).nanoseconds / 1000))
        histogram.withLock { _ = $0.record(micros) }
        completed.withLock { $0 += 1 }
    }
}

/// Drives chargers with CALLs: paced (`interval`) or as fast as answers come (closed loop).
func drive(_ peers: [OCPPPeer], interval: TimeAmount?, seconds: Double, recorder: Recorder) async {
    let deadline = NIODeadline.now() + .milliseconds(Int64(seconds * 1000))
    for (index, peer) in peers.enumerated() {
        // Spread the paced chargers over the interval so they do not all fire at once.
        let offset = interval.map { TimeAmount.nanoseconds($0.nanoseconds * Int64(index) / Int64(max(1, peers.count))) } ?? .zero
        peer.eventLoop.scheduleTask(in: offset) { step(peer, n: 0, deadline: deadline, interval: interval, recorder: recorder) }
    }
    try? await Task.sleep(for: .milliseconds(Int64(seconds * 1000) + 1500))
}

private func step(_ peer: OCPPPeer, n: Int, deadline: NIODeadline, interval: TimeAmount?, recorder: Recorder) {
    let start = NIODeadline.now()
    guard start < deadline else { return }
    let (action, payload) = LoadProfile.message(n, chargerId: peer.name)
    peer.call(action, payload, timeout: .seconds(10)).whenComplete { result in
        switch result {
        case .success: recorder.record(since: start)
        case .failure: recorder.failed.withLock { $0 += 1 }
        }
        guard let interval else {
            step(peer, n: n + 1, deadline: deadline, interval: nil, recorder: recorder)
            return
        }
        let next = start + interval
        let wait = next - NIODeadline.now()
        peer.eventLoop.scheduleTask(in: wait > .zero ? wait : .zero) {
            step(peer, n: n + 1, deadline: deadline, interval: interval, recorder: recorder)
        }
    }
}

/// CPU time and memory of a process (and its children, for nginx's workers), from /proc.
struct ProcessStats {
    let pid: Int32

    private func family() -> [Int32] {
        var pids = [pid]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        for entry in entries {
            guard let child = Int32(entry), let stat = try? String(contentsOfFile: "/proc/\(entry)/stat", encoding: .utf8) else { continue }
            let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
            if fields.count > 2, Int32(fields[1]) == pid { pids.append(child) }
        }
        return pids
    }

    /// User + system CPU seconds.
    var cpuSeconds: Double {
        family().reduce(0) { total, pid in
            guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
                  let fields = stat.split(separator: ")").last?.split(separator: " "), fields.count > 13,
                  let user = Double(fields[11]), let system = Double(fields[12])
            else { return total }
            return total + (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }
    }

    /// Resident memory in KiB.
    var rssKiB: Int {
        family().reduce(0) { total, pid in
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
                  let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
                  let value = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) })
            else { return total }
            return total + value
        }
    }
}

/// Percentiles of one latency run.
struct LatencyRun: Codable {
    var p50Micros: UInt64
    var p99Micros: UInt64
    var p999Micros: UInt64
}

struct ScenarioResult: Codable {
    var name: String
    var label: String
    /// Medians of the runs' percentiles (`latencyRuns`).
    var p50Micros: UInt64
    var p99Micros: UInt64
    var p999Micros: UInt64
    var latencyRuns: [LatencyRun]?
    var latencyCalls: Int
    var failedCalls: Int
    var framesPerSecond: Double
    var cpuSecondsPer100kFrames: Double?
    var rssIdleKiB: Int?
    var rssLoadedKiB: Int?
    var connectSeconds: Double
    var connectedChargers: Int
    /// All chargers of the connect storm dropped at once and came back at once: until the last upgrade.
    var reconnectSeconds: Double?
    var reconnectedChargers: Int?
    /// The proxy's CPU seconds per second of the saturation window (1.0: one core busy).
    var cpuUtilization: Double?
    /// Frames relayed per CPU second of the proxy: its frames/s on one core.
    var framesPerCoreSecond: Double?
    /// (percentile, microseconds) for the CDF picture.
    var cdf: [[Double]]
}

func measure(_ name: String, _ label: String, plan: Plan, process: Process?, chargerIds: [String],
             target: @escaping @Sendable (String) -> Target) async throws -> ScenarioResult {
    let group = MultiThreadedEventLoopGroup.singleton
    let stats = process.map { ProcessStats(pid: $0.processIdentifier) }
    let rssIdle = stats?.rssKiB
    log("\(name): \(label): latency with \(plan.latencyChargers) chargers at \(plan.ratePerCharger) CALL/s each")

    var peers: [OCPPPeer] = []
    for id in chargerIds.prefix(plan.latencyChargers) {
        let peer = try await connect(target(id), chargerId: id, group: group)
        _ = try await peer.call("BootNotification", LoadProfile.bootNotification).get()
        peers.append(peer)
    }
    // Shorter runs, three times: the median of their p99 and p99.9 is steadier than one long run's.
    var histogram = Histogram<UInt64>(highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: .three)
    var runs: [LatencyRun] = []
    var pacedCompleted = 0
    var pacedFailed = 0
    for run in 1...max(1, plan.latencyRuns) {
        let paced = Recorder()
        await drive(peers, interval: .nanoseconds(Int64(1e9 / plan.ratePerCharger)), seconds: plan.latencySeconds / Double(max(1, plan.latencyRuns)),
                    recorder: paced)
        let runHistogram = paced.histogram.withLock { $0 }
        runs.append(LatencyRun(p50Micros: runHistogram.valueAtPercentile(50), p99Micros: runHistogram.valueAtPercentile(99),
                               p999Micros: runHistogram.valueAtPercentile(99.9)))
        histogram.add(runHistogram)
        pacedCompleted += paced.completed.withLock { $0 }
        pacedFailed += paced.failed.withLock { $0 }
        log("\(name): latency run \(run): p99 \(runs.last!.p99Micros) µs, p99.9 \(runs.last!.p999Micros) µs")
    }

    log("\(name): saturation, closed loop, \(plan.saturationSeconds) s")
    let saturated = Recorder()
    let cpuBefore = stats?.cpuSeconds
    let started = Date()
    await drive(peers, interval: nil, seconds: plan.saturationSeconds, recorder: saturated)
    let elapsed = min(Date().timeIntervalSince(started), plan.saturationSeconds)
    let cpuAfter = stats?.cpuSeconds
    // Every CALL is two frames through the proxy: the CALL and its answer.
    let frames = Double(saturated.completed.withLock { $0 }) * 2
    for peer in peers { peer.close() }
    try? await Task.sleep(for: .milliseconds(500))

    log("\(name): \(plan.scaleChargers) chargers connecting at once")
    let connectStart = Date()
    let connected = await connectAll(chargerIds.prefix(plan.scaleChargers), group: group, target: target)
    let connectSeconds = Date().timeIntervalSince(connectStart)
    try? await Task.sleep(for: .seconds(1))
    let rssLoaded = stats?.rssKiB
    for peer in connected { peer.close() }
    // Give the proxy a moment to see every link go (a blip: they come back right away).
    try? await Task.sleep(for: .milliseconds(500))

    log("\(name): the \(connected.count) chargers all come back at once")
    let reconnectStart = Date()
    let reconnected = await connectAll(connected.map(\.name), group: group, target: target)
    let reconnectSeconds = Date().timeIntervalSince(reconnectStart)
    for peer in reconnected { peer.close() }
    try? await Task.sleep(for: .seconds(1))

    let percentiles: [Double] = [0, 10, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 99.95, 99.99, 100]
    func median(_ values: [UInt64]) -> UInt64 { values.sorted()[values.count / 2] }
    let cpu = cpuBefore.flatMap { before in cpuAfter.map { $0 - before } }
    return ScenarioResult(
        name: name, label: label,
        p50Micros: median(runs.map(\.p50Micros)), p99Micros: median(runs.map(\.p99Micros)),
        p999Micros: median(runs.map(\.p999Micros)), latencyRuns: runs, latencyCalls: pacedCompleted,
        failedCalls: pacedFailed + saturated.failed.withLock { $0 },
        framesPerSecond: frames / max(elapsed, 0.001),
        cpuSecondsPer100kFrames: cpu.map { $0 / max(frames, 1) * 100_000 },
        rssIdleKiB: rssIdle, rssLoadedKiB: rssLoaded,
        connectSeconds: connectSeconds, connectedChargers: connected.count,
        reconnectSeconds: reconnectSeconds, reconnectedChargers: reconnected.count,
        cpuUtilization: cpu.map { $0 / max(elapsed, 0.001) },
        framesPerCoreSecond: cpu.map { frames / max($0, 0.001) },
        cdf: percentiles.map { [$0, Double(histogram.valueAtPercentile($0))] })
}

/// A legitimate charger's Authorize round trips, one every 100 ms for `seconds` (scenarios E and F).
func authorizeLatency(_ peer: OCPPPeer, seconds: Double) async -> Recorder {
    let recorder = Recorder()
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        let start = NIODeadline.now()
        do {
            _ = try await peer.call("Authorize", ["idTag": "04A2B3C4D5E6F7"], timeout: .seconds(5)).get()
            recorder.record(since: start)
        } catch {
            recorder.failed.withLock { $0 += 1 }
        }
        try? await Task.sleep(for: .milliseconds(100))
    }
    return recorder
}

extension ProcessStats {
    /// Threads of the process (not of its children).
    var threads: Int { ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? []).count }

    /// Resident KiB per kind of mapping, from /proc/<pid>/smaps: the binary, each shared library (by file name),
    /// `[heap]` (brk), `[stack]` and `anonymous` (mmap'ed: malloc arenas, thread stacks, NIO's buffers).
    var residentByMapping: [String: Int] {
        // Read to the end: /proc reports a size of 0, and a read sized by it stops after the first pages.
        guard let data = FileHandle(forReadingAtPath: "/proc/\(pid)/smaps")?.readDataToEndOfFile() else { return [:] }
        let smaps = String(decoding: data, as: UTF8.self)
        var result: [String: Int] = [:]
        var current = "anonymous"
        for line in smaps.split(separator: "\n") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let first = fields.first else { continue }
            if first.contains("-"), fields.count >= 5, first.first?.isHexDigit == true {
                // A mapping's header: address perms offset dev inode [path].
                if fields.count >= 6 {
                    let path = fields[5...].joined(separator: " ")
                    current = path.hasPrefix("/") ? String(path.split(separator: "/").last ?? "?") : path
                } else {
                    current = "anonymous"
                }
            } else if first == "Rss:", fields.count >= 2, let kib = Int(fields[1]) {
                result[current, default: 0] += kib
            }
        }
        return result.filter { $0.value > 0 }
    }
}

/// `ocpp-bench --memory-only`: the memory figures of one gateway without the rest of the run.
struct MemoryResult: Codable {
    var pipeline: String
    var chargers: Int
    var connectedChargers: Int
    var rssIdleKiB: Int
    var rssLoadedKiB: Int
    var kibPerCharger: Double
    var threadsIdle: Int
    var threadsLoaded: Int
    var warmupSeconds: Double
    /// Resident KiB per mapping (see `ProcessStats.residentByMapping`), idle and loaded.
    var idleByMapping: [String: Int]
    var loadedByMapping: [String: Int]
}

struct MemoryRun {
    let plan: Plan
    let pipeline: (yaml: String, needsBroker: Bool)
    let pipelineName: String
    let gateway: String
    let work: String
    let warmupSeconds: Double
    var holdSeconds: Double = 0
    let prefix: [String]

    /// The process below `pid` (itself included) running `binary`, found through /proc.
    static func descendant(of pid: Int32, named binary: String) -> Int32? {
        let name = String(binary.split(separator: "/").last ?? "")
        var queue = [pid]
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc"))?.compactMap { Int32($0) } ?? []
        while let next = queue.popLast() {
            if let exe = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(next)/exe"), exe.hasSuffix("/" + name) { return next }
            for child in entries {
                guard let stat = try? String(contentsOfFile: "/proc/\(child)/stat", encoding: .utf8),
                      let fields = stat.split(separator: ")").last?.split(separator: " "), fields.count > 2, Int32(fields[1]) == next
                else { continue }
                queue.append(child)
            }
        }
        return nil
    }

    func run() async throws -> MemoryResult {
        let bench = try await BenchStart.prepare(work: work, chargers: plan.scaleChargers)
        let (work, pki, chargerIds, csms, csmsPort) = (bench.work, bench.pki, bench.chargerIds, bench.csms, bench.csmsPort)
        var broker: MosquittoBroker?
        var extra = ""
        if pipeline.needsBroker {
            let started = try MosquittoBroker(work: work)
            try await started.start()
            broker = started
            extra = "mqtt: { url: \"mqtt://127.0.0.1:\(started.port)\", client_id: bench, topic_prefix: ocpp }\n"
        }
        let process = try GatewayProcess(binary: gateway, work: work, name: "M", csmsPort: csmsPort, pki: pki, chargers: chargerIds,
                                         pipeline: pipeline.yaml, extraConfiguration: extra, prefix: prefix)
        try await process.start()
        defer {
            // Under a wrapper (heaptrack's script) the gateway itself is stopped, so the wrapper can finish its report.
            if let gateway = Self.descendant(of: process.process.processIdentifier, named: gateway) {
                kill(gateway, SIGTERM)
            } else {
                process.process.terminate()
            }
            process.process.waitUntilExit()
            broker?.stop()
        }
        let stats = ProcessStats(pid: process.process.processIdentifier)
        try? await Task.sleep(for: .seconds(1))
        let idle = stats.rssKiB
        let idleMappings = stats.residentByMapping
        let threadsIdle = stats.threads
        log("memory (\(pipelineName)): idle \(idle) KiB, \(threadsIdle) threads")
        let group = MultiThreadedEventLoopGroup.singleton
        let port = process.port
        let target: @Sendable (String) -> Target = { id in .plain(url: "ws://127.0.0.1:\(port)/ocpp/\(id)", password: "bench-\(id)") }
        if warmupSeconds > 0 {
            var peers: [OCPPPeer] = []
            for id in chargerIds.prefix(plan.latencyChargers) {
                let peer = try await connect(target(id), chargerId: id, group: group)
                _ = try await peer.call("BootNotification", LoadProfile.bootNotification).get()
                peers.append(peer)
            }
            await drive(peers, interval: nil, seconds: warmupSeconds, recorder: Recorder())
            for peer in peers { peer.close() }
            try? await Task.sleep(for: .milliseconds(500))
        }
        let connected = await connectAll(chargerIds.prefix(plan.scaleChargers), group: group, target: target)
        try? await Task.sleep(for: .seconds(1))
        let loaded = stats.rssKiB
        let result = MemoryResult(pipeline: pipelineName, chargers: plan.scaleChargers, connectedChargers: connected.count,
                                  rssIdleKiB: idle, rssLoadedKiB: loaded,
                                  kibPerCharger: Double(loaded - idle) / Double(max(1, connected.count)),
                                  threadsIdle: threadsIdle, threadsLoaded: stats.threads, warmupSeconds: warmupSeconds,
                                  idleByMapping: idleMappings, loadedByMapping: stats.residentByMapping)
        log("memory (\(pipelineName)): \(connected.count) chargers: \(loaded) KiB, \(String(format: "%.1f", result.kibPerCharger)) KiB per charger")
        if holdSeconds > 0 {
            log("memory (\(pipelineName)): holding the chargers for \(holdSeconds) s (gateway pid \(stats.pid))")
            try? await Task.sleep(for: .milliseconds(Int64(holdSeconds * 1000)))
        }
        for peer in connected { peer.close() }
        try? await Task.sleep(for: .milliseconds(500))
        await csms.stop()
        return result
    }
}

/// What every bench run starts from: a fresh scratch folder, a development PKI with a certificate per
/// charger, and the development CSMS (mutual TLS) on a free port.
struct BenchStart {
    let work: String
    let pki: DevPKI
    let chargerIds: [String]
    let csms: DevelopmentCSMS
    let csmsPort: Int

    static func prepare(work folder: String, chargers: Int) async throws -> BenchStart {
        try? FileManager.default.removeItem(atPath: folder)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let work = URL(fileURLWithPath: folder).standardizedFileURL.path
        let pki = try DevPKI(directory: work, reuse: false)
        let chargerIds = (1...max(1, chargers)).map { String(format: "BENCH%04d", $0) }
        log("issuing \(chargerIds.count) charger certificates")
        for id in chargerIds { try pki.issueChargerCertificate(id) }
        var options = DevelopmentCSMS.Options(certificateFile: pki.serverCertificate, keyFile: pki.serverKey, clientCAFile: pki.caCertificate)
        options.port = 0
        let csms = DevelopmentCSMS(options: options, recordFrames: false)
        let csmsPort = try await csms.start(group: MultiThreadedEventLoopGroup.singleton)
        return BenchStart(work: work, pki: pki, chargerIds: chargerIds, csms: csms, csmsPort: csmsPort)
    }
}

/// Connects every charger at once (a connect storm); the ones that could not connect are left out.
func connectAll(_ ids: some Swift.Sequence<String>, group: any EventLoopGroup, target: @escaping @Sendable (String) -> Target) async -> [OCPPPeer] {
    await withTaskGroup(of: OCPPPeer?.self) { tasks in
        for id in ids {
            tasks.addTask { try? await connect(target(id), chargerId: id, group: group) }
        }
        var all: [OCPPPeer] = []
        for await peer in tasks { if let peer { all.append(peer) } }
        return all
    }
}
