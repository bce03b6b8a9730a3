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

/// A StatusNotification is decoded only when its bytes may report a fault: whenever the byte check says
/// "no fault", decoding must agree; and the usual spellings take the byte path.
@Suite("dashcam status check on the bytes")
struct StatusBytesTests {
    static let payloads = [
        #"{"connectorId":1,"errorCode":"NoError","status":"Charging","timestamp":"2026-11-25T14:00:00Z"}"#,
        #"{ "connectorId" : 1 , "errorCode" :\#t"NoError" , "status" : "Available" }"#,
        #"{"connectorId":0,"status":"Available","errorCode":"NoError","info":"errorCode"}"#,
        #"{"timestamp":"2026-11-25T14:00:00Z","connectorStatus":"Occupied","evseId":1,"connectorId":1}"#,
        #"{"connectorId":1,"errorCode":"GroundFailure","status":"Charging"}"#,
        #"{"connectorId":1,"errorCode":"NoError","status":"Faulted"}"#,
        #"{"connectorId":1,"errorCode":"NoErrorX","status":"Charging"}"#,
        #"{"connectorId":1,"errorCode":"NoError","errorCode":"PowerMeterFailure","status":"Charging"}"#,
        #"{"connectorId":1,"errorCode":"PowerMeterFailure","errorCode":"NoError","status":"Charging"}"#,
        #"{"connectorId":1,"errorCode":"No\u0045rror","status":"Charging"}"#,
        #"{"connectorId":1,"errorCode":"NoError","status":"\u0046aulted"}"#,
        #"{"connectorId":1,"error\u0043ode":"OverVoltage","status":"Charging"}"#,
        #"{"timestamp":"2026-11-25T14:00:00Z","connectorStatus":"Faulted","evseId":1,"connectorId":1}"#,
        #"{"connectorId":1,"status":"Charging","info":"Faulted earlier","errorCode":"NoError"}"#,
        #"{"connectorId":1,"vendor":{"errorCode":"NoError"},"errorCode":"OtherError","status":"Charging"}"#,
        #"{"connectorId":1,"status":"Charging","errorCode":"#,
        #"{}"#,
    ]

    @Test func theByteCheckNeverHidesATrigger() throws {
        for text in Self.payloads {
            let bytes = Array(text.utf8)
            guard DashcamStage.reportsNoFault(bytes[...]) else { continue }
            let payload = try JSONValue(parsing: bytes)
            #expect(DashcamStage.statusTrigger(payload) == nil, "\(text)")
        }
    }

    @Test func theUsualSpellingsAreReadOnTheBytes() {
        // The usual spellings and the empty payload on the bytes; every other one (a trigger, an escape, a
        // repeated or odd errorCode, `"errorCode"` as a value too, `Faulted` anywhere) decoded.
        let onTheBytes = Self.payloads.map { DashcamStage.reportsNoFault(Array($0.utf8)[...]) }
        #expect(onTheBytes == [true, true, false, true] + Array(repeating: false, count: 12) + [true])
        // In a frame: the payload slice has the frame's indices.
        let frame = Array(#"[2,"1","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Charging"}]"#.utf8)
        let start = frame.firstIndex(of: UInt8(ascii: "{"))!
        #expect(DashcamStage.reportsNoFault(frame[start..<(frame.count - 1)]))
    }
}
