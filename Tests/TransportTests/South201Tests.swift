import DevPKI
import Foundation
@testable import Gateway
import GatewayStages
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import OCPP
import Router

import Testing
@testable import Transport

/// A CSMS stand-in over ws:// that accepts the first subprotocol the gateway offers and keeps every
/// frame's bytes, to prove which version the north link speaks and that frames pass byte for byte.
final class RecordingCSMS: Sendable {
    let channel: any Channel
    let subprotocols = Locked<[String]>([])
    let frames = Locked<[[UInt8]]>([])
    var port: Int { channel.localAddress!.port! }

    init() async throws {
        let subprotocols = self.subprotocols
        let frames = self.frames
        channel = try await WebSocketServer.start(WebSocketServerOptions(host: "127.0.0.1", port: 0),
                                                  group: MultiThreadedEventLoopGroup.singleton) { request, channel in
            let chosen = request.offeredSubprotocols.first
            subprotocols.withLock { $0.append(chosen ?? "") }
            return channel.eventLoop.makeSucceededFuture(.accept(subprotocol: chosen, onUpgrade: { connection in
                connection.onText = { bytes in
                    frames.withLock { $0.append(bytes) }
                    // Answer every CALL with an empty result, as a CSMS would (BootNotification gets its status).
                    guard let frame = try? Frame.parse(bytes), frame.messageType == .call else { return }
                    let payload: JSONValue = frame.action == "BootNotification"
                        ? ["status": "Accepted", "interval": 300, "currentTime": "2026-01-01T00:00:00Z"] : [:]
                    connection.send(FrameEncoder.callResult(id: frame.messageId, payload: payload))
                }
            }))
        }
    }

    func stop() async { try? await channel.close() }
}

/// The gateway with a plain and a TLS listener south (docs/certificates.md "Chargers over TLS").
final class TLSRig {
    let folder: String
    let pki: DevPKI
    let csms: RecordingCSMS
    let gateway: GatewayRuntime
    let plainPort: Int
    let tlsPort: Int
    let group = MultiThreadedEventLoopGroup.singleton

    init() async throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("ocpp-gw-south201-\(UUID().uuidString)").path
        pki = try DevPKI(directory: folder, reuse: false)
        for id in ["CS201", "OTHER", "SP2"] { try pki.issueChargerCertificate(id) }
        csms = try await RecordingCSMS()
        try "version: 1\nstages:\n  - id: identity\n    type: auth\n  - id: guard\n    type: ids\n  - id: certificates\n    type: certs\n"
            .write(toFile: folder + "/pipeline.yaml", atomically: true, encoding: .utf8)
        try """
            south:
              listen: "127.0.0.1:0"
              security_profile: 1
              tls:
                listen: "127.0.0.1:0"
                cert_file: pki/csms.pem
                key_file: pki/csms-key.pem
                client_ca_file: pki/ca.pem
              chargers:
                "CS201": { security_profile: 3 }
                "SP2": { security_profile: 2, password: "secret-SP2" }
                "CP16": { password: "secret-CP16", ocpp_versions: ["1.6"] }
            north:
              url: "ws://127.0.0.1:\(csms.port)/ocpp"
              allow_insecure: true
              security_profile: 0
            state_dir: "."
            pipeline: pipeline.yaml
            """.write(toFile: folder + "/gateway.yaml", atomically: true, encoding: .utf8)
        let configuration = try ResolvedGatewayConfiguration.load(file: folder + "/gateway.yaml")
        gateway = try GatewayRuntime(configuration: configuration, registry: makeStageRegistry(), group: group,
                                     logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        plainPort = try await gateway.start().port ?? 0
        tlsPort = gateway.tlsListenerAddress?.port ?? 0
    }

