import FirewallStage
import OCPP
import Router
import StageKit
import StageTesting
import Testing

@Suite("ids (firewall) stage")
struct FirewallStageTests {
    static let config = """
        rate_limits:
          default: { per_second: 1, burst: 3 }
          transaction: { per_second: 10, burst: 10 }
        csms_actions: { deny: [UpdateFirmware, GetDiagnostics] }
        change_configuration: { deny_keys: [AuthorizationKey], max_value_length: 128 }
        security_event_interval: 60
        """

    func tester(_ config: String = config, charger: String = "CP001") throws -> StageTester {
        try StageTester(FirewallStage.self, config: config, chargerId: charger)
    }

    func events(_ tester: StageTester) -> [String] {
        var types: [String] = []
        while let event = tester.takeSentToCSMS(where: { $0.action == "SecurityEventNotification" }).first {
            types.append(event.payload()["type"]?.stringValue ?? "?")
            tester.csmsAnswers(event.messageId)
        }
        return types
    }

    @Test func aFloodFromOneChargerDoesNotStopAnothersAuthorize() throws {
        let stage = try StageTester.build(FirewallStage.self, config: Self.config)
        let flooder = StageTester(stages: [("ids", stage)], chargerId: "CP-FLOOD")
        let victim = StageTester(stages: [("ids", stage)], chargerId: "CP-OK")
        for n in 0..<50 {
            let id = flooder.chargerSends(call: "Heartbeat", id: "h\(n)")
            flooder.csmsAnswers(id, payload: ["currentTime": "2026-01-01T00:00:00Z"])
        }
        let refused = flooder.takeSentToCharger().filter { $0.messageType == .callError }
        #expect(refused.count == 47, "a burst of 3, then refusals")
        #expect(refused.first?.errorCode == "GenericError")
        victim.chargerSends(call: "Authorize", payload: ["idTag": "04A2B3C4"], id: "a1")
        #expect(victim.takeSentToCSMS().map(\.messageId) == ["a1"])
        // The bucket refills with time.
        flooder.advance(by: .seconds(2))
        flooder.chargerSends(call: "Heartbeat", id: "later")
        #expect(flooder.takeSentToCSMS().contains { $0.messageId == "later" })
    }

