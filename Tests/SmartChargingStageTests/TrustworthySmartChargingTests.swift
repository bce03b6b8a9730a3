import Foundation
import Logging
import OCPP
@testable import SmartChargingStage
import StageKit
import StageTesting
import Testing

/// Issue 13: what a real W-only charger firmware showed, each with the test that failed before the fix.
@Suite("smart_charging you can trust with a breaker")
struct TrustworthySmartChargingTests {
    let base = SmartChargingStageTests()

    /// A firmware that takes W only, 24 periods, stack levels 0–8 (field notes).
    static let wattOnly: JSONValue = ["configurationKey": [
        ["key": "ChargingScheduleAllowedChargingRateUnit", "readonly": true, "value": "Power"],
        ["key": "ChargingScheduleMaxPeriods", "readonly": true, "value": "24"],
        ["key": "ChargeProfileMaxStackLevel", "readonly": true, "value": "8"],
        ["key": "NumberOfConnectors", "readonly": true, "value": "1"],
    ]]

    func answerDiscovery(_ tester: StageTester, with answer: JSONValue) throws {
        let ask = try #require(tester.takeSentToCharger { $0.action == "GetConfiguration" }.first)
        tester.chargerAnswers(ask.messageId, payload: answer)
    }

    func amps(_ id: Int, level: Int, connector: Int = 1, purpose: String = "TxDefaultProfile", _ limit: Double, phases: Int? = nil,
              transaction: Int? = nil) -> JSONValue {
        var period: JSONValue = ["startPeriod": 0, "limit": .number(limit)]
        if let phases { period["numberPhases"] = .number(phases) }
        var profile: JSONValue = [
            "chargingProfileId": .number(id), "stackLevel": .number(level), "chargingProfilePurpose": .string(purpose),
            "chargingProfileKind": "Absolute",
            "chargingSchedule": ["startSchedule": "2025-12-31T00:00:00Z", "chargingRateUnit": "A", "chargingSchedulePeriod": [period]],
        ]
        if let transaction { profile["transactionId"] = .number(transaction) }
        return ["connectorId": .number(connector), "csChargingProfiles": profile]
    }

    func schedule(_ frame: Frame?) -> JSONValue? { frame?.payload()["csChargingProfiles"]?["chargingSchedule"] }

    func composite(_ tester: StageTester, connector: Int = 1, unit: String? = nil) -> JSONValue? {
        var payload: JSONValue = ["connectorId": .number(connector), "duration": 3600]
        if let unit { payload["chargingRateUnit"] = .string(unit) }
        let id = tester.csmsSends(call: "GetCompositeSchedule", payload: payload)
        return tester.takeSentToCSMS { $0.messageId == id }.first?.payload()
    }

    func compositeLimits(_ answer: JSONValue?) -> [Double] {
        answer?["chargingSchedule"]?["chargingSchedulePeriod"]?.arrayValue?.compactMap { $0["limit"]?.doubleValue } ?? []
    }

    func startTransaction(_ tester: StageTester, _ id: Int, connector: Int = 1) {
        let start = tester.chargerSends(call: "StartTransaction", payload: [
            "connectorId": .number(connector), "idTag": "t", "meterStart": 0,
            "timestamp": .string(Date(timeIntervalSince1970: tester.wallTime).formatted(.iso8601)),
        ])
        tester.csmsAnswers(start, payload: ["transactionId": .number(id), "idTagInfo": ["status": "Accepted"]])
    }

    /// Accepts every profile CALL the charger gets, including those queued behind them (one CALL at a time).
    func acceptAll(_ tester: StageTester) -> [Frame] {
        var all: [Frame] = []
        for _ in 0..<20 {
            tester.advance(by: .zero)
            let frames = tester.takeSentToCharger { $0.action == "SetChargingProfile" || $0.action == "ClearChargingProfile" }
            if frames.isEmpty { break }
            for frame in frames { tester.chargerAnswers(frame.messageId, payload: ["status": "Accepted"]) }
            all += frames
        }
        return all
    }

    // 1. State survives the WebSocket and the process.

