import Foundation
import OCPP
import Outbox
@testable import OutboxStage
import Router
import StageKit
import StageTesting
import Testing

/// A charger behind the `outbox` stage, with its own state folder; `drain()` lets the stage's disk work finish.
final class Rig {
    let directory: String
    let config: String
    var tester: StageTester

    init(config: String = "", directory: String? = nil, boot: (accepted: Bool, interval: Int)? = (true, 120),
         limits: SessionLimits = SessionLimits(), waitForOpen: Bool = true) async throws {
        self.directory = directory ?? NSTemporaryDirectory() + "outbox-test-" + UUID().uuidString
        self.config = config
        if let boot {
            try FileManager.default.createDirectory(atPath: self.directory + "/chargers/CP001", withIntermediateDirectories: true)
            try Data(#"{"accepted":\#(boot.accepted),"interval":\#(boot.interval),"answeredAt":0}"#.utf8)
                .write(to: URL(fileURLWithPath: self.directory + "/chargers/CP001/boot.json"))
        }
        tester = try StageTester(OutboxStage.self, config: config, stateDirectory: self.directory, limits: limits)
        if waitForOpen { await drain() }
    }

    deinit { try? FileManager.default.removeItem(atPath: directory) }

    /// A gateway restart: a new session (and stage instance) on the same state folder.
    func restart() async throws {
        tester.endSession()
        tester = try StageTester(OutboxStage.self, config: config, stateDirectory: directory)
        await drain()
    }

    /// Runs the work the stage handed to its disk queue until none is left: waits for the outbox's
    /// queue to finish what was submitted (no guessing how long an fsync takes on a busy machine), then
    /// runs what came back to the session, until a round finds nothing either way.
    func drain() async {
        var quietRounds = 0
        while quietRounds < 2 {
            OutboxDatabase.ifOpen(path: path)?.drainSubmitted()
            if await tester.settle(timeout: .milliseconds(quietRounds == 0 ? 100 : 500)) { quietRounds = 0 } else { quietRounds += 1 }
        }
    }

    var path: String { OutboxDatabase.path(stateDirectory: directory, chargerId: "CP001") }

    /// The outbox as the CLI sees it (a second, read-only connection).
    func rows() throws -> [QueuedMessage] { try OutboxDatabase(path: path, readOnly: true).rows() }

    func pending() throws -> [QueuedMessage] { try rows().filter { $0.state == .pending } }

    /// The charger sends a CALL and the gateway's answer comes back (after the disk work); returns it.
    func chargerCall(_ action: String, _ payload: JSONValue) async -> Frame? {
        let id = tester.chargerSends(call: action, payload: payload)
        await drain()
        return tester.takeSentToCharger(where: { $0.messageId == id }).first
    }

    /// The CSMS's next frame, which must be the only one sent (one CALL in flight).
    func onlyCSMSFrame() -> Frame? {
        let frames = tester.takeSentToCSMS()
        #expect(frames.count == 1, "expected one frame at the CSMS, got \(frames.map(\.text))")
        return frames.first
    }
}

func meterValues(_ transactionId: Int?, _ value: String) -> JSONValue {
    var payload: [(key: String, value: JSONValue)] = [("connectorId", 1)]
    if let transactionId { payload.append(("transactionId", .number(transactionId))) }
    payload.append(("meterValue", [["timestamp": "2026-01-01T00:00:00Z", "sampledValue": [["value": .string(value)]]]]))
    return .object(payload)
}

let start: JSONValue = ["connectorId": 1, "idTag": "TAG1", "meterStart": 100, "timestamp": "2026-01-01T00:00:00Z"]
func stop(_ transactionId: Int) -> JSONValue {
    ["transactionId": .number(transactionId), "idTag": "TAG1", "meterStop": 900, "timestamp": "2026-01-01T01:00:00Z"]
}
func status(_ connector: Int, _ value: String) -> JSONValue { ["connectorId": .number(connector), "errorCode": "NoError", "status": .string(value)] }

@Suite struct OutboxStageTests {
    // MARK: Offline answers

