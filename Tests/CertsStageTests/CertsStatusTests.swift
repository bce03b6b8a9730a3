@testable import CertsStage
import Foundation
import Router
import StageKit
import StageTesting
import Testing
import X509

/// The certs stage's line on the status page (`Stage.status(in:)`).
@Suite("certs stage: status page")
struct CertsStatusTests {
    @Test func theStatusNamesTheCertificateExpiryAndNothingSecret() throws {
        let rig = try CertsRig { pki, state in try provision(pki, state, validFor: 200 * 86400) }
        let expiry = try #require(rig.stage.store.currentChain("CP001").first).notValidAfter.formatted(.iso8601)
        let status = rig.tester.session.stageStatus()
        #expect(status.map(\.stage) == ["certs"])
        #expect(status.first?.fields == ["certificate_expiry": expiry])
        let key = try String(contentsOfFile: rig.chargerFolder + "/key.pem", encoding: .utf8)
        #expect(!status.flatMap { $0.fields.values }.contains { key.contains($0) || $0.contains("PRIVATE") })
    }

    @Test func withoutACertificateThereIsNoExpiry() throws {
        let rig = try CertsRig()
        #expect(rig.tester.session.stageStatus().first?.fields["certificate_expiry"] == nil)
    }
}
