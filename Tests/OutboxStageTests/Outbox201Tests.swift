import Foundation
import OCPP
import OutboxStage
import Router
import StageTesting
import Testing

/// An OCPP 2.0.1 station keeps its own offline queue: the outbox (written for 1.6 chargers) leaves it alone.
@Suite("outbox and 2.0.1 stations")
struct Outbox201Tests {
    @Test func aStationsFramesPassAndNothingIsTakenOverWhenTheCSMSGoes() async throws {
        let directory = NSTemporaryDirectory() + "outbox-201-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tester = try StageTester(OutboxStage.self, version: .v201, stateDirectory: directory)
        let event = tester.chargerSends(call: "TransactionEvent", payload: [
            "eventType": "Started", "timestamp": "2026-01-01T00:00:00Z", "triggerReason": "Authorized", "seqNo": 0,
            "transactionInfo": ["transactionId": "tx-1"],
        ])
        #expect(tester.takeSentToCSMS().map(\.messageId) == [event])
        tester.session.northLinkDown()
        // Relayed as it is, not answered for the CSMS: the station's own queue takes over (offline: true).
        #expect(tester.takeSentToCharger().map(\.messageType) == [.callError])
        // Nor does the outbox answer for the CSMS in 1.6 shapes (an Authorize answered with `idTagInfo`).
        let authorize = tester.chargerSends(call: "Authorize", payload: ["idToken": ["idToken": "04A2B3C4", "type": "ISO14443"]])
        _ = await tester.settle(timeout: .seconds(2))
        let answers = tester.takeSentToCharger(where: { $0.messageId == authorize })
        #expect(answers.map(\.messageType) == [.callError], "the CSMS is unreachable: said so, as without an outbox")
        #expect(!FileManager.default.fileExists(atPath: directory + "/chargers/CP001/outbox.sqlite"), "no outbox for a 2.0.1 station")
    }
}
