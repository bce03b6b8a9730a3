import Foundation
import NIOCore
import NIOPosix
import Synchronization
import Testing
@testable import Transport

/// A value behind a lock, shareable by reference.
final class Locked<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    func withLock<R: Sendable>(_ body: (inout sending Value) -> sending R) -> R { mutex.withLock { body(&$0) } }
    var value: Value { mutex.withLock { $0 } }
}

/// A WebSocket server on a free port whose decision accepts everything with ocpp1.6; each
/// upgraded connection is kept in `connections` and runs `configure`.
final class TestServer: Sendable {
    let channel: any Channel
    let connections = Locked<[WebSocketConnection]>([])
    let refusals = Locked<[ConnectionRefusal]>([])
    var port: Int { channel.localAddress!.port! }

    init(_ options: WebSocketServerOptions = WebSocketServerOptions(host: "127.0.0.1", port: 0),
         group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
         configure: @escaping @Sendable (WebSocketConnection) -> Void = { _ in }) async throws {
        var options = options
        let refusals = self.refusals
        options.onRefusal = { refusal in refusals.withLock { $0.append(refusal) } }
        let connections = self.connections
        channel = try await WebSocketServer.start(options, group: group) { _, channel in
            channel.eventLoop.makeSucceededFuture(.accept(subprotocol: "ocpp1.6", onUpgrade: { connection in
                connections.withLock { $0.append(connection) }
                configure(connection)
            }))
        }
    }

    func refusalCount(_ reason: ConnectionRefusal.Reason) -> Int { refusals.withLock { $0.filter { $0.reason == reason }.count } }

    func stop() async { try? await channel.close() }
}

@Suite("south connection limits", .serialized)
struct ConnectionLimitsTests {
    static func options(handshake: TimeAmount = .seconds(60), perSource: Int? = nil, pending: Int? = nil) -> WebSocketServerOptions {
        WebSocketServerOptions(host: "127.0.0.1", port: 0, handshakeTimeout: handshake,
                               maxConnectionsPerSource: perSource, maxPendingConnections: pending)
    }

    @Test func anIdleConnectionIsClosedAfterTheHandshakeTimeout() async throws {
        let server = try await TestServer(Self.options(handshake: .milliseconds(300)))
        let idle = try await RawSocket.connect(port: server.port)
        #expect(await RawSocket.eventually { !idle.isOpen }, "a TCP connection that never sends a request must not be held")
        #expect(server.refusalCount(.handshakeTimeout) == 1)
        await server.stop()
    }

