import Foundation
import OCPP
import SmartChargingStage
import StageTesting
import Testing

/// An OCPP 2.0.1 station runs its own smart charging: the compiler (written for 1.6 chargers) leaves it alone.
@Suite("smart charging and 2.0.1 stations")
struct SmartCharging201Tests {
    @Test func aStationsSetChargingProfileIsRelayedAsItIs() throws {
        let directory = NSTemporaryDirectory() + "smart-201-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let tester = try StageTester(SmartChargingStage.self, config: "discover: false", version: .v201, stateDirectory: directory)
        let profile: JSONValue = [
            "evseId": 1,
            "chargingProfile": [
                "id": 7, "stackLevel": 0, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
                "chargingSchedule": [["id": 1, "chargingRateUnit": "W", "startSchedule": "2026-01-01T00:00:00Z",
                                      "chargingSchedulePeriod": [["startPeriod": 0, "limit": 7360.0]]]],
            ],
        ]
        let text = #"[2,"p1","SetChargingProfile",\#(profile.jsonText)]"#
        tester.csmsSends(text)
        let sent = tester.takeSentToCharger()
        #expect(sent.count == 1)
        #expect(sent.first.map { String(decoding: $0.bytes, as: UTF8.self) } == text, "byte for byte, not compiled for a 1.6 charger")
        tester.chargerAnswers("p1", payload: ["status": "Accepted"])
        #expect(tester.takeSentToCSMS().map { $0.payload()["status"] } == ["Accepted"])
        // Past the CALL timeout: the router's CALL-timeout timer has fired and, with nothing in flight, is not re-armed.
        tester.advance(by: .seconds(31))
        #expect(tester.pendingTimers == 0, "no schedule of its own for a 2.0.1 station")
    }

    @Test func aStationIsNotAskedForItsOneSixConfiguration() async throws {
        let directory = NSTemporaryDirectory() + "smart-201-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Discovery (the default) asks a 1.6 charger GetConfiguration after its boot; a 2.0.1 station has no such action.
        let tester = try StageTester(SmartChargingStage.self, version: .v201, stateDirectory: directory, chargerBooted: false)
        tester.bootAccepted()
        _ = await tester.settle(timeout: .seconds(2))
        #expect(tester.takeSentToCharger().isEmpty)
    }
}
