import Foundation
import North201
import OCPP
import Router
import StageKit
import StageTesting
import Testing

@Suite("North201 transactions")
struct TransactionTests {
    /// Starts a transaction on connector 1; returns (the charger's integer id, the 2.0.1 transactionId).
    static func start(_ h: Harness, idTag: String = "TAG1", timestamp: String = "2026-01-01T10:00:00Z", meterStart: Int = 1000)
        -> (Int, String)
    {
        let id = h.tester.chargerSends(call: "StartTransaction", payload: [
            "connectorId": 1, "idTag": .string(idTag), "meterStart": .number(meterStart), "timestamp": .string(timestamp),
        ])
        let sent = h.toCSMS()
        #expect(sent.count == 1)
        guard let event = sent.first else { return (0, "") }
        #expect(event.messageId == id && event.action == "TransactionEvent")
        let payload = event.payload()
        h.tester.csmsAnswers(id, payload: ["idTokenInfo": ["status": "Accepted"]])
        // The charger gets its transaction id once the transaction is on disk.
        #expect(h.tester.takeSentToCharger(where: { $0.messageId == id }).isEmpty)
        h.settle()
        let answer = h.toCharger().first { $0.messageId == id }
        return (answer?.payload()["transactionId"]?.intValue ?? -1, payload["transactionInfo"]?["transactionId"]?.stringValue ?? "")
    }

