import Foundation
import Histogram
import NIOCore
import NIOPosix
import NIOWebSocket
import OCPP
import Simulators
import Synchronization
import Transport

/// The firewall under attack, in two rounds, while a legitimate charger authorizes (its latency is
/// compared with the idle one) and the gateway's memory is watched:
/// 1. one source floods bad frames (every one with its own message id, so the replay rule cannot
///    drop them cheaply) and makes connection attempts with a wrong password;
/// 2. another charger sends well-formed CALLs with unique ids at 20k/s and never reads its socket,
///    so every answer the gateway owes it piles up on the gateway's side (backpressure).
///
/// The attackers run on an event loop of their own whose thread is scheduled SCHED_IDLE: on a site they
/// are other machines, so here they take every cycle the legitimate charger and the CSMS leave, and never
/// delay those two (on 2 cores all of them share the core the gateway is not pinned to).
struct FloodResult: Codable {
    var idleP50Micros: UInt64
    var idleP99Micros: UInt64
    var floodP50Micros: UInt64
    var floodP99Micros: UInt64
    var badFramesPerSecond: Double
    var connectionAttemptsPerSecond: Double
    /// Round 2: the non-reading well-formed CALL flood.
    var callFloodP50Micros: UInt64?
    var callFloodP99Micros: UInt64?
    var wellFormedCallsPerSecond: Double?
    /// Frames the attacker could not even hand to its socket (its own send buffer was full: the gateway pushed back).
    var callFloodFramesHeldBack: Int?
    var legitimateFailures: Int
    /// The gateway's resident memory before the floods and at its highest during each round.
    var rssIdleKiB: Int?
    var rssPeakBadFloodKiB: Int?
    var rssPeakCallFloodKiB: Int?
}

/// Fresh message ids for the floods.
final class Sequence: Sendable {
    private let counter = Atomic(0)
    func next() -> Int { counter.add(1, ordering: .relaxed).newValue }
}

/// Samples a process's RSS every 100 ms until stopped; the highest value.
final class RSSWatcher: Sendable {
    private let peak = Mutex(0)
    private let running = Mutex(true)

    init(_ stats: ProcessStats?) {
        guard let stats else { return }
        Thread.detachNewThread { [self] in
            while running.withLock({ $0 }) {
                let rss = stats.rssKiB
                peak.withLock { $0 = max($0, rss) }
                Thread.sleep(forTimeInterval: 0.1)
            }
        }
    }

    func stop() -> Int {
        running.withLock { $0 = false }
        return peak.withLock { $0 }
    }
}

/// One event-loop thread scheduled SCHED_IDLE (runs only when nothing else on its core wants to).
func idlePriorityGroup() async throws -> MultiThreadedEventLoopGroup {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let failure = try await group.next().submit { () -> Int32 in
        var parameters = sched_param()
        parameters.sched_priority = 0
        return sched_setscheduler(0, 5 /* SCHED_IDLE, linux/sched.h */, &parameters) == 0 ? 0 : errno
    }.get()
    if failure != 0 { log("E: could not schedule the attackers SCHED_IDLE (errno \(failure)); they run at normal priority") }
    return group
}

