import Foundation
import NIOCore
import Testing
@testable import Transport

/// A peer that floods waits for its message budget: reading pauses (its bytes stay in its TCP buffers),
/// so the loop's other connections keep their CPU; nothing is dropped and the order holds.
@Suite("inbound message budget", .serialized)
struct InboundBudgetTests {
    @Test func aFloodWaitsForItsBudgetAndNothingIsLostOrReordered() async throws {
        var options = WebSocketServerOptions(host: "127.0.0.1", port: 0, handshakeTimeout: .seconds(60))
        options.inboundBudget = InboundBudget(messagesPerSecond: 100, burst: 10)
        let received = Locked<[String]>([])
        let server = try await TestServer(options) { connection in
            connection.onText = { bytes in received.withLock { $0.append(String(decoding: bytes, as: UTF8.self)) } }
        }
        let client = try await RawSocket.connect(port: server.port, sending: RawSocket.upgradeRequest())
        #expect(await RawSocket.eventually { client.receivedText.hasPrefix("HTTP/1.1 101") })
        let start = ContinuousClock.now
        // 100 messages in one write: without a budget they are all handled in the first read.
        try await client.send((0..<100).flatMap { RawSocket.frame(opcode: 0x1, payload: Array("m\($0)".utf8)) })
        try await Task.sleep(for: .milliseconds(200))
        let early = received.withLock { $0.count }
        let (seconds, attoseconds) = (ContinuousClock.now - start).components
        let elapsed = Double(seconds) + Double(attoseconds) / 1e18
        #expect(early <= 10 + Int(100 * elapsed) + 2, "the burst, then 100 a second")
        #expect(await RawSocket.eventually(within: .seconds(30)) { received.withLock { $0.count } == 100 })
        #expect(received.withLock { $0 } == (0..<100).map { "m\($0)" }, "all of them, in order")
        await server.stop()
    }
}
