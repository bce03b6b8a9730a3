import Foundation
import NIOCore
import NIOPosix
import OCPP
import Simulators

/// Scenario R: what the `ids` stage's replay table costs per frame as it fills. One charger sends
/// Heartbeats with unique ids, one after the other, through a gateway whose firewall lets every
/// frame through; the `ids` stage's own time per frame (its `ocpp_gateway_stage_duration_seconds`
/// histogram, scraped from `/metrics`) and the gateway's CPU per CALL are measured over the first
/// `window` CALLs (an empty table) and over `window` CALLs after `fill` more (a table of ~24k ids).
struct ReplayTableResult: Codable {
    var window: Int
    var idsBeforeLateWindow: Int
    /// Mean time in the `ids` stage per frame (CALL or CALLRESULT), µs.
    var stageMicrosPerFrameEmpty: Double
    var stageMicrosPerFrameFull: Double
    /// Gateway CPU (user + system) per CALL round trip (two frames), µs.
    var cpuMicrosPerCallEmpty: Double
    var cpuMicrosPerCallFull: Double
}

enum ReplayPipeline {
    /// The firewall lets everything through (limits far above the load) and remembers every id:
    /// `max_replay_ids` is raised above the ids sent, so the table really holds them all.
    /// `legacy`: for a gateway from before `max_replay_ids` existed (its table was unbounded).
    static func yaml(legacy: Bool) -> String {
        var config = "rate_limits: { default: { per_second: 1000000, burst: 1000000 } }, "
            + "connections: { attempts_per_second: 100000, attempts_burst: 100000 }"
        if !legacy { config += ", max_replay_ids: 100000" }
        return """
            version: 1
            stages:
              - id: guard
                type: ids
                config: { \(config) }
              - id: identity
                type: auth
            """
    }
}

func measureReplayTable(gatewayPort: Int, adminPort: Int, gateway: Process, window: Int, fill: Int) async throws -> ReplayTableResult {
    let group = MultiThreadedEventLoopGroup.singleton
    let stats = ProcessStats(pid: gateway.processIdentifier)
    let peer = try await connect(.plain(url: "ws://127.0.0.1:\(gatewayPort)/ocpp/BENCH0001", password: "bench-BENCH0001"),
                                 chargerId: "BENCH0001", group: group)
    _ = try await peer.call("BootNotification", LoadProfile.bootNotification).get()

    func run(_ calls: Int) async throws {
        for _ in 0..<calls { _ = try await peer.call("Heartbeat", [:], timeout: .seconds(30)).get() }
    }
    func measured(_ calls: Int) async throws -> (stage: Double, cpu: Double) {
        let before = try stageTiming(adminPort: adminPort, stage: "guard")
        let cpuBefore = stats.cpuSeconds
        try await run(calls)
        let cpuAfter = stats.cpuSeconds
        let after = try stageTiming(adminPort: adminPort, stage: "guard")
        let frames = max(after.count - before.count, 1)
        return ((after.sum - before.sum) / frames * 1e6, (cpuAfter - cpuBefore) / Double(calls) * 1e6)
    }
    log("R: \(window) Heartbeats with an empty replay table")
    let empty = try await measured(window)
    log("R: \(fill) more to fill the table")
    try await run(fill)
    log("R: \(window) Heartbeats with \(window + fill) ids in the table")
    let full = try await measured(window)
    peer.close()
    try? await Task.sleep(for: .milliseconds(500))
    return ReplayTableResult(window: window, idsBeforeLateWindow: window + fill, stageMicrosPerFrameEmpty: empty.stage,
                             stageMicrosPerFrameFull: full.stage, cpuMicrosPerCallEmpty: empty.cpu, cpuMicrosPerCallFull: full.cpu)
}

/// `_sum` and `_count` of a stage's duration histogram, from the gateway's `/metrics`.
func stageTiming(adminPort: Int, stage: String) throws -> (sum: Double, count: Double) {
    let text = try httpGet(port: adminPort, path: "/metrics")
    var sum = 0.0, count = 0.0
    for line in text.split(separator: "\n") where line.hasPrefix("ocpp_gateway_stage_duration_seconds") && line.contains("stage=\"\(stage)\"") {
        let parts = line.split(separator: " ")
        guard parts.count >= 2, let value = Double(parts[1]) else { continue }
        if line.hasPrefix("ocpp_gateway_stage_duration_seconds_sum") { sum = value }
        if line.hasPrefix("ocpp_gateway_stage_duration_seconds_count") { count = value }
    }
    guard count > 0 else { throw BenchError("no ocpp_gateway_stage_duration_seconds for stage '\(stage)' on /metrics") }
    return (sum, count)
}

/// A plain HTTP/1.0 GET on 127.0.0.1 (the admin endpoint); the body.
func httpGet(port: Int, path: String) throws -> String {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw BenchError("socket: \(errno)") }
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else { throw BenchError("cannot connect to the admin port \(port)") }
    let request = Array("GET \(path) HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
    _ = request.withUnsafeBytes { write(descriptor, $0.baseAddress, $0.count) }
    var response = [UInt8]()
    var buffer = [UInt8](repeating: 0, count: 65_536)
    while true {
        let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
        if count <= 0 { break }
        response += buffer[0..<count]
    }
    let text = String(decoding: response, as: UTF8.self)
    return text.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
}
