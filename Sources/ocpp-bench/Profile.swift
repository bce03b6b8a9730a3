import DevPKI
import Foundation
import NIOCore
import NIOPosix
import OCPP
import Simulators

/// `ocpp-bench --profile N`: a load-independent measure of the gateway's cost per relayed frame.
///
/// `--load authorize` (the default): one charger sends N Authorize round trips, one after the other,
/// through the gateway (ws:// south, mutual TLS north) to the development CSMS in this process.
/// `--load mix`: `--chargers C` chargers (100 unless given) each send their share of N CALLs of the
/// benchmark's charger mix (`LoadProfile.message`: MeterValues 12 of 20, StatusNotification, Authorize,
/// Heartbeat, Start/StopTransaction), one after the other per charger, all chargers at once: scenario
/// G's traffic, where the authorize load exercises none of smart_charging's, dashcam's, compressor's or
/// mqtt_tap's work. With `--callgrind` the gateway runs under `valgrind --tool=callgrind`: its counters
/// are zeroed after a warm-up and dumped after the N round trips, so the dump holds exactly 2 N relayed
/// frames (each CALL and its answer) and nothing of the start-up; instructions per frame do not depend
/// on what else the machine is doing. Without it the gateway's CPU time per frame is reported (which does).
/// Either way the gateway's kernel-side cost per frame is counted from /proc over the measured window
/// (`read`/`write`-family system calls, bytes written to disk, context switches of all its threads, user
/// and system time): fsync, rename and wake-ups cost CPU and wall time that callgrind does not show.
/// Every system call by name: attach `perf stat -e 'raw_syscalls:sys_enter,syscalls:sys_enter_*' -p <pid>`
/// from a shell during a long run (a perf or strace child started by ocpp-bench itself stalled the load).
struct ProfileRun {
    enum Load: String, Codable, Sendable {
        /// One charger, Authorize after Authorize.
        case authorize
        /// The benchmark's charger mix over many chargers (what scenario G sends).
        case mix
    }

    var roundTrips: Int
    var warmup = 300
    var pipeline: String
    var pipelineName: String
    var callgrind: Bool
    var gateway: String
    var work: String
    var out: String
    var extraConfiguration: String = ""
    var needsBroker = false
    var load: Load = .authorize
    var chargers = 1

    struct Result: Codable {
        var pipeline: String
        /// nil in files written before the load option existed: `authorize`.
        var load: Load?
        var chargers: Int?
        var frames: Int
        var instructions: Int?
        var instructionsPerFrame: Double?
        var cpuMicrosPerFrame: Double
        var callgrindFile: String?
        /// The functions with the most instructions of their own, per frame.
        var topSelf: [Symbol]?
        /// The gateway's own functions (its modules, not NIO's or the runtime's) with the most instructions
        /// including what they call, per frame.
        var topInclusive: [Symbol]?
        /// The gateway's kernel-side cost per frame, from /proc over the measured window.
        var system: SystemCounters?

        /// The key of its file and of its row: `full`, `full-mix`.
        var name: String { (load ?? .authorize) == .authorize ? pipeline : "\(pipeline)-\((load ?? .authorize).rawValue)" }
    }

    struct Symbol: Codable {
        var name: String
        var instructionsPerFrame: Double
        var share: Double
    }

    /// Per relayed frame: `read`-family and `write`-family system calls (all threads, /proc/<pid>/io
    /// `syscr`/`syscw`), bytes the gateway caused to be written to disk (`write_bytes`), and context
    /// switches of all its threads (voluntary: it slept, e.g. a thread woken per message).
    struct SystemCounters: Codable {
        var readCallsPerFrame: Double
        var writeCallsPerFrame: Double
        var diskBytesWrittenPerFrame: Double
        var contextSwitchesPerFrame: Double
        var userMicrosPerFrame: Double
        var systemMicrosPerFrame: Double
    }

