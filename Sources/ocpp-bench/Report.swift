import Foundation

/// Writes the results as JSON, a Markdown page and a latency CDF picture (SVG).
struct Report {
    let results: [ScenarioResult]
    let flood: FloodResult?
    let healthLoad: HealthLoadResult?
    var replayTable: ReplayTableResult? = nil
    var soak: SoakResult? = nil
    let plan: Plan
    let out: String
    let markdown: String
    var proxyCPU: Int? = nil
    var benchCPUs: String? = nil

    /// One figure of issue 17 against its target.
    struct Target: Codable {
        var figure: String
        var target: String
        var measured: String
        var met: Bool
    }

    /// The figures the gateway is held to, from this run: CPU per frame as a ratio to nginx (B), latency
    /// against nginx's, memory, connect and reconnect storms (the default pipeline, D, unless said).
    var targets: [Target] {
        let byName = Dictionary(results.map { ($0.name, $0) }, uniquingKeysWith: { first, _ in first })
        var targets: [Target] = []
        let nginx = byName["B"]
        for (name, limit) in [("D", 1.0), ("G", 1.5)] {
            guard let gateway = byName[name], let mine = gateway.cpuSecondsPer100kFrames, let theirs = nginx?.cpuSecondsPer100kFrames, theirs > 0
            else { continue }
            let ratio = mine / theirs
            targets.append(Target(figure: "CPU per relayed frame, \(name == "D" ? "default" : "full") pipeline (\(name)) / nginx (B)",
                                  target: "≤ \(String(format: "%.1f", limit))×",
                                  measured: String(format: "%.2f× (%.2f vs %.2f CPU s per 100k frames)", ratio, mine, theirs), met: ratio <= limit))
        }
        if let gateway = byName["D"], let nginx {
            for (label, mine, theirs) in [("p99", gateway.p99Micros, nginx.p99Micros), ("p99.9", gateway.p999Micros, nginx.p999Micros)] {
                targets.append(Target(figure: "latency \(label), median of \(gateway.latencyRuns?.count ?? 1) runs (D vs B)", target: "≤ nginx",
                                      measured: "\(ms(mine)) vs \(ms(theirs)) ms", met: mine <= theirs))
            }
        }
        if let gateway = byName["D"] {
            if let idle = gateway.rssIdleKiB, let loaded = gateway.rssLoadedKiB, gateway.connectedChargers > 0 {
                let perCharger = Double(loaded - idle) / Double(gateway.connectedChargers)
                targets.append(Target(figure: "memory per connected charger, mutual-TLS north link (D)", target: "≤ 48 KiB",
                                      measured: String(format: "%.1f KiB", perCharger), met: perCharger <= 48))
                targets.append(Target(figure: "idle RSS (D)", target: "< 20 MiB", measured: String(format: "%.1f MiB", Double(idle) / 1024),
                                      met: Double(idle) / 1024 < 20))
            }
            let allConnected = gateway.connectedChargers == plan.scaleChargers
            targets.append(Target(figure: "connect storm, \(plan.scaleChargers) chargers (D)", target: "≤ 1.0 s",
                                  measured: String(format: "%.2f s (%d connected)", gateway.connectSeconds, gateway.connectedChargers),
                                  met: allConnected && gateway.connectSeconds <= 1.0))
            if let seconds = gateway.reconnectSeconds, let count = gateway.reconnectedChargers {
                targets.append(Target(figure: "reconnect storm, all drop and return at once (D)", target: "≤ 0.5 s",
                                      measured: String(format: "%.2f s (%d back)", seconds, count),
                                      met: count == gateway.connectedChargers && seconds <= 0.5))
            }
        }
        return targets
    }

    struct Document: Codable {
        var revision: String
        var date: String
        var machine: String
        var mode: String
        var plan: [String: Double]
        var scenarios: [ScenarioResult]
        var flood: FloodResult?
        var healthLoad: HealthLoadResult?
        var replayTable: ReplayTableResult?
        var soak: SoakResult?
        var targets: [Target]
        /// The CPU the proxy under test was pinned to, and ocpp-bench's own CPUs.
        var proxyCPU: Int?
        var benchCPUs: String?
    }