    @Test func anOfflineCallIsStoredBeforeItIsAnswered() async throws {
        let rig = try await Rig()
        rig.tester.session.northLinkDown()
        let id = rig.tester.chargerSends(call: "StatusNotification", payload: status(1, "Available"))
        // Held: no answer until the append is on disk.
        #expect(rig.tester.takeSentToCharger().isEmpty)
        await rig.drain()
        let answer = try #require(rig.tester.takeSentToCharger(where: { $0.messageId == id }).first)
        #expect(answer.messageType == .callResult)
        #expect(answer.payload() == [:])
        #expect(try rig.pending().map(\.action) == ["StatusNotification"])
        #expect(rig.tester.takeSentToCSMS().isEmpty)
    }

    @Test func offlineAnswersFollowTheSpec() async throws {
        let rig = try await Rig()
        rig.tester.session.northLinkDown()
        let heartbeat = try #require(await rig.chargerCall("Heartbeat", [:]))
        #expect(heartbeat.payload()["currentTime"]?.stringValue == "2026-01-01T00:00:00Z")
        let boot = try #require(await rig.chargerCall("BootNotification", ["chargePointVendor": "V", "chargePointModel": "M"]))
        #expect(boot.payload()["status"]?.stringValue == "Accepted")
        #expect(boot.payload()["interval"]?.intValue == 120)  // the last interval the CSMS gave (boot.json)
        let meter = try #require(await rig.chargerCall("MeterValues", meterValues(nil, "10")))
        #expect(meter.payload() == [:])
        let transfer = try #require(await rig.chargerCall("DataTransfer", ["vendorId": "X"]))
        #expect(transfer.payload()["status"]?.stringValue == "Rejected")
        // Nothing the gateway can answer for: a CALLERROR (the router's), not a hang.
        let other = try #require(await rig.chargerCall("SignCertificate", ["csr": "x"]))
        #expect(other.messageType == .callError)
        // Heartbeats are answered, not queued; the boot is queued for the CSMS.
        #expect(try rig.pending().map(\.action) == ["BootNotification", "MeterValues"])
    }

    @Test func aChargerTheCSMSNeverAcceptedIsNotAcceptedOffline() async throws {
        let rig = try await Rig(boot: nil)
        rig.tester.session.northLinkDown()
        let boot = try #require(await rig.chargerCall("BootNotification", ["chargePointVendor": "V", "chargePointModel": "M"]))
        #expect(boot.payload()["status"]?.stringValue == "Pending")
        #expect(try rig.pending().isEmpty)
    }

    @Test func startTransactionOfflineGetsAGatewayIdThatSurvivesARestart() async throws {
        let rig = try await Rig(config: "local_transaction_id_base: 1000000")
        rig.tester.session.northLinkDown()
        let first = try #require(await rig.chargerCall("StartTransaction", start))
        let firstId = try #require(first.payload()["transactionId"]?.intValue)
        #expect(firstId == 1_000_000)
        _ = await rig.chargerCall("StopTransaction", stop(firstId))
        try await rig.restart()
        rig.tester.session.northLinkDown()
        let second = try #require(await rig.chargerCall("StartTransaction", start))
        #expect(second.payload()["transactionId"]?.intValue == 1_000_001)
        #expect(try rig.pending().compactMap(\.localTransactionId) == [1_000_000, 1_000_000, 1_000_001])
    }

    // MARK: Authorization offline

    @Test func authorizeOfflineUsesWhatTheCSMSSaidBefore() async throws {
        let rig = try await Rig()
        // Online: the CSMS accepts TAG1 and blocks TAG2; the stage learns both.
        for (tag, verdict) in [("TAG1", "Accepted"), ("TAG2", "Blocked")] {
            let id = rig.tester.chargerSends(call: "Authorize", payload: ["idTag": .string(tag)])
            #expect(rig.onlyCSMSFrame()?.messageId == id)
            rig.tester.csmsAnswers(id, payload: ["idTagInfo": ["status": .string(verdict)]])
            _ = rig.tester.takeSentToCharger()
            await rig.drain()
        }
        rig.tester.session.northLinkDown()
        let known = try #require(await rig.chargerCall("Authorize", ["idTag": "TAG1"]))
        #expect(known.payload()["idTagInfo"]?["status"]?.stringValue == "Accepted")
        let blocked = try #require(await rig.chargerCall("Authorize", ["idTag": "TAG2"]))
        #expect(blocked.payload()["idTagInfo"]?["status"]?.stringValue == "Blocked")
        let unknown = try #require(await rig.chargerCall("Authorize", ["idTag": "NOBODY"]))
        #expect(unknown.payload()["idTagInfo"]?["status"]?.stringValue == "Invalid")  // cache_only, the default
        // StartTransaction offline carries the cached verdict too.
        let started = try #require(await rig.chargerCall("StartTransaction", start))
        #expect(started.payload()["idTagInfo"]?["status"]?.stringValue == "Accepted")
        #expect(try rig.pending().map(\.action) == ["StartTransaction"])  // Authorize offline is not replayed
    }

