import CertsStage
import DevPKI
import Foundation
import Logging
import OCPP
import Router
import StageKit
import StageTesting
import SwiftASN1
import Testing
import X509

/// A state directory, a CPO CA (also the CSMS root, as in many deployments) and a tester.
struct CertsRig {
    let state: String
    let pki: DevPKI
    let tester: StageTester
    let logs = LogCapture()
    /// What the session sent when it started (acknowledged, so the lane is free for the test).
    private(set) var startupEvents: [String] = []

    init(config: String = "cpo_name: Example CPO", northProfile: Int = 2, wallTime: Double = Date().timeIntervalSince1970,
         prepare: (DevPKI, String) throws -> Void = { _, _ in }) throws {
        state = FileManager.default.temporaryDirectory.appendingPathComponent("certs-\(UUID().uuidString)").path
        pki = try DevPKI(directory: state + "/ca", reuse: false)
        try prepare(pki, state)
        let logs = self.logs
        tester = try StageTester(CertsStage.self, config: config,
                                 north: NorthSettings(securityProfile: northProfile, caFile: pki.caCertificate),
                                 stateDirectory: state, wallTime: wallTime,
                                 logger: Logger(label: "certs-test", factory: { _ in logs }))
        startupEvents = securityEvents()
    }

    var chargerFolder: String { state + "/chargers/CP001" }

    /// Drives ExtendedTriggerMessage → SignCertificate; returns the CSR PEM.
    func requestCSR() async throws -> String {
        let trigger = tester.csmsSends(call: "ExtendedTriggerMessage", payload: ["requestedMessage": "SignChargePointCertificate"])
        let answer = try #require(tester.takeSentToCSMS { $0.messageId == trigger }.first)
        #expect(answer.payload()["status"] == "Accepted")
        tester.advance(by: .zero)
        #expect(await tester.settle())
        let sign = try #require(tester.takeSentToCSMS { $0.action == "SignCertificate" }.first)
        tester.csmsAnswers(sign.messageId, payload: ["status": "Accepted"])
        return try #require(sign.payload()["csr"]?.stringValue)
    }

    func certificateSigned(_ chain: String) throws -> JSONValue {
        let id = tester.csmsSends(call: "CertificateSigned", payload: ["certificateChain": .string(chain)])
        let answer = try #require(tester.takeSentToCSMS { $0.messageId == id }.first)
        return answer.payload()
    }

    /// Security events sent north since the last look; the CSMS acknowledges each, freeing the
    /// one-CALL-at-a-time lane for the next.
    func securityEvents() -> [String] {
        var types: [String] = []
        while let event = tester.takeSentToCSMS(where: { $0.action == "SecurityEventNotification" }).first {
            types.append(event.payload()["type"]?.stringValue ?? "?")
            tester.csmsAnswers(event.messageId)
        }
        return types
    }
}

@Suite("certs stage")
struct CertsStageTests {
    @Test func enrolmentMakesACSRAndInstallsTheSignedCertificate() async throws {
        let rig = try CertsRig()
        _ = rig.securityEvents()  // StartupOfTheDevice
        let csr = try await rig.requestCSR()
        let request = try CertificateSigningRequest(pemEncoded: csr)
        #expect("\(request.subject)".contains("CN=CP001"))
        #expect("\(request.subject)".contains("O=Example CPO"))
        #expect(rig.tester.takeSentToCharger().isEmpty, "the legacy charger sees none of this")

        #expect(try rig.certificateSigned(rig.pki.sign(csrPEM: csr))["status"] == "Accepted")
        let attributes = try FileManager.default.attributesOfItem(atPath: rig.chargerFolder + "/key.pem")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(!FileManager.default.fileExists(atPath: rig.chargerFolder + "/pending-key.pem"))
        let installed = try Certificate(pemEncoded: String(contentsOfFile: rig.chargerFolder + "/cert.pem", encoding: .utf8))
        #expect(installed.publicKey == request.publicKey)
        let logged = rig.logs.text
        #expect(!logged.contains("PRIVATE KEY"))
        #expect(!logged.contains(try String(contentsOfFile: rig.chargerFolder + "/key.pem", encoding: .utf8).split(separator: "\n")[1]))
    }

    @Test func aCertificateForAnotherKeyIsRejectedAndReported() async throws {
        let rig = try CertsRig()
        _ = rig.securityEvents()
        _ = try await rig.requestCSR()
        let stranger = try rig.pki.issueChargerCertificate("CP001-other", cpoName: "Example CPO")
        #expect(try rig.certificateSigned(String(contentsOfFile: stranger.certificate, encoding: .utf8))["status"] == "Rejected")
        #expect(rig.securityEvents() == ["InvalidChargePointCertificate"])
        #expect(!FileManager.default.fileExists(atPath: rig.chargerFolder + "/cert.pem"))
    }