    func write() throws {
        let revision = shell("git", "rev-parse", "--short", "HEAD") + (shell("git", "status", "--porcelain").isEmpty ? "" : "+dirty")
        let cpu = (try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8))?.split(separator: "\n")
            .first { $0.hasPrefix("model name") }?.split(separator: ":").last?.trimmingCharacters(in: .whitespaces) ?? "unknown CPU"
        let memory = (try? String(contentsOfFile: "/proc/meminfo", encoding: .utf8))?.split(separator: "\n").first?
            .split(separator: " ").dropFirst().first.flatMap { Int($0) }.map { "\($0 / 1024 / 1024) GiB" } ?? "?"
        let machine = "\(ProcessInfo.processInfo.activeProcessorCount) × \(cpu), \(memory)"
        let document = Document(
            revision: revision, date: Date().formatted(.iso8601), machine: machine, mode: plan.latencySeconds > 60 ? "full" : "quick",
            plan: ["latency_chargers": Double(plan.latencyChargers), "calls_per_second_per_charger": plan.ratePerCharger,
                   "latency_seconds": plan.latencySeconds, "saturation_seconds": plan.saturationSeconds,
                   "scale_chargers": Double(plan.scaleChargers)],
            scenarios: results, flood: flood, healthLoad: healthLoad, replayTable: replayTable, soak: soak, targets: targets,
            proxyCPU: proxyCPU, benchCPUs: benchCPUs)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FileManager.default.createDirectory(atPath: (out as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try encoder.encode(document).write(to: URL(fileURLWithPath: out))
        try FileManager.default.createDirectory(atPath: (markdown as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let svgPath = (markdown as NSString).deletingLastPathComponent + "/benchmarks-latency-cdf.svg"
        try svg().write(toFile: svgPath, atomically: true, encoding: .utf8)
        try page(document).write(toFile: markdown, atomically: true, encoding: .utf8)
    }

    private func shell(_ arguments: String...) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        try? process.run()
        process.waitUntilExit()
        return String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    private func ms(_ micros: UInt64) -> String { String(format: "%.2f", Double(micros) / 1000) }

    private func page(_ document: Document) -> String {
        let direct = results.first { $0.name == "A" }
        var rows: [String] = []
        for result in results {
            let added = direct.map { base in
                "+\(ms(result.p50Micros &- min(result.p50Micros, base.p50Micros))) / +\(ms(result.p99Micros &- min(result.p99Micros, base.p99Micros))) / +\(ms(result.p999Micros &- min(result.p999Micros, base.p999Micros)))"
            } ?? "-"
            let perCharger = result.rssIdleKiB.flatMap { idle in
                result.rssLoadedKiB.map { String(format: "%.1f", Double($0 - idle) / Double(max(result.connectedChargers, 1))) }
            } ?? "-"
            let perCore = result.framesPerCoreSecond.map { "\(Int($0)) (\(String(format: "%.0f", (result.cpuUtilization ?? 0) * 100)) % busy)" } ?? "-"
            let reconnect = result.reconnectSeconds.map { String(format: "%.2f (%d)", $0, result.reconnectedChargers ?? 0) } ?? "-"
            rows.append("| \(result.name) | \(result.label) | \(ms(result.p50Micros)) / \(ms(result.p99Micros)) / \(ms(result.p999Micros)) | \(result.name == "A" ? "-" : added) | "
                + "\(Int(result.framesPerSecond)) | \(perCore) | \(result.cpuSecondsPer100kFrames.map { String(format: "%.2f", $0) } ?? "-") | "
                + "\(result.rssIdleKiB.map { String(format: "%.1f", Double($0) / 1024) } ?? "-") | \(perCharger) | "
                + "\(String(format: "%.2f", result.connectSeconds)) (\(result.connectedChargers)) | \(reconnect) | \(result.failedCalls) |")
        }
        let runRows = results.map { result in
            "| \(result.name) | " + (result.latencyRuns ?? []).map { "\(ms($0.p99Micros)) / \(ms($0.p999Micros))" }.joined(separator: " | ") + " |"
        }
        let targetRows = document.targets.map { "| \($0.figure) | \($0.target) | \($0.measured) | \($0.met ? "✓" : "✗") |" }
        let pinning = document.proxyCPU.map { "the proxy under test pinned to CPU \($0) (`taskset`), load generator and CSMS on CPU \(document.benchCPUs ?? "?")" }
            ?? "load generator, development CSMS and proxy share it (not pinned)"
        return """
            # Benchmarks

            Generated by `make bench` (`ocpp-bench`); the figures below are from the last run, also in
            [`bench/results/latest.json`](../bench/results/latest.json). Rerun them with `make bench`
            (quick, ≤ 10 minutes after the build) or `make bench-full`.

            - revision: `\(document.revision)`, \(document.date), \(document.mode) run
            - machine: \(document.machine); \(pinning)

            ## Targets (issue 17)

            | figure | target | measured | |
            |---|---|---|---|
            \(targetRows.joined(separator: "\n"))

            ## All paths

            | | path | latency p50 / p99 / p99.9 (ms, median of runs) | added over A (ms) | frames/s at saturation | frames per CPU second of the proxy (its busy share of a core) | CPU s / 100k frames | RSS idle (MiB) | KiB per connected charger | \(plan.scaleChargers) chargers connect (s) | all drop and return (s) | failed CALLs |
            |---|---|---|---|---|---|---|---|---|---|---|---|
            \(rows.joined(separator: "\n"))

            Latency p99 / p99.9 (ms) of each run:

            | | \((1...max(1, plan.latencyRuns)).map { "run \($0)" }.joined(separator: " | ")) |
            |---|\(String(repeating: "---|", count: max(1, plan.latencyRuns)))
            \(runRows.joined(separator: "\n"))

            ![latency CDF](benchmarks-latency-cdf.svg)
            \(profileSection)
            \(floodSection)
            \(replaySection)
            \(soakSection)
            \(healthSection)

            ## Method

            - **A** the simulated chargers speak `wss://` with their own client certificates straight to the
              development CSMS: the floor. **B** nginx 1.22 from Debian as an operator would configure it: `ws://`
              in, `wss://` out with each charger's certificate chosen from the URL (`proxy_ssl_certificate`
              with a variable), the CSMS certificate verified. **C** the gateway with only the `auth` stage.
              **D** the gateway with the default pipeline (`ids`, `auth`, `certs`); **G** the full pipeline: D plus
              `smart_charging`, `compressor`, `mqtt_tap` (to a mosquitto broker) and `dashcam`. The firewall's limits
              are raised so it inspects every frame but refuses none.
            - Latency: \(plan.latencyChargers) chargers, each sending \(Int(plan.ratePerCharger)) CALLs a second (a charger's mix:
              MeterValues, StatusNotification, Authorize, Heartbeat, Start/StopTransaction), in \(plan.latencyRuns) runs of
              \(String(format: "%g", plan.latencySeconds / Double(max(1, plan.latencyRuns)))) s; the round trip of every CALL is measured at the
              charger side into an HdrHistogram. The table shows the median of the runs' percentiles; every run is listed.
            - Saturation: the same chargers send their next CALL as soon as the answer arrives, for
              \(Int(plan.saturationSeconds)) s; every CALL counts as two frames through the proxy. CPU is the proxy process's user +
              system time over that window (all nginx processes for B). Frames per CPU second is the proxy's
              throughput per core whether or not the load generator could keep it busy (the busy share says how busy it was).
            - Memory: the proxy's resident set when idle and with \(plan.scaleChargers) chargers connected (each with its north link);
              the difference divided by the chargers is the cost of one charger.
            - Scale: \(plan.scaleChargers) chargers open their connections at once; for B, C, D and G each one means a mutual-TLS
              handshake north. The time is until the last upgrade completed. Then all of them close and, half a second
              later, come back at once (a network blip): the reconnect storm.
            - With `--proxy-cpu` (as `make bench` runs it on a machine with two or more CPUs) the proxy under test runs
              on its own CPU and ocpp-bench (load generator and development CSMS) on the others, so saturation measures
              the proxy, not the load generator. Without it everything shares the machine and the absolute numbers are pessimistic.

            """
    }

    /// The "Profile" section alone, from the profile files next to `out` (`ocpp-bench --profile-report`):
    /// to see what the next run will write after a new profile, without a whole run.
    static func profileSection(out: String) -> String {
        Report(results: [], flood: nil, healthLoad: nil, plan: .quick, out: out, markdown: "").profileSection
    }

    /// Instructions per relayed frame from `ocpp-bench --profile … --callgrind` (bench/results/profile-*.json,
    /// written by `make bench` before the main run), against the figures before the work on issue 17
    /// (bench/results/profile-baseline.json).
    private var profileSection: String {
        let folder = (out as NSString).deletingLastPathComponent
        struct Baseline: Codable {
            var revision: String
            var note: String
            var instructionsPerFrame: [String: Double]
            /// The default pipeline's top functions then.
            var topSelf: [ProfileRun.Symbol]?
            var topInclusive: [ProfileRun.Symbol]?
        }
        let decoder = JSONDecoder()
        let baseline = (try? Data(contentsOf: URL(fileURLWithPath: folder + "/profile-baseline.json"))).flatMap { try? decoder.decode(Baseline.self, from: $0) }
        let profiles = ["minimal", "default", "full"].compactMap { name in
            (try? Data(contentsOf: URL(fileURLWithPath: folder + "/profile-\(name).json"))).flatMap { try? decoder.decode(ProfileRun.Result.self, from: $0) }
        }
        guard !profiles.isEmpty else { return "" }
        func count(_ value: Double?) -> String { value.map { String(Int($0.rounded())) } ?? "–" }
        let rows = profiles.map { profile -> String in
            let before = baseline?.instructionsPerFrame[profile.pipeline]
            let change = before.flatMap { old in profile.instructionsPerFrame.map { String(format: "%+.1f %%", ($0 / old - 1) * 100) } } ?? "–"
            return "| \(profile.pipeline) | \(count(before)) | \(count(profile.instructionsPerFrame)) | \(change) |"
        }
        func symbolRows(_ symbols: [ProfileRun.Symbol]?) -> String {
            (symbols ?? []).map { "| \(Int($0.instructionsPerFrame.rounded())) | \(String(format: "%.1f", $0.share * 100)) % | `\($0.name.prefix(110).replacingOccurrences(of: "|", with: "\\|"))` |" }
                .joined(separator: "\n")
        }
        func baselineTops(_ topSelf: [ProfileRun.Symbol]?, _ topInclusive: [ProfileRun.Symbol]?, revision: String?) -> String {
            guard let topSelf, let topInclusive else { return "" }
            return """

                Before (`\(revision ?? "?")`, default pipeline), own instructions:

                | instructions | share | function |
                |---|---|---|
                \(symbolRows(topSelf))

                Before, the gateway's own functions including what they call:

                | instructions | share | function |
                |---|---|---|
                \(symbolRows(topInclusive))

                """
        }
        let detail = profiles.first { $0.pipeline == "default" } ?? profiles[0]
        return """

            ## Profile: instructions per relayed frame (callgrind)

            One charger sends 2,000 Authorize round trips, one after the other, through the gateway (ws:// south,
            mutual TLS north) under `valgrind --tool=callgrind`; its counters are zeroed after a warm-up and dumped
            after the last answer, so they hold exactly 4,000 relayed frames. Instructions do not depend on what
            else the machine is doing (wall-clock and CPU time do). Reproduce one with
            `ocpp-bench --profile 2000 --callgrind --pipeline default|full|minimal` (after `swift build -c release`);
            `make bench` runs default and full first. Before: \(baseline.map { "revision `\($0.revision)`, \($0.note)" } ?? "no baseline recorded").
            Each step of the work, and memory per charger step by step: [performance-log.md](performance-log.md).

            | pipeline | before | now | change |
            |---|---|---|---|
            \(rows.joined(separator: "\n"))

            Top 10 functions by their own instructions, \(detail.pipeline) pipeline (per frame, share of all):

            | instructions | share | function |
            |---|---|---|
            \(symbolRows(detail.topSelf))

            Top 10 of the gateway's own functions including what they call (NIO, BoringSSL and the runtime are left
            out of the list, not of the counts):

            | instructions | share | function |
            |---|---|---|
            \(symbolRows(detail.topInclusive))
            \(baselineTops(baseline?.topSelf, baseline?.topInclusive, revision: baseline?.revision))
            \(mixSection(folder: folder, count: count, symbolRows: symbolRows))
            """
    }

    /// `ocpp-bench --profile 4000 --callgrind --load mix --chargers 100 --pipeline default|full`
    /// (bench/results/profile-default-mix.json, profile-full-mix.json): scenario G's traffic, against the
    /// figures before the work on it (bench/results/profile-mix-baseline.json).
    private func mixSection(folder: String, count: (Double?) -> String, symbolRows: ([ProfileRun.Symbol]?) -> String) -> String {
        struct Baseline: Codable {
            var revision: String
            var note: String
            var instructionsPerFrame: [String: Double]
            var system: [String: ProfileRun.SystemCounters]?
        }
        let decoder = JSONDecoder()
        let baseline = (try? Data(contentsOf: URL(fileURLWithPath: folder + "/profile-mix-baseline.json"))).flatMap { try? decoder.decode(Baseline.self, from: $0) }
        let profiles = ["default-mix", "full-mix"].compactMap { name in
            (try? Data(contentsOf: URL(fileURLWithPath: folder + "/profile-\(name).json"))).flatMap { try? decoder.decode(ProfileRun.Result.self, from: $0) }
        }
        guard !profiles.isEmpty else { return "" }
        func io(_ system: ProfileRun.SystemCounters?) -> String {
            guard let system else { return "–" }
            return String(format: "%.2f / %.2f / %.0f", system.readCallsPerFrame, system.writeCallsPerFrame, system.diskBytesWrittenPerFrame)
        }
        let rows = profiles.map { profile -> String in
            let before = baseline?.instructionsPerFrame[profile.name]
            let change = before.flatMap { old in profile.instructionsPerFrame.map { String(format: "%+.1f %%", ($0 / old - 1) * 100) } } ?? "–"
            return "| \(profile.pipeline), \((profile.load ?? .authorize).rawValue) | \(profile.chargers ?? 1) | \(count(before)) | "
                + "\(count(profile.instructionsPerFrame)) | \(change) | \(io(baseline?.system?[profile.name])) | \(io(profile.system)) |"
        }
        let full = profiles.first { $0.pipeline == "full" }
        let default_ = profiles.first { $0.pipeline == "default" }
        let ratio = full.flatMap { full in default_.flatMap { d in full.instructionsPerFrame.flatMap { f in d.instructionsPerFrame.map { f / $0 } } } }
        return """

            ### The charger mix (scenario G's traffic)

            The Authorize profile sends nothing the full pipeline's own stages work on. With `--load mix --chargers 100`
            each of 100 chargers sends its share of the CALLs of scenario G's mix (`LoadProfile.message`: MeterValues
            with three samples 10 of 20, StatusNotification and Authorize 3 each, Heartbeat 2, Start/StopTransaction),
            one after the other per charger, all chargers at once; the warm-up is one whole cycle per charger.
            Reproduce with `ocpp-bench --profile 4000 --callgrind --load mix --chargers 100 --pipeline default|full`.
            Before: \(baseline.map { "revision `\($0.revision)`, \($0.note)" } ?? "no baseline recorded"). The last two columns
            are the gateway's `read`- and `write`-family system calls and bytes written to disk per frame, all threads,
            from /proc over the same window (`syscr`, `syscw`, `write_bytes`).

            | pipeline, load | chargers | before | now | change | reads / writes / disk bytes per frame, before | now |
            |---|---|---|---|---|---|---|
            \(rows.joined(separator: "\n"))
            \(ratio.map { String(format: "\nThe full pipeline now costs %.2f× the default one per frame on this traffic.\n", $0) } ?? "")
            What made the full pipeline expensive on it (each figure from this profile, full pipeline, per relayed frame):

            - `mqtt_tap` made an `ISO8601DateFormatter` (ICU underneath; two when the first spelling did not match)
              for every sample's timestamp: ~1,000,000 instructions per sample, ~740,000 per frame of the mix, 80 % of all. OCPP's common dateTime spellings are now
              read by hand (`InternetDateTime`; any other spelling still goes to the formatter, and a test checks both
              give the same value): 924k → 220k per frame.
            - `smart_charging`'s `parseDate` did the same for every StartTransaction (~930,000 instructions each,
              23k per frame of the mix), and escaping each telemetry topic level walked its Characters (~45,000
              instructions per sample, 37k per frame): 220k → 155k.
            - Smaller: the session's state objects written back on every sample, readings copied out of their
              dictionary and back, the HMAC key's padding hashed per PII value, the compressor comparing all its
              settings on every frame and making each point's descriptor anew, the dashcam copying every frame into a
              String: 155k → 147k.
            - Not the cost: the state store (`smart_charging` writes its file only when a transaction starts or stops,
              the state having changed, coalesced and off the event loop: 1 frame in 40 here, 100–180 bytes of disk
              per frame) and MQTT publishing (QoS 1 through libmosquitto's thread: about 1 message in 4 frames on this
              mix, as the compressor holds steady samples back, ~4,000 instructions each in `MQTTPublisher.publish`).
            - Without valgrind (`ocpp-bench --profile 40000 --load mix --chargers 100 --pipeline …`, CPU time, so
              load-dependent; on the shared development machine when this was written) the gateway spent 219 µs of
              CPU per frame with the full pipeline before and 56 µs after, against 34 µs with the default one. Of
              the difference, ~11 µs is system time: per frame ~1.2 more `read`s, ~0.6 more `write`s and ~0.5 more
              context switches than the default pipeline, most of them libmosquitto's thread woken for each
              message (and its PUBACK). Handing it messages in batches is the next step for the health channel.
            - What is left over the default pipeline (~55k per frame): `mqtt_tap` (~33k: decoding each MeterValues,
              ~22k, building and serializing the MQTT messages, the CSMS copy re-encoded without its per-phase
              samples), `smart_charging` (~4k, mostly encoding its state when a transaction starts), `dashcam` (~2k)
              and the router's share of the rewritten frames. The firewall (~32k) is the same in both pipelines.

            Top 10 functions by their own instructions, full pipeline, the mix (per frame, share of all):

            | instructions | share | function |
            |---|---|---|
            \(symbolRows(full?.topSelf))

            Top 10 of the gateway's own functions including what they call, full pipeline, the mix:

            | instructions | share | function |
            |---|---|---|
            \(symbolRows(full?.topInclusive))

            """
    }

    private var soakSection: String {
        guard let soak else { return "" }
        let samples = soak.rssKiB.map { String(format: "%.1f", Double($0) / 1024) }.joined(separator: " → ")
        return """

            ## S: connect/disconnect soak

            \(soak.cycles) charger sessions opened (Basic auth south, mutual TLS north), one Heartbeat each, closed,
            \(soak.concurrency) at a time, through ids → auth → certs, in \(String(format: "%.0f", soak.seconds)) s. Gateway RSS
            (MiB) after each tenth, from the first: \(samples). Growth after the warm-up (\(soak.warmupCycles) cycles, one per charger id): \(soak.growthKiB) KiB
            (target < 2 MiB and no failed cycle: \(soak.targetMet ? "✓" : "✗")); \(soak.failedCycles) cycles failed; sessions the gateway
            still counted after the last charger left: \(soak.sessionsLeft.map(String.init) ?? "?").
            """
    }

    private var floodSection: String {
        guard let flood else { return "" }
        let ratio = Double(flood.floodP99Micros) / Double(max(flood.idleP99Micros, 1))
        return """

            ## Under attack (E)

            The gateway with the `ids` stage at its defaults, in front of `auth`. One source sends
            \(Int(flood.badFramesPerSecond)) bad frames/s (malformed JSON, invalid payloads, unknown and wrong-direction
            actions) on one connection and makes \(Int(flood.connectionAttemptsPerSecond)) connection attempts/s with a wrong
            password, while a legitimate charger sends an Authorize every 100 ms. The attackers run on an event
            loop of their own scheduled SCHED_IDLE (on a site they are other machines): they take every cycle the
            legitimate charger and the CSMS leave on the load generator's core, and never delay those two.

            | Authorize | p50 (ms) | p99 (ms) |
            |---|---|---|
            | idle | \(ms(flood.idleP50Micros)) | \(ms(flood.idleP99Micros)) |
            | under the flood | \(ms(flood.floodP50Micros)) | \(ms(flood.floodP99Micros)) |

            p99 under the flood is \(String(format: "%.2f", ratio))× the idle p99 (goal: at most 2×); \(flood.legitimateFailures) of the legitimate
            charger's CALLs failed (all rounds).
            \(callFloodSection)
            """
    }

    private func kib(_ value: Int?) -> String { value.map { String(format: "%.1f MiB", Double($0) / 1024) } ?? "–" }

    private var callFloodSection: String {
        guard let flood, let p50 = flood.callFloodP50Micros, let p99 = flood.callFloodP99Micros else { return "" }
        let ratio = Double(p99) / Double(max(flood.idleP99Micros, 1))
        return """

            Second round: another charger sends \(Int(flood.wellFormedCallsPerSecond ?? 0)) well-formed CALLs/s, every one
            with its own message id, and never reads its socket (\(flood.callFloodFramesHeldBack ?? 0) frames it could not even
            hand to its own socket: the gateway pushed back).

            | Authorize | p50 (ms) | p99 (ms) | p99 / idle p99 (goal ≤ 2×) |
            |---|---|---|---|
            | idle | \(ms(flood.idleP50Micros)) | \(ms(flood.idleP99Micros)) | 1 |
            | bad frames + connection attempts | \(ms(flood.floodP50Micros)) | \(ms(flood.floodP99Micros)) | \(String(format: "%.2f", Double(flood.floodP99Micros) / Double(max(flood.idleP99Micros, 1)))) |
            | non-reading CALL flood | \(ms(p50)) | \(ms(p99)) | \(String(format: "%.2f", ratio)) |

            Gateway RSS: \(kib(flood.rssIdleKiB)) before, at most \(kib(flood.rssPeakBadFloodKiB)) during the bad frames,
            at most \(kib(flood.rssPeakCallFloodKiB)) during the non-reading CALL flood.

            """
    }

    private var replaySection: String {
        guard let replay = replayTable else { return "" }
        return """

            ## The firewall's replay table (R)

            One charger sends Heartbeats with unique message ids, one after the other, through `ids` (limits raised so
            that every frame passes and is remembered) and `auth`. The `ids` stage's own time per frame
            (`ocpp_gateway_stage_duration_seconds`) and the gateway's CPU per CALL, over \(replay.window) CALLs with an
            empty table and over \(replay.window) CALLs after \(replay.idsBeforeLateWindow) ids:

            | table | `ids` µs per frame | gateway CPU µs per CALL |
            |---|---|---|
            | empty | \(String(format: "%.1f", replay.stageMicrosPerFrameEmpty)) | \(String(format: "%.0f", replay.cpuMicrosPerCallEmpty)) |
            | \(replay.idsBeforeLateWindow) ids | \(String(format: "%.1f", replay.stageMicrosPerFrameFull)) | \(String(format: "%.0f", replay.cpuMicrosPerCallFull)) |

            """
    }

    private var healthSection: String {
        guard let load = healthLoad else { return "" }
        let ratio = Double(load.loadedP99Micros) / Double(max(load.idleP99Micros, 1))
        return """

            ## Health channel under telemetry load (F)

            The gateway with `auth` and `mqtt_tap` at its defaults and a mosquitto broker from Debian.
            \(load.chargers) chargers send \(Int(load.meterValuesPerSecond)) MeterValues/s in all (per-phase voltage and current
            go to MQTT only, the energy register to the CSMS too) while another charger sends an Authorize every 100 ms.

            | Authorize | p50 (ms) | p99 (ms) |
            |---|---|---|
            | idle | \(ms(load.idleP50Micros)) | \(ms(load.idleP99Micros)) |
            | under telemetry load | \(ms(load.loadedP50Micros)) | \(ms(load.loadedP99Micros)) |

            p99 under load is \(String(format: "%.2f", ratio))× the idle p99 (goal: at most 1.5×); \(load.failedCalls) CALLs failed.

            """
    }

    private func svg() -> String {
        let width = 720.0, height = 420.0, left = 70.0, right = 20.0, top = 20.0, bottom = 50.0
        let colors = ["A": "#888888", "B": "#d62728", "C": "#1f77b4", "D": "#2ca02c", "G": "#9467bd"]
        let maxMicros = Double(results.flatMap { $0.cdf.map { $0[1] } }.max() ?? 1000)
        let minMicros = max(1, Double(results.flatMap { $0.cdf.map { $0[1] } }.min() ?? 1))
        let span = log10(maxMicros) - log10(minMicros)
        func x(_ micros: Double) -> Double { left + (log10(max(micros, minMicros)) - log10(minMicros)) / max(span, 0.1) * (width - left - right) }
        // The y axis shows the "nines": 0, 90, 99, 99.9, 99.99 % equally spaced.
        func y(_ percentile: Double) -> Double {
            let nines = -log10(max(1e-4, 1 - percentile / 100))
            return height - bottom - nines / 4 * (height - top - bottom)
        }
        var body = ""
        for result in results {
            let points = result.cdf.filter { $0[0] < 100 }.map { "\(String(format: "%.1f", x($0[1]))),\(String(format: "%.1f", y($0[0])))" }.joined(separator: " ")
            body += "<polyline fill=\"none\" stroke=\"\(colors[result.name] ?? "black")\" stroke-width=\"2\" points=\"\(points)\"/>\n"
        }
        var axes = "<line x1=\"\(left)\" y1=\"\(height - bottom)\" x2=\"\(width - right)\" y2=\"\(height - bottom)\" stroke=\"black\"/>\n"
        axes += "<line x1=\"\(left)\" y1=\"\(top)\" x2=\"\(left)\" y2=\"\(height - bottom)\" stroke=\"black\"/>\n"
        for percentile in [0.0, 90, 99, 99.9, 99.99] {
            axes += "<text x=\"\(left - 8)\" y=\"\(y(percentile) + 4)\" font-size=\"12\" text-anchor=\"end\">\(percentile == 0 ? "0" : String(format: "%g", percentile))%</text>\n"
        }
        var tick = pow(10, floor(log10(minMicros)))
        while tick <= maxMicros * 1.01 {
            if tick >= minMicros {
                axes += "<text x=\"\(x(tick))\" y=\"\(height - bottom + 18)\" font-size=\"12\" text-anchor=\"middle\">\(tick >= 1000 ? String(format: "%g ms", tick / 1000) : String(format: "%g µs", tick))</text>\n"
            }
            tick *= 10
        }
        var legend = ""
        for (index, result) in results.enumerated() {
            legend += "<text x=\"\(left + 10)\" y=\"\(top + 16 + Double(index) * 16)\" font-size=\"12\" fill=\"\(colors[result.name] ?? "black")\">\(result.name): \(result.label)</text>\n"
        }
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(width / 2)" y="\(height - 8)" font-size="13" text-anchor="middle">round-trip latency at the charger (log scale)</text>
            \(axes)\(body)\(legend)</svg>

            """
    }
}