    @Test func offlineAuthorizePolicies() async throws {
        let accept = try await Rig(config: "offline_authorize: accept")
        accept.tester.session.northLinkDown()
        #expect(await accept.chargerCall("Authorize", ["idTag": "NEW"])?.payload()["idTagInfo"]?["status"]?.stringValue == "Accepted")

        let reject = try await Rig(config: "offline_authorize: reject")
        let id = reject.tester.chargerSends(call: "Authorize", payload: ["idTag": "TAG1"])
        reject.tester.csmsAnswers(id, payload: ["idTagInfo": ["status": "Accepted"]])
        await reject.drain()
        reject.tester.session.northLinkDown()
        #expect(await reject.chargerCall("Authorize", ["idTag": "TAG1"])?.payload()["idTagInfo"]?["status"]?.stringValue == "Invalid")

        #expect(throws: (any Error).self) { try StageTester.build(OutboxStage.self, config: "offline_authorize: maybe") }
    }

    @Test func theLocalListFromTheCSMSDecidesBeforeTheCacheAndIsStillForwarded() async throws {
        let rig = try await Rig()
        let id = rig.tester.csmsSends(call: "SendLocalList", payload: [
            "listVersion": 3, "updateType": "Full",
            "localAuthorizationList": [["idTag": "LISTED", "idTagInfo": ["status": "Accepted"]],
                                       ["idTag": "OLD", "idTagInfo": ["status": "Accepted", "expiryDate": "2020-01-01T00:00:00Z"]],
                                       ["idTag": "BAD", "idTagInfo": ["status": "Blocked"]]],
        ])
        #expect(rig.tester.takeSentToCharger().map(\.messageId) == [id])
        await rig.drain()
        rig.tester.session.northLinkDown()
        let verdicts = await [rig.chargerCall("Authorize", ["idTag": "LISTED"]), rig.chargerCall("Authorize", ["idTag": "OLD"]),
                              rig.chargerCall("Authorize", ["idTag": "BAD"])]
        #expect(verdicts.map { $0?.payload()["idTagInfo"]?["status"]?.stringValue } == ["Accepted", "Expired", "Blocked"])
        #expect(try OutboxDatabase(path: rig.path, readOnly: true).localListVersion() == 3)
    }

    // MARK: Replay

    @Test func replayIsInOrderOneAtATimeWithTheCSMSTransactionId() async throws {
        let rig = try await Rig()
        rig.tester.session.northLinkDown()
        let local = try #require(await rig.chargerCall("StartTransaction", start)?.payload()["transactionId"]?.intValue)
        _ = await rig.chargerCall("MeterValues", meterValues(local, "1"))
        _ = await rig.chargerCall("MeterValues", meterValues(local, "2"))
        _ = await rig.chargerCall("StopTransaction", stop(local))
        #expect(rig.tester.takeSentToCSMS().isEmpty)

        rig.tester.session.northLinkUp()
        await rig.drain()
        let started = try #require(rig.onlyCSMSFrame())
        #expect(started.action == "StartTransaction")
        #expect(started.payload() == start)
        rig.tester.csmsAnswers(started.messageId, payload: ["transactionId": 77, "idTagInfo": ["status": "Accepted"]])
        await rig.drain()
        var seen: [(String, Int?, String?)] = []
        for _ in 0..<3 {
            let frame = try #require(rig.onlyCSMSFrame())
            let payload = frame.payload()
            seen.append((frame.action ?? "", payload["transactionId"]?.intValue,
                         payload["meterValue"]?.arrayValue?.first?["sampledValue"]?.arrayValue?.first?["value"]?.stringValue))
            rig.tester.csmsAnswers(frame.messageId, payload: frame.action == "StopTransaction" ? ["idTagInfo": ["status": "Accepted"]] : [:])
            await rig.drain()
        }
        #expect(seen.map(\.0) == ["MeterValues", "MeterValues", "StopTransaction"])
        #expect(seen.map(\.1) == [77, 77, 77])
        #expect(seen.map(\.2) == ["1", "2", nil])
        #expect(try rig.rows().isEmpty)
        #expect(rig.tester.takeSentToCSMS().isEmpty)
        // The outbox is empty: the charger's CALLs pass directly again, byte for byte.
        let id = rig.tester.chargerSends(call: "StatusNotification", payload: status(1, "Available"))
        #expect(rig.tester.takeSentToCSMS().map(\.messageId) == [id])
    }