    @Test func bootIsTranslatedBothWays() {
        let h = Harness()
        let id = h.tester.chargerSends(call: "BootNotification", payload: [
            "chargePointVendor": "Acme", "chargePointModel": "Legacy-22", "chargePointSerialNumber": "SN1", "firmwareVersion": "1.2",
        ])
        let sent = h.toCSMS()
        #expect(sent.map(\.action) == ["BootNotification"])
        #expect(contains(sent.first?.payload(), [
            "chargingStation": ["model": "Legacy-22", "vendorName": "Acme", "serialNumber": "SN1", "firmwareVersion": "1.2"],
            "reason": "PowerUp",
        ]))
        h.tester.csmsAnswers(id, payload: ["currentTime": "2026-01-01T00:00:00Z", "interval": 300, "status": "Accepted"])
        let answer = h.toCharger()
        #expect(answer.first?.payload() == ["status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300])
        #expect(h.tester.session.bootAccepted)
    }

    @Test func authorizeMapsTheTokenAndTheStatus() {
        let h = Harness(options: North201Options(idTokenType: "KeyCode"))
        let id = h.tester.chargerSends(call: "Authorize", payload: ["idTag": "ABC"])
        #expect(h.toCSMS().first?.payload() == ["idToken": ["idToken": "ABC", "type": "KeyCode"]])
        h.tester.csmsAnswers(id, payload: ["idTokenInfo": ["status": "NoCredit", "groupIdToken": ["idToken": "G1", "type": "Central"]]])
        #expect(h.toCharger().first?.payload() == ["idTagInfo": ["status": "Invalid", "parentIdTag": "G1"]])
    }

    @Test func fullTransactionWithMeterValuesStatusAndStop() {
        let h = Harness()
        let (local, txId) = Self.start(h)
        #expect(local >= 1)
        #expect(UUID(uuidString: txId) != nil)

        // Meter values during the transaction: TransactionEvent(Updated), signed data unchanged.
        let signed = "OCMF|{\"FV\":\"1.0\",\"RD\":[{\"RV\":1.234}]}|{\"SA\":\"ECDSA\",\"SD\":\"3045\"}"
        let mv = h.tester.chargerSends(call: "MeterValues", payload: [
            "connectorId": 1, "transactionId": .number(local),
            "meterValue": [[
                "timestamp": "2026-01-01T10:05:00Z",
                "sampledValue": [
                    ["value": "1234.5", "measurand": "Energy.Active.Import.Register", "unit": "Wh", "context": "Sample.Periodic",
                     "location": "Outlet"],
                    ["value": .string(signed), "format": "SignedData", "measurand": "Energy.Active.Import.Register", "unit": "Wh",
                     "context": "Sample.Periodic", "location": "Outlet"],
                    ["value": "7.4", "measurand": "Power.Active.Import", "unit": "kW", "phase": "L1"],
                    ["value": "31", "measurand": "Temperature", "unit": "Celsius"],
                ],
            ]],
        ])
        let updated = h.toCSMS()
        #expect(updated.count == 1)
        let up = updated.first?.payload() ?? [:]
        #expect(up["eventType"] == "Updated" && up["seqNo"] == 1 && up["transactionInfo"]?["transactionId"]?.stringValue == txId)
        #expect(up["triggerReason"] == "SignedDataReceived")
        let samples = up["meterValue"]?[0]?["sampledValue"]?.arrayValue ?? []
        #expect(samples.count == 2)  // Temperature has no 2.0.1 measurand
        #expect(samples.first?["signedMeterValue"]?["signedMeterData"]?.stringValue == signed)
        #expect(samples.first?["value"] == .number("1234.5"))
        #expect(contains(samples.last, ["measurand": "Power.Active.Import", "phase": "L1", "unitOfMeasure": ["unit": "W", "multiplier": 3]]))
        h.tester.csmsAnswers(mv, payload: [:])
        #expect(h.toCharger().first?.payload() == [:])

        // Charging state change: the status, then TransactionEvent(Updated, ChargingStateChanged).
        let status = h.tester.chargerSends(call: "StatusNotification", payload: [
            "connectorId": 1, "errorCode": "NoError", "status": "SuspendedEV", "timestamp": "2026-01-01T10:06:00Z",
        ])
        let statusFrames = h.toCSMS()
        #expect(statusFrames.map(\.action) == ["StatusNotification"])
        #expect(statusFrames.first?.payload() == ["timestamp": "2026-01-01T10:06:00Z", "connectorStatus": "Occupied", "evseId": 1, "connectorId": 1])
        h.tester.csmsAnswers(status, payload: [:])
        #expect(h.toCharger().first?.payload() == [:])
        let stateEvent = h.toCSMS()
        #expect(stateEvent.map(\.action) == ["TransactionEvent"])
        #expect(contains(stateEvent.first?.payload(), ["eventType": "Updated", "triggerReason": "ChargingStateChanged", "seqNo": 2,
                                                       "transactionInfo": ["chargingState": "SuspendedEV"]]))
        if let native = stateEvent.first { h.tester.csmsAnswers(native.messageId, payload: [:]) }

        // Stop: TransactionEvent(Ended) with the reason and transactionData.
        let stop = h.tester.chargerSends(call: "StopTransaction", payload: [
            "transactionId": .number(local), "meterStop": 5000, "timestamp": "2026-01-01T11:00:00Z", "reason": "EVDisconnected",
            "idTag": "TAG1",
            "transactionData": [["timestamp": "2026-01-01T10:30:00Z", "sampledValue": [["value": "3000", "context": "Sample.Clock"]]]],
        ])
        let ended = h.toCSMS().first?.payload() ?? [:]
        #expect(contains(ended, ["eventType": "Ended", "seqNo": 3, "triggerReason": "EVDeparted",
                                 "transactionInfo": ["transactionId": .string(txId), "stoppedReason": "EVDisconnected"]]))
        #expect(ended["meterValue"]?.arrayValue?.count == 2)
        #expect(ended["meterValue"]?[1]?["sampledValue"]?[0]?["context"] == "Transaction.End")
        h.tester.csmsAnswers(stop, payload: ["idTokenInfo": ["status": "Accepted"]])
        #expect(h.toCharger().first?.payload() == ["idTagInfo": ["status": "Accepted"]])
    }

    @Test func stateSurvivesARestartAndSeqNoKeepsIncreasing() {
        let h = Harness()
        let (local, txId) = Self.start(h)
        let mv = h.tester.chargerSends(call: "MeterValues", payload: [
            "connectorId": 1, "transactionId": .number(local),
            "meterValue": [["timestamp": "2026-01-01T10:05:00Z", "sampledValue": [["value": "1500"]]]],
        ])
        let before = h.toCSMS().first?.payload()["seqNo"]?.intValue ?? -1
        h.tester.csmsAnswers(mv, payload: [:])
        h.tester.endSession()

        let again = h.restart()
        let stop = again.tester.chargerSends(call: "StopTransaction", payload: [
            "transactionId": .number(local), "meterStop": 5000, "timestamp": "2026-01-01T11:00:00Z",
        ])
        let ended = again.toCSMS()
        #expect(ended.count == 1)
        let payload = ended.first?.payload() ?? [:]
        #expect(payload["eventType"] == "Ended")
        #expect(payload["transactionInfo"]?["transactionId"]?.stringValue == txId)
        #expect((payload["seqNo"]?.intValue ?? -1) > before)
        again.tester.csmsAnswers(stop, payload: [:])
        #expect(again.toCharger().first?.payload() == [:])
        // A new transaction gets a new integer id, never a reused one.
        let (second, secondTx) = Self.start(again, timestamp: "2026-01-01T12:00:00Z")
        #expect(second > local && secondTx != txId)
    }

    @Test func gatewayCallsAreOfflineEventsAndReplayedStartsAreNotDuplicated() {
        let h = Harness()
        var outcome: CallOutcome?
        let start: JSONValue = ["connectorId": 1, "idTag": "T", "meterStart": 0, "timestamp": "2026-01-01T09:00:00Z"]
        h.tester.session.sendCall("StartTransaction", payload: start, to: .csms) { outcome = $0 }
        let sent = h.toCSMS()
        #expect(sent.first?.payload()["offline"] == true)
        #expect(sent.first?.payload()["seqNo"] == 0)
        if let frame = sent.first { h.tester.csmsAnswers(frame.messageId, payload: [:]) }
        h.settle()
        guard case .result(let answer)? = outcome, let local = answer["transactionId"]?.intValue else {
            Issue.record("no 1.6 answer: \(String(describing: outcome))")
            return
        }
        // The outbox replays the same StartTransaction again (at-least-once): answered with the same id, not sent twice.
        var again: CallOutcome?
        h.tester.session.sendCall("StartTransaction", payload: start, to: .csms) { again = $0 }
        #expect(h.toCSMS().isEmpty)
        guard case .result(let second)? = again else { Issue.record("no answer"); return }
        #expect(second["transactionId"]?.intValue == local)
        // A replayed StopTransaction: Ended, offline.
        h.tester.session.sendCall("StopTransaction", payload: ["transactionId": .number(local), "meterStop": 10, "timestamp": "2026-01-01T09:30:00Z"],
                                  to: .csms) { _ in }
        let ended = h.toCSMS().first?.payload() ?? [:]
        #expect(ended["eventType"] == "Ended" && ended["offline"] == true && ended["seqNo"] == 1)
    }

    @Test func remoteStartCarriesTheRemoteStartIdAndRemoteStopTheIntegerId() {
        let h = Harness()
        let request = h.csmsCalls("RequestStartTransaction", ["idToken": ["idToken": "APP1", "type": "Central"], "remoteStartId": 42, "evseId": 1])
        let relayed = h.toCharger()
        #expect(relayed.map(\.action) == ["RemoteStartTransaction"])
        #expect(relayed.first?.payload() == ["connectorId": 1, "idTag": "APP1"])
        if let frame = relayed.first { h.tester.chargerAnswers(frame.messageId, payload: ["status": "Accepted"]) }
        #expect(h.answerToCSMS(request)?.payload() == ["status": "Accepted"])

        let id = h.tester.chargerSends(call: "StartTransaction", payload: ["connectorId": 1, "idTag": "APP1", "meterStart": 0,
                                                                           "timestamp": "2026-01-01T10:00:00Z"])
        let started = h.toCSMS().first?.payload() ?? [:]
        #expect(contains(started, ["triggerReason": "RemoteStart", "transactionInfo": ["remoteStartId": 42],
                                   "idToken": ["idToken": "APP1", "type": "Central"]]))
        h.tester.csmsAnswers(id, payload: [:])
        h.settle()
        let local = h.toCharger().first?.payload()["transactionId"]?.intValue ?? -1
        let txId = started["transactionInfo"]?["transactionId"] ?? ""

        let stop = h.csmsCalls("RequestStopTransaction", ["transactionId": txId])
        let remoteStop = h.toCharger()
        #expect(remoteStop.first?.action == "RemoteStopTransaction")
        #expect(remoteStop.first?.payload() == ["transactionId": .number(local)])
        if let frame = remoteStop.first { h.tester.chargerAnswers(frame.messageId, payload: ["status": "Accepted"]) }
        #expect(h.answerToCSMS(stop)?.payload() == ["status": "Accepted"])

        // An unknown transaction: Rejected by the gateway; the charger sees nothing.
        let unknown = h.csmsCalls("RequestStopTransaction", ["transactionId": "nope"])
        #expect(h.answerToCSMS(unknown)?.payload() == ["status": "Rejected"])
        #expect(h.toCharger().isEmpty)
    }

    @Test func resetOnIdleWaitsForTheTransactionToEnd() {
        let h = Harness()
        let (local, _) = Self.start(h)
        let reset = h.csmsCalls("Reset", ["type": "OnIdle"])
        #expect(h.answerToCSMS(reset)?.payload() == ["status": "Scheduled"])
        #expect(h.toCharger().isEmpty)
        let stop = h.tester.chargerSends(call: "StopTransaction", payload: ["transactionId": .number(local), "meterStop": 1,
                                                                            "timestamp": "2026-01-01T11:00:00Z"])
        _ = h.toCSMS()
        h.tester.csmsAnswers(stop, payload: [:])
        h.tester.advance(by: .seconds(1))
        let frames = h.toCharger()
        #expect(frames.map { $0.action ?? "answer" } == ["answer", "Reset"])
        #expect(frames.last?.payload() == ["type": "Soft"])
    }

    @Test func statusErrorsBecomeNotifyEventAndConnectorZeroIsAnsweredLocally() {
        let h = Harness()
        let id = h.tester.chargerSends(call: "StatusNotification", payload: [
            "connectorId": 0, "errorCode": "GroundFailure", "status": "Faulted", "vendorErrorCode": "E12",
        ])
        #expect(h.toCharger().first { $0.messageId == id }?.payload() == [:])
        let sent = h.toCSMS()
        #expect(sent.map(\.action) == ["NotifyEvent"])
        #expect(contains(sent.first?.payload()["eventData"]?[0], ["actualValue": "GroundFailure", "techCode": "E12",
                                                                 "component": ["name": "ChargingStation"], "variable": ["name": "Problem"]]))
    }
}