    /// Connects as `id` over wss:// (presenting `certificateOf`'s certificate, if any) or ws://.
    func connect(_ id: String, tls: Bool = true, certificateOf: String? = nil, caFile: String? = nil, subprotocol: String = "ocpp2.0.1",
                 password: String? = nil) async throws -> WebSocketConnection {
        let scheme = tls ? "wss" : "ws"
        let port = tls ? tlsPort : plainPort
        let url = URL(string: "\(scheme)://127.0.0.1:\(port)/ocpp/\(id)")!
        let settings = tls ? try NorthTLS.clientConfiguration(caFile: caFile ?? pki.caCertificate,
                                                               certificateFile: certificateOf.map(pki.chargerCertificate),
                                                               keyFile: certificateOf.map(pki.chargerKey)) : nil
        return try await WebSocketClient.connect(
            WebSocketClientOptions(url: url, tls: settings, serverName: "localhost", subprotocol: subprotocol,
                                   basicAuth: password.map { (id, $0) }),
            on: group.next()).get()
    }

    func stop() async {
        await gateway.shutdown(grace: .seconds(2))
        await csms.stop()
        try? FileManager.default.removeItem(atPath: folder)
    }
}

func httpStatus(of error: any Error) -> UInt? {
    if case WebSocketConnectError.rejected(let status) = error { return status.code }
    return nil
}

@Suite("OCPP 2.0.1 chargers south over TLS", .serialized)
struct South201Tests {
    @Test func aSecurityProfile3StationSpeaks201NorthAndItsFramesPassByteForByte() async throws {
        let rig = try await TLSRig()
        let station = try await rig.connect("CS201", certificateOf: "CS201")
        // (The client refuses a link whose answer is not the subprotocol it offered: ocpp2.0.1 it is.)
        #expect(rig.csms.subprotocols.withLock { $0 } == ["ocpp2.0.1"])
        // Odd spacing and key order: only byte-for-byte relaying keeps them.
        let boot = #"[2, "b-1",  "BootNotification", {"reason":"PowerUp" , "chargingStation":{"vendorName":"V","model":"M"}}]"#
        let answered = Locked<[UInt8]?>(nil)
        try await station.channel.eventLoop.submit {
            station.onText = { bytes in answered.withLock { $0 = bytes } }
            station.send(Array(boot.utf8))
        }.get()
        try await waitUntil { answered.withLock { $0 != nil } }
        #expect(rig.csms.frames.withLock { $0 } == [Array(boot.utf8)])
        // A 2.0.1-only action passes the ids stage for a 2.0.1 session (it would be NotImplemented under 1.6).
        let event = #"[2,"e-1","NotifyEvent",{"generatedAt":"2026-01-01T00:00:00Z","seqNo":0,"eventData":[{"eventId":1,"timestamp":"2026-01-01T00:00:00Z","trigger":"Delta","actualValue":"Faulted","eventNotificationType":"HardWiredNotification","component":{"name":"EVSE"},"variable":{"name":"Problem"}}]}]"#
        try await station.channel.eventLoop.submit { station.send(Array(event.utf8)) }.get()
        try await waitUntil { rig.csms.frames.withLock { $0.count == 2 } }
        #expect(rig.csms.frames.withLock { $0.last } == Array(event.utf8))
        station.channel.eventLoop.execute { station.close(code: .normalClosure, reason: "done") }
        await rig.stop()
    }

    @Test func aChargerLimitedTo16GetsOCPP16AndANorthLinkIn16() async throws {
        let rig = try await TLSRig()
        do {
            _ = try await rig.connect("CP16", tls: false, subprotocol: "ocpp2.0.1", password: "secret-CP16")
            Issue.record("a 1.6-only charger offering only ocpp2.0.1 got a session")
        } catch WebSocketConnectError.subprotocolNotAccepted(_, let answered) {
            #expect(answered == nil)
        }
        let legacy = try await rig.connect("CP16", tls: false, subprotocol: "ocpp1.6", password: "secret-CP16")
        #expect(rig.csms.subprotocols.withLock { $0 } == ["ocpp1.6"])
        legacy.channel.eventLoop.execute { legacy.close(code: .normalClosure, reason: "done") }
        await rig.stop()
    }

