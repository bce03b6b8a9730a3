import Foundation
import Histogram
import NIOCore
import NIOPosix
import NIOWebSocket
import OCPP
import Simulators
import Synchronization
import Transport

/// The firewall under attack: one source floods the gateway with bad frames and connection
/// attempts while a legitimate charger authorizes; its latency is compared with the idle one.
struct FloodResult: Codable {
    var idleP50Micros: UInt64
    var idleP99Micros: UInt64
    var floodP50Micros: UInt64
    var floodP99Micros: UInt64
    var badFramesPerSecond: Double
    var connectionAttemptsPerSecond: Double
    var legitimateFailures: Int
}

func measureFlood(gatewayPort: Int, seconds: Double, badFramesPerSecond: Double, attemptsPerSecond: Double) async throws -> FloodResult {
    let group = MultiThreadedEventLoopGroup.singleton
    let url = "ws://127.0.0.1:\(gatewayPort)/ocpp/"
    let legit = try await connect(.plain(url: url + "BENCH0001", password: "bench-BENCH0001"), chargerId: "BENCH0001", group: group)
    _ = try await legit.call("BootNotification", LoadProfile.bootNotification).get()
    let flooder = try await connect(.plain(url: url + "BENCH0002", password: "bench-BENCH0002"), chargerId: "BENCH0002", group: group)

    log("E: idle Authorize latency, \(seconds) s")
    let idle = await authorizeLatency(legit, seconds: seconds)

    log("E: the same under \(Int(badFramesPerSecond)) bad frames/s and \(Int(attemptsPerSecond)) connection attempts/s from one source")
    let stop = Mutex(false)
    let sentFrames = Mutex(0)
    let attempts = Mutex(0)
    let floodStart = Date()
    // Bad frames in 10 ms batches: malformed JSON, invalid payloads, unknown actions, in turn.
    let batch = max(1, Int(badFramesPerSecond / 100))
    let badFrames = [#"[2,"f","Heartbeat",{"broken": }]"#, #"[2,"f","StatusNotification",{"connectorId":"one"}]"#,
                     #"[2,"f","MakeCoffee",{}]"#, #"[2,"f","RemoteStartTransaction",{"idTag":"x"}]"#]
    let floodLoop = flooder.eventLoop
    @Sendable func floodTick() {
        guard !stop.withLock({ $0 }) else { return }
        for n in 0..<batch { flooder.connection.send(Array(badFrames[n % badFrames.count].utf8)) }
        sentFrames.withLock { $0 += batch }
        floodLoop.scheduleTask(in: .milliseconds(10)) { floodTick() }
    }
    floodLoop.execute { floodTick() }
    // Connection attempts with a wrong password, spread over 2 ms ticks.
    let attemptLoop = group.next()
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
    legit.close()
    flooder.close()
    try? await Task.sleep(for: .seconds(1))

    let idleHistogram = idle.histogram.withLock { $0 }
    let floodHistogram = flooded.histogram.withLock { $0 }
    return FloodResult(
        idleP50Micros: idleHistogram.valueAtPercentile(50), idleP99Micros: idleHistogram.valueAtPercentile(99),
        floodP50Micros: floodHistogram.valueAtPercentile(50), floodP99Micros: floodHistogram.valueAtPercentile(99),
        badFramesPerSecond: Double(sentFrames.withLock { $0 }) / floodSeconds,
        connectionAttemptsPerSecond: Double(attempts.withLock { $0 }) / floodSeconds,
        legitimateFailures: idle.failed.withLock { $0 } + flooded.failed.withLock { $0 })
}