    @Test func aWOnlyChargerThatReconnectsWithoutBootOrAfterAGatewayRestartIsStillServedInWatts() throws {
        let directory = freshStateDirectory()
        let stage = try StageTester.build(SmartChargingStage.self, stateDirectory: directory)
        let first = StageTester(stages: [("smart", stage)], chargerId: "CP-W")
        base.bootAccepted(first)
        try answerDiscovery(first, with: Self.wattOnly)
        let set = first.csmsSends(call: "SetChargingProfile", payload: base.dayAhead(startingAt: first.wallTime))
        let installed = try #require(first.takeSentToCharger { $0.messageId == set }.first)
        #expect(schedule(installed)?["chargingRateUnit"] == "W" && installed.payload()["csChargingProfiles"]?["stackLevel"] == 8)
        first.chargerAnswers(set, payload: ["status": "Accepted"])
        startTransaction(first, 5)
        _ = acceptAll(first)
        let tx = first.csmsSends(call: "SetChargingProfile", payload: amps(40, level: 0, purpose: "TxProfile", 8, transaction: 5))
        first.chargerAnswers(tx, payload: ["status": "Accepted"])
        first.endSession()

        // The CSMS was down 20 s; the charger comes back without a BootNotification.
        let second = StageTester(stages: [("smart", stage)], chargerId: "CP-W")
        let reinstalled = second.takeSentToCharger { $0.action == "SetChargingProfile" }
        #expect(reinstalled.map { schedule($0)?["chargingRateUnit"] } == ["W"], "served at once, in the unit the charger reported")
        for frame in reinstalled { second.chargerAnswers(frame.messageId, payload: ["status": "Accepted"]) }
        try answerDiscovery(second, with: Self.wattOnly)
        let next = second.csmsSends(call: "SetChargingProfile", payload: amps(41, level: 1, 12))
        let compiled = try #require(second.takeSentToCharger { $0.messageId == next }.first)
        #expect(schedule(compiled)?["chargingRateUnit"] == "W", "never A for a charger that said Power")
        #expect(compiled.payload()["csChargingProfiles"]?["stackLevel"] == 8)
        #expect(base.limit(compiled) == 5520, "the TxProfile of the open transaction: 8 A × 230 V × 3")
        second.chargerAnswers(next, payload: ["status": "Accepted"])
        #expect(composite(second)?["status"] == "Accepted")
        let clear = second.csmsSends(call: "ClearChargingProfile", payload: ["id": 17])
        #expect(second.takeSentToCSMS { $0.messageId == clear }.first?.payload()["status"] == "Accepted", "the profile from before the drop")
        second.endSession()

        // The gateway restarts: a new instance reads the same state directory.
        stage.store.flushSynchronously()
        let restarted = try StageTester.build(SmartChargingStage.self, stateDirectory: directory)
        let third = StageTester(stages: [("smart", restarted)], chargerId: "CP-W")
        let answer = composite(third, unit: "W")
        #expect(answer?["status"] == "Accepted")
        #expect(compositeLimits(answer).first == 5520, "profiles, transaction and capabilities came back from disk")
        #expect(answer?["chargingSchedule"]?["chargingRateUnit"] == "W")
    }

    @Test func aProfileThatArrivesBeforeTheChargerSaidWhatItTakesWaitsAndIsNeverSentInAnotherUnit() throws {
        let tester = try StageTester(SmartChargingStage.self, chargerId: "CP-NEW", stateDirectory: freshStateDirectory())
        base.bootAccepted(tester)
        let id = tester.csmsSends(call: "SetChargingProfile", payload: amps(1, level: 0, 16, phases: 1))
        #expect(tester.takeSentToCharger { $0.action == "SetChargingProfile" }.isEmpty, "held while GetConfiguration is out")
        #expect(tester.takeSentToCSMS().isEmpty)
        try answerDiscovery(tester, with: Self.wattOnly)
        let install = try #require(tester.takeSentToCharger { $0.action == "SetChargingProfile" }.first)
        #expect(schedule(install)?["chargingRateUnit"] == "W")
        #expect(base.limit(install) == 3680, "16 A on one phase is 3 680 W, not 11 040 W")
        #expect(schedule(install)?["chargingSchedulePeriod"]?.arrayValue?.first?["numberPhases"] == 1)
        tester.chargerAnswers(install.messageId, payload: ["status": "Accepted"])
        #expect(tester.takeSentToCSMS { $0.messageId == id }.first?.payload()["status"] == "Accepted", "the charger's own verdict")
    }

