@testable import DashcamStage
import Foundation
import OCPP
import StageKit
import StageTesting
import Testing

/// The recent frames are kept with a moving start instead of `removeFirst` per frame: the window must
/// stay the newest frames in order across the batched removals, and dropped frames' bytes are let go at once.
@Suite("dashcam recent frames")
struct RecentFramesTests {
    @Test func theWindowIsTheNewestFramesAcrossCompactions() {
        let recorder = DashcamStage.Recorder()
        for n in 0..<500 {
            recorder.append(.init(wallTime: Double(n), direction: .fromCharger, bytes: Array("frame \(n)".utf8)))
            if recorder.count > 200 { recorder.dropOldest(recorder.count - 200) }
            let expected = max(0, n - 199)...n
            #expect(recorder.recent.map(\.wallTime) == expected.map(Double.init))
            // What is stored besides the window: fewer than one batch of dropped entries, with no bytes.
            #expect(recorder.kept.count - recorder.count < DashcamStage.Recorder.compactionBatch)
            #expect(recorder.kept[..<recorder.start].allSatisfy { $0.bytes.isEmpty })
        }
        #expect(recorder.countOlder(than: 350) == 50)
        #expect(recorder.oldestTime == 300)
        recorder.dropOldest(1000)
        #expect(recorder.count == 0 && recorder.kept.isEmpty && recorder.oldestTime == nil)
    }

    @Test func aCaptureAfterManyFramesHoldsTheLastOnes() async throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("dashcam-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let tester = try StageTester(DashcamStage.self, config: "before_frames: 5\nafter_frames: 0\nafter_seconds: 0", stateDirectory: state)
        for n in 0..<100 { tester.chargerSends(call: "Heartbeat", id: "h\(n)") }
        tester.chargerSends(call: "StatusNotification", payload: ["connectorId": 1, "errorCode": "NoError", "status": "Faulted"], id: "fault")
        let folder = state + "/dashcam/CP001"
        let deadline = ContinuousClock.now + .seconds(30)
        var files: [String] = []
        while files.isEmpty, ContinuousClock.now < deadline {
            files = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".jsonl") }
            try await Task.sleep(for: .milliseconds(10))
        }
        let file = try #require(files.first)
        let lines = try String(contentsOfFile: folder + "/" + file, encoding: .utf8).split(separator: "\n").map { try JSONValue(parsing: String($0)) }
        let ids = lines.dropFirst().compactMap { $0["frame"]?.arrayValue?[1].stringValue }
        #expect(ids == ["h96", "h97", "h98", "h99", "fault"])
    }
}
