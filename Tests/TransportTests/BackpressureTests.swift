import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import Transport

@Suite("outbound backpressure", .serialized)
struct BackpressureTests {
    /// A peer that sends and never reads: every message it sends is answered with 4 KiB.
    @Test func aPeerThatSendsAndNeverReadsIsNotBufferedWithoutBound() async throws {
        let limits = OutboundLimits(maxBytes: 64 * 1024, writeTimeout: .milliseconds(500))
        let handled = Locked(0)
        let peakQueued = Locked(0)
        let answer = [UInt8](repeating: UInt8(ascii: "x"), count: 4096)
        let server = try await TestServer(WebSocketServerOptions(host: "127.0.0.1", port: 0, outboundLimits: limits)) { connection in
            connection.onText = { _ in
                handled.withLock { $0 += 1 }
                connection.send(answer)
                let queued = connection.bufferedOutboundBytes
                peakQueued.withLock { $0 = max($0, queued) }
            }
        }
        let client = try await RawSocket.connect(port: server.port, reads: false, receiveBuffer: 4096, sending: RawSocket.upgradeRequest())
        let message = RawSocket.frame(opcode: 0x1, payload: Array("[2,\"1\",\"Heartbeat\",{}]".utf8))
        // 20,000 messages would make 80 MB of answers if the server kept reading.
        let sent = 20_000
        var batch: [UInt8] = []
        for _ in 0..<sent { batch += message }
        let written = client.write(batch)
        // The server stops reading, then drops the peer once its queue stayed full past the write timeout.
        #expect(await RawSocket.eventually(within: .seconds(10)) { !client.isOpen })
        _ = try? await written.get()
        #expect(handled.value < sent, "the server must stop reading from a peer that does not read")
        #expect(peakQueued.value <= limits.maxBytes + answer.count, "the outbound queue stays within its bound")
        #expect(server.connections.value.first?.closeReason?.contains("read nothing") == true)
        await server.stop()
    }

    @Test func readingResumesWhenThePeerReadsAgain() async throws {
        let limits = OutboundLimits(maxBytes: 64 * 1024, writeTimeout: nil)
        let handled = Locked(0)
        let answer = [UInt8](repeating: UInt8(ascii: "y"), count: 4096)
        let server = try await TestServer(WebSocketServerOptions(host: "127.0.0.1", port: 0, outboundLimits: limits)) { connection in
            connection.onText = { _ in
                handled.withLock { $0 += 1 }
                connection.send(answer)
            }
        }
        let client = try await RawSocket.connect(port: server.port, reads: false, receiveBuffer: 4096, sending: RawSocket.upgradeRequest())
        let message = RawSocket.frame(opcode: 0x1, payload: Array("[2,\"1\",\"Heartbeat\",{}]".utf8))
        let sent = 3_000
        var batch: [UInt8] = []
        for _ in 0..<sent { batch += message }
        _ = client.write(batch)
        let connection = try #require(await waitForConnection(server))
        #expect(await RawSocket.eventually { connection.channel.eventLoop.flatSubmit {
            connection.channel.eventLoop.makeSucceededFuture(connection.readPauseReasons.contains(.outboundFull)) }.isSucceeded(true) })
        let pausedAt = handled.value
        #expect(pausedAt < sent)
        // The client starts reading: the queue drains, reading resumes and every message is answered.
        try await client.channel.setOption(.autoRead, value: true).get()
        client.channel.read()
        #expect(await RawSocket.eventually(within: .seconds(10)) { handled.value == sent })
        #expect(client.isOpen)
        client.close()
        await server.stop()
    }

    private func waitForConnection(_ server: TestServer) async -> WebSocketConnection? {
        await RawSocket.eventually { !server.connections.value.isEmpty }
        return server.connections.value.first
    }
}

extension EventLoopFuture where Value == Bool {
    /// Whether the future has already succeeded with `value` (polling helper for tests).
    func isSucceeded(_ value: Bool) -> Bool {
        (try? self.wait()) == value
    }
}

/// Read pauses are kept as bits (`WebSocketConnection.pauseBits`): one bit each, so withdrawing one reason never
/// withdraws another.
@Suite struct ReadPauseBitsTests {
    @Test func everyReasonHasItsOwnBit() {
        let bits = ReadPause.allCases.map(\.bit)
        #expect(bits.allSatisfy { $0.nonzeroBitCount == 1 }, "one bit each")
        #expect(Set(bits).count == ReadPause.allCases.count, "no two reasons share a bit")
    }
}