    @Test func theChargerKeepsItsIdAndBothDirectionsAreRewrittenForTheTransaction() async throws {
        let rig = try await Rig()
        rig.tester.session.northLinkDown()
        let local = try #require(await rig.chargerCall("StartTransaction", start)?.payload()["transactionId"]?.intValue)
        rig.tester.session.northLinkUp()
        await rig.drain()
        let started = try #require(rig.onlyCSMSFrame())
        rig.tester.csmsAnswers(started.messageId, payload: ["transactionId": 77, "idTagInfo": ["status": "Accepted"]])
        await rig.drain()
        // Online now: the charger still says `local`; the CSMS hears 77.
        let meterId = rig.tester.chargerSends(call: "MeterValues", payload: meterValues(local, "5"))
        let meter = try #require(rig.onlyCSMSFrame())
        #expect(meter.messageId == meterId)
        #expect(meter.payload()["transactionId"]?.intValue == 77)
        rig.tester.csmsAnswers(meterId, payload: [:])
        _ = rig.tester.takeSentToCharger()
        // The CSMS says 77; the charger hears `local`.
        rig.tester.csmsSends(call: "RemoteStopTransaction", payload: ["transactionId": 77])
        let remote = try #require(rig.tester.takeSentToCharger().first)
        #expect(remote.payload()["transactionId"]?.intValue == local)
        rig.tester.chargerAnswers(remote.messageId, payload: ["status": "Accepted"])
        _ = rig.tester.takeSentToCSMS()
        rig.tester.csmsSends(call: "SetChargingProfile", payload: [
            "connectorId": 1, "csChargingProfiles": ["chargingProfileId": 1, "transactionId": 77, "stackLevel": 0,
                                                     "chargingProfilePurpose": "TxProfile", "chargingProfileKind": "Relative",
                                                     "chargingSchedule": ["chargingRateUnit": "W", "chargingSchedulePeriod": [["startPeriod": 0, "limit": 1000]]]],
        ])
        let profile = try #require(rig.tester.takeSentToCharger().first)
        #expect(profile.payload()["csChargingProfiles"]?["transactionId"]?.intValue == local)
        // The stop ends the mapping after the CSMS answered it.
        let stopId = rig.tester.chargerSends(call: "StopTransaction", payload: stop(local))
        #expect(rig.onlyCSMSFrame()?.payload()["transactionId"]?.intValue == 77)
        rig.tester.csmsAnswers(stopId, payload: [:])
        await rig.drain()
        #expect(try OutboxDatabase(path: rig.path, readOnly: true).transactionMappings().isEmpty)
    }

