import Foundation
import OCPP
import Router
@testable import SmartChargingStage
import StageKit
import StageTesting
import Testing

/// The smart_charging stage's line on the status page (`Stage.status(in:)`): the limit in force now.
@Suite("smart_charging: status page")
struct SmartChargingStatusTests {
    let base = SmartChargingStageTests()
    let trust = TrustworthySmartChargingTests()

    @Test func theCurrentLimitFollowsTheProfilesTheChargerAccepted() throws {
        let tester = try StageTester(SmartChargingStage.self, config: "discover: false\ncharger: { connectors: 2 }",
                                     stateDirectory: freshStateDirectory())
        base.bootAccepted(tester)
        #expect(tester.session.stageStatus().first?.fields == ["current_limit": "#1 32.0 A × 3, #2 32.0 A × 3"], "the charger's own maximum")
        let cap = tester.csmsSends(call: "SetChargingProfile",
                                   payload: trust.amps(9, level: 0, connector: 0, purpose: "ChargePointMaxProfile", 32))
        tester.chargerAnswers(cap, payload: ["status": "Accepted"])
        let profile = tester.csmsSends(call: "SetChargingProfile", payload: trust.amps(3, level: 1, connector: 2, 10))
        tester.chargerAnswers(profile, payload: ["status": "Accepted"])
        #expect(tester.session.stageStatus().first?.fields == ["current_limit": "#1 16.0 A × 3, #2 10.0 A × 3"],
                "the cap divided over two connectors, connector 2 under its own profile")
    }
}