    func run() async throws -> Result {
        let bench = try await BenchStart.prepare(work: work, chargers: load == .authorize ? 1 : chargers)
        let (work, pki, chargerIds, csms, csmsPort) = (bench.work, bench.pki, bench.chargerIds, bench.csms, bench.csmsPort)
        var broker: MosquittoBroker?
        var extra = extraConfiguration
        if needsBroker {
            let started = try MosquittoBroker(work: work)
            try await started.start()
            broker = started
            extra += "mqtt: { url: \"mqtt://127.0.0.1:\(started.port)\", client_id: bench, topic_prefix: ocpp }\n"
        }
        let dumpFile = work + "/callgrind.out"
        let prefix = callgrind ? ["/usr/bin/valgrind", "--tool=callgrind", "--callgrind-out-file=\(dumpFile)"] : []
        let binary = callgrind ? try Self.valgrindReady(self.gateway, work: work) : self.gateway
        let gateway = try GatewayProcess(binary: binary, work: work, name: "P", csmsPort: csmsPort, pki: pki,
                                         chargers: chargerIds, pipeline: pipeline, extraConfiguration: extra, prefix: prefix)
        if callgrind {
            var environment = ProcessInfo.processInfo.environment
            environment["LD_PRELOAD"] = try Self.sigsuspendShim(work: work)
            gateway.process.environment = environment
        }
        try gateway.process.run()
        let deadline = Date().addingTimeInterval(callgrind ? 300 : 30)
        while (try? await waitForPort(gateway.port, seconds: 1)) == nil {
            guard gateway.process.isRunning, Date() < deadline else {
                throw BenchError("the gateway did not start; see \(work)/gateway-P/gateway.log")
            }
        }
        defer {
            gateway.stop()
            broker?.stop()
        }
        let timeout: TimeAmount = .seconds(callgrind ? 120 : 60)
        var peers: [OCPPPeer] = []
        for id in chargerIds {
            let peer = try await connect(.plain(url: "ws://127.0.0.1:\(gateway.port)/ocpp/\(id)", password: "bench-\(id)"),
                                         chargerId: id, group: MultiThreadedEventLoopGroup.singleton)
            _ = try await peer.call("BootNotification", LoadProfile.bootNotification, timeout: timeout).get()
            peers.append(peer)
        }
        // Per charger: the mix's CALLs are numbered on, warm-up and measured window alike.
        let perCharger = load == .authorize ? roundTrips : max(1, roundTrips / peers.count)
        let warmupPerCharger = load == .authorize ? warmup : 20  // one whole cycle of the mix each
        log("profile (\(pipelineName), \(load.rawValue), \(peers.count) chargers): \(warmupPerCharger * peers.count) warm-up round trips")
        try await Self.send(peers, load: load, from: 0, count: warmupPerCharger, timeout: timeout)
        // Let the gateway's own start-up work (boot follow-ups of the stages, timers) settle.
        try await Task.sleep(for: .seconds(callgrind ? 5 : 1))
        let pid = gateway.process.processIdentifier
        if callgrind { try control(["-z", "\(pid)"]) }
        let stats = ProcessStats(pid: pid)
        let cpuBefore = stats.cpuSeconds
        let countersBefore = KernelCounters(pid: pid)
        log("profile (\(pipelineName), \(load.rawValue)): \(perCharger * peers.count) round trips")
        try await Self.send(peers, load: load, from: warmupPerCharger, count: perCharger, timeout: timeout)
        let countersAfter = KernelCounters(pid: pid)
        let cpu = stats.cpuSeconds - cpuBefore
        let frames = perCharger * peers.count * 2
        var instructions: Int?
        var dump: String?
        if callgrind {
            try? FileManager.default.removeItem(atPath: dumpFile + ".1")
            try control(["-d", "\(pid)"])
            // callgrind writes `<file>.1` for the first dump on request.
            let deadline = Date().addingTimeInterval(60)
            while Date() < deadline, !FileManager.default.fileExists(atPath: dumpFile + ".1") { try await Task.sleep(for: .milliseconds(200)) }
            try await Task.sleep(for: .seconds(1))
            dump = dumpFile + ".1"
            instructions = try Self.totalInstructions(in: dump!)
        }
        for peer in peers { peer.close() }
        await csms.stop()
        var result = Result(pipeline: pipelineName, load: load, chargers: peers.count, frames: frames, instructions: instructions,
                            instructionsPerFrame: instructions.map { Double($0) / Double(frames) },
                            cpuMicrosPerFrame: cpu * 1e6 / Double(frames), callgrindFile: dump)
        if let countersBefore, let countersAfter {
            result.system = countersAfter.perFrame(since: countersBefore, frames: frames)
        }
        if let dump, let instructions {
            let profile = try CallgrindProfile(file: dump)
            func symbols(_ costs: [(String, Int)]) -> [Symbol] {
                let names = demangle(costs.map(\.0))
                return zip(names, costs).map { Symbol(name: $0, instructionsPerFrame: Double($1.1) / Double(frames),
                                                      share: Double($1.1) / Double(instructions)) }
            }
            result.topSelf = symbols(profile.topSelf(10))
            result.topInclusive = symbols(profile.topInclusive(10, where: CallgrindProfile.isGatewayCode))
        }
        return result
    }