    @Test func refusalsBeforeAnyStageAreLoggedCountedAndKeptAsSecurityEvents() async throws {
        let rig = try await TLSRig()
        // CN mismatch: a valid certificate of another charger.
        await #expect { try await rig.connect("CS201", certificateOf: "OTHER") } throws: { httpStatus(of: $0) == 403 }
        // No client certificate on Security Profile 3.
        await #expect { try await rig.connect("CS201") } throws: { httpStatus(of: $0) == 403 }
        // A Security Profile 3 charger over plain ws:// (deny by default).
        await #expect { try await rig.connect("CS201", tls: false) } throws: { httpStatus(of: $0) == 403 }
        // A Security Profile 2 charger over plain ws://, even with the right password.
        await #expect { try await rig.connect("SP2", tls: false, password: "secret-SP2") } throws: { httpStatus(of: $0) == 403 }
        // A certificate from another CA fails the TLS handshake.
        let stranger = try DevPKI(directory: rig.folder + "/stranger", caName: "stranger CA", reuse: false)
        try stranger.issueChargerCertificate("CS201")
        let url = URL(string: "wss://127.0.0.1:\(rig.tlsPort)/ocpp/CS201")!
        let settings = try NorthTLS.clientConfiguration(caFile: rig.pki.caCertificate, certificateFile: stranger.chargerCertificate("CS201"),
                                                        keyFile: stranger.chargerKey("CS201"))
        await #expect(throws: (any Error).self) {
            let link = try await WebSocketClient.connect(WebSocketClientOptions(url: url, tls: settings, serverName: "localhost",
                                                                                 subprotocol: "ocpp2.0.1"), on: rig.group.next()).get()
            // TLS 1.3: the server's verdict on the client certificate may arrive after the client's handshake.
            try await Task.sleep(for: .milliseconds(200))
            try await link.channel.eventLoop.submit { link.send(Array("[2,\"x\",\"Heartbeat\",{}]".utf8)) }.get()
            try await link.channel.closeFuture.get()
            throw CancellationError()
        }
        try await waitUntil { rig.gateway.securityEvents.recent.count >= 5 }
        let events = rig.gateway.securityEvents.recent
        #expect(events.filter { $0.type == "FailedToAuthenticateAtCsms" }.count == 4)
        #expect(events.contains { $0.type == "InvalidChargingStationCertificate" && $0.charger == "CS201" && $0.techInfo?.contains("certificate_untrusted") == true })
        #expect(rig.csms.subprotocols.withLock { $0 }.isEmpty, "no north link for a refused charger")
        #expect(rig.gateway.connectedChargers.isEmpty)
        await rig.stop()
    }

    @Test func aSecurityProfile2ChargerNeedsItsPasswordOverTLS() async throws {
        let rig = try await TLSRig()
        await #expect { try await rig.connect("SP2", password: "wrong") } throws: { httpStatus(of: $0) == 401 }
        let station = try await rig.connect("SP2", password: "secret-SP2")
        station.channel.eventLoop.execute { station.close(code: .normalClosure, reason: "done") }
        await rig.stop()
    }

    @Test func theCommonNameIsReadFromTheCertificate() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ocpp-gw-cn-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let pki = try DevPKI(directory: folder, reuse: false)
        try pki.issueChargerCertificate("CS|42")
        let certificate = try #require(try NIOSSLCertificate.fromPEMFile(pki.chargerCertificate("CS|42")).first)
        let peer = try #require(PeerCertificate(certificate))
        #expect(peer.commonNames == ["CS|42"])
        #expect(peer.commonName == "CS|42")
        #expect(peer.notValidAfter > Int(Date().timeIntervalSince1970))
        // Truncated or foreign bytes never yield a name.
        #expect(PeerCertificate.subjectCommonNames(der: Array(peer.der.prefix(40))) == nil)
        #expect(PeerCertificate.subjectCommonNames(der: [0x30, 0x84, 0xFF, 0xFF, 0xFF, 0xFF]) == nil)
        // Two CNs: ambiguous, never matched.
        #expect(PeerCertificate(der: [], commonNames: ["A", "B"], notValidBefore: 0, notValidAfter: 0).commonName == nil)
    }
}

func waitUntil(timeout: Duration = .seconds(5), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("condition not met within \(timeout)")
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}
