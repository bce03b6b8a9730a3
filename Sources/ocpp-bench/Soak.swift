import Foundation
import NIOCore
import NIOPosix
import OCPP
import Simulators

/// S: connect/disconnect cycles against the full pipeline (ids, auth, certs), the gateway's resident
/// memory sampled as they go. Ended sessions must leave nothing behind (no timer keeps one alive for a
/// day, no per-charger table grows): RSS after 10,000 cycles stays where it was after the first 1,000.
struct SoakResult: Codable {
    var cycles: Int
    var concurrency: Int
    var seconds: Double
    /// RSS (KiB) after each tenth of the cycles.
    var rssKiB: [Int]
    /// Cycles of the warm-up: one pass over every charger id (per-charger state that is kept on purpose —
    /// identities, firewall tables — is built then), before growth is measured.
    var warmupCycles: Int
    var failedCycles: Int
    /// Sessions `/healthz` still counts once every charger has left (must be 0).
    var sessionsLeft: Int?
    /// Growth from the first sample after the warm-up to the last one.
    var growthKiB: Int {
        let index = min(rssKiB.count - 1, max(0, (warmupCycles * rssKiB.count + cycles - 1) / max(cycles, 1) - 1))
        return (rssKiB.last ?? 0) - (rssKiB.isEmpty ? 0 : rssKiB[index])
    }
    /// Target: under 2 MiB of growth over the whole soak (≈ 200 bytes per session would already show).
    var targetMet: Bool { growthKiB < 2048 && failedCycles == 0 }
}

/// - Parameter pauseAt: after this many cycles, 40 s without traffic: memory held only for a while (timers,
///   caches) is released then, so growth after the pause is memory kept for good.
func measureSoak(gatewayPort: Int, gateway: Process, chargerIds: [String], cycles: Int, concurrency: Int = 16,
                 pauseAt: Int? = nil) async -> SoakResult {
    let group = MultiThreadedEventLoopGroup.singleton
    let stats = ProcessStats(pid: gateway.processIdentifier)
    let start = Date()
    var samples: [Int] = []
    var failed = 0
    let step = max(1, cycles / 10)
    var done = 0
    while done < cycles {
        let batch = min(step, cycles - done)
        let offset = done
        failed += await withTaskGroup(of: Int.self) { tasks in
            for lane in 0..<concurrency {
                tasks.addTask {
                    var failures = 0
                    var n = lane
                    while n < batch {
                        let id = chargerIds[(offset + n) % chargerIds.count]
                        do {
                            let peer = try await connect(.plain(url: "ws://127.0.0.1:\(gatewayPort)/ocpp/\(id)", password: "bench-\(id)"),
                                                         chargerId: id, group: group)
                            _ = try await peer.call("Heartbeat", [:]).get()
                            peer.close()
                        } catch {
                            failures += 1
                        }
                        n += concurrency
                    }
                    return failures
                }
            }
            return await tasks.reduce(0, +)
        }
        done += batch
        if let pauseAt, done == pauseAt {
            log("S: pausing 40 s at \(done) cycles (RSS \(stats.rssKiB) KiB)")
            try? await Task.sleep(for: .seconds(40))
        }
        try? await Task.sleep(for: .milliseconds(300))  // let the last sessions end before sampling
        samples.append(stats.rssKiB)
        log("S: \(done) cycles, RSS \(samples.last ?? 0) KiB, \(failed) failed")
    }
    return SoakResult(cycles: cycles, concurrency: concurrency, seconds: Date().timeIntervalSince(start), rssKiB: samples,
                      warmupCycles: min(chargerIds.count, cycles / 2), failedCycles: failed)
}
