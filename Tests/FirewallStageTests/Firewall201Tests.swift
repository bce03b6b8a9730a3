import FirewallStage
import Foundation
import Logging
import OCPP
import Router
import StageKit
import StageTesting
import Testing

/// Keeps what a session sends (StageTester's sessions are 1.6 ones; these tests need 2.0.1 sessions).
final class RecordingDriver: SessionDriver {
    var sent: [(side: Side, frame: Frame)] = []
    var clock = Duration.zero

    func send(_ bytes: [UInt8], to side: Side) { sent.append((side, try! Frame.parse(bytes))) }
    func closeSession(reason: String) {}
    func schedule(after delay: Duration, _ body: @escaping () -> Void) -> any ScheduledWork { NoTimer() }
    var now: Duration { clock }
    var wallTime: Double { 1_800_000_000 }
    var northPeerCertificate: [UInt8]? { nil }
    func execute(_ body: @escaping @Sendable () -> Void) { body() }
    func relinkNorth(with credentials: NorthCredentials, isIdle: @escaping () -> Bool, completion: @escaping (Result<Void, any Error>) -> Void) {}

    func take(_ side: Side) -> [Frame] {
        defer { sent.removeAll { $0.side == side } }
        return sent.filter { $0.side == side }.map(\.frame)
    }
}

struct NoTimer: ScheduledWork { func cancel() {} }

/// A `version` session with the ids stage configured by `yaml`.
func firewallSession(_ version: OCPPVersion, _ yaml: String = "") throws -> (Session, RecordingDriver) {
    let tester = try StageTester(FirewallStage.self, config: yaml)   // decodes the config as the loader does
    let stage = try #require(tester.pipeline.stages.first).instance
    let driver = RecordingDriver()
    let session = Session(chargerId: "CS201", version: version,
                          pipelines: PipelineHolder(Pipeline(stages: [LoadedStage.forTesting(id: "guard", instance: stage)], file: "<test>")),
                          limits: SessionLimits(), metrics: RouterMetrics(), driver: driver,
                          logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }), bootAccepted: true)
    session.start()
    return (session, driver)
}

func call(_ id: String, _ action: String, _ payload: String) -> [UInt8] { Array("[2,\"\(id)\",\"\(action)\",\(payload)]".utf8) }

@Suite("ids (firewall) stage on OCPP 2.0.1 sessions")
struct Firewall201Tests {
    static let transactionEvent = #"{"eventType":"Started","timestamp":"2026-01-01T00:00:00Z","triggerReason":"Authorized","seqNo":0,"transactionInfo":{"transactionId":"t1"}}"#

    @Test func theCatalogueSenderRulesAndSchemasOf201Apply() throws {
        let (session, driver) = try firewallSession(.v201)
        // A 2.0.1 action from its sender passes; under 1.6 it would be NotImplemented.
        session.receive(call("t1", "TransactionEvent", Self.transactionEvent), from: .charger)
        #expect(driver.take(.csms).map(\.messageId) == ["t1"])
        // 1.6's StartTransaction does not exist in 2.0.1; RequestStartTransaction is the CSMS's.
        session.receive(call("s1", "StartTransaction", #"{"connectorId":1,"idTag":"x","meterStart":0,"timestamp":"2026-01-01T00:00:00Z"}"#), from: .charger)
        session.receive(call("w1", "RequestStartTransaction", #"{"idToken":{"idToken":"x","type":"Central"},"remoteStartId":1}"#), from: .charger)
        #expect(driver.take(.charger).map { $0.errorCode } == ["NotImplemented", "NotSupported"])
        #expect(driver.take(.csms).isEmpty)
        // A payload broken the 2.0.1 way gets 2.0.1's code: an unknown field is FormatViolation.
        session.receive(call("b1", "Heartbeat", #"{"extra":1}"#), from: .charger)
        let refusal = try #require(driver.take(.charger).first)
        #expect(refusal.errorCode == "FormatViolation")
    }

    @Test func replayAndCSMSPolicyApplyTo201() throws {
        let (session, driver) = try firewallSession(.v201, "csms_actions: { deny: [SetNetworkProfile, UpdateFirmware] }")
        session.receive(call("r1", "Heartbeat", "{}"), from: .charger)
        session.receive(call("r1", "Heartbeat", "{}"), from: .charger)
        #expect(driver.take(.csms).filter { $0.action == "Heartbeat" }.map(\.messageId) == ["r1"], "the replay is dropped")
        let network = #"{"configurationSlot":1,"connectionData":{"ocppVersion":"OCPP20","ocppTransport":"JSON","ocppCsmsUrl":"wss://x","messageTimeout":30,"securityProfile":3,"ocppInterface":"Wired0"}}"#
        session.receive(call("n1", "SetNetworkProfile", network), from: .csms)
        #expect(driver.take(.csms).first { $0.messageId == "n1" }?.errorCode == "SecurityError")
        #expect(driver.take(.charger).isEmpty)
        session.receive(call("g1", "GetVariables", #"{"getVariableData":[{"component":{"name":"EVSE"},"variable":{"name":"Power"}}]}"#), from: .csms)
        #expect(driver.take(.charger).map(\.messageId) == ["g1"])
    }

    @Test func aSessionOf16KeepsThe16Rules() throws {
        let (session, driver) = try firewallSession(.v16)
        session.receive(call("t1", "TransactionEvent", Self.transactionEvent), from: .charger)
        #expect(driver.take(.charger).map { $0.errorCode } == ["NotImplemented"])
    }

    @Test func aPolicyMayName201Actions() throws {
        #expect(throws: Never.self) { try StageTester(FirewallStage.self, config: "csms_actions: { deny: [SetNetworkProfile] }") }
        #expect(throws: (any Error).self) { try StageTester(FirewallStage.self, config: "csms_actions: { deny: [TransactionEvent] }") }
    }
}
