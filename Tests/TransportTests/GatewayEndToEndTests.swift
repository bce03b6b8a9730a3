import DevPKI
import Foundation
import Gateway
import GatewayStages
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import OCPP
import Router
import Simulators
import Testing
import Transport

/// The gateway in-process, between the Swift development CSMS and legacy charger simulators,
/// over real sockets and real TLS with certificates made here.
final class Rig {
    let folder: String
    let pki: DevPKI
    let csms: DevelopmentCSMS
    var csmsOptions: DevelopmentCSMS.Options
    let csmsPort: Int
    let gateway: GatewayRuntime
    let southPort: Int
    let group = MultiThreadedEventLoopGroup.singleton

    init(chargers: [String] = ["CP001", "CP|007"], northProfile: Int = 3, csmsPasswords: [String: String] = [:],
         startCSMS: Bool = true, northExtra: String = "reconnect: { initial_delay: 30, max_delay: 60 }") async throws {
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("ocpp-gw-e2e-\(UUID().uuidString)").path
        pki = try DevPKI(directory: folder, reuse: false)
        for id in chargers { try pki.issueChargerCertificate(id) }
        var options = DevelopmentCSMS.Options(certificateFile: pki.serverCertificate, keyFile: pki.serverKey,
                                              clientCAFile: northProfile == 3 ? pki.caCertificate : nil)
        options.port = 0
        options.passwords = csmsPasswords
        csms = DevelopmentCSMS(options: options)
        csmsPort = startCSMS ? try await csms.start(group: group) : Self.unusedPort()
        csmsOptions = options
        let chargerLines = chargers.map { "    \"\($0)\": { password: \"secret-\($0)\", north_password: \"north-\($0)\" }" }.joined(separator: "\n")
        try "version: 1\nstages:\n  - id: identity\n    type: auth\n".write(toFile: folder + "/pipeline.yaml", atomically: true, encoding: .utf8)
        try """
            south:
              listen: "127.0.0.1:0"
              security_profile: 1
              handshake_timeout: 30
              chargers:
            \(chargerLines)
            north:
              url: "wss://127.0.0.1:\(csmsPort)/ocpp"
              security_profile: \(northProfile)
              ca_file: pki/ca.pem
              server_name: localhost
              connect_timeout: 30
              \(northExtra)
            state_dir: "."
            pipeline: pipeline.yaml
            """.write(toFile: folder + "/gateway.yaml", atomically: true, encoding: .utf8)
        let configuration = try ResolvedGatewayConfiguration.load(file: folder + "/gateway.yaml")
        gateway = try GatewayRuntime(configuration: configuration, registry: makeStageRegistry(), group: group,
                                     logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        southPort = try await gateway.start().port ?? 0
    }

    static func unusedPort() -> Int {
        let socket = try! ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
        let port = socket.localAddress!.port!
        try! socket.close().wait()
        return port
    }

    func charger(_ id: String, password: String? = nil) -> LegacyCharger {
        // The limits are generous (30 s here and in the gateway's configuration above): under ThreadSanitizer
        // every suite starts at once on two cores, and a TLS connect through the gateway took over 10 s.
        var options = LegacyCharger.Options(endpoint: "ws://127.0.0.1:\(southPort)/ocpp", chargerId: id, password: password ?? "secret-\(id)")
        options.connectTimeout = .seconds(30)
        return LegacyCharger(options: options)
    }

    func stop() async {
        await gateway.shutdown(grace: .seconds(2))
        await csms.stop()
        try? FileManager.default.removeItem(atPath: folder)
    }
}

@Suite("gateway end to end", .serialized)
struct GatewayEndToEndTests {
    @Test func aChargingSessionFlowsThroughWithMutualTLS() async throws {
        let rig = try await Rig()
        let charger = rig.charger("CP001")
        let peer = try await charger.connect(on: rig.group.next())
        try await charger.runChargingSession(on: peer)
        let received = rig.csms.receivedFrames.filter { $0.charger == "CP001" }.map(\.frame)
        #expect(received.count == 12)
        #expect(received.first?.contains("\"BootNotification\"") == true)
        // The CSMS can call the charger through the gateway.
        let configuration = try await #require(rig.csms.call("CP001", "GetConfiguration", [:])).get()
        #expect(configuration["configurationKey"]?.arrayValue?.isEmpty == false)
        #expect(rig.gateway.connectedChargers == ["CP001"])
        peer.close()
        await rig.stop()
    }

    @Test func chargerIdsArePercentDecodedSouthAndEncodedNorth() async throws {
        let rig = try await Rig()
        let charger = rig.charger("CP|007")
        let peer = try await charger.connect(on: rig.group.next())
        _ = try await peer.call("Heartbeat", [:]).get()
        #expect(rig.csms.connectedChargers == ["CP|007"])
        peer.close()
        await rig.stop()
    }