    @Test func wattsReachAWattChargerUnchanged() throws {
        let tester = try StageTester(SmartChargingStage.self, config: "discover: false\ncharger: { units: [W], max_periods: 24 }",
                                     stateDirectory: freshStateDirectory())
        base.bootAccepted(tester)
        let set = tester.csmsSends(call: "SetChargingProfile", payload: base.dayAhead(startingAt: tester.wallTime))
        let sent = try #require(tester.takeSentToCharger { $0.messageId == set }.first)
        let limits = schedule(sent)?["chargingSchedulePeriod"]?.arrayValue?.compactMap { $0["limit"]?.doubleValue }
        #expect(limits?.prefix(4) == [11_000, 7_360, 2_760, 22_080].prefix(0) + [11_000, 7_360, 0, 22_080],
                "7 360 W stays 7 360 W (2 760 W is under the 6 A minimum: pause)")
    }

    // 3. A ChargePointMaxProfile on connector 0 caps every connector.

    @Test func aCapOnConnectorZeroIsDividedAmongTheConnectors() throws {
        let tester = try StageTester(SmartChargingStage.self, config: "discover: false\ncharger: { connectors: 2 }",
                                     stateDirectory: freshStateDirectory())
        base.bootAccepted(tester)
        for connector in [1, 2] {
            let id = tester.csmsSends(call: "SetChargingProfile", payload: amps(connector, level: 1, connector: connector, 32))
            #expect(base.limit(tester.takeSentToCharger { $0.messageId == id }.first) == 32)
            tester.chargerAnswers(id, payload: ["status": "Accepted"])
        }
        let cap = tester.csmsSends(call: "SetChargingProfile", payload: amps(9, level: 0, connector: 0, purpose: "ChargePointMaxProfile", 32))
        let forwarded = try #require(tester.takeSentToCharger { $0.messageId == cap }.first)
        #expect(forwarded.payload()["connectorId"] == 0 && base.limit(forwarded) == 16)
        tester.chargerAnswers(cap, payload: ["status": "Accepted"])
        let pushed = acceptAll(tester)
        #expect(pushed.map { $0.payload()["connectorId"]?.intValue } == [1, 2])
        #expect(pushed.map { base.limit($0) } == [16, 16], "two connectors never draw more than the cap together")
        #expect(compositeLimits(composite(tester, connector: 1)) == [16])
        #expect(compositeLimits(composite(tester, connector: 0)) == [32], "the whole charger")
    }

    // 4. A profile the charger refused is not kept.

    @Test func aProfileTheChargerRefusedLeavesTheStoreAndTheCompositeSchedule() throws {
        let tester = try StageTester(SmartChargingStage.self, config: "discover: false", stateDirectory: freshStateDirectory())
        base.bootAccepted(tester)
        let first = tester.csmsSends(call: "SetChargingProfile", payload: amps(1, level: 0, 10))
        tester.chargerAnswers(first, payload: ["status": "Accepted"])
        let rejected = tester.csmsSends(call: "SetChargingProfile", payload: amps(2, level: 1, 20))
        tester.chargerAnswers(rejected, payload: ["status": "Rejected"])
        #expect(compositeLimits(composite(tester)) == [10])
        let failed = tester.csmsSends(call: "SetChargingProfile", payload: amps(3, level: 2, 24))
        tester.chargerAnswersError(failed, code: .propertyConstraintViolation, description: "stack level")
        #expect(compositeLimits(composite(tester)) == [10], "a CALLERROR is a refusal too")
        let replacing = tester.csmsSends(call: "SetChargingProfile", payload: amps(1, level: 0, 16))
        tester.chargerAnswers(replacing, payload: ["status": "Rejected"])
        #expect(compositeLimits(composite(tester)) == [10], "the profile it would have replaced comes back")
        let clear = tester.csmsSends(call: "ClearChargingProfile", payload: ["id": 2])
        #expect(tester.takeSentToCSMS { $0.messageId == clear }.first?.payload()["status"] == "Unknown")
    }

    // 5. GetCompositeSchedule reports every source in force.

    @Test func theCompositeScheduleIncludesTheTimeOfUsePolicyAndTheSiteShare() throws {
        let config = """
            discover: false
            site_limit_amps: 12
            time_of_use: { time_zone: UTC, windows: [{ days: [mon, tue, wed, thu, fri, sat, sun], from: "00:00", to: "00:30", amps: 10 }] }
            """
        let tester = try StageTester(SmartChargingStage.self, config: config, stateDirectory: freshStateDirectory())
        base.bootAccepted(tester)
        _ = acceptAll(tester)
        let set = tester.csmsSends(call: "SetChargingProfile", payload: amps(1, level: 0, 32))
        tester.chargerAnswers(set, payload: ["status": "Accepted"])
        #expect(compositeLimits(composite(tester)) == [10, 12], "the policy until 00:30, then the site limit")
        #expect(compositeLimits(composite(tester, unit: "W")) == [6_900, 8_280])
    }

    // 6. A reload reaches live sessions.

    @Test func aReloadThatAddsASiteLimitPutsRunningChargersUnderItAtOnce() throws {
        let directory = freshStateDirectory()
        let before = try StageTester.build(SmartChargingStage.self, config: "discover: false", stateDirectory: directory)
        let chargers = ["CP-1", "CP-2"].map { StageTester(stages: [("smart", before)], chargerId: $0) }
        for (index, tester) in chargers.enumerated() {
            base.bootAccepted(tester)
            let set = tester.csmsSends(call: "SetChargingProfile", payload: amps(1, level: 0, 20))
            tester.chargerAnswers(set, payload: ["status": "Accepted"])
            startTransaction(tester, index + 1)
            #expect(acceptAll(tester).allSatisfy { base.limit($0) == 20 })
        }
        before.store.flushSynchronously()
        let after = try StageTester.build(SmartChargingStage.self, config: "discover: false\nsite_limit_amps: 20", stateDirectory: directory)
        // What the router does on SIGHUP: the retired instance leaves each live session (which goes on),
        // the new one joins it.
        for tester in chargers {
            before.sessionEnded(tester.session)
            after.sessionStarted(tester.session)
        }
        #expect(chargers.map { acceptAll($0).last.flatMap(base.limit) } == [10, 10], "20 A divided between the two charging")
        chargers[1].advance(by: .seconds(86_400))
        #expect(chargers[1].takeSentToCharger { $0.action == "SetChargingProfile" }.allSatisfy { base.limit($0) == 10 },
                "the retired instance's timers are gone")
    }

    // 8. Logs carry OCPP JSON, 12.17 overrides are checked at load.

    @Test func logLinesCarryOCPPJSONNotSwiftInternals() throws {
        let capture = LogCapture()
        let stage = try StageTester.build(SmartChargingStage.self, config: "discover: false\nsite_limit_amps: 16", stateDirectory: freshStateDirectory())
        let tester = StageTester(stages: [("smart", stage)], chargerId: "CP-LOG", logger: Logger(label: "t", factory: { _ in capture }))
        base.bootAccepted(tester)
        let push = try #require(tester.takeSentToCharger { $0.action == "SetChargingProfile" }.first)
        tester.chargerAnswers(push.messageId, payload: ["status": "Rejected"])
        #expect(capture.text.contains(#"outcome={\"status\":\"Rejected\"}"#), "\(capture.text)")
        #expect(!capture.text.contains("JSONValue"))
    }

    @Test func anOverrideThatFailsOverTheModelsIsReportedAtLoad() {
        #expect(throws: (any Error).self) {
            try StageTester.build(SmartChargingStage.self, config: """
                models: { "LC-22": { maximum_amps: 16 } }
                chargers: { CP001: { minimum_amps: 20 } }
                """)
        }
    }
}