@Suite("North201 transaction book")
struct TransactionBookTests {
    /// kill -9 can lose the last saves: the seqNo numbers handed out after the last save that reached the disk
    /// must never be handed out again after a restart.
    @Test func aRestartNeverRepeatsASeqNoEvenWhenTheLastSavesWereLost() throws {
        let h = Harness()
        let (local, _) = TransactionTests.start(h)
        h.store.flushSynchronously()
        let onDisk = try #require(try h.store.load(TransactionBook.self, charger: h.tester.chargerId, name: TransactionBook.fileName))
        // Events the CSMS received after that save (their saves "lost"): up to the lease's headroom.
        var used: [Int] = []
        for _ in 0..<20 {
            let id = h.tester.chargerSends(call: "MeterValues", payload: [
                "connectorId": 1, "transactionId": .number(local),
                "meterValue": [["timestamp": "2026-01-01T10:05:00Z", "sampledValue": [["value": "1"]]]],
            ])
            used.append(h.toCSMS().first?.payload()["seqNo"]?.intValue ?? -1)
            h.tester.csmsAnswers(id, payload: [:])
        }
        let restored = onDisk.restored()
        let next = try #require(restored.transaction(localId: local)?.nextSeqNo)
        #expect(next > used.max()!, "after a restart from the older file the next seqNo (\(next)) must be above every one sent (\(used))")
    }
}