    @Test func withoutTheOCPPSubprotocolTheHandshakeCompletesThenCloses() async throws {
        let rig = try await Rig()
        let url = URL(string: "ws://127.0.0.1:\(rig.southPort)/ocpp/CP001")!
        await #expect(throws: WebSocketConnectError.self) {
            _ = try await WebSocketClient.connect(
                WebSocketClientOptions(url: url, subprotocol: "ocpp2.0", basicAuth: ("CP001", "secret-CP001")),
                on: rig.group.next()).get()
        }
        do {
            _ = try await WebSocketClient.connect(
                WebSocketClientOptions(url: url, subprotocol: "ocpp2.0", basicAuth: ("CP001", "secret-CP001")),
                on: rig.group.next()).get()
        } catch WebSocketConnectError.subprotocolNotAccepted(let offered, let answered) {
            #expect(offered == "ocpp2.0" && answered == nil)
        }
        #expect(rig.csms.connectedChargers.isEmpty)
        await rig.stop()
    }

    @Test func securityProfile2PresentsBasicAuthNorth() async throws {
        let rig = try await Rig(northProfile: 2, csmsPasswords: ["CP001": "north-CP001"])
        let charger = rig.charger("CP001")
        let peer = try await charger.connect(on: rig.group.next())
        _ = try await peer.call("Heartbeat", [:]).get()
        #expect(rig.csms.connectedChargers == ["CP001"])
        peer.close()
        await rig.stop()
    }

    @Test func wrongPathsAndPlainHTTPAreRefused() async throws {
        let rig = try await Rig()
        for path in ["/elsewhere/CP001", "/ocpp/", "/ocpp/a/b"] {
            let url = URL(string: "ws://127.0.0.1:\(rig.southPort)\(path)")!
            do {
                _ = try await WebSocketClient.connect(WebSocketClientOptions(url: url, basicAuth: ("CP001", "secret-CP001")),
                                                      on: rig.group.next()).get()
                Issue.record("\(path) was accepted")
            } catch WebSocketConnectError.rejected(let status) {
                #expect(status.code == 404, "\(path)")
            }
        }
        await rig.stop()
    }

    @Test func chargerIdsOutsideTheDocumentedSetAreRefusedAtTheDoor() async throws {
        let rig = try await Rig(chargers: ["CP001", "..", "CP 7"])
        for path in ["/ocpp/%2E%2E", "/ocpp/..", "/ocpp/CP%0A7", "/ocpp/CP%207", "/ocpp/" + String(repeating: "A", count: 49)] {
            let url = URL(string: "ws://127.0.0.1:\(rig.southPort)\(path)")!
            do {
                _ = try await WebSocketClient.connect(WebSocketClientOptions(url: url, subprotocol: "ocpp1.6", basicAuth: ("..", "secret-..")),
                                                      on: rig.group.next()).get()
                Issue.record("\(path) was accepted")
            } catch WebSocketConnectError.rejected(let status) {
                #expect([400, 404].contains(status.code), "\(path)")
            }
        }
        #expect(rig.csms.connectedChargers.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: rig.folder + "/chargers/../boot.json"))
        await rig.stop()
    }

    @Test func healthTellsTheTruth() async throws {
        let rig = try await Rig(startCSMS: false)
        #expect(rig.gateway.health().healthy, "nothing has failed yet")
        _ = try? await rig.charger("CP001").connect(on: rig.group.next())
        let (healthy, body) = rig.gateway.health()
        #expect(!healthy)
        #expect(body.contains(#""north":{"ok":false"#), "\(body)")
        await rig.stop()
    }

    @Test func inBufferModeTheChargerStaysWhileTheCSMSIsAwayAndTheLinkComesBack() async throws {
        let rig = try await Rig(startCSMS: false, northExtra: "reconnect: { initial_delay: 0.1, max_delay: 0.2 }\n  offline_mode: buffer")
        let peer = try await rig.charger("CP001").connect(on: rig.group.next())
        await #expect(throws: (any Error).self, "no outbox stage: the charger is told the CSMS is away") {
            _ = try await peer.call("Heartbeat", [:]).get()
        }
        var options = rig.csmsOptions
        options.port = rig.csmsPort
        let late = DevelopmentCSMS(options: options)
        _ = try await late.start(group: rig.group)
        var answered = false
        for _ in 0..<100 where !answered {
            try await Task.sleep(for: .milliseconds(50))
            answered = (try? await peer.call("Heartbeat", [:]).get()) != nil
        }
        #expect(answered, "the north link came back under the same charger connection")
        #expect(late.connectedChargers == ["CP001"])
        peer.close()
        await rig.stop()
        await late.stop()
    }

    @Test func aMissingCSMSGives502AndBacksOff() async throws {
        let rig = try await Rig(startCSMS: false)
        let charger = rig.charger("CP001")
        for _ in 0..<2 {
            do {
                _ = try await charger.connect(on: rig.group.next())
                Issue.record("accepted without a CSMS")
            } catch WebSocketConnectError.rejected(let status) {
                #expect(status.code == 502)
            }
        }
        await rig.stop()
    }
}