    @Test func expiredForeignAndOversizedChainsAreRejected() async throws {
        let rig = try CertsRig(config: "cpo_name: Example CPO\ncertificate_signed_max_chain_size: 2000")
        _ = rig.securityEvents()
        let csr = try await rig.requestCSR()
        let expired = try rig.pki.sign(csrPEM: csr, validFrom: Date().addingTimeInterval(-400 * 86400), validFor: 30 * 86400)
        #expect(try rig.certificateSigned(expired)["status"] == "Rejected")
        let foreign = try DevPKI(directory: rig.state + "/other-ca", caName: "someone else", reuse: false).sign(csrPEM: csr)
        #expect(try rig.certificateSigned(foreign)["status"] == "Rejected")
        let valid = try rig.pki.sign(csrPEM: csr)
        #expect(try rig.certificateSigned(valid + valid + valid + valid)["status"] == "Rejected")
        #expect(rig.securityEvents() == ["InvalidChargePointCertificate", "InvalidChargePointCertificate", "InvalidChargePointCertificate"])
        // The old (absent) identity is untouched and the pending key still works for a good answer.
        #expect(try rig.certificateSigned(valid)["status"] == "Accepted")
    }

    @Test func upgradingToProfile3NeedsACertificateAndKeepsTheOldLinkOnFailure() async throws {
        let rig = try CertsRig()
        let tester = rig.tester
        func change(_ value: String) -> JSONValue? {
            let id = tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "SecurityProfile", "value": .string(value)])
            return tester.takeSentToCSMS { $0.messageId == id }.first?.payload()["status"]
        }
        #expect(change("1") == "Rejected", "lowering is refused (A05.FR.01)")
        #expect(change("2") == "Rejected", "equal is refused")
        #expect(change("3") == "Rejected", "no charger certificate yet (A05.FR.04)")

        let csr = try await rig.requestCSR()
        #expect(try rig.certificateSigned(rig.pki.sign(csrPEM: csr))["status"] == "Accepted")
        _ = rig.securityEvents()
        #expect(change("3") == "Accepted")
        tester.advance(by: .zero)
        let relink = try #require(tester.requestedNorthRelink)
        #expect(relink.securityProfile == 3 && relink.certificatePath == rig.chargerFolder + "/cert.pem")
        tester.completeNorthRelink(succeeded: false)
        #expect(rig.securityEvents() == ["ReconfigurationOfSecurityParameters"])
        let settings = (try? String(contentsOfFile: rig.chargerFolder + "/settings.json", encoding: .utf8)) ?? ""
        #expect(!settings.contains("securityProfile"), "a failed upgrade is not persisted (A05.FR.08)")

        #expect(change("3") == "Accepted")
        tester.advance(by: .zero)
        tester.completeNorthRelink(succeeded: true)
        #expect(rig.securityEvents() == ["ReconfigurationOfSecurityParameters"])
        let stage = try #require(tester.pipeline.stages.first?.instance)
        let amended = stage.amendNorthCredentials(NorthCredentials(securityProfile: 2), for: "CP001")
        #expect(amended.securityProfile == 3, "the next connection uses profile 3")
        #expect(change("2") == "Rejected")
    }

    @Test func theRootStoreFollowsSectionM() throws {
        let rig = try CertsRig()
        let tester = rig.tester
        let extraRoot = try DevPKI(directory: rig.state + "/extra", caName: "Manufacturer root", reuse: false)
        let rootPEM = try String(contentsOfFile: extraRoot.caCertificate, encoding: .utf8)
        func call(_ action: String, _ payload: JSONValue) -> JSONValue {
            let id = tester.csmsSends(call: action, payload: payload)
            return tester.takeSentToCSMS { $0.messageId == id }.first?.payload() ?? .null
        }
        #expect(call("GetInstalledCertificateIds", ["certificateType": "ManufacturerRootCertificate"])["status"] == "NotFound")
        #expect(call("InstallCertificate", ["certificateType": "ManufacturerRootCertificate", "certificate": .string(rootPEM)])["status"] == "Accepted")
        let leafPEM = try String(contentsOfFile: rig.pki.serverCertificate, encoding: .utf8)
        #expect(call("InstallCertificate", ["certificateType": "ManufacturerRootCertificate", "certificate": .string(leafPEM)])["status"] == "Rejected",
                "not a CA")
        let listed = call("GetInstalledCertificateIds", ["certificateType": "ManufacturerRootCertificate"])
        let hash = try #require(listed["certificateHashData"]?.arrayValue?.first)
        let root = try Certificate(pemEncoded: rootPEM)
        #expect(hash["serialNumber"]?.stringValue == Array(root.serialNumber.bytes).drop { $0 == 0 }.map { String(format: "%02x", $0) }.joined())
        #expect(hash["issuerNameHash"]?.stringValue?.count == 64 && hash["hashAlgorithm"] == "SHA256")

        // The CSMS root from north.ca_file is listed, and cannot be deleted while the link relies on it.
        let central = call("GetInstalledCertificateIds", ["certificateType": "CentralSystemRootCertificate"])
        let centralHash = try #require(central["certificateHashData"]?.arrayValue?.first)
        #expect(call("DeleteCertificate", ["certificateHashData": centralHash])["status"] == "Failed")
        // An installed CSMS root that anchors the current CSMS certificate is in use.
        let csmsCA = try DevPKI(directory: rig.state + "/csms-ca", caName: "CSMS root 2", reuse: false)
        #expect(call("InstallCertificate", ["certificateType": "CentralSystemRootCertificate",
                                            "certificate": .string(try String(contentsOfFile: csmsCA.caCertificate, encoding: .utf8))])["status"] == "Accepted")
        var serializer = DER.Serializer()
        try serializer.serialize(Certificate(pemEncoded: String(contentsOfFile: csmsCA.serverCertificate, encoding: .utf8)))
        tester.northPeerCertificate = serializer.serializedBytes
        let installedCentral = call("GetInstalledCertificateIds", ["certificateType": "CentralSystemRootCertificate"])["certificateHashData"]?.arrayValue ?? []
        #expect(installedCentral.count == 2)
        #expect(call("DeleteCertificate", ["certificateHashData": installedCentral[1]])["status"] == "Failed", "in use (M04.FR.06)")
        tester.northPeerCertificate = nil
        #expect(call("DeleteCertificate", ["certificateHashData": installedCentral[1]])["status"] == "Accepted")

        #expect(call("DeleteCertificate", ["certificateHashData": hash])["status"] == "Accepted")
        #expect(call("DeleteCertificate", ["certificateHashData": hash])["status"] == "NotFound")
    }

    @Test func gatewayConfigurationKeysAreAnsweredAndMerged() throws {
        let rig = try CertsRig()
        let tester = rig.tester
        // Only gateway keys: answered here.
        let own = tester.csmsSends(call: "GetConfiguration", payload: ["key": ["SecurityProfile", "CpoName"]])
        let answer = try #require(tester.takeSentToCSMS().first { $0.messageId == own })
        #expect(answer.payload()["configurationKey"]?.arrayValue?.compactMap { $0["value"]?.stringValue } == ["2", "Example CPO"])
        // All keys: the charger's answer gains the gateway's.
        let all = tester.csmsSends(call: "GetConfiguration")
        #expect(tester.takeSentToCharger().map(\.messageId) == [all])
        tester.chargerAnswers(all, payload: ["configurationKey": [["key": "HeartbeatInterval", "readonly": false, "value": "300"]]])
        let merged = try #require(tester.takeSentToCSMS().first { $0.messageId == all })
        let keys = merged.payload()["configurationKey"]?.arrayValue?.compactMap { $0["key"]?.stringValue } ?? []
        #expect(keys.first == "HeartbeatInterval" && keys.contains("SecurityProfile") && !keys.contains("AuthorizationKey"))
        // Mixed: the charger is asked only for its own.
        let mixed = tester.csmsSends(call: "GetConfiguration", payload: ["key": ["HeartbeatInterval", "CpoName"]])
        let forwarded = try #require(tester.takeSentToCharger().first)
        #expect(forwarded.payload()["key"] == ["HeartbeatInterval"])
        tester.chargerAnswers(mixed, payload: ["configurationKey": [["key": "HeartbeatInterval", "readonly": false, "value": "300"]]])
        let mixedAnswer = try #require(tester.takeSentToCSMS().first { $0.messageId == mixed })
        #expect(mixedAnswer.payload()["configurationKey"]?.arrayValue?.compactMap { $0["key"]?.stringValue } == ["HeartbeatInterval", "CpoName"])
        // Other keys go to the charger untouched; AuthorizationKey is stored, never logged.
        let secret = "00112233445566778899aabbccddeeff00112233"
        let change = tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "AuthorizationKey", "value": .string(secret)])
        #expect(tester.takeSentToCSMS().first { $0.messageId == change }?.payload()["status"] == "Accepted")
        #expect(!rig.logs.text.contains(secret))
        let stage = try #require(tester.pipeline.stages.first?.instance)
        #expect(stage.amendNorthCredentials(NorthCredentials(securityProfile: 2), for: "CP001").basicAuth?.password == secret)
        let attributes = try FileManager.default.attributesOfItem(atPath: rig.chargerFolder + "/settings.json")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "HeartbeatInterval", "value": "60"])
        #expect(tester.takeSentToCharger().map(\.action) == ["ChangeConfiguration"])
    }

    @Test func renewalStartsOnItsOwn29DaysBeforeExpiry() async throws {
        let now = Date().timeIntervalSince1970
        // A certificate that expires in 29 days, installed before the session starts.
        let rig = try CertsRig(wallTime: now) { pki, state in
            let issued = try pki.issueChargerCertificate("CP001", cpoName: "Example CPO", validFor: 29 * 86400)
            try FileManager.default.createDirectory(atPath: state + "/chargers/CP001", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: issued.certificate, toPath: state + "/chargers/CP001/cert.pem.tmp")
            try FileManager.default.moveItem(atPath: state + "/chargers/CP001/cert.pem.tmp", toPath: state + "/chargers/CP001/cert.pem")
        }
        #expect(rig.startupEvents == ["StartupOfTheDevice"])
        #expect(await rig.tester.settle())
        let sent = rig.tester.takeSentToCSMS().compactMap(\.action)
        #expect(sent == ["SignCertificate"], "the CSR follows the startup event")
    }

    @Test func renewalWaitsUntilOneMonthBeforeExpiry() async throws {
        let now = Date().timeIntervalSince1970
        let rig = try CertsRig(wallTime: now) { pki, state in
            let issued = try pki.issueChargerCertificate("CP001", cpoName: "Example CPO", validFor: 31 * 86400)
            try FileManager.default.createDirectory(atPath: state + "/chargers/CP001", withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: issued.certificate, toPath: state + "/chargers/CP001/cert.pem")
        }
        #expect(await rig.tester.settle(timeout: .milliseconds(200)) == false)
        #expect(!rig.tester.takeSentToCSMS().contains { $0.action == "SignCertificate" })
        rig.tester.advance(by: .seconds(2 * 86400))  // the daily check, two days on
        #expect(await rig.tester.settle())
        #expect(rig.tester.takeSentToCSMS().contains { $0.action == "SignCertificate" })
    }

    @Test func aCSMSCertificateFailureIsKeptAndDeliveredWithTheNextSession() async throws {
        let rig = try CertsRig()
        let stage = try #require(rig.tester.pipeline.stages.first?.instance)
        stage.northConnectionFailed(chargerId: "CP001", failure: NorthFailure(kind: .untrustedCentralSystemCertificate, detail: "bad chain"))
        stage.northConnectionFailed(chargerId: "CP001", failure: NorthFailure(kind: .untrustedCentralSystemCertificate, detail: "again"))
        stage.northConnectionFailed(chargerId: "CP001", failure: NorthFailure(kind: .other, detail: "refused"))
        let file = rig.chargerFolder + "/pending-events.json"
        let deadline = ContinuousClock.now + .seconds(5)
        while !FileManager.default.fileExists(atPath: file), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        try await Task.sleep(for: .milliseconds(50))
        // The next session (the CSMS is back) delivers it, once, before anything else.
        let next = StageTester(stages: [("certificates", stage)], wallTime: Date().timeIntervalSince1970)
        var delivered: [String] = []
        while let event = next.takeSentToCSMS(where: { $0.action == "SecurityEventNotification" }).first {
            delivered.append(event.payload()["type"]?.stringValue ?? "?")
            next.csmsAnswers(event.messageId)
        }
        #expect(delivered == ["InvalidCentralSystemCertificate", "StartupOfTheDevice"])
        #expect(!FileManager.default.fileExists(atPath: file), "acknowledged events are removed")
    }

    @Test func withProfile3ANewCertificateTakesOverTheNorthLinkAtItsNotBefore() async throws {
        let rig = try CertsRig(northProfile: 3)
        let csr = try await rig.requestCSR()
        let signed = try rig.pki.sign(csrPEM: csr, validFrom: Date(timeIntervalSince1970: rig.tester.wallTime + 60))
        #expect(try rig.certificateSigned(signed)["status"] == "Accepted")
        rig.tester.advance(by: .seconds(59))
        #expect(rig.tester.requestedNorthRelink == nil, "not before its notBefore (A02.FR.08)")
        rig.tester.advance(by: .seconds(2))
        let relink = try #require(rig.tester.requestedNorthRelink)
        #expect(relink.securityProfile == 3 && relink.privateKeyPath == rig.chargerFolder + "/key.pem")
        rig.tester.completeNorthRelink(succeeded: true)
        #expect(rig.tester.closeReason == nil, "the charger stays connected")
    }
}