    @Test func aSlowlorisRequestIsClosedAfterTheHandshakeTimeout() async throws {
        let server = try await TestServer(Self.options(handshake: .milliseconds(500)))
        let slow = try await RawSocket.connect(port: server.port)
        // One byte every 50 ms: the head never completes within the timeout, though bytes keep coming.
        let request = Array(RawSocket.upgradeRequest().utf8)
        for byte in request.prefix(60) where slow.isOpen {
            try? await slow.send([byte])
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(!slow.isOpen, "a request trickled in byte by byte must be cut at the handshake timeout")
        #expect(server.refusalCount(.handshakeTimeout) == 1)
        await server.stop()
    }

    @Test func aCompleteRequestIsNotCutByTheHandshakeTimeout() async throws {
        // The decision may take longer than the handshake timeout (it waits for the north link).
        let server = try await TestServer(Self.options(handshake: .milliseconds(200)))
        let client = try await RawSocket.connect(port: server.port, sending: RawSocket.upgradeRequest())
        #expect(await RawSocket.eventually { client.receivedText.hasPrefix("HTTP/1.1 101") })
        try await Task.sleep(for: .milliseconds(400))
        #expect(client.isOpen, "an upgraded connection is no longer under the handshake timeout")
        client.close()
        await server.stop()
    }

    @Test func idleConnectionsCountAgainstThePerSourceLimitAtAccept() async throws {
        let server = try await TestServer(Self.options(perSource: 3))
        var sockets: [RawSocket] = []
        for _ in 0..<5 { sockets.append(try await RawSocket.connect(port: server.port)) }
        // The fourth and fifth are answered 429 and closed without sending a byte of a request.
        #expect(await RawSocket.eventually { sockets.filter(\.isOpen).count == 3 })
        #expect(sockets[3].receivedText.hasPrefix("HTTP/1.1 429") || sockets[4].receivedText.hasPrefix("HTTP/1.1 429"))
        #expect(server.refusalCount(.tooManyFromSource) == 2)
        // A closed connection frees its place.
        sockets[0].close()
        var upgraded: RawSocket?
        for _ in 0..<50 where upgraded == nil {
            let again = try await RawSocket.connect(port: server.port)
            try? await again.send(RawSocket.upgradeRequest())
            await RawSocket.eventually { !again.received.isEmpty }
            if again.receivedText.hasPrefix("HTTP/1.1 101") { upgraded = again } else { again.close() }
        }
        #expect(upgraded != nil, "the place of a closed connection is free again")
        for socket in sockets { socket.close() }
        upgraded?.close()
        await server.stop()
    }

    @Test func theOtherSourcesAreNotHeldBackByOneSourcesIdleSockets() async throws {
        let server = try await TestServer(Self.options(perSource: 4))
        var idle: [RawSocket] = []
        for _ in 0..<50 { idle.append(try await RawSocket.connect(port: server.port, sourceAddress: "127.0.0.2")) }
        #expect(await RawSocket.eventually { idle.filter(\.isOpen).count == 4 })
        let legit = try await RawSocket.connect(port: server.port, sourceAddress: "127.0.0.1", sending: RawSocket.upgradeRequest())
        #expect(await RawSocket.eventually { legit.receivedText.hasPrefix("HTTP/1.1 101") })
        for socket in idle + [legit] { socket.close() }
        await server.stop()
    }

    @Test func pendingConnectionsHaveATotalCap() async throws {
        let server = try await TestServer(Self.options(pending: 2))
        var sockets: [RawSocket] = []
        for source in ["127.0.0.3", "127.0.0.4", "127.0.0.5"] { sockets.append(try await RawSocket.connect(port: server.port, sourceAddress: source)) }
        #expect(await RawSocket.eventually { sockets.filter(\.isOpen).count == 2 })
        #expect(sockets.filter { $0.receivedText.hasPrefix("HTTP/1.1 503") }.count == 1)
        // An upgraded connection is no longer pending: its place goes to the next one.
        let open = sockets.filter(\.isOpen)
        try #require(open.count == 2)
        let first = open[0]
        try await first.send(RawSocket.upgradeRequest())
        #expect(await RawSocket.eventually { first.receivedText.hasPrefix("HTTP/1.1 101") })
        let fourth = try await RawSocket.connect(port: server.port, sourceAddress: "127.0.0.6", sending: RawSocket.upgradeRequest())
        #expect(await RawSocket.eventually { fourth.receivedText.hasPrefix("HTTP/1.1 101") })
        #expect(server.refusalCount(.tooManyPending) == 1)
        for socket in sockets + [fourth] { socket.close() }
        await server.stop()
    }

    @Test func bytesBeforeTheUpgradeAreBounded() async throws {
        let server = try await TestServer(Self.options())
        let client = try await RawSocket.connect(port: server.port)
        // A request head that never ends, well past the header limit and the pre-upgrade byte cap.
        try? await client.send("GET /ocpp/CP001 HTTP/1.1\r\n")
        let header = Array("X-Filler: \(String(repeating: "a", count: 1000))\r\n".utf8)
        for _ in 0..<200 where client.isOpen { try? await client.send(header) }
        #expect(await RawSocket.eventually { !client.isOpen })
        await server.stop()
    }
}