    @Test func newCallsWaitBehindTheReplay() async throws {
        let rig = try await Rig()
        rig.tester.session.northLinkDown()
        _ = await rig.chargerCall("StatusNotification", status(1, "Preparing"))
        rig.tester.session.northLinkUp()
        await rig.drain()
        let first = try #require(rig.onlyCSMSFrame())
        #expect(first.action == "StatusNotification")
        // The CSMS is back but the outbox is not empty: a new StartTransaction queues behind and is answered locally.
        let answer = try #require(await rig.chargerCall("StartTransaction", start))
        #expect(answer.payload()["transactionId"]?.intValue == OutboxLimits.defaultLocalTransactionIdBase)
        #expect(rig.tester.takeSentToCSMS().isEmpty)
        // Not transaction-related: may go at once (1.6 §3.7).
        let authorize = rig.tester.chargerSends(call: "Authorize", payload: ["idTag": "TAG1"])
        rig.tester.csmsAnswers(first.messageId, payload: [:])
        await rig.drain()
        // The Authorize was waiting in the CSMS lane before the replay's next CALL: it goes first, then the start.
        #expect(rig.onlyCSMSFrame()?.messageId == authorize)
        rig.tester.csmsAnswers(authorize, payload: ["idTagInfo": ["status": "Accepted"]])
        _ = rig.tester.takeSentToCharger()
        await rig.drain()
        #expect(rig.onlyCSMSFrame()?.action == "StartTransaction")
    }

    @Test func chargerCallsOrphanedByTheDropAreTakenOverNotLost() async throws {
        let rig = try await Rig()
        let id = rig.tester.chargerSends(call: "StartTransaction", payload: start)
        #expect(rig.onlyCSMSFrame()?.messageId == id)
        rig.tester.session.northLinkDown()
        await rig.drain()
        let answer = try #require(rig.tester.takeSentToCharger(where: { $0.messageId == id }).first)
        #expect(answer.messageType == .callResult)  // not the router's GenericError
        #expect(answer.payload()["transactionId"]?.intValue == OutboxLimits.defaultLocalTransactionIdBase)
        #expect(try rig.pending().map(\.action) == ["StartTransaction"])
        rig.tester.session.northLinkUp()
        await rig.drain()
        #expect(rig.onlyCSMSFrame()?.action == "StartTransaction")
    }

    @Test func statusNotificationsAreCoalescedToTheLatestPerConnector() async throws {
        let rig = try await Rig()
        rig.tester.session.northLinkDown()
        for value in ["Preparing", "Charging", "Finishing"] { _ = await rig.chargerCall("StatusNotification", status(1, value)) }
        _ = await rig.chargerCall("StatusNotification", status(2, "Faulted"))
        #expect(try rig.pending().map { try JSONValue(parsing: $0.payload)["status"]?.stringValue } == ["Finishing", "Faulted"])
    }

    @Test func aCSMSErrorOnReplayIsRecordedNotRetriedForever() async throws {
        let rig = try await Rig(config: "error_attempts: 2\nretry_initial_delay: 10")
        rig.tester.session.northLinkDown()
        let local = try #require(await rig.chargerCall("StartTransaction", start)?.payload()["transactionId"]?.intValue)
        _ = await rig.chargerCall("MeterValues", meterValues(local, "1"))
        _ = await rig.chargerCall("StatusNotification", status(1, "Available"))
        rig.tester.session.northLinkUp()
        await rig.drain()
        let first = try #require(rig.onlyCSMSFrame())
        rig.tester.csmsAnswersError(first.messageId, code: .internalError, description: "boom")
        await rig.drain()
        #expect(rig.tester.takeSentToCSMS().isEmpty)  // waits before the second try
        rig.tester.advance(by: .seconds(10))
        await rig.drain()
        let second = try #require(rig.onlyCSMSFrame())
        #expect(second.action == "StartTransaction")
        rig.tester.csmsAnswersError(second.messageId, code: .internalError, description: "boom")
        await rig.drain()
        // Refused for good: kept as failed; its MeterValues cannot go either; the replay goes on.
        let third = try #require(rig.onlyCSMSFrame())
        #expect(third.action == "StatusNotification")
        let rows = try rig.rows()
        #expect(rows.filter { $0.state == .failed }.map(\.action) == ["StartTransaction", "MeterValues"])
        #expect(rows.first?.lastError?.contains("boom") == true)
        #expect(rows.first?.attempts == 2)
    }

