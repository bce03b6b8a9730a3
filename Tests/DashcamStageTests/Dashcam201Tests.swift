import DashcamStage
import Foundation
import OCPP
import StageKit
import StageTesting
import Testing

/// The dashcam on OCPP 2.0.1 sessions: it records 2.0.1 frames and understands their faults.
@Suite("dashcam stage, OCPP 2.0.1")
struct Dashcam201Tests {
    let state = FileManager.default.temporaryDirectory.appendingPathComponent("dashcam201-\(UUID().uuidString)").path

    func tester() throws -> (StageTester, DashcamStage) {
        let stage = try StageTester.build(DashcamStage.self, config: "after_frames: 0\nafter_seconds: 0", stateDirectory: state)
        return (StageTester(stages: [("camera", stage)], version: .v201), stage)
    }

    func captures() throws -> [[JSONValue]] {
        let folder = state + "/dashcam/CP001"
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".jsonl") }.sorted()
        return try files.map { file in
            try String(contentsOfFile: folder + "/" + file, encoding: .utf8).split(separator: "\n").map { try JSONValue(parsing: String($0)) }
        }
    }

    static func event(_ variable: String, _ value: String, trigger: String = "Delta", cleared: Bool? = nil) -> JSONValue {
        var event: JSONValue = ["eventId": 1, "timestamp": "2026-11-25T10:00:00Z", "trigger": .string(trigger), "actualValue": .string(value),
                                "eventNotificationType": "HardWiredNotification", "component": ["name": "Connector", "evse": ["id": 1, "connectorId": 1]],
                                "variable": ["name": .string(variable)]]
        if let cleared { event["cleared"] = .bool(cleared) }
        return ["generatedAt": "2026-11-25T10:00:00Z", "seqNo": 0, "eventData": [event]]
    }

    @Test func aFaultedConnectorStatusIsCapturedWithTheFrames() async throws {
        let (tester, stage) = try tester()
        tester.chargerSends(call: "Heartbeat", id: "h1")
        tester.csmsAnswers("h1", payload: ["currentTime": "2026-11-25T10:00:00Z"])
        tester.chargerSends(call: "StatusNotification", payload: ["timestamp": "2026-11-25T10:00:01Z", "connectorStatus": "Faulted", "evseId": 1,
                                                                   "connectorId": 1], id: "s1")
        await stage.shutdown()
        let capture = try #require(try captures().first)
        #expect(capture.first?["trigger"] == "Faulted" && capture.first?["ocpp"] == "2.0.1")
        #expect(capture.dropFirst().compactMap { $0["frame"]?.arrayValue?[1].stringValue } == ["h1", "h1", "s1"])
    }

    @Test func notifyEventProblemsAndAlertsTriggerButClearingsAndValuesDoNot() async throws {
        let (tester, stage) = try tester()
        for (n, payload) in [Self.event("Problem", "false"), Self.event("Problem", "true", cleared: true), Self.event("Temperature", "41")].enumerated() {
            let id = tester.chargerSends(call: "NotifyEvent", payload: payload, id: "quiet-\(n)")
            tester.csmsAnswers(id)
        }
        tester.chargerSends(call: "StatusNotification", payload: ["timestamp": "2026-11-25T10:00:01Z", "connectorStatus": "Occupied", "evseId": 1,
                                                                   "connectorId": 1], id: "ok")
        tester.csmsAnswers("ok")
        await stage.shutdown()
        #expect(stage.statistics.written == 0)
        tester.advance(by: .seconds(1))
        tester.chargerSends(call: "NotifyEvent", payload: Self.event("Problem", "true"), id: "p")
        tester.csmsAnswers("p")
        tester.advance(by: .seconds(1))
        tester.chargerSends(call: "NotifyEvent", payload: Self.event("Temperature", "95", trigger: "Alerting"), id: "a")
        // The writes run in a task of their own; on a loaded machine (ThreadSanitizer) longer than shutdown's bound.
        let deadline = ContinuousClock.now + .seconds(60)
        while stage.statistics.written < 2, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(stage.statistics.written == 2)
        #expect(try captures().compactMap { $0.first?["trigger"]?.stringValue }.sorted()
            == ["NotifyEvent Alerting Connector/Temperature", "NotifyEvent Connector/Problem"])
    }

    @Test func aSessionEndingDuringA201TransactionIsCapturedAndOneEndedIsNot() async throws {
        let (tester, stage) = try tester()
        let started: (String, String) -> JSONValue = { id, type in
            ["eventType": .string(type), "timestamp": "2026-11-25T10:00:00Z", "triggerReason": "Authorized", "seqNo": 0,
             "transactionInfo": ["transactionId": .string(id)]]
        }
        tester.chargerSends(call: "TransactionEvent", payload: started("tx-1", "Started"), id: "t1")
        tester.csmsAnswers("t1")
        tester.chargerSends(call: "TransactionEvent", payload: started("tx-1", "Ended"), id: "t2")
        tester.csmsAnswers("t2")
        tester.endSession()
        await stage.shutdown()
        #expect(stage.statistics.written == 0, "the transaction had ended")

        let again = StageTester(stages: [("camera", stage)], version: .v201)
        again.chargerSends(call: "TransactionEvent", payload: started("tx-2", "Started"), id: "t3")
        again.csmsAnswers("t3")
        again.endSession()
        await stage.shutdown()
        #expect(try captures().first?.first?["trigger"] == "disconnected during a transaction")
    }
}