    /// `count` CALLs per charger, numbered from `first` in the mix; the chargers run at once, each one
    /// CALL after the other (a closed loop, like the saturation run).
    static func send(_ peers: [OCPPPeer], load: Load, from first: Int, count: Int, timeout: TimeAmount) async throws {
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            for peer in peers {
                tasks.addTask {
                    for n in first..<(first + count) {
                        let (action, payload) = load == .authorize ? ("Authorize", ["idTag": "04A2B3C4D5E6F7"])
                            : LoadProfile.message(n, chargerId: peer.name)
                        _ = try await peer.call(action, payload, timeout: timeout).get()
                    }
                }
            }
            try await tasks.waitForAll()
        }
    }

    /// Human names for mangled Swift symbols (`swift demangle --simplified`); others unchanged.
    func demangle(_ names: [String]) -> [String] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["swift", "demangle", "--simplified", "--compact"]
        let input = Pipe(), output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return names }
        input.fileHandleForWriting.write(Data(names.joined(separator: "\n").utf8 + [0x0A]))
        try? input.fileHandleForWriting.close()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        return lines.count >= names.count ? Array(lines.prefix(names.count)) : names
    }

    /// valgrind 3.19 (Debian 12) cannot read the DWARF 5 the Swift 6 toolchain writes ("unhandled dwarf2
    /// abbrev form code 0x25 … I can't recover"): profile a copy without debug sections. Function names
    /// stay (they come from the symbol table), line numbers go.
    static func valgrindReady(_ binary: String, work: String) throws -> String {
        let copy = work + "/ocpp-gateway.nodebug"
        try run("/usr/bin/objcopy", ["--strip-debug", binary, copy])
        return copy
    }

    /// valgrind 3.19 writes to the mask `sigsuspend` is given and dies (SIGSEGV inside valgrind) when it
    /// is read-only, which is what libdispatch passes while the main thread parks; this preloaded
    /// `sigsuspend` hands it a copy on the stack. Compiled here so the profile needs nothing but a C compiler.
    static func sigsuspendShim(work: String) throws -> String {
        let source = work + "/sigsuspend-shim.c", library = work + "/sigsuspend-shim.so"
        try """
            #define _GNU_SOURCE
            #include <signal.h>
            #include <dlfcn.h>
            int sigsuspend(const sigset_t *mask) {
                static int (*real)(const sigset_t *);
                if (!real) real = (int (*)(const sigset_t *))dlsym(RTLD_NEXT, "sigsuspend");
                sigset_t copy = *mask;
                return real(&copy);
            }

            """.write(toFile: source, atomically: true, encoding: .utf8)
        try run("/usr/bin/cc", ["-shared", "-fPIC", "-O2", "-o", library, source, "-ldl"])
        return library
    }

    private static func run(_ executable: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw BenchError("\(executable) \(arguments.joined(separator: " ")) failed") }
    }

    private func control(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/callgrind_control")
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw BenchError("callgrind_control \(arguments.joined(separator: " ")) failed") }
    }

    /// The `summary:` (or `totals:`) line of a callgrind dump: instructions executed (Ir).
    static func totalInstructions(in file: String) throws -> Int {
        let text = try String(contentsOfFile: file, encoding: .utf8)
        for line in text.split(separator: "\n").reversed() where line.hasPrefix("summary:") || line.hasPrefix("totals:") {
            if let value = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) { return value }
        }
        throw BenchError("no summary line in \(file)")
    }
}

