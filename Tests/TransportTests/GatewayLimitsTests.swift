import Foundation
import NIOCore
import NIOPosix
import Router
import StageKit
import Testing
@testable import Gateway
@testable import Transport

/// The limits wired through `gateway.yaml` into the running gateway.
@Suite("gateway connection limits and backpressure", .serialized)
struct GatewayLimitsTests {
    @Test func theNewKeysAreReadWithTheirDefaults() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ocpp-gw-keys-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try "version: 1\nstages: []\n".write(toFile: folder + "/p.yaml", atomically: true, encoding: .utf8)
        let base = "south: { listen: \"127.0.0.1:0\", security_profile: 1%@ }\nnorth: { url: \"wss://csms.example.com/ocpp\", security_profile: 3%@ }\npipeline: p.yaml\n"
        try String(format: base, "", "").write(toFile: folder + "/a.yaml", atomically: true, encoding: .utf8)
        let defaults = try ResolvedGatewayConfiguration.load(file: folder + "/a.yaml")
        #expect(defaults.southHandshakeTimeout == .seconds(10))
        #expect(defaults.southMaxPendingConnections == 256)
        #expect(defaults.southMaxOutboundBytes == 1 << 20 && defaults.northMaxOutboundBytes == 1 << 20)
        #expect(defaults.southWriteTimeout == .seconds(30) && defaults.northWriteTimeout == .seconds(30))
        #expect(defaults.northAllowCommonName == false)
        try String(format: base, ", handshake_timeout: 2.5, max_pending_connections: 16, max_outbound_bytes: 65536, write_timeout: 5",
                   ", max_outbound_bytes: 131072, write_timeout: 7, allow_common_name: true")
            .write(toFile: folder + "/b.yaml", atomically: true, encoding: .utf8)
        let set = try ResolvedGatewayConfiguration.load(file: folder + "/b.yaml")
        #expect(set.southHandshakeTimeout == .milliseconds(2500))
        #expect(set.southMaxPendingConnections == 16 && set.southMaxOutboundBytes == 65536 && set.southWriteTimeout == .seconds(5))
        #expect(set.northMaxOutboundBytes == 131072 && set.northWriteTimeout == .seconds(7) && set.northAllowCommonName)
        try String(format: base, ", handshake_timeout: 0, max_outbound_bytes: 10", "")
            .write(toFile: folder + "/c.yaml", atomically: true, encoding: .utf8)
        #expect(throws: ConfigurationError.self) { try ResolvedGatewayConfiguration.load(file: folder + "/c.yaml") }
    }

    @Test func aChargerIsServedWhileOneSourceHoldsHundredsOfIdleSockets() async throws {
        let csms = try await TestServer()
        let (gateway, port, folder) = try await makeGateway(north: "ws://127.0.0.1:\(csms.port)/ocpp",
                                                            northExtra: "  allow_insecure: true")
        var idle: [RawSocket] = []
        for _ in 0..<300 { idle.append(try await RawSocket.connect(port: port, sourceAddress: "127.0.0.2")) }
        #expect(await RawSocket.eventually { idle.filter(\.isOpen).count == 8 }, "max_connections_per_source (8) holds at accept")
        let charger = try await RawSocket.connect(port: port, sourceAddress: "127.0.0.1", sending: RawSocket.upgradeRequest(extraHeaders: chargerAuthorization))
        #expect(await RawSocket.eventually { charger.receivedText.hasPrefix("HTTP/1.1 101") })
        #expect(gateway.connectionLimiter.openConnections(from: "127.0.0.2") == 8)
        for socket in idle + [charger] { socket.close() }
        await gateway.shutdown(grace: .seconds(2))
        await csms.stop()
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// The session's coupling: while the charger's queue is over its mark the gateway stops reading
    /// from the CSMS (and the other way round), and resumes when it drains.
    @Test func aFullChargerQueueStopsReadingFromTheCSMSAndViceVersa() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        let limits = OutboundLimits(maxBytes: 64 * 1024, writeTimeout: nil)
        let chargerSide = try await TestServer(WebSocketServerOptions(host: "127.0.0.1", port: 0, outboundLimits: limits), group: group)
        let csmsSide = try await TestServer(WebSocketServerOptions(host: "127.0.0.1", port: 0), group: group)
        // The charger: connected, never reading.
        let charger = try await RawSocket.connect(port: chargerSide.port, reads: false, receiveBuffer: 4096, sending: RawSocket.upgradeRequest())
        #expect(await RawSocket.eventually { !chargerSide.connections.value.isEmpty })
        let south = try #require(chargerSide.connections.value.first)
        let north = try await WebSocketClient.connect(
            WebSocketClientOptions(url: URL(string: "ws://127.0.0.1:\(csmsSide.port)/ocpp/CP001")!, outboundLimits: limits), on: loop).get()
        let link = try await loop.submit {
            let link = SessionLink(chargerId: "CP001", south: south, north: north, credentials: NorthCredentials(securityProfile: 0),
                                   eventLoop: loop) { _ in
                WebSocketClient.failed(WebSocketConnectError.cancelled("no re-link in this test"), on: loop)
            }
            link.coupleBackpressure()
            return NIOLoopBound(link, eventLoop: loop)
        }.get()
        #expect(try await loop.submit { north.readPauseReasons.isEmpty }.get())
        // Frames for the charger until its queue passes the mark (the kernel's buffers first).
        let frame = [UInt8](repeating: UInt8(ascii: "q"), count: 16 * 1024)
        #expect(await RawSocket.eventually(within: .seconds(10)) {
            (try? loop.submit { () -> Bool in
                if south.isWritable { south.send(frame) }
                return !south.isWritable
            }.wait()) == true
        })
        #expect(try await loop.submit { north.readPauseReasons }.get() == [.counterpart],
                "the CSMS link must stop reading while the charger's queue is full")
        // The charger reads again: its queue drains and the CSMS link reads again.
        try await charger.channel.setOption(.autoRead, value: true).get()
        charger.channel.read()
        #expect(await RawSocket.eventually(within: .seconds(10)) {
            (try? loop.submit { north.readPauseReasons.isEmpty && south.isWritable }.wait()) == true
        })
        withExtendedLifetime(link) {}
        charger.close()
        try? await north.channel.close()
        await chargerSide.stop()
        await csmsSide.stop()
        try await group.shutdownGracefully()
    }
}
