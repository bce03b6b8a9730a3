import DashcamStage
import Foundation
import OCPP
import Router
import StageKit
import StageTesting
import Testing

@Suite("dashcam stage")
struct DashcamStageTests {
    let state = FileManager.default.temporaryDirectory.appendingPathComponent("dashcam-\(UUID().uuidString)").path

    func captures(_ charger: String = "CP001", count: Int = 1) async throws -> [String] {
        let folder = state + "/dashcam/" + charger
        // Generous: the writer is a background queue, and under ThreadSanitizer everything is several times slower.
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".jsonl") }.sorted()
            if files.count >= count { return files.map { folder + "/" + $0 } }
            try await Task.sleep(for: .milliseconds(10))
        }
        return []
    }

    @Test func aFaultedStatusCapturesFramesBeforeAndAfterIt() async throws {
        let publisher = RecordingPublisher()
        let tester = try StageTester(DashcamStage.self, config: "after_frames: 2\nafter_seconds: 30", stateDirectory: state, publisher: publisher)
        for n in 0..<3 {
            let id = tester.chargerSends(call: "Heartbeat", id: "before-\(n)")
            tester.csmsAnswers(id, payload: ["currentTime": "2026-01-01T00:00:00Z"])
        }
        tester.chargerSends(call: "StatusNotification", payload: ["connectorId": 1, "errorCode": "GroundFailure", "status": "Faulted"], id: "fault")
        tester.csmsAnswers("fault")
        tester.chargerSends(call: "Heartbeat", id: "after-1")
        tester.csmsAnswers("after-1", payload: ["currentTime": "2026-01-01T00:00:05Z"])
        tester.chargerSends(call: "Heartbeat", id: "after-2")
        let file = try #require(try await captures().first)
        let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n").map { try JSONValue(parsing: String($0)) }
        #expect(lines.first?["trigger"] == "Faulted" && lines.first?["v"] == 1)
        let ids = lines.dropFirst().compactMap { $0["frame"]?.arrayValue?[1].stringValue }
        #expect(ids == ["before-0", "before-0", "before-1", "before-1", "before-2", "before-2", "fault", "fault", "after-1"], "two frames after the trigger")
        #expect(lines.dropFirst().first?["direction"] == "from_charger")
        // Times keep milliseconds (frames a few ms apart stay distinguishable), as the health channel's do.
        #expect(lines.dropFirst().allSatisfy { ($0["time"]?.stringValue ?? "").range(of: #"\.\d{3}Z$"#, options: .regularExpression) != nil })
        #expect(lines.first?["at"]?.stringValue?.range(of: #"\.\d{3}Z$"#, options: .regularExpression) != nil)
        let attributes = try FileManager.default.attributesOfItem(atPath: file)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let deadline = ContinuousClock.now + .seconds(5)
        var announced: [RecordingPublisher.Message] = []
        while announced.isEmpty, ContinuousClock.now < deadline {
            announced = publisher.take()
            try await Task.sleep(for: .milliseconds(10))
        }
        #expect(announced.first?.topic == "test/gateway/CP001/dashcam")
        #expect(announced.first?.json["file"]?.stringValue == file)
    }

    @Test func aCallErrorAndADisconnectMidTransactionTrigger() async throws {
        let tester = try StageTester(DashcamStage.self, config: "after_frames: 0\nafter_seconds: 0", stateDirectory: state)
        let id = tester.csmsSends(call: "Reset", payload: ["type": "Soft"])
        tester.chargerAnswersError(id, code: .internalError, description: "busy")
        #expect(try await captures().first?.contains("callerror-internalerror-from-the-charger") == true)
        tester.chargerSends(call: "StartTransaction", payload: ["connectorId": 1, "idTag": "t", "meterStart": 0, "timestamp": "2026-01-01T00:00:00Z"])
        tester.endSession()
        #expect(try await captures(count: 2).count == 2)
    }

    @Test func theWindowAndTheDiskAreBounded() async throws {
        let tester = try StageTester(DashcamStage.self, config: "before_frames: 3\nafter_frames: 0\nafter_seconds: 0\nmax_captures: 2",
                                     stateDirectory: state)
        for n in 0..<10 { tester.chargerSends(call: "Heartbeat", id: "h\(n)") }
        for n in 0..<4 {
            tester.advance(by: .seconds(1))
            tester.chargerSends(call: "StatusNotification", payload: ["connectorId": 1, "errorCode": "NoError", "status": "Faulted"], id: "f\(n)")
            try await Task.sleep(for: .milliseconds(50))
        }
        let files = try await captures(count: 2)
        #expect(files.count == 2, "only the newest two are kept")
        let first = try String(contentsOfFile: files[0], encoding: .utf8).split(separator: "\n")
        #expect(first.count == 1 + 3, "a header and the last three frames")
    }

    @Test func aCallTimeoutIsAnIncidentTheDashcamRecords() async throws {
        let stage = try StageTester.build(DashcamStage.self, config: "after_frames: 0\nafter_seconds: 0", stateDirectory: state)
        let tester = StageTester(stages: [("camera", stage)], limits: SessionLimits(chargerCallTimeout: .seconds(5)))
        tester.csmsSends(call: "GetConfiguration", id: "slow")
        tester.advance(by: .seconds(6))
        let file = try #require(try await captures().first)
        #expect(file.contains("getconfiguration-to-the-charger-timed-ou"), "the trigger, shortened to 40 characters")
        let lines = try String(contentsOfFile: file, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2, "the header and the CALL that got no answer")
    }

    // MARK: Bounds (issue 11.8) and file/topic safety (issue 12.11)

    @Test func capturesAreRateLimitedPerCharger() async throws {
        let stage = try StageTester.build(DashcamStage.self, config: "after_frames: 0\nafter_seconds: 0\nmax_captures_per_minute: 3",
                                          stateDirectory: state)
        let tester = StageTester(stages: [("camera", stage)])
        for n in 0..<20 {
            tester.advance(by: .seconds(1))
            tester.chargerSends(call: "StatusNotification", payload: ["connectorId": 1, "errorCode": "NoError", "status": "Faulted"], id: "f\(n)")
        }
        await stage.shutdown()
        #expect(stage.statistics.rateLimited == 17)
        #expect(try await captures(count: 3).count == 3)
        // A reconnect does not reset the budget: it is the charger's, not the connection's.
        let again = StageTester(stages: [("camera", stage)])
        again.advance(by: .seconds(20))
        again.chargerSends(call: "StatusNotification", payload: ["connectorId": 1, "errorCode": "NoError", "status": "Faulted"], id: "g")
        #expect(stage.statistics.rateLimited == 18)
        again.advance(by: .seconds(41))
        again.chargerSends(call: "StatusNotification", payload: ["connectorId": 1, "errorCode": "NoError", "status": "Faulted"], id: "h")
        await stage.shutdown()
        #expect(stage.statistics.written == 4, "a minute later there is room again")
    }

    @Test func theWriteQueueIsBoundedAndDropsAreCounted() async throws {
        let stage = try StageTester.build(DashcamStage.self, config: "after_frames: 0\nafter_seconds: 0\nmax_pending_writes: 4",
                                          stateDirectory: state)
        stage.writer.hold()  // the disk is slow: nothing is written while the faults come in
        for n in 0..<50 {
            let tester = StageTester(stages: [("camera", stage)], chargerId: "CP\(n)")
            tester.chargerSends(call: "StatusNotification", payload: ["connectorId": 1, "errorCode": "NoError", "status": "Faulted"])
        }
        #expect(stage.statistics.dropped == 46)
        stage.writer.release()
        await stage.shutdown()
        #expect(stage.statistics.written == 4)
        let folders = try FileManager.default.contentsOfDirectory(atPath: state + "/dashcam")
        #expect(folders.count == 4)
    }

    @Test func theAnnouncementTopicIsEscapedLikeTheTaps() async throws {
        let publisher = RecordingPublisher()
        let stage = try StageTester.build(DashcamStage.self, config: "after_frames: 0\nafter_seconds: 0", stateDirectory: state,
                                          publisher: publisher)
        let tester = StageTester(stages: [("camera", stage)], chargerId: "CP+1")
        tester.chargerSends(call: "StatusNotification", payload: ["connectorId": 1, "errorCode": "NoError", "status": "Faulted"])
        await stage.shutdown()
        let announced = publisher.take()
        #expect(announced.map(\.topic) == ["test/gateway/CP_1/dashcam"], "a '+' in a charger id is no MQTT wildcard")
        #expect(Topics.level("a/b#c+d") == "a_b_c_d")
        let file = try #require(announced.first?.json["file"]?.stringValue)
        let attributes = try FileManager.default.attributesOfItem(atPath: file)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    @Test func twoCapturesInOneSecondAreBothKept() async throws {
        let stage = try StageTester.build(DashcamStage.self, config: "after_frames: 0\nafter_seconds: 0", stateDirectory: state)
        let tester = StageTester(stages: [("camera", stage)])
        for n in 0..<2 {
            tester.chargerSends(call: "StatusNotification", payload: ["connectorId": 1, "errorCode": "NoError", "status": "Faulted"], id: "f\(n)")
        }
        await stage.shutdown()
        #expect(stage.statistics.written == 2 && stage.statistics.failed == 0)
        #expect(try await captures(count: 2).count == 2)
    }
}