/// A process's kernel-side counters from /proc, summed over its threads.
struct KernelCounters {
    var readCalls: Int
    var writeCalls: Int
    var diskBytesWritten: Int
    var contextSwitches: Int
    var userTicks: Int
    var systemTicks: Int

    /// nil when /proc cannot be read (another user's process, a platform without /proc).
    init?(pid: Int32) {
        guard let io = try? String(contentsOfFile: "/proc/\(pid)/io", encoding: .utf8),
              let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return nil }
        var values: [Substring: Int] = [:]
        for line in io.split(separator: "\n") {
            let parts = line.split(separator: ":")
            if parts.count == 2, let value = Int(parts[1].trimmingCharacters(in: .whitespaces)) { values[parts[0]] = value }
        }
        readCalls = values["syscr"] ?? 0
        writeCalls = values["syscw"] ?? 0
        diskBytesWritten = values["write_bytes"] ?? 0
        let fields = stat.split(separator: ")").last?.split(separator: " ") ?? []
        userTicks = fields.count > 12 ? Int(fields[11]) ?? 0 : 0
        systemTicks = fields.count > 12 ? Int(fields[12]) ?? 0 : 0
        var switches = 0
        for task in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/task")) ?? [] {
            guard let status = try? String(contentsOfFile: "/proc/\(pid)/task/\(task)/status", encoding: .utf8) else { continue }
            for line in status.split(separator: "\n") where line.hasPrefix("voluntary_ctxt_switches:") || line.hasPrefix("nonvoluntary_ctxt_switches:") {
                switches += line.split(separator: ":").last.flatMap { Int($0.trimmingCharacters(in: .whitespaces)) } ?? 0
            }
        }
        contextSwitches = switches
    }

    /// The difference since `before`, per frame. Threads that ended in between take their switches with them.
    func perFrame(since before: KernelCounters, frames: Int) -> ProfileRun.SystemCounters {
        let n = Double(max(1, frames))
        let tick = 1e6 / Double(sysconf(Int32(_SC_CLK_TCK)))
        return ProfileRun.SystemCounters(
            readCallsPerFrame: Double(readCalls - before.readCalls) / n, writeCallsPerFrame: Double(writeCalls - before.writeCalls) / n,
            diskBytesWrittenPerFrame: Double(diskBytesWritten - before.diskBytesWritten) / n,
            contextSwitchesPerFrame: Double(max(0, contextSwitches - before.contextSwitches)) / n,
            userMicrosPerFrame: Double(userTicks - before.userTicks) * tick / n,
            systemMicrosPerFrame: Double(systemTicks - before.systemTicks) * tick / n)
    }
}

extension Pipelines {
    /// Every stage a site might run at once: the default pipeline (firewall, auth, certs) plus smart
    /// charging, the health channel with compression, and the dashcam. The firewall's limits are raised
    /// as in `full` so it inspects every frame but refuses none.
    static let everything = full + """

          - id: limits
            type: smart_charging
          - id: compress
            type: compressor
          - id: telemetry
            type: mqtt_tap
          - id: recorder
            type: dashcam
        """