    @Test func aTimeoutOnReplayIsRetriedWithBackOff() async throws {
        let rig = try await Rig(config: "retry_initial_delay: 5", limits: SessionLimits(csmsCallTimeout: .seconds(30)))
        rig.tester.session.northLinkDown()
        _ = await rig.chargerCall("StatusNotification", status(1, "Available"))
        rig.tester.session.northLinkUp()
        await rig.drain()
        let first = try #require(rig.onlyCSMSFrame())
        rig.tester.advance(by: .seconds(30))
        await rig.drain()
        #expect(rig.tester.takeSentToCSMS().isEmpty)
        rig.tester.advance(by: .seconds(5))
        await rig.drain()
        let again = try #require(rig.onlyCSMSFrame())
        #expect(again.action == "StatusNotification")
        #expect(again.messageId != first.messageId)
        #expect(try rig.pending().first?.attempts == 1)
    }

    @Test func theOutboxSurvivesARestartAndIsReplayedFromDisk() async throws {
        let rig = try await Rig()
        rig.tester.session.northLinkDown()
        let local = try #require(await rig.chargerCall("StartTransaction", start)?.payload()["transactionId"]?.intValue)
        _ = await rig.chargerCall("MeterValues", meterValues(local, "1"))
        try await rig.restart()  // the CSMS is there at once after the restart
        let started = try #require(rig.onlyCSMSFrame())
        #expect(started.action == "StartTransaction")
        // A charger frame while the outbox replays queues behind.
        _ = await rig.chargerCall("StopTransaction", stop(local))
        rig.tester.csmsAnswers(started.messageId, payload: ["transactionId": 9, "idTagInfo": ["status": "Accepted"]])
        await rig.drain()
        let meter = try #require(rig.onlyCSMSFrame())
        #expect(meter.payload()["transactionId"]?.intValue == 9)
        rig.tester.csmsAnswers(meter.messageId, payload: [:])
        await rig.drain()
        #expect(rig.onlyCSMSFrame()?.payload()["transactionId"]?.intValue == 9)
    }

    @Test func aCallWhileTheOutboxOpensWaitsThenGoesToTheCSMS() async throws {
        let rig = try await Rig(waitForOpen: false)
        // Online, but the outbox is not open yet: whether something from before must go first is unknown.
        let id = rig.tester.chargerSends(call: "StartTransaction", payload: start)
        #expect(rig.tester.takeSentToCSMS().isEmpty)
        #expect(rig.tester.takeSentToCharger().isEmpty)
        await rig.drain()
        // Nothing was queued before: the CSMS answers it, not the gateway's cache.
        let relayed = try #require(rig.onlyCSMSFrame())
        #expect(relayed.action == "StartTransaction")
        #expect(relayed.payload() == start)
        rig.tester.csmsAnswers(relayed.messageId, payload: ["transactionId": 55, "idTagInfo": ["status": "Accepted"]])
        let answer = try #require(rig.tester.takeSentToCharger(where: { $0.messageId == id }).first)
        #expect(answer.payload()["transactionId"]?.intValue == 55)
        #expect(try rig.rows().isEmpty)
    }

    @Test func aBootOfflineWhileTheOutboxOpensUsesTheBootRecord() async throws {
        let rig = try await Rig(waitForOpen: false)
        rig.tester.session.northLinkDown()
        let boot = try #require(await rig.chargerCall("BootNotification", ["chargePointVendor": "V", "chargePointModel": "M"]))
        #expect(boot.payload()["status"]?.stringValue == "Accepted")
    }

    @Test func aReloadThatReplacesTheStageKeepsTheOutbox() async throws {
        let rig = try await Rig()
        rig.tester.session.northLinkDown()
        let local = try #require(await rig.chargerCall("StartTransaction", start)?.payload()["transactionId"]?.intValue)
        // SIGHUP with a changed config: a new instance takes over the live session and the same outbox.
        let replacement = try StageTester.build(OutboxStage.self, config: "offline_authorize: accept", stateDirectory: rig.directory)
        rig.tester.reload(to: [("outbox", replacement)])
        await rig.drain()
        _ = await rig.chargerCall("MeterValues", meterValues(local, "7"))
        rig.tester.session.northLinkUp()
        await rig.drain()
        let started = try #require(rig.onlyCSMSFrame())
        #expect(started.action == "StartTransaction")
        rig.tester.csmsAnswers(started.messageId, payload: ["transactionId": 31, "idTagInfo": ["status": "Accepted"]])
        await rig.drain()
        #expect(rig.onlyCSMSFrame()?.payload()["transactionId"]?.intValue == 31)
    }

