import Foundation
import NIOCore
import NIOPosix
import Testing
@testable import Transport

/// RFC 6455 close codes for messages the gateway cannot take (§7.4.1, §8.1).
@Suite("WebSocket close codes", .serialized)
struct WebSocketCloseCodeTests {
    static func upgraded(maxMessageBytes: Int = 1024) async throws -> (TestServer, RawSocket) {
        // A generous handshake bound: under ThreadSanitizer on a loaded machine the request may take seconds to go out.
        let server = try await TestServer(WebSocketServerOptions(host: "127.0.0.1", port: 0, maxMessageBytes: maxMessageBytes,
                                                                 handshakeTimeout: .seconds(60))) {
            $0.onText = { _ in }
        }
        let client = try await RawSocket.connect(port: server.port, sending: RawSocket.upgradeRequest())
        #expect(await RawSocket.eventually { client.receivedText.hasPrefix("HTTP/1.1 101") })
        return (server, client)
    }

    @Test func aFragmentedMessageOverTheLimitIsClosedWith1009() async throws {
        let (server, client) = try await Self.upgraded(maxMessageBytes: 1024)
        // Three fragments of 600 bytes: each under the frame limit, together over the message limit.
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 600)
        try? await client.send(RawSocket.frame(opcode: 0x1, fin: false, payload: chunk))
        try? await client.send(RawSocket.frame(opcode: 0x0, fin: false, payload: chunk))
        try? await client.send(RawSocket.frame(opcode: 0x0, fin: true, payload: chunk))
        #expect(await RawSocket.eventually { client.closeCode != nil })
        #expect(client.closeCode == 1009)
        #expect(await RawSocket.eventually { !client.isOpen })
        await server.stop()
    }

    @Test func aSingleFrameOverTheLimitIsClosedWith1009() async throws {
        let (server, client) = try await Self.upgraded(maxMessageBytes: 1024)
        try? await client.send(RawSocket.frame(opcode: 0x1, payload: [UInt8](repeating: UInt8(ascii: "a"), count: 2000)))
        #expect(await RawSocket.eventually { client.closeCode != nil })
        #expect(client.closeCode == 1009)
        await server.stop()
    }

    @Test func invalidUTF8InATextMessageIsClosedWith1007() async throws {
        let (server, client) = try await Self.upgraded()
        let received = Locked<[[UInt8]]>([])
        if let connection = server.connections.value.first {
            try await connection.channel.eventLoop.submit { connection.onText = { bytes in received.withLock { $0.append(bytes) } } }.get()
        }
        // "[2,"1","Heartbeat",{}]" with a lone continuation byte and an overlong encoding inside.
        let bad: [UInt8] = Array("[2,\"1\",\"Heart".utf8) + [0x80, 0xC0, 0xAF] + Array("beat\",{}]".utf8)
        try? await client.send(RawSocket.frame(opcode: 0x1, payload: bad))
        #expect(await RawSocket.eventually { client.closeCode != nil })
        #expect(client.closeCode == 1007)
        #expect(received.value.isEmpty, "an invalid text message is not delivered")
        await server.stop()
    }

    @Test func validUTF8BeyondASCIIIsDelivered() async throws {
        let (server, client) = try await Self.upgraded()
        let received = Locked<[[UInt8]]>([])
        if let connection = server.connections.value.first {
            try await connection.channel.eventLoop.submit { connection.onText = { bytes in received.withLock { $0.append(bytes) } } }.get()
        }
        let text = Array("[2,\"1\",\"DataTransfer\",{\"vendorId\":\"Ünïcødé ⚡️ 𝄞\"}]".utf8)
        try await client.send(RawSocket.frame(opcode: 0x1, payload: text))
        #expect(await RawSocket.eventually { received.value.count == 1 })
        #expect(received.value.first == text)
        #expect(client.closeCode == nil)
        client.close()
        await server.stop()
    }

    @Test func utf8CheckAgreesWithTheStandardLibrary() {
        let samples: [[UInt8]] = [
            [], Array("plain".utf8), Array("é€𝄞".utf8), [0xC3], [0xED, 0xA0, 0x80], [0xF4, 0x90, 0x80, 0x80], [0xFF], [0xE2, 0x82],
        ]
        for sample in samples {
            #expect(WebSocketConnection.isValidUTF8(sample) == (String(validating: sample, as: UTF8.self) != nil), "\(sample)")
        }
    }
}
