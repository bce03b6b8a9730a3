import Foundation
import Histogram
import NIOCore
import NIOPosix
import OCPP
import Simulators
import Synchronization

/// The health channel under telemetry load: 50 chargers send 10 MeterValues a second each (per-phase
/// voltage and current to MQTT, the register to the CSMS) while another charger authorizes.
struct HealthLoadResult: Codable {
    var idleP50Micros: UInt64
    var idleP99Micros: UInt64
    var loadedP50Micros: UInt64
    var loadedP99Micros: UInt64
    var meterValuesPerSecond: Double
    var chargers: Int
    var failedCalls: Int
}

/// A mosquitto broker for the benchmark, on a free loopback port.
final class MosquittoBroker {
    let port: Int
    let process = Process()

    init(work: String) throws {
        port = try freePort()
        let config = work + "/mosquitto.conf"
        try "listener \(port) 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/mosquitto")
        process.arguments = ["-c", config]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
    }

    func start() async throws {
        try process.run()
        try await waitForPort(port)
    }

    /// A throw-away broker: killed outright (it was seen to outlive SIGTERM here, hanging the run).
    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

func measureHealthLoad(gatewayPort: Int, chargerIds: [String], seconds: Double) async throws -> HealthLoadResult {
    let group = MultiThreadedEventLoopGroup.singleton
    let url = "ws://127.0.0.1:\(gatewayPort)/ocpp/"
    let probeId = chargerIds[0]
    let probe = try await connect(.plain(url: url + probeId, password: "bench-\(probeId)"), chargerId: probeId, group: group)
    _ = try await probe.call("BootNotification", LoadProfile.bootNotification).get()

    log("F: idle Authorize latency with the health channel, \(seconds) s")
    let idle = await authorizeLatency(probe, seconds: seconds)

    let meters = Array(chargerIds.dropFirst().prefix(50))
    var peers: [OCPPPeer] = []
    for id in meters {
        let peer = try await connect(.plain(url: url + id, password: "bench-\(id)"), chargerId: id, group: group)
        _ = try await peer.call("BootNotification", LoadProfile.bootNotification).get()
        peers.append(peer)
    }
    log("F: the same while \(peers.count) chargers send 10 MeterValues/s each")
    let sent = Mutex(0)
    let failures = Mutex(0)
    let stop = Mutex(false)
    for (index, peer) in peers.enumerated() {
        @Sendable func tick(_ n: Int) {
            guard !stop.withLock({ $0 }) else { return }
            let payload: JSONValue = ["connectorId": 1, "transactionId": 1, "meterValue": [[
                "timestamp": .string(ocppTimestamp()),
                "sampledValue": [
                    ["value": .string("\(1000 + n)"), "measurand": "Energy.Active.Import.Register", "unit": "Wh"],
                    ["value": "230.1", "measurand": "Voltage", "phase": "L1-N", "unit": "V"],
                    ["value": "229.8", "measurand": "Voltage", "phase": "L2-N", "unit": "V"],
                    ["value": "230.4", "measurand": "Voltage", "phase": "L3-N", "unit": "V"],
                    ["value": "16.0", "measurand": "Current.Import", "phase": "L1", "unit": "A"],
                    ["value": "15.9", "measurand": "Current.Import", "phase": "L2", "unit": "A"],
                    ["value": "16.1", "measurand": "Current.Import", "phase": "L3", "unit": "A"],
                ],
            ]]]
            peer.call("MeterValues", payload, timeout: .seconds(5)).whenComplete { result in
                if case .failure = result { failures.withLock { $0 += 1 } }
            }
            sent.withLock { $0 += 1 }
            peer.eventLoop.scheduleTask(in: .milliseconds(100)) { tick(n + 1) }
        }
        peer.eventLoop.scheduleTask(in: .milliseconds(Int64(index * 100 / max(1, peers.count)))) { tick(0) }
    }
    let started = Date()
    let loaded = await authorizeLatency(probe, seconds: seconds)
    stop.withLock { $0 = true }
    let elapsed = Date().timeIntervalSince(started)
    for peer in peers { peer.close() }
    probe.close()
    try? await Task.sleep(for: .seconds(1))

    let idleHistogram = idle.histogram.withLock { $0 }
    let loadedHistogram = loaded.histogram.withLock { $0 }
    return HealthLoadResult(
        idleP50Micros: idleHistogram.valueAtPercentile(50), idleP99Micros: idleHistogram.valueAtPercentile(99),
        loadedP50Micros: loadedHistogram.valueAtPercentile(50), loadedP99Micros: loadedHistogram.valueAtPercentile(99),
        meterValuesPerSecond: Double(sent.withLock { $0 }) / elapsed, chargers: peers.count,
        failedCalls: idle.failed.withLock { $0 } + loaded.failed.withLock { $0 } + failures.withLock { $0 })
}