    /// A pipeline by its name on the command line.
    static func named(_ name: String) throws -> (yaml: String, needsBroker: Bool) {
        switch name {
        case "minimal": (minimal, false)
        case "default": (full, false)
        case "full": (everything, true)
        default: throw BenchError("unknown pipeline '\(name)': minimal, default or full")
        }
    }
}

/// A callgrind dump (`events: Ir`), summed per function: its own instructions, and with what it calls
/// (from the `calls=` lines; a function that recurses counts its inner calls again, so the gateway's own
/// functions are listed, not NIO's recursive pipeline plumbing).
struct CallgrindProfile {
    private(set) var selfCost: [String: Int] = [:]
    private(set) var inclusiveCost: [String: Int] = [:]

    init(file: String) throws {
        let text = try String(contentsOfFile: file, encoding: .utf8)
        var names: [Substring: Substring] = [:]
        var function: Substring = ""
        var callee: Substring = ""
        var pendingCall = false
        func resolve(_ value: Substring) -> Substring {
            // "(id) name" defines a compressed name, "(id)" refers to one.
            guard value.first == "(", let close = value.firstIndex(of: ")") else { return value }
            let id = value[value.index(after: value.startIndex)..<close]
            let rest = value[value.index(after: close)...]
            if rest.first == " " { names[id] = rest.dropFirst() }
            return names[id] ?? value
        }
        for line in text.split(separator: "\n") {
            guard let first = line.first else { continue }
            if first.isNumber || first == "+" || first == "-" || first == "*" {
                let fields = line.split(separator: " ")
                let cost = fields.count > 1 ? Int(fields[1]) ?? 0 : 0
                if pendingCall {
                    // The line after `calls=`: the callee's inclusive cost from this call site.
                    if callee != function { inclusiveCost[String(function), default: 0] += cost }
                    pendingCall = false
                } else {
                    selfCost[String(function), default: 0] += cost
                    inclusiveCost[String(function), default: 0] += cost
                }
                continue
            }
            guard let equals = line.firstIndex(of: "=") else { continue }
            let key = line[..<equals], value = line[line.index(after: equals)...]
            switch key {
            case "fn": function = resolve(value)
            case "cfn": callee = resolve(value)
            case "calls": pendingCall = true
            default: break
            }
        }
    }

    func topSelf(_ count: Int) -> [(String, Int)] {
        Array(selfCost.sorted { $0.value > $1.value }.prefix(count)).map { ($0.key, $0.value) }
    }

    func topInclusive(_ count: Int, where include: (String) -> Bool) -> [(String, Int)] {
        Array(inclusiveCost.filter { include($0.key) }.sorted { $0.value > $1.value }.prefix(count)).map { ($0.key, $0.value) }
    }

    /// Swift symbols of the gateway's own modules (Router, OCPP, Transport, Gateway, the stages…).
    static func isGatewayCode(_ mangled: String) -> Bool {
        // Thunks (protocol witnesses, partial applications) would list their function twice.
        guard mangled.hasPrefix("$s"), !mangled.hasSuffix("TW"), !mangled.hasSuffix("TA"), !mangled.hasSuffix("Tq") else { return false }
        let rest = mangled.dropFirst(2)
        let digits = rest.prefix { $0.isNumber }
        guard let length = Int(digits) else { return false }
        let module = String(rest.dropFirst(digits.count).prefix(length))
        let own: Set<String> = ["Router", "OCPP", "Transport", "Gateway", "GatewayStages", "StageKit", "HealthChannel",
                                "TelemetryCompression", "ChargingSchedules", "Outbox", "North201", "ocpp_gateway"]
        return own.contains(module) || module.hasSuffix("Stage")
    }
}
