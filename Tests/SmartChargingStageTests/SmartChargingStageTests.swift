import Foundation
import OCPP
import SmartChargingStage
import StageKit
import StageTesting
import Testing

/// A state directory of its own for each test: the stage keeps per-charger state on disk.
func freshStateDirectory() -> String {
    FileManager.default.temporaryDirectory.appendingPathComponent("smart-charging-\(UUID().uuidString)").path
}

@Suite("smart_charging stage")
struct SmartChargingStageTests {
    /// A day-ahead curve as a CSMS sends it: 48 half-hour periods in watts.
    func dayAhead(startingAt start: Double) -> JSONValue {
        let watts: [Double] = [11_000, 7_360, 2_760, 22_080]
        let periods: [JSONValue] = (0..<48).map { index in
            ["startPeriod": .number(index * 1800), "limit": .number(watts[index % 4])]
        }
        return ["connectorId": 1, "csChargingProfiles": [
            "chargingProfileId": 17, "stackLevel": 3, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
            "chargingSchedule": ["startSchedule": .string(Date(timeIntervalSince1970: start).formatted(.iso8601)),
                                 "chargingRateUnit": "W", "chargingSchedulePeriod": .array(periods)],
        ]]
    }

    /// The charger boots and the CSMS accepts it (the router holds gateway CALLs until then).
    func bootAccepted(_ tester: StageTester, model: String = "M") {
        let boot = tester.chargerSends(call: "BootNotification", payload: ["chargePointVendor": "V", "chargePointModel": .string(model)])
        tester.csmsAnswers(boot, payload: ["status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300])
        _ = tester.takeSentToCSMS()
    }

    func limit(_ frame: Frame?) -> Double? {
        frame?.payload()["csChargingProfiles"]?["chargingSchedule"]?["chargingSchedulePeriod"]?.arrayValue?.first?["limit"]?.doubleValue
    }

    @Test func aOnePeriodChargerFollowsA48PeriodCurveAndTheCSMSGetsTheChargersAnswer() throws {
        let tester = try StageTester(SmartChargingStage.self, config: "discover: false", stateDirectory: freshStateDirectory())
        let id = tester.csmsSends(call: "SetChargingProfile", payload: dayAhead(startingAt: tester.wallTime))
        let sent = try #require(tester.takeSentToCharger().first)
        #expect(sent.messageId == id, "the CSMS's own CALL, compiled")
        let profile = try #require(sent.payload()["csChargingProfiles"])
        #expect(profile["stackLevel"] == 0 && profile["chargingProfilePurpose"] == "TxDefaultProfile" && profile["chargingProfileId"] == 9001)
        #expect(profile["chargingSchedule"]?["chargingRateUnit"] == "A")
        #expect(profile["chargingSchedule"]?["chargingSchedulePeriod"]?.arrayValue?.count == 1)
        #expect(limit(sent) == 15.9)
        tester.chargerAnswers(id, payload: ["status": "Accepted"])
        #expect(tester.takeSentToCSMS().map { $0.payload()["status"] } == ["Accepted"], "truthful: the charger's answer")

        var limits: [Double?] = []
        for _ in 0..<3 {
            tester.advance(by: .seconds(1800))
            let next = tester.takeSentToCharger().first
            #expect(next?.action == "SetChargingProfile")
            limits.append(limit(next))
            if let next { tester.chargerAnswers(next.messageId, payload: ["status": "Accepted"]) }
        }
        #expect(limits == [10.6, 0, 32], "7.36 kW, then 2.76 kW (under 6 A: pause), then 22 kW (the 32 A maximum)")
        #expect(tester.takeSentToCSMS().isEmpty, "the charger's answers to the gateway's re-sends are not forwarded")
    }

    @Test func aRejectionByTheChargerReachesTheCSMS() throws {
        let tester = try StageTester(SmartChargingStage.self, config: "discover: false", stateDirectory: freshStateDirectory())
        let id = tester.csmsSends(call: "SetChargingProfile", payload: dayAhead(startingAt: tester.wallTime))
        tester.chargerAnswers(id, payload: ["status": "Rejected"])
        #expect(tester.takeSentToCSMS().map { $0.payload()["status"] } == ["Rejected"])
    }

    @Test func capabilitiesAreReadFromTheChargerAfterBoot() throws {
        let tester = try StageTester(SmartChargingStage.self, stateDirectory: freshStateDirectory())
        let boot = tester.chargerSends(call: "BootNotification", payload: ["chargePointVendor": "V", "chargePointModel": "M"])
        tester.csmsAnswers(boot, payload: ["status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300])
        let ask = try #require(tester.takeSentToCharger { $0.action == "GetConfiguration" }.first)
        tester.chargerAnswers(ask.messageId, payload: ["configurationKey": [
            ["key": "ChargingScheduleMaxPeriods", "readonly": true, "value": "3"],
            ["key": "ChargeProfileMaxStackLevel", "readonly": true, "value": "5"],
            ["key": "ChargingScheduleAllowedChargingRateUnit", "readonly": true, "value": "Current,Power"],
            ["key": "NumberOfConnectors", "readonly": true, "value": "2"],
        ]])
        _ = tester.takeSentToCharger()
        tester.csmsSends(call: "SetChargingProfile", payload: dayAhead(startingAt: tester.wallTime))
        let sent = try #require(tester.takeSentToCharger().first)
        #expect(sent.payload()["csChargingProfiles"]?["chargingSchedule"]?["chargingSchedulePeriod"]?.arrayValue?.count == 3)
        #expect(sent.payload()["csChargingProfiles"]?["stackLevel"] == 5, "the highest level it honours, above any stale profile")
        let asked = (ask.payload()["key"]?.arrayValue ?? []).compactMap { $0.stringValue }
        #expect(asked.contains("MaxChargingProfilesInstalled") && asked.contains("NumberOfConnectors"))
        var third = dayAhead(startingAt: tester.wallTime)
        third["connectorId"] = 3
        let refused = tester.csmsSends(call: "SetChargingProfile", payload: third)
        #expect(tester.takeSentToCSMS { $0.messageId == refused }.first?.payload()["status"] == "Rejected", "no connector 3")
    }

    @Test func compositeScheduleAndClearAnswerWithWhatTheGatewayEnforces() throws {
        let tester = try StageTester(SmartChargingStage.self, config: "discover: false", stateDirectory: freshStateDirectory())
        let set = tester.csmsSends(call: "SetChargingProfile", payload: dayAhead(startingAt: tester.wallTime))
        tester.chargerAnswers(set, payload: ["status": "Accepted"])
        _ = tester.takeSentToCSMS()
        _ = tester.takeSentToCharger()
        let ask = tester.csmsSends(call: "GetCompositeSchedule", payload: ["connectorId": 1, "duration": 3600])
        let composite = try #require(tester.takeSentToCSMS { $0.messageId == ask }.first).payload()
        #expect(composite["status"] == "Accepted")
        #expect(composite["chargingSchedule"]?["chargingSchedulePeriod"]?.arrayValue?.compactMap { $0["limit"]?.doubleValue } == [15.9, 10.6])
        #expect(tester.takeSentToCharger().isEmpty, "answered by the gateway")

        let clear = tester.csmsSends(call: "ClearChargingProfile", payload: ["id": 17])
        #expect(tester.takeSentToCSMS { $0.messageId == clear }.first?.payload()["status"] == "Accepted")
        tester.advance(by: .zero)
        let removal = try #require(tester.takeSentToCharger().first)
        #expect(removal.action == "ClearChargingProfile" && removal.payload()["id"] == 9001)
        tester.chargerAnswers(removal.messageId, payload: ["status": "Accepted"])
        tester.advance(by: .seconds(3600))
        #expect(tester.takeSentToCharger().isEmpty, "no more re-sends once cleared")
        let unknown = tester.csmsSends(call: "ClearChargingProfile", payload: ["id": 17])
        #expect(tester.takeSentToCSMS { $0.messageId == unknown }.first?.payload()["status"] == "Unknown")
    }

    @Test func whatCannotTakeEffectIsRejectedAsTheSpecSaysAndATxProfileNeedsItsTransaction() throws {
        let tester = try StageTester(SmartChargingStage.self, config: "discover: false", stateDirectory: freshStateDirectory())
        bootAccepted(tester)
        let set = tester.csmsSends(call: "SetChargingProfile", payload: dayAhead(startingAt: tester.wallTime))
        tester.chargerAnswers(set, payload: ["status": "Accepted"])
        _ = tester.takeSentToCharger()
        _ = tester.takeSentToCSMS()
        func txProfile(connector: Int, transaction: Int?, purpose: String = "TxProfile") -> JSONValue {
            var profile: JSONValue = [
                "chargingProfileId": 18, "stackLevel": 0, "chargingProfilePurpose": .string(purpose), "chargingProfileKind": "Relative",
                "chargingSchedule": ["chargingRateUnit": "A", "chargingSchedulePeriod": [["startPeriod": 0, "limit": 8]]],
            ]
            if let transaction { profile["transactionId"] = .number(transaction) }
            return ["connectorId": .number(connector), "csChargingProfiles": profile]
        }
        func answer(_ payload: JSONValue) -> JSONValue? {
            let id = tester.csmsSends(call: "SetChargingProfile", payload: payload)
            return tester.takeSentToCSMS { $0.messageId == id }.first?.payload()["status"]
        }
        #expect(answer(txProfile(connector: 1, transaction: 5)) == "Rejected", "no transaction yet: it could not take effect")
        #expect(tester.takeSentToCharger().isEmpty, "answered by the gateway, as the charger would")
        let start = tester.chargerSends(call: "StartTransaction", payload: [
            "connectorId": 1, "idTag": "t", "meterStart": 0, "timestamp": .string(Date(timeIntervalSince1970: tester.wallTime).formatted(.iso8601)),
        ])
        tester.csmsAnswers(start, payload: ["transactionId": 5, "idTagInfo": ["status": "Accepted"]])
        for frame in tester.takeSentToCharger() { tester.chargerAnswers(frame.messageId, payload: ["status": "Accepted"]) }
        #expect(answer(txProfile(connector: 1, transaction: 7)) == "Rejected", "another transaction")
        #expect(answer(txProfile(connector: 0, transaction: 5)) == "Rejected", "a TxProfile on connector 0")
        #expect(answer(txProfile(connector: 1, transaction: nil, purpose: "ChargePointMaxProfile")) == "Rejected", "a cap on connector 1")
        #expect(tester.takeSentToCharger().isEmpty)
        let txSet = tester.csmsSends(call: "SetChargingProfile", payload: txProfile(connector: 1, transaction: 5))
        #expect(limit(tester.takeSentToCharger { $0.messageId == txSet }.first) == 8, "the TxProfile overrides the default")
        tester.chargerAnswers(txSet, payload: ["status": "Accepted"])
        #expect(tester.takeSentToCSMS { $0.messageId == txSet }.first?.payload()["status"] == "Accepted")
        // The transaction ends: its TxProfile goes, the default comes back.
        tester.chargerSends(call: "StopTransaction", payload: ["transactionId": 5, "meterStop": 10, "timestamp": "2026-01-01T01:00:00Z"])
        #expect(limit(tester.takeSentToCharger { $0.action == "SetChargingProfile" }.last) == 15.9)
    }

    @Test func configurationMistakes() {
        #expect(throws: (any Error).self) { try StageTester.build(SmartChargingStage.self, config: "charger: { units: [kW] }") }
        #expect(throws: (any Error).self) { try StageTester.build(SmartChargingStage.self, config: "charger: { purpose: TxProfile }") }
        #expect(throws: (any Error).self) { try StageTester.build(SmartChargingStage.self, config: "charger: { minimum_amps: 40 }") }
    }

    @Test func a201ProfileInDataTransferIsAnsweredWithTheChargersVerdict() throws {
        let tester = try StageTester(SmartChargingStage.self, config: "discover: false", stateDirectory: freshStateDirectory())
        let profile201 = #"{"evseId":0,"chargingProfile":{"id":5,"stackLevel":1,"chargingProfilePurpose":"ChargingStationMaxProfile","chargingProfileKind":"Absolute","chargingSchedule":[{"id":1,"startSchedule":"2026-01-01T00:00:00Z","chargingRateUnit":"W","chargingSchedulePeriod":[{"startPeriod":0,"limit":6900.0}]}]}}"#
        let id = tester.csmsSends(call: "DataTransfer", payload: ["vendorId": "ocpp-gateway", "messageId": "SetChargingProfile201", "data": .string(profile201)])
        #expect(tester.takeSentToCSMS().isEmpty, "held until the charger answers")
        let install = try #require(tester.takeSentToCharger().first)
        #expect(install.action == "SetChargingProfile" && install.messageId != id)
        #expect(limit(install) == 10)
        tester.chargerAnswers(install.messageId, payload: ["status": "Accepted"])
        let answer = try #require(tester.takeSentToCSMS().first)
        #expect(answer.messageId == id && answer.payload()["status"] == "Accepted")

        let broken = tester.csmsSends(call: "DataTransfer", payload: ["vendorId": "ocpp-gateway", "messageId": "SetChargingProfile201", "data": "{}"])
        #expect(tester.takeSentToCSMS { $0.messageId == broken }.first?.payload()["status"] == "Rejected")
        let other = tester.csmsSends(call: "DataTransfer", payload: ["vendorId": "acme", "messageId": "x"])
        #expect(tester.takeSentToCharger().map(\.messageId) == [other], "other vendors' DataTransfer passes")
    }

    @Test func aTimeOfUsePolicyIsInstalledAfterBootAndFollowedAcrossItsWindows() throws {
        // 2026-01-01T00:00Z is 01:00 in Berlin, inside a 00:00–06:00 window.
        let tester = try StageTester(SmartChargingStage.self, config: """
            discover: false
            time_of_use:
              time_zone: Europe/Berlin
              windows:
                - { days: [mon, tue, wed, thu, fri, sat, sun], from: "00:00", to: "06:00", amps: 10 }
                - { days: [thu], from: "17:00", to: "21:00", kw: 4.14 }
            """, stateDirectory: freshStateDirectory())
        let boot = tester.chargerSends(call: "BootNotification", payload: ["chargePointVendor": "V", "chargePointModel": "M"])
        tester.csmsAnswers(boot, payload: ["status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300])
        let first = try #require(tester.takeSentToCharger { $0.action == "SetChargingProfile" }.first)
        #expect(limit(first) == 10 && first.payload()["connectorId"] == 0)
        #expect(first.payload()["csChargingProfiles"]?["chargingSchedule"]?["duration"]?.intValue == 5 * 3600)
        tester.chargerAnswers(first.messageId, payload: ["status": "Accepted"])
        tester.advance(by: .seconds(5 * 3600))
        let second = try #require(tester.takeSentToCharger { $0.action == "SetChargingProfile" }.first)
        #expect(limit(second) == 32, "outside the window: the charger's maximum")
        tester.chargerAnswers(second.messageId, payload: ["status": "Accepted"])
        tester.advance(by: .seconds(11 * 3600))
        #expect(limit(tester.takeSentToCharger { $0.action == "SetChargingProfile" }.first) == 6, "4.14 kW on three phases at 230 V")
        #expect(throws: (any Error).self) { try StageTester.build(SmartChargingStage.self, config: "time_of_use: { time_zone: Mars/Olympus, windows: [] }") }
    }

    @Test func aSiteLimitIsDividedAmongTheChargersCharging() throws {
        let stage = try StageTester.build(SmartChargingStage.self, config: "discover: false\nsite_limit_amps: 32", stateDirectory: freshStateDirectory())
        let a = StageTester(stages: [("smart", stage)], chargerId: "CP-A")
        let b = StageTester(stages: [("smart", stage)], chargerId: "CP-B")
        func start(_ tester: StageTester, transaction: Int) {
            let id = tester.chargerSends(call: "StartTransaction", payload: ["connectorId": 1, "idTag": "t", "meterStart": 0, "timestamp": "2026-01-01T00:00:00Z"])
            tester.csmsAnswers(id, payload: ["transactionId": .number(transaction), "idTagInfo": ["status": "Accepted"]])
        }
        func latest(_ tester: StageTester) -> Double? {
            tester.advance(by: .zero)  // runs what another session handed over
            let frames = tester.takeSentToCharger { $0.action == "SetChargingProfile" }
            for frame in frames { tester.chargerAnswers(frame.messageId, payload: ["status": "Accepted"]) }
            return limit(frames.last)
        }
        start(a, transaction: 1)
        #expect(latest(a) == 32, "alone: the whole site")
        start(b, transaction: 2)
        #expect(latest(b) == 16)
        #expect(latest(a) == 16, "re-divided when the second starts")
        b.chargerSends(call: "StopTransaction", payload: ["transactionId": 2, "meterStop": 10, "timestamp": "2026-01-01T01:00:00Z"])
        #expect(latest(a) == 32, "the one left gets it all back")
    }

    @Test func modelAndChargerQuirksOverrideTheDefaults() throws {
        let config = """
            discover: false
            charger: { max_periods: 1 }
            models: { "LC-22": { max_periods: 2, maximum_amps: 16 } }
            chargers: { CP001: { max_stack_level: 2 } }
            """
        let tester = try StageTester(SmartChargingStage.self, config: config, stateDirectory: freshStateDirectory())
        let boot = tester.chargerSends(call: "BootNotification", payload: ["chargePointVendor": "V", "chargePointModel": "LC-22"])
        tester.csmsAnswers(boot, payload: ["status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300])
        _ = tester.takeSentToCharger()
        tester.csmsSends(call: "SetChargingProfile", payload: dayAhead(startingAt: tester.wallTime))
        let sent = try #require(tester.takeSentToCharger().first).payload()["csChargingProfiles"]
        let limits = sent?["chargingSchedule"]?["chargingSchedulePeriod"]?.arrayValue?.compactMap { $0["limit"]?.doubleValue }
        #expect(limits == [15.9, 10.6], "two periods for the model")
        #expect(sent?["stackLevel"] == 2, "the charger's own setting")
        #expect(throws: (any Error).self) { try StageTester.build(SmartChargingStage.self, config: "models: { X: { units: [kW] } }") }
    }
}
