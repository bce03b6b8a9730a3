import Foundation
import Gateway
import GatewayStages
import Logging
import NIOCore
import NIOPosix
import Router
import Testing
@testable import Gateway
@testable import Transport

/// A TCP server that accepts and then says nothing: a CSMS (or load balancer) stalling TLS.
final class StallingServer: Sendable {
    let channel: any Channel
    let accepted = Locked(0)
    let closed = Locked(0)
    var port: Int { channel.localAddress!.port! }
    var open: Int { accepted.value - closed.value }

    init() async throws {
        let accepted = self.accepted
        let closed = self.closed
        channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                accepted.withLock { $0 += 1 }
                child.closeFuture.whenComplete { _ in closed.withLock { $0 += 1 } }
                return child.eventLoop.makeSucceededVoidFuture()
            }
            .bind(host: "127.0.0.1", port: 0).get()
    }

    func stop() async { try? await channel.close() }
}

/// The gateway in-process with one charger (CP001, Basic auth) and a north URL the test chooses.
func makeGateway(north: String, northExtra: String = "", southExtra: String = "",
                 group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) async throws -> (GatewayRuntime, Int, String) {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ocpp-gw-transport-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    try "version: 1\nstages:\n  - id: identity\n    type: auth\n".write(toFile: folder + "/pipeline.yaml", atomically: true, encoding: .utf8)
    try """
        south:
          listen: "127.0.0.1:0"
          security_profile: 1
          chargers:
            CP001: { password: "secret-CP001", north_password: "north-CP001" }
        \(southExtra)
        north:
          url: "\(north)"
          security_profile: \(north.hasPrefix("ws:") ? 1 : 2)
          reconnect: { initial_delay: 30, max_delay: 60 }
        \(northExtra)
        state_dir: "."
        pipeline: pipeline.yaml
        """.write(toFile: folder + "/gateway.yaml", atomically: true, encoding: .utf8)
    let configuration = try ResolvedGatewayConfiguration.load(file: folder + "/gateway.yaml")
    let gateway = try GatewayRuntime(configuration: configuration, registry: makeStageRegistry(), group: group,
                                     logger: ProcessInfo.processInfo.environment["TRANSPORT_TEST_LOG"] != nil
                                        ? Logger(label: "test", factory: { StreamLogHandler.standardError(label: $0) })
                                        : Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    let port = try await gateway.start().port ?? 0
    return (gateway, port, folder)
}

let chargerAuthorization = "Authorization: Basic \(Data("CP001:secret-CP001".utf8).base64EncodedString())\r\n"

@Suite("north connect bounds", .serialized)
struct NorthConnectTests {
    @Test func anAttemptAgainstAStalledTLSHandshakeEndsAtTheConnectTimeout() async throws {
        let stall = try await StallingServer()
        let options = WebSocketClientOptions(url: URL(string: "wss://127.0.0.1:\(stall.port)/ocpp/CP001")!,
                                             tls: try NorthTLS.clientConfiguration(caFile: nil, certificateFile: nil, keyFile: nil),
                                             serverName: "localhost", connectTimeout: .milliseconds(500))
        let attempt = WebSocketClient.start(options, on: MultiThreadedEventLoopGroup.singleton.next())
        #expect(await RawSocket.eventually { stall.accepted.value == 1 }, "TCP connects at once; TLS never answers")
        let outcome = await Self.result(of: attempt.futureResult, within: .seconds(5))
        guard case .failure(WebSocketConnectError.timedOut) = outcome else {
            Issue.record("expected a timeout covering TLS, got \(String(describing: outcome))")
            return
        }
        #expect(await RawSocket.eventually { stall.open == 0 }, "the socket of the timed-out attempt is released")
        await stall.stop()
    }

    @Test func aCancelledAttemptFailsAndReleasesItsSocket() async throws {
        let stall = try await StallingServer()
        let options = WebSocketClientOptions(url: URL(string: "wss://127.0.0.1:\(stall.port)/ocpp/CP001")!,
                                             tls: try NorthTLS.clientConfiguration(caFile: nil, certificateFile: nil, keyFile: nil),
                                             serverName: "localhost", connectTimeout: .seconds(30))
        let attempt = WebSocketClient.start(options, on: MultiThreadedEventLoopGroup.singleton.next())
        #expect(await RawSocket.eventually { stall.accepted.value == 1 })
        attempt.cancel(reason: "test")
        let outcome = await Self.result(of: attempt.futureResult, within: .seconds(5))
        guard case .failure(WebSocketConnectError.cancelled) = outcome else {
            Issue.record("expected a cancellation, got \(String(describing: outcome))")
            return
        }
        #expect(await RawSocket.eventually { stall.open == 0 })
        await stall.stop()
    }

    @Test func aChargerLeavingCancelsItsPendingNorthConnect() async throws {
        let stall = try await StallingServer()
        let (gateway, port, folder) = try await makeGateway(north: "wss://127.0.0.1:\(stall.port)/ocpp",
                                                            northExtra: "  connect_timeout: 30\n  server_name: localhost")
        let charger = try await RawSocket.connect(port: port, sending: RawSocket.upgradeRequest(extraHeaders: chargerAuthorization))
        #expect(await RawSocket.eventually { stall.accepted.value == 1 && gateway.pendingNorthConnects == 1 })
        charger.close()
        #expect(await RawSocket.eventually { stall.open == 0 }, "the north socket goes with the charger")
        #expect(await RawSocket.eventually { gateway.pendingNorthConnects == 0 && gateway.admissionsInProgress == 0 })
        await gateway.shutdown(grace: .seconds(2))
        await stall.stop()
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// SIGTERM during a north handshake: the attempt is cancelled and its admission finished
    /// before `shutdown` returns, so nothing is left to run on the event loops after they stop
    /// ("Cannot schedule tasks on an EventLoop that has already shut down").
    @Test func shutdownCancelsPendingNorthConnectsBeforeReturning() async throws {
        let stall = try await StallingServer()
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let (gateway, port, folder) = try await makeGateway(north: "wss://127.0.0.1:\(stall.port)/ocpp",
                                                            northExtra: "  connect_timeout: 30\n  server_name: localhost", group: group)
        let charger = try await RawSocket.connect(port: port, sending: RawSocket.upgradeRequest(extraHeaders: chargerAuthorization))
        #expect(await RawSocket.eventually { gateway.pendingNorthConnects == 1 })
        await gateway.shutdown(grace: .seconds(5))
        #expect(gateway.pendingNorthConnects == 0)
        #expect(gateway.admissionsInProgress == 0, "no admission may outlive shutdown")
        try await group.shutdownGracefully()
        #expect(await RawSocket.eventually { stall.open == 0 })
        charger.close()
        await stall.stop()
        try? FileManager.default.removeItem(atPath: folder)
    }

    static func result(of future: EventLoopFuture<WebSocketConnection>, within limit: Duration) async -> Result<WebSocketConnection, any Error>? {
        let box = Locked<Result<WebSocketConnection, any Error>?>(nil)
        future.whenComplete { result in box.withLock { $0 = result } }
        await RawSocket.eventually(within: limit) { box.value != nil }
        return box.value
    }
}