func measureFlood(gatewayPort: Int, gateway: Process?, seconds: Double, badFramesPerSecond: Double, attemptsPerSecond: Double,
                  callsPerSecond: Double) async throws -> FloodResult {
    let group = MultiThreadedEventLoopGroup.singleton
    let attackers = try await idlePriorityGroup()
    defer { attackers.shutdownGracefully { _ in } }
    let stats = gateway.map { ProcessStats(pid: $0.processIdentifier) }
    let url = "ws://127.0.0.1:\(gatewayPort)/ocpp/"
    let legit = try await connect(.plain(url: url + "BENCH0001", password: "bench-BENCH0001"), chargerId: "BENCH0001", group: group)
    _ = try await legit.call("BootNotification", LoadProfile.bootNotification).get()
    let flooder = try await connect(.plain(url: url + "BENCH0002", password: "bench-BENCH0002"), chargerId: "BENCH0002", group: attackers)
    // Connected now: all three share one source address, which the first round's wrong passwords lock out.
    let attacker = try await connect(.plain(url: url + "BENCH0003", password: "bench-BENCH0003"), chargerId: "BENCH0003", group: attackers)

    log("E: idle Authorize latency, \(seconds) s")
    let idle = await authorizeLatency(legit, seconds: seconds)
    let rssIdle = stats?.rssKiB

    log("E: the same under \(Int(badFramesPerSecond)) bad frames/s (unique ids) and \(Int(attemptsPerSecond)) connection attempts/s from one source")
    let stop = Mutex(false)
    let sentFrames = Mutex(0)
    let attempts = Mutex(0)
    let floodStart = Date()
    let watcher = RSSWatcher(stats)
    // Bad frames in 10 ms batches: malformed JSON, invalid payloads, unknown actions, wrong direction, in turn;
    // every one with a fresh message id.
    let batch = max(1, Int(badFramesPerSecond / 100))
    let badFrames: [@Sendable (Int) -> String] = [
        { #"[2,"f\#($0)","Heartbeat",{"broken": }]"# },
        { #"[2,"f\#($0)","StatusNotification",{"connectorId":"one"}]"# },
        { #"[2,"f\#($0)","MakeCoffee",{}]"# },
        { #"[2,"f\#($0)","RemoteStartTransaction",{"idTag":"x"}]"# },
    ]
    let floodLoop = flooder.eventLoop
    let sequence = Sequence()
    @Sendable func floodTick() {
        guard !stop.withLock({ $0 }) else { return }
        for n in 0..<batch {
            flooder.connection.send(Array(badFrames[n % badFrames.count](sequence.next()).utf8))
        }
        sentFrames.withLock { $0 += batch }
        floodLoop.scheduleTask(in: .milliseconds(10)) { floodTick() }
    }
    floodLoop.execute { floodTick() }
    // Connection attempts with a wrong password, spread over 2 ms ticks.
    let attemptLoop = attackers.next()
    let perTick = max(1, Int(attemptsPerSecond / 500))
    @Sendable func attemptTick() {
        guard !stop.withLock({ $0 }) else { return }
        for _ in 0..<perTick {
            let options = WebSocketClientOptions(url: URL(string: url + "INTRUDER")!, basicAuth: ("INTRUDER", "guess"), connectTimeout: .seconds(2))
            WebSocketClient.connect(options, on: attemptLoop).whenSuccess { $0.close(code: .normalClosure, reason: nil) }
        }
        attempts.withLock { $0 += perTick }
        attemptLoop.scheduleTask(in: .milliseconds(2)) { attemptTick() }
    }
    attemptLoop.execute { attemptTick() }
    let flooded = await authorizeLatency(legit, seconds: seconds)
    stop.withLock { $0 = true }
    let floodSeconds = Date().timeIntervalSince(floodStart)
    let rssPeakBad = watcher.stop()
    flooder.close()
    try? await Task.sleep(for: .seconds(1))

    log("E: the same while a charger sends \(Int(callsPerSecond)) well-formed CALLs/s (unique ids) and never reads its socket")
    // Stop reading: the gateway's answers stay in the kernel buffers, then in the gateway, unless it pushes back.
    try await attacker.connection.channel.setOption(ChannelOptions.autoRead, value: false).get()
    let callStop = Mutex(false)
    let callsSent = Mutex(0)
    let heldBack = Mutex(0)
    let callWatcher = RSSWatcher(stats)
    let callStart = Date()
    let callLoop = attacker.eventLoop
    let callBatch = max(1, Int(callsPerSecond / 1000))
    let callSequence = Sequence()
    @Sendable func callTick() {
        guard !callStop.withLock({ $0 }) else { return }
        // Only what the socket takes: the attacker's own process must not buffer without bound either.
        if attacker.connection.channel.isWritable {
            for _ in 0..<callBatch {
                attacker.connection.send(Array(#"[2,"c\#(callSequence.next())","Heartbeat",{}]"#.utf8))
            }
            callsSent.withLock { $0 += callBatch }
        } else {
            heldBack.withLock { $0 += callBatch }
        }
        callLoop.scheduleTask(in: .milliseconds(1)) { callTick() }
    }
    callLoop.execute { callTick() }
    let callFlooded = await authorizeLatency(legit, seconds: seconds)
    callStop.withLock { $0 = true }
    let callSeconds = Date().timeIntervalSince(callStart)
    let rssPeakCalls = callWatcher.stop()
    attacker.close()
    legit.close()
    try? await Task.sleep(for: .seconds(1))

    let idleHistogram = idle.histogram.withLock { $0 }
    let floodHistogram = flooded.histogram.withLock { $0 }
    let callHistogram = callFlooded.histogram.withLock { $0 }
    return FloodResult(
        idleP50Micros: idleHistogram.valueAtPercentile(50), idleP99Micros: idleHistogram.valueAtPercentile(99),
        floodP50Micros: floodHistogram.valueAtPercentile(50), floodP99Micros: floodHistogram.valueAtPercentile(99),
        badFramesPerSecond: Double(sentFrames.withLock { $0 }) / floodSeconds,
        connectionAttemptsPerSecond: Double(attempts.withLock { $0 }) / floodSeconds,
        callFloodP50Micros: callHistogram.valueAtPercentile(50), callFloodP99Micros: callHistogram.valueAtPercentile(99),
        wellFormedCallsPerSecond: Double(callsSent.withLock { $0 }) / callSeconds,
        callFloodFramesHeldBack: heldBack.withLock { $0 },
        legitimateFailures: idle.failed.withLock { $0 } + flooded.failed.withLock { $0 } + callFlooded.failed.withLock { $0 },
        rssIdleKiB: rssIdle, rssPeakBadFloodKiB: stats == nil ? nil : rssPeakBad, rssPeakCallFloodKiB: stats == nil ? nil : rssPeakCalls)
}
