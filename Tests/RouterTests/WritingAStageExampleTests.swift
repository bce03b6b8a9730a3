// The stage and test of docs/writing-a-stage.md (without `public`), compiled and run so the guide stays true.
import Foundation
import OCPP
import StageKit
import StageTesting
import Testing

/// Answers heartbeats locally at most every `min_interval` seconds; forwards the rest.
struct HeartbeatStage: Stage {
    struct Configuration: Decodable, Sendable {
        var minInterval: Double          // YAML: min_interval
    }

    static let type = "heartbeat"
    static let summary = "Answers frequent heartbeats locally so they do not crowd the CSMS link."

    enum LastForwarded: SessionStateKey { typealias Value = Duration }
    let minInterval: Duration

    init(configuration: Configuration, context: StageSetupContext) throws {
        guard configuration.minInterval > 0 else { throw HeartbeatError.nonPositiveInterval }
        minInterval = .milliseconds(Int(configuration.minInterval * 1000))
    }

    func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        guard envelope.isCall, envelope.action == "Heartbeat", envelope.direction == .fromCharger else { return .forward }
        if let last = session[LastForwarded.self], session.now - last < minInterval {
            return .answer(["currentTime": .string(Date(timeIntervalSince1970: session.wallTime).formatted(.iso8601))])
        }
        session[LastForwarded.self] = session.now
        return .forward
    }
}

enum HeartbeatError: Error { case nonPositiveInterval }

@Test func frequentHeartbeatsAreAnsweredLocally() throws {
    let tester = try StageTester(HeartbeatStage.self, config: "min_interval: 60")
    tester.chargerSends(call: "Heartbeat", id: "1")
    #expect(tester.takeSentToCSMS().map(\.messageId) == ["1"])
    tester.csmsAnswers("1", payload: ["currentTime": "2026-01-01T00:00:00Z"])
    _ = tester.takeSentToCharger()

    tester.advance(by: .seconds(10))
    tester.chargerSends(call: "Heartbeat", id: "2")
    #expect(tester.takeSentToCSMS().isEmpty)
    #expect(tester.takeSentToCharger().first?.messageType == .callResult)
}
