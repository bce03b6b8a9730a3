import Crypto
import Foundation
@testable import MQTTTapStage
import StageKit
import StageTesting
import Testing

/// The PII hash is HMAC-SHA256 with the gateway's key, its first 16 bytes in hex: computed here
/// independently, the slow obvious way, against the stage's fast one.
@Suite("mqtt_tap PII hash")
struct PIIHashTests {
    @Test func theHashIsTheFirstSixteenBytesOfTheHMACInLowerCaseHex() throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("tap-hash-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let tap = try StageTester.build(MQTTTapStage.self, stateDirectory: state, publisher: RecordingPublisher())
        let key = try #require(FileManager.default.contents(atPath: state + "/health-channel.key"))
        for text in ["04A2B3C4", "", "ünïcödé-tag", String(repeating: "x", count: 500)] {
            let mac = HMAC<SHA256>.authenticationCode(for: Data(text.utf8), using: SymmetricKey(data: key))
            let expected = "hmac-sha256:" + mac.prefix(16).map { String(format: "%02x", $0) }.joined()
            #expect(tap.hash(text) == expected)
        }
    }

    /// A session remembers its last hashed value: the same text gives the same hash, another text its own.
    @Test func aSessionsLastHashIsReusedOnlyForTheSameText() throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("tap-hash-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: state) }
        let tap = try StageTester.build(MQTTTapStage.self, stateDirectory: state, publisher: RecordingPublisher())
        let session = MQTTTapStage.TapSession()
        for text in ["04A2B3C4", "04A2B3C4", "04A2B3C5", "", "04A2B3C4", "04a2b3c4"] {
            #expect(tap.hash(text, session) == tap.hash(text))
            #expect(session.lastHash?.text == text)
        }
        #expect(tap.hash("A", nil) == tap.hash("A"))
        // Another instance (a reload) with another key: its own hash, not the session's cached one.
        let other = FileManager.default.temporaryDirectory.appendingPathComponent("tap-hash-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: other) }
        let reloaded = try StageTester.build(MQTTTapStage.self, stateDirectory: other, publisher: RecordingPublisher())
        _ = tap.hash("04A2B3C4", session)
        #expect(reloaded.hash("04A2B3C4", session) == reloaded.hash("04A2B3C4"))
        #expect(reloaded.hash("04A2B3C4") != tap.hash("04A2B3C4"))
    }
}