    @Test func invalidPayloadsGetTheRightCodeFromEitherSideAndGoNowhere() throws {
        let tester = try tester()
        tester.chargerSends(call: "StatusNotification", payload: ["connectorId": 1, "errorCode": "Melted", "status": "Charging"], id: "s1")
        tester.chargerSends(call: "StartTransaction", payload: ["connectorId": 1, "idTag": "t", "timestamp": "2026-01-01T00:00:00Z"], id: "s2")
        tester.chargerSends(call: "Authorize", payload: ["idTag": .string(String(repeating: "x", count: 21))], id: "s3")
        tester.chargerSends(call: "Authorize", payload: ["idTag": 42], id: "s4")
        tester.chargerSends(call: "Authorize", payload: ["idTag": "ok", "extra": true], id: "s5")
        let answers = tester.takeSentToCharger()
        #expect(answers.map(\.errorCode) == ["PropertyConstraintViolation", "OccurrenceConstraintViolation", "TypeConstraintViolation",
                                             "TypeConstraintViolation", "FormationViolation"])
        #expect(answers.map(\.messageId) == ["s1", "s2", "s3", "s4", "s5"])
        #expect(tester.takeSentToCSMS { $0.action != "SecurityEventNotification" }.isEmpty)

        tester.csmsSends(call: "Reset", payload: ["type": "Sometimes"], id: "c1")
        #expect(tester.takeSentToCSMS { $0.messageId == "c1" }.first?.errorCode == "PropertyConstraintViolation")
        #expect(tester.takeSentToCharger().isEmpty)
        #expect(events(tester) == ["InvalidMessages"], "one event per interval, not one per frame")
    }

    @Test func anInvalidResultIsNotForwardedAndTheCallerIsAnsweredAtOnce() throws {
        let tester = try tester()
        let id = tester.csmsSends(call: "Reset", payload: ["type": "Soft"])
        _ = tester.takeSentToCharger()
        tester.chargerAnswers(id, payload: ["status": "Maybe"])
        let answers = tester.takeSentToCSMS { $0.messageId == id }
        #expect(answers.map(\.messageType) == [.callError], "the invalid result is never forwarded; the caller does not wait")
    }

    @Test func replayedMessageIdsAreDroppedAndReported() throws {
        let tester = try tester()
        tester.csmsSends(call: "GetConfiguration", id: "same")
        tester.chargerAnswers("same", payload: ["configurationKey": []])
        tester.csmsSends(call: "GetConfiguration", id: "same")
        #expect(tester.takeSentToCharger().map(\.messageId) == ["same"])
        #expect(events(tester) == ["AttemptedReplayAttacks"])
        tester.advance(by: .seconds(301))
        tester.csmsSends(call: "GetConfiguration", id: "same")
        #expect(tester.takeSentToCharger().map(\.messageId) == ["same"], "outside the window it is a new message")
    }

    @Test func unknownAndWrongDirectionActions() throws {
        let tester = try tester()
        tester.chargerSends(call: "MakeCoffee", id: "u1")
        tester.chargerSends(call: "RemoteStartTransaction", payload: ["idTag": "x"], id: "w1")
        #expect(tester.takeSentToCharger().map(\.errorCode) == ["NotImplemented", "NotSupported"])
        tester.csmsSends(call: "BootNotification", payload: ["chargePointVendor": "x", "chargePointModel": "y"], id: "w2")
        #expect(tester.takeSentToCSMS { $0.messageId == "w2" }.first?.errorCode == "NotSupported")
        #expect(tester.takeSentToCharger().isEmpty)
    }

    @Test func theCSMSPolicyProtectsTheCharger() throws {
        let tester = try tester()
        tester.csmsSends(call: "UpdateFirmware", payload: ["location": "https://x/fw.bin", "retrieveDate": "2026-01-01T00:00:00Z"], id: "f1")
        let refusal = try #require(tester.takeSentToCSMS { $0.messageId == "f1" }.first)
        #expect(refusal.errorCode == "SecurityError" && refusal.errorDescription?.contains("policy") == true)
        tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "AuthorizationKey", "value": "00"], id: "k1")
        tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "Note", "value": .string(String(repeating: "v", count: 129))], id: "k2")
        #expect(tester.takeSentToCSMS { $0.messageId.hasPrefix("k") }.map { $0.payload()["status"] } == ["Rejected", "Rejected"])
        #expect(tester.takeSentToCharger().isEmpty, "the charger sees nothing")
        tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "HeartbeatInterval", "value": "60"], id: "k3")
        #expect(tester.takeSentToCharger().map(\.messageId) == ["k3"])
    }

    @Test func csmsCallsArePacedInOrderAndHeldAfterBoot() throws {
        let tester = try tester(Self.config + "\ncsms_call_interval: 2\nquiet_after_boot: 10")
        let boot = tester.chargerSends(call: "BootNotification", payload: ["chargePointVendor": "V", "chargePointModel": "M"])
        tester.csmsAnswers(boot, payload: ["status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300])
        #expect(tester.takeSentToCharger().map(\.messageId) == [boot])
        for n in 1...3 { tester.csmsSends(call: "GetConfiguration", id: "g\(n)") }
        tester.advance(by: .seconds(9))
        #expect(tester.takeSentToCharger().isEmpty, "quiet after boot")
        tester.advance(by: .seconds(1))
        #expect(tester.takeSentToCharger().map(\.messageId) == ["g1"])
        tester.chargerAnswers("g1", payload: ["configurationKey": []])
        #expect(tester.takeSentToCharger().isEmpty, "two seconds apart")
        tester.advance(by: .seconds(2))
        #expect(tester.takeSentToCharger().map(\.messageId) == ["g2"])
        tester.chargerAnswers("g2", payload: ["configurationKey": []])
        tester.advance(by: .seconds(2))
        #expect(tester.takeSentToCharger().map(\.messageId) == ["g3"])
        #expect(tester.takeSentToCSMS { $0.messageType == .callError }.isEmpty, "queued, not dropped")
    }

    @Test func connectionAttemptsAndFailedLoginsAreLimited() async throws {
        let tester = try tester(Self.config + "\nconnections: { attempts_per_second: 1, attempts_burst: 3, max_failed_logins: 2, lockout: 0.3 }")
        let request = ChargerConnectRequest(chargerId: "CP001", remoteAddress: "10.0.0.9")
        for _ in 0..<3 { #expect(await tester.connect(request) == .noOpinion) }
        let limited = await tester.connect(request)
        guard case .reject = limited.kind else { Issue.record("not rate-limited: \(limited)"); return }
        #expect(await tester.connect(ChargerConnectRequest(chargerId: "CP002", remoteAddress: "10.0.0.10")) == .noOpinion,
                "another source is unaffected")

        let stage = try #require(tester.pipeline.stages.first?.instance)
        let other = ChargerConnectRequest(chargerId: "CP003", remoteAddress: "10.0.0.11")
        stage.chargerRefused(other, status: 401)
        #expect(await tester.connect(other) == .noOpinion)
        stage.chargerRefused(other, status: 401)
        let locked = await tester.connect(other)
        #expect("\(locked)".contains("429"))
        let sameIdElsewhere = await tester.connect(ChargerConnectRequest(chargerId: "CP003", remoteAddress: "10.0.0.12"))
        #expect("\(sameIdElsewhere)".contains("429"), "the charger id is locked too")
        try await Task.sleep(for: .milliseconds(400))
        #expect(await tester.connect(other) == .noOpinion, "the lockout ends")
    }

    @Test func configurationMistakesAreCaught() {
        #expect(throws: (any Error).self) { try tester("rate_limits: { telemetry: { per_second: 1, burst: 1 } }") }
        #expect(throws: (any Error).self) { try tester("csms_actions: { deny: [BootNotification] }") }
        #expect(throws: (any Error).self) { try tester("replay_window: -1") }
    }
}
