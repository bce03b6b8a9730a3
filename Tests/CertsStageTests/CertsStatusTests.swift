@testable import CertsStage
import DevPKI
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

    /// The expiry is kept per certificate file and its bytes: a renewed certificate (saved through the
    /// store, or replaced on disk by an operator) gives the new date at once, never the remembered one.
    @Test func theExpiryFollowsARenewedCertificate() throws {
        let rig = try CertsRig { pki, state in try provision(pki, state, validFor: 200 * 86400) }
        let store = rig.stage.store
        let first = try #require(store.currentChain("CP001").first).notValidAfter
        #expect(store.currentLeafExpiry("CP001") == first)
        #expect(store.currentLeafExpiry("CP001") == first, "asked again: the same date")

        let renewed = try rig.pki.issueChargerCertificate("CP001", cpoName: "Example CPO", validFor: 400 * 86400)
        let renewedPEM = try Data(contentsOf: URL(fileURLWithPath: renewed.certificate))
        store.files.save(renewedPEM, charger: "CP001", name: IdentityPaths.Name.certificate)
        let second = try #require(store.currentChain("CP001").first).notValidAfter
        #expect(second > first)
        #expect(store.currentLeafExpiry("CP001") == second, "a save through the store, even before it reached the disk")

        store.files.flushSynchronously()
        let third = try rig.pki.issueChargerCertificate("CP001", cpoName: "Example CPO", validFor: 30 * 86400)
        try FileManager.default.removeItem(atPath: rig.chargerFolder + "/cert.pem")
        try FileManager.default.copyItem(atPath: third.certificate, toPath: rig.chargerFolder + "/cert.pem")
        let thirdExpiry = try #require(store.currentChain("CP001").first).notValidAfter
        #expect(thirdExpiry < second)
        #expect(store.currentLeafExpiry("CP001") == thirdExpiry, "a file replaced on disk")

        try FileManager.default.removeItem(atPath: rig.chargerFolder + "/cert.pem")
        #expect(store.currentLeafExpiry("CP001") == nil)
    }
}