    @Test func onlineWithAnEmptyOutboxFramesPassUntouched() async throws {
        let rig = try await Rig()
        let text = #"[2,"m1","MeterValues",{"connectorId":1,"transactionId":5,"meterValue":[{"timestamp":"2026-01-01T00:00:00Z","sampledValue":[{"value":"1.10"}]}]}]"#
        rig.tester.chargerSends(text)
        #expect(rig.tester.takeSentToCSMS().map(\.text) == [text])
        #expect(try rig.rows().isEmpty)
    }

    @Test func invalidConfigurationIsRefused() {
        #expect(throws: (any Error).self) { try StageTester.build(OutboxStage.self, config: "max_bytes_per_charger: 0") }
        #expect(throws: (any Error).self) { try StageTester.build(OutboxStage.self, config: "error_attempts: 0") }
        #expect(throws: (any Error).self) { try StageTester.build(OutboxStage.self, config: "max_byte: 1") }
    }
}

@Suite struct OutboxQuotaTests {
    func database(_ limits: OutboxLimits) throws -> OutboxDatabase {
        try OutboxDatabase(path: NSTemporaryDirectory() + "outbox-quota-" + UUID().uuidString + "/outbox.sqlite", limits: limits)
    }

    func message(_ kind: MessageKind, _ index: Int, size: Int = 100) -> NewMessage {
        let body = "{\"n\":\(index),\"pad\":\"" + String(repeating: "x", count: size - 20) + "\"}"
        let action = kind == .telemetry ? "MeterValues" : kind == .transaction ? "MeterValues" : "StatusNotification"
        return NewMessage(action: action, payload: Array(body.utf8), kind: kind, connector: kind == .status ? index : nil,
                          transactionId: kind == .transaction ? 7 : nil, enqueuedAt: Double(index))
    }

    @Test func telemetryIsThinnedFirstAndTransactionMessagesAreNeverDropped() throws {
        let db = try database(OutboxLimits(maxBytesPerCharger: 1_600))
        for index in 0..<16 { _ = try db.append(message(.telemetry, index)) }
        // 16 × ~97 bytes fit; the next transaction message overflows: every other telemetry sample goes.
        var result = try db.append(message(.transaction, 100))
        #expect(result.seq != nil)
        #expect(result.dropped.allSatisfy { $0.kind == .telemetry && $0.reason == "quota" })
        var rows = try db.rows()
        #expect(rows.filter { $0.kind == .transaction }.count == 1)
        let kept = rows.filter { $0.kind == .telemetry }.map { try! JSONValue(parsing: $0.payload)["n"]!.intValue! }
        #expect(kept == [0, 2, 4, 6, 8, 10, 12, 14])
        // Transaction messages go in whatever the quota says.
        for index in 0..<20 {
            result = try db.append(message(.transaction, 200 + index))
            #expect(result.seq != nil)
        }
        rows = try db.rows()
        #expect(rows.filter { $0.kind == .transaction }.count == 21)
        #expect(rows.filter { $0.kind == .telemetry }.isEmpty)
        // Telemetry that does not fit is itself dropped, and counted as such.
        result = try db.append(message(.telemetry, 999))
        #expect(result.seq == nil)
        #expect(result.dropped.map(\.kind) == [.telemetry])
        #expect(try db.figures().depth == 21)
        // Not without bound: past twice the quota a transaction message is refused (and so not acknowledged).
        #expect(throws: OutboxFull.self) {
            for index in 0..<40 { _ = try db.append(message(.transaction, 300 + index)) }
        }
        #expect(try db.figures().bytes <= 2 * 1_600)
        #expect(try db.rows().count == db.figures().depth)
    }

    @Test func theDatabaseIsPrivateAndDurable() throws {
        let path = NSTemporaryDirectory() + "outbox-mode-" + UUID().uuidString + "/outbox.sqlite"
        let db = try OutboxDatabase(path: path)
        _ = try db.append(message(.status, 1))
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let wal = try FileManager.default.attributesOfItem(atPath: path + "-wal")
        #expect((wal[.posixPermissions] as? Int) == 0o600)
        #expect(try OutboxDatabase(path: path, readOnly: true).rows().count == 1)
    }
}
