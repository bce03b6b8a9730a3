import OCPP
import Router
import StageKit
import StageTesting
import Testing

/// Records what it sees; optionally decides something for one action.
struct ProbeStage: Stage {
    static let type = "probe"
    static let summary = "test probe"
    let decide: @Sendable (Envelope) -> Verdict
    let seen: Recorder

    init(configuration: NoConfiguration, context: StageSetupContext) { fatalError("built directly in tests") }
    init(seen: Recorder = Recorder(), decide: @escaping @Sendable (Envelope) -> Verdict = { _ in .forward }) {
        self.seen = seen
        self.decide = decide
    }

    func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        seen.append("\(envelope.direction):\(envelope.messageType):\(envelope.action ?? "-")")
        return decide(envelope)
    }
}

final class Recorder: @unchecked Sendable {
    private(set) var entries: [String] = []
    func append(_ entry: String) { entries.append(entry) }
}

@Suite("Router session")
struct SessionTests {
    @Test func unchangedFramesAreForwardedByteForByte() {
        let tester = StageTester(stages: [("probe", ProbeStage())])
        let text = #"[2, "1" ,"Heartbeat",  {  }]"#
        tester.chargerSends(text)
        #expect(tester.takeSentToCSMS().map(\.text) == [text])
        tester.csmsSends(#"[3,"1",{"currentTime":"2026-01-01T00:00:00Z"}]"#)
        #expect(tester.takeSentToCharger().map(\.text) == [#"[3,"1",{"currentTime":"2026-01-01T00:00:00Z"}]"#])
    }

    @Test func resultsLearnTheActionOfTheirCall() {
        let seen = Recorder()
        let tester = StageTester(stages: [("probe", ProbeStage(seen: seen))])
        let id = tester.csmsSends(call: "GetConfiguration")
        tester.chargerAnswers(id, payload: ["configurationKey": []])
        #expect(seen.entries == ["from_csms:CALL:GetConfiguration", "from_charger:CALLRESULT:GetConfiguration"])
    }

    @Test func stagesRunInFileOrderFromTheChargerAndReversedFromTheCSMS() {
        let seen = Recorder()
        let first = ProbeStage(decide: { _ in seen.append("first"); return .forward })
        let second = ProbeStage(decide: { _ in seen.append("second"); return .forward })
        let tester = StageTester(stages: [("first", first), ("second", second)])
        tester.chargerSends(call: "Heartbeat")
        tester.csmsSends(call: "Reset", payload: ["type": "Soft"])
        #expect(seen.entries == ["first", "second", "second", "first"])
    }

    @Test func csmsCallsTowardsTheChargerTakeTurns() {
        let tester = StageTester(stages: [])
        let a = tester.csmsSends(call: "GetConfiguration")
        let b = tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "K", "value": "V"])
        #expect(tester.takeSentToCharger().map(\.messageId) == [a])
        #expect(tester.session.queuedCalls(towards: .charger) == 1)
        tester.chargerAnswers(a)
        #expect(tester.takeSentToCharger().map(\.messageId) == [b])
        #expect(tester.takeSentToCSMS().map(\.messageId) == [a])
    }

    @Test func gatewayCallsUseUUIDsAndTheirAnswersAreNeverForwarded() throws {
        let outcomes = Recorder()
        let stage = ProbeStage()
        let tester = StageTester(stages: [("probe", stage)])
        let csmsCall = tester.csmsSends(call: "GetConfiguration")
        tester.session.sendCall("TriggerMessage", payload: ["requestedMessage": "StatusNotification"], to: .charger) { outcome in
            outcomes.append("\(outcome)")
        }
        // The CSMS's CALL is in flight: the gateway's waits its turn.
        #expect(tester.takeSentToCharger().map(\.messageId) == [csmsCall])
        tester.chargerAnswers(csmsCall)
        let gatewayCall = try #require(tester.takeSentToCharger().first)
        #expect(gatewayCall.action == "TriggerMessage")
        #expect(gatewayCall.messageId.count == 36 && gatewayCall.messageId.split(separator: "-").count == 5)
        tester.chargerAnswers(gatewayCall.messageId, payload: ["status": "Accepted"])
        #expect(outcomes.entries == [#"result(OCPP.JSONValue.object([(key: "status", value: OCPP.JSONValue.string("Accepted"))]))"#])
        // Only the CSMS's own answer went north.
        #expect(tester.takeSentToCSMS().map(\.messageId) == [csmsCall])
    }

    @Test func aChargerThatNeverAnswersTimesOutAndTheQueueMovesOn() {
        let tester = StageTester(stages: [], limits: SessionLimits(chargerCallTimeout: .seconds(5)))
        let a = tester.csmsSends(call: "GetConfiguration")
        let b = tester.csmsSends(call: "Reset", payload: ["type": "Soft"])
        _ = tester.takeSentToCharger()
        tester.advance(by: .seconds(4))
        #expect(tester.takeSentToCSMS().isEmpty)
        tester.advance(by: .seconds(1))
        let error = tester.takeSentToCSMS()
        #expect(error.map(\.messageId) == [a])
        #expect(error.first?.messageType == .callError)
        #expect(tester.takeSentToCharger().map(\.messageId) == [b])
        // A late answer finds no CALL and is dropped.
        tester.chargerAnswers(a)
        #expect(tester.takeSentToCSMS().isEmpty)
    }

    @Test func aFullQueueRefusesWithACallError() {
        let tester = StageTester(stages: [], limits: SessionLimits(chargerMaxQueuedCalls: 1))
        tester.csmsSends(call: "GetConfiguration", id: "in-flight")
        tester.csmsSends(call: "GetConfiguration", id: "queued")
        tester.csmsSends(call: "GetConfiguration", id: "refused")
        let refused = tester.takeSentToCSMS()
        #expect(refused.map(\.messageId) == ["refused"])
        #expect(refused.first?.errorCode == "GenericError")
    }

    @Test func malformedFramesGetFormationViolationAndAreNotForwarded() {
        let tester = StageTester(stages: [("probe", ProbeStage())])
        tester.chargerSends(#"[2,"x1","Heartbeat",{"oops":}]"#)
        let answer = tester.takeSentToCharger()
        #expect(answer.first?.messageId == "x1")
        #expect(answer.first?.errorCode == "FormationViolation")
        #expect(tester.takeSentToCSMS().isEmpty)
        tester.csmsSends("not json at all")
        #expect(tester.takeSentToCSMS().first?.messageId == "-1")
        #expect(tester.takeSentToCharger().isEmpty)
    }

    @Test func verdictsDropAnswerAndModify() {
        let stage = ProbeStage(decide: { envelope in
            switch envelope.action {
            case "Heartbeat": .answer(["currentTime": "2026-01-01T00:00:00Z"])
            case "DataTransfer": .drop(reason: "test")
            case "StatusNotification" where envelope.isCall:
                .forward(modifiedPayload: {
                    var payload = envelope.payload()
                    payload["info"] = "checked"
                    return payload
                }())
            case "Authorize": .answerError(.securityError, "nope")
            default: .forward
            }
        })
        let tester = StageTester(stages: [("probe", stage)])
        tester.chargerSends(call: "Heartbeat", id: "h")
        #expect(tester.takeSentToCharger().map(\.text) == [#"[3,"h",{"currentTime":"2026-01-01T00:00:00Z"}]"#])
        tester.chargerSends(call: "DataTransfer", payload: ["vendorId": "x"], id: "d")
        tester.chargerSends(call: "Authorize", payload: ["idTag": "t"], id: "a")
        #expect(tester.takeSentToCharger().map(\.errorCode) == ["SecurityError"])
        tester.chargerSends(call: "StatusNotification", payload: ["connectorId": 1], id: "s")
        #expect(tester.takeSentToCSMS().map(\.text) == [#"[2,"s","StatusNotification",{"connectorId":1,"info":"checked"}]"#])
    }

    @Test func endingASessionTellsPendingGatewayCalls() {
        let outcomes = Recorder()
        let tester = StageTester(stages: [])
        tester.session.sendCall("GetConfiguration", payload: [:], to: .charger) { outcomes.append("\($0)") }
        tester.endSession()
        #expect(outcomes.entries == ["connectionClosed"])
        tester.session.sendCall("GetConfiguration", payload: [:], to: .charger) { outcomes.append("\($0)") }
        #expect(outcomes.entries == ["connectionClosed", "connectionClosed"])
    }

    @Test func perChargerStateLivesInTheSession() {
        enum Counter: SessionStateKey { typealias Value = Int }
        let tester = StageTester(stages: [])
        #expect(tester.session[Counter.self] == nil)
        tester.session[Counter.self] = 3
        #expect(tester.session[Counter.self] == 3)
    }
}

import Logging

@Suite("Router logging")
struct RouterLoggingTests {
    @Test func aFloodOfBadFramesDoesNotFloodTheLog() {
        let logs = LogCapture()
        let tester = StageTester(stages: [], logger: Logger(label: "test", factory: { _ in logs }))
        for _ in 0..<1000 { tester.chargerSends("not a frame") }
        #expect(tester.takeSentToCharger().count == 1000, "every bad frame is still answered")
        #expect(logs.lines.count == 10)
        tester.advance(by: .seconds(61))
        tester.chargerSends("still not a frame")
        #expect(logs.lines.last?.contains("similar_lines_left_out=990") == true)
    }
}
