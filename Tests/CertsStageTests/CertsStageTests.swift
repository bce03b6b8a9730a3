@testable import CertsStage
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

/// A state directory, a CPO CA (also the CSMS root, as in many deployments) and a tester, with
/// the state store in the test's hands (to wait for its writes).
struct CertsRig {
    let state: String
    let pki: DevPKI
    let files: StageStore
    let stage: CertsStage
    let tester: StageTester
    let logs = LogCapture()

    /// `config` is the stage's config as JSON with the YAML's snake_case keys.
    init(config: String = #"{"cpo_name": "Example CPO"}"#, northProfile: Int = 2, wallTime: Double = Date().timeIntervalSince1970,
         prepare: (DevPKI, String) throws -> Void = { _, _ in }) throws {
        state = FileManager.default.temporaryDirectory.appendingPathComponent("certs-\(UUID().uuidString)").path
        pki = try DevPKI(directory: state + "/ca", reuse: false)
        try prepare(pki, state)
        let logs = self.logs
        let logger = Logger(label: "certs-test", factory: { _ in logs })
        files = StageStore(stateDirectory: state, logger: logger)
        stage = try Self.build(config, state: state, files: files, north: NorthSettings(securityProfile: northProfile, caFile: pki.caCertificate),
                               logger: logger)
        tester = StageTester(stages: [("certs", stage)], wallTime: wallTime, logger: logger)
    }

    static func build(_ config: String, state: String, files: StageStore, north: NorthSettings, logger: Logger) throws -> CertsStage {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let configuration = try decoder.decode(CertsStage.Configuration.self, from: Data(config.utf8))
        return try CertsStage(configuration: configuration, context: StageSetupContext(
            stageId: "certs", logger: logger, stateDirectory: state, south: SouthSettings(securityProfile: 1, chargers: [:]),
            north: north, store: files))
    }

    var chargerFolder: String { state + "/chargers/CP001" }

    /// The answer to the CSMS's CALL `id`: at once, or once the stage's disk work came back.
    func answer(_ id: String) async -> JSONValue? {
        if let frame = tester.takeSentToCSMS(where: { $0.messageId == id }).first { return frame.payload() }
        await tester.settle()
        return tester.takeSentToCSMS(where: { $0.messageId == id }).first?.payload()
    }

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

    func certificateSigned(_ chain: String) async throws -> JSONValue {
        let id = tester.csmsSends(call: "CertificateSigned", payload: ["certificateChain": .string(chain)])
        return try #require(await answer(id))
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

    /// The charger boots and the CSMS answers `status`.
    func boot(status: String = "Accepted", serial: String? = nil) {
        var payload: JSONValue = ["chargePointVendor": "LegacyCo", "chargePointModel": "LC-22"]
        if let serial { payload["chargePointSerialNumber"] = .string(serial) }
        let boot = tester.chargerSends(call: "BootNotification", payload: payload)
        _ = tester.takeSentToCSMS { $0.messageId == boot }
        tester.csmsAnswers(boot, payload: ["status": .string(status), "currentTime": "2026-01-01T00:00:00Z", "interval": 300])
        _ = tester.takeSentToCharger { $0.messageId == boot }
    }

    func pendingEventTypes() throws -> [String] {
        guard let data = FileManager.default.contents(atPath: chargerFolder + "/pending-events.json") else { return [] }
        let list = try #require(try JSONSerialization.jsonObject(with: data) as? [[String: Any]])
        return list.compactMap { $0["type"] as? String }
    }
}

/// Puts a certificate (and its key, with `keyMode`) for CP001 in place, as an operator provisions one.
func provision(_ pki: DevPKI, _ state: String, validFor: Double = 365 * 86400, keyMode: Int = 0o600) throws {
    let issued = try pki.issueChargerCertificate("CP001", cpoName: "Example CPO", validFor: validFor)
    let folder = state + "/chargers/CP001"
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    try FileManager.default.copyItem(atPath: issued.certificate, toPath: folder + "/cert.pem")
    try FileManager.default.copyItem(atPath: issued.key, toPath: folder + "/key.pem")
    try FileManager.default.setAttributes([.posixPermissions: keyMode], ofItemAtPath: folder + "/key.pem")
}

@Suite("certs stage")
struct CertsStageTests {
    @Test func enrolmentMakesACSRAndInstallsTheSignedCertificate() async throws {
        let rig = try CertsRig()
        let csr = try await rig.requestCSR()
        let request = try CertificateSigningRequest(pemEncoded: csr)
        #expect("\(request.subject)".contains("CN=CP001"))
        #expect("\(request.subject)".contains("O=Example CPO"))
        #expect(rig.tester.takeSentToCharger().isEmpty, "the legacy charger sees none of this")

        let id = rig.tester.csmsSends(call: "CertificateSigned", payload: ["certificateChain": .string(try rig.pki.sign(csrPEM: csr))])
        #expect(rig.tester.takeSentToCSMS { $0.messageId == id }.isEmpty, "answered once the files are on disk, not from the event loop")
        #expect(await rig.answer(id)?["status"] == "Accepted")
        let attributes = try FileManager.default.attributesOfItem(atPath: rig.chargerFolder + "/key.pem")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        #expect(!FileManager.default.fileExists(atPath: rig.chargerFolder + "/pending-key.pem"))
        let installed = try Certificate(pemEncoded: String(contentsOfFile: rig.chargerFolder + "/cert.pem", encoding: .utf8))
        #expect(installed.publicKey == request.publicKey)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: rig.chargerFolder).filter { $0.contains(".tmp") }
        #expect(leftovers.isEmpty)
        let logged = rig.logs.text
        #expect(!logged.contains("PRIVATE KEY"))
        #expect(!logged.contains(try String(contentsOfFile: rig.chargerFolder + "/key.pem", encoding: .utf8).split(separator: "\n")[1]))
    }

    @Test func aCertificateForAnotherKeyIsRejectedAndReported() async throws {
        let rig = try CertsRig()
        _ = try await rig.requestCSR()
        let stranger = try rig.pki.issueChargerCertificate("CP001-other", cpoName: "Example CPO")
        #expect(try await rig.certificateSigned(String(contentsOfFile: stranger.certificate, encoding: .utf8))["status"] == "Rejected")
        #expect(rig.securityEvents() == ["InvalidChargePointCertificate"])
        #expect(!FileManager.default.fileExists(atPath: rig.chargerFolder + "/cert.pem"))
        await rig.files.flush()
        #expect(try rig.pendingEventTypes().isEmpty, "a non-critical event raised in a session is sent, not kept")
    }

    @Test func expiredForeignAndOversizedChainsAreRejected() async throws {
        let rig = try CertsRig(config: #"{"cpo_name": "Example CPO", "certificate_signed_max_chain_size": 2000}"#)
        let csr = try await rig.requestCSR()
        let expired = try rig.pki.sign(csrPEM: csr, validFrom: Date().addingTimeInterval(-400 * 86400), validFor: 30 * 86400)
        #expect(try await rig.certificateSigned(expired)["status"] == "Rejected")
        let foreign = try DevPKI(directory: rig.state + "/other-ca", caName: "someone else", reuse: false).sign(csrPEM: csr)
        #expect(try await rig.certificateSigned(foreign)["status"] == "Rejected")
        let valid = try rig.pki.sign(csrPEM: csr)
        #expect(try await rig.certificateSigned(valid + valid + valid + valid)["status"] == "Rejected")
        #expect(rig.securityEvents() == ["InvalidChargePointCertificate", "InvalidChargePointCertificate", "InvalidChargePointCertificate"])
        // The old (absent) identity is untouched and the pending key still works for a good answer.
        #expect(try await rig.certificateSigned(valid)["status"] == "Accepted")
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
        #expect(try await rig.certificateSigned(rig.pki.sign(csrPEM: csr))["status"] == "Accepted")
        _ = rig.securityEvents()
        #expect(change("3") == "Accepted")
        tester.advance(by: .zero)
        let relink = try #require(tester.requestedNorthRelink)
        #expect(relink.securityProfile == 3 && relink.certificatePath == rig.chargerFolder + "/cert.pem")
        tester.completeNorthRelink(succeeded: false)
        #expect(rig.securityEvents() == ["ReconfigurationOfSecurityParameters"])
        await rig.files.flush()
        let settings = (try? String(contentsOfFile: rig.chargerFolder + "/settings.json", encoding: .utf8)) ?? ""
        #expect(!settings.contains("securityProfile"), "a failed upgrade is not persisted (A05.FR.08)")

        #expect(change("3") == "Accepted")
        tester.advance(by: .zero)
        tester.completeNorthRelink(succeeded: true)
        #expect(rig.securityEvents() == ["ReconfigurationOfSecurityParameters"])
        let amended = rig.stage.amendNorthCredentials(NorthCredentials(securityProfile: 2), for: "CP001")
        #expect(amended.securityProfile == 3, "the next connection uses profile 3")
        #expect(change("2") == "Rejected")
        await rig.files.flush()
        #expect(try String(contentsOfFile: rig.chargerFolder + "/settings.json", encoding: .utf8).contains("\"securityProfile\":3"))
    }

    @Test func theRootStoreFollowsSectionM() async throws {
        let rig = try CertsRig()
        let tester = rig.tester
        let extraRoot = try DevPKI(directory: rig.state + "/extra", caName: "Manufacturer root", reuse: false)
        let rootPEM = try String(contentsOfFile: extraRoot.caCertificate, encoding: .utf8)
        func call(_ action: String, _ payload: JSONValue) async -> JSONValue {
            await rig.answer(tester.csmsSends(call: action, payload: payload)) ?? .null
        }
        #expect(await call("GetInstalledCertificateIds", ["certificateType": "ManufacturerRootCertificate"])["status"] == "NotFound")
        #expect(await call("InstallCertificate", ["certificateType": "ManufacturerRootCertificate", "certificate": .string(rootPEM)])["status"] == "Accepted")
        let leafPEM = try String(contentsOfFile: rig.pki.serverCertificate, encoding: .utf8)
        #expect(await call("InstallCertificate", ["certificateType": "ManufacturerRootCertificate", "certificate": .string(leafPEM)])["status"] == "Rejected",
                "not a CA")
        let listed = await call("GetInstalledCertificateIds", ["certificateType": "ManufacturerRootCertificate"])
        let hash = try #require(listed["certificateHashData"]?.arrayValue?.first)
        let root = try Certificate(pemEncoded: rootPEM)
        #expect(hash["serialNumber"]?.stringValue == Array(root.serialNumber.bytes).drop { $0 == 0 }.map { String(format: "%02x", $0) }.joined())
        #expect(hash["issuerNameHash"]?.stringValue?.count == 64 && hash["hashAlgorithm"] == "SHA256")

        // The CSMS root from north.ca_file is listed, and cannot be deleted while the link relies on it.
        let central = await call("GetInstalledCertificateIds", ["certificateType": "CentralSystemRootCertificate"])
        let centralHash = try #require(central["certificateHashData"]?.arrayValue?.first)
        #expect(await call("DeleteCertificate", ["certificateHashData": centralHash])["status"] == "Failed")
        // An installed CSMS root that anchors the current CSMS certificate is in use.
        let csmsCA = try DevPKI(directory: rig.state + "/csms-ca", caName: "CSMS root 2", reuse: false)
        #expect(await call("InstallCertificate", ["certificateType": "CentralSystemRootCertificate",
                                                  "certificate": .string(try String(contentsOfFile: csmsCA.caCertificate, encoding: .utf8))])["status"] == "Accepted")
        var serializer = DER.Serializer()
        try serializer.serialize(Certificate(pemEncoded: String(contentsOfFile: csmsCA.serverCertificate, encoding: .utf8)))
        tester.northPeerCertificate = serializer.serializedBytes
        let installedCentral = await call("GetInstalledCertificateIds", ["certificateType": "CentralSystemRootCertificate"])["certificateHashData"]?.arrayValue ?? []
        #expect(installedCentral.count == 2)
        #expect(await call("DeleteCertificate", ["certificateHashData": installedCentral[1]])["status"] == "Failed", "in use (M04.FR.06)")
        tester.northPeerCertificate = nil
        #expect(await call("DeleteCertificate", ["certificateHashData": installedCentral[1]])["status"] == "Accepted")

        #expect(await call("DeleteCertificate", ["certificateHashData": hash])["status"] == "Accepted")
        #expect(await call("DeleteCertificate", ["certificateHashData": hash])["status"] == "NotFound")
    }

    @Test func gatewayConfigurationKeysAreAnsweredAndMerged() async throws {
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
        #expect(await rig.answer(change)?["status"] == "Accepted")
        #expect(!rig.logs.text.contains(secret))
        #expect(rig.stage.amendNorthCredentials(NorthCredentials(securityProfile: 2), for: "CP001").basicAuth?.password == secret)
        let attributes = try FileManager.default.attributesOfItem(atPath: rig.chargerFolder + "/settings.json")
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "HeartbeatInterval", "value": "60"])
        #expect(tester.takeSentToCharger().map(\.action) == ["ChangeConfiguration"])
    }

    /// Issue 20.4: the charger's AuthorizationKey never reaches the CSMS, whatever form the request took.
    @Test func authorizationKeyIsHiddenInEveryFormOfTheAnswer() async throws {
        let rig = try CertsRig()
        let tester = rig.tester
        let secret = "aabbccddeeff00112233445566778899aabbccdd"
        let leaky: JSONValue = ["configurationKey": [
            ["key": "HeartbeatInterval", "readonly": false, "value": "300"],
            ["key": "AuthorizationKey", "readonly": false, "value": .string(secret)],
            ["key": "authorizationkey", "readonly": false, "value": .string(secret)],
        ]]
        func ask(_ keys: [String]?) throws -> JSONValue {
            let payload: JSONValue = keys.map { ["key": .array($0.map { .string($0) })] } ?? [:]
            let id = tester.csmsSends(call: "GetConfiguration", payload: payload)
            if let answered = tester.takeSentToCSMS(where: { $0.messageId == id }).first { return answered.payload() }
            #expect(!tester.takeSentToCharger().isEmpty)
            tester.chargerAnswers(id, payload: leaky)
            return try #require(tester.takeSentToCSMS { $0.messageId == id }.first).payload()
        }
        for keys in [nil, ["AuthorizationKey"], ["authorizationkey"], ["HeartbeatInterval", "AuthorizationKey"],
                     ["HeartbeatInterval", "AUTHORIZATIONKEY"], ["HeartbeatInterval"]] as [[String]?] {
            let answer = try ask(keys)
            #expect(!answer.jsonText.contains(secret), "asked for \(keys ?? ["all"])")
            let names = answer["configurationKey"]?.arrayValue?.compactMap { $0["key"]?.stringValue?.lowercased() } ?? []
            #expect(!names.contains("authorizationkey"), "asked for \(keys ?? ["all"])")
            if let keys, keys.contains(where: { $0.lowercased() == "authorizationkey" }) {
                #expect(answer["unknownKey"]?.arrayValue?.contains("AuthorizationKey") == true, "write-only: reported unknown")
            }
        }
        // A lower-case ChangeConfiguration is the gateway's too: the charger never sees the key.
        let change = tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "authorizationKEY", "value": .string(secret)])
        #expect(await rig.answer(change)?["status"] == "Accepted")
        #expect(tester.takeSentToCharger().isEmpty)
    }

    @Test func renewalStartsOnItsOwn29DaysBeforeExpiry() async throws {
        // A certificate that expires in 29 days, installed before the session starts.
        let rig = try CertsRig { pki, state in try provision(pki, state, validFor: 29 * 86400) }
        #expect(await rig.tester.settle())
        let sent = rig.tester.takeSentToCSMS().compactMap(\.action)
        #expect(sent == ["SignCertificate"], "the CSR goes out at once")
    }

    @Test func renewalWaitsUntilOneMonthBeforeExpiry() async throws {
        let rig = try CertsRig { pki, state in try provision(pki, state, validFor: 31 * 86400) }
        #expect(await rig.tester.settle(timeout: .milliseconds(200)) == false)
        #expect(!rig.tester.takeSentToCSMS().contains { $0.action == "SignCertificate" })
        rig.tester.advance(by: .seconds(2 * 86400))  // the daily check, two days on
        #expect(await rig.tester.settle())
        #expect(rig.tester.takeSentToCSMS().contains { $0.action == "SignCertificate" })
    }

    @Test func aCSMSCertificateFailureIsKeptAndDeliveredWithTheNextSession() async throws {
        let rig = try CertsRig()
        rig.stage.northConnectionFailed(chargerId: "CP001", failure: NorthFailure(kind: .untrustedCentralSystemCertificate, detail: "bad chain"))
        rig.stage.northConnectionFailed(chargerId: "CP001", failure: NorthFailure(kind: .untrustedCentralSystemCertificate, detail: "again"))
        rig.stage.northConnectionFailed(chargerId: "CP001", failure: NorthFailure(kind: .other, detail: "refused"))
        await rig.files.flush()
        #expect(try rig.pendingEventTypes() == ["InvalidCentralSystemCertificate"], "one of a kind while the link is down")
        // The next session (the CSMS is back) delivers it, once, before anything else.
        let next = StageTester(stages: [("certificates", rig.stage)], wallTime: Date().timeIntervalSince1970)
        var delivered: [String] = []
        while let event = next.takeSentToCSMS(where: { $0.action == "SecurityEventNotification" }).first {
            delivered.append(event.payload()["type"]?.stringValue ?? "?")
            next.csmsAnswers(event.messageId)
        }
        #expect(delivered == ["InvalidCentralSystemCertificate"])
        await rig.files.flush()
        #expect(!FileManager.default.fileExists(atPath: rig.chargerFolder + "/pending-events.json"), "acknowledged events are removed")
    }

    @Test func withProfile3ANewCertificateTakesOverTheNorthLinkAtItsNotBefore() async throws {
        let rig = try CertsRig(northProfile: 3)
        let csr = try await rig.requestCSR()
        let signed = try rig.pki.sign(csrPEM: csr, validFrom: Date(timeIntervalSince1970: rig.tester.wallTime + 60))
        #expect(try await rig.certificateSigned(signed)["status"] == "Accepted")
        rig.tester.advance(by: .seconds(59))
        #expect(rig.tester.requestedNorthRelink == nil, "not before its notBefore (A02.FR.08)")
        rig.tester.advance(by: .seconds(2))
        let relink = try #require(rig.tester.requestedNorthRelink)
        #expect(relink.securityProfile == 3 && relink.privateKeyPath == rig.chargerFolder + "/key.pem")
        rig.tester.completeNorthRelink(succeeded: true)
        #expect(rig.tester.closeReason == nil, "the charger stays connected")
    }

    // MARK: Issue 12.4: StartupOfTheDevice

    @Test func startupOfTheDeviceFollowsAnAcceptedBootNotificationNotAConnection() async throws {
        let rig = try CertsRig()
        #expect(rig.securityEvents().isEmpty, "a session start is not a startup")
        rig.boot(status: "Pending")
        #expect(rig.securityEvents().isEmpty, "not before the CSMS accepted the charger")
        rig.boot(status: "Accepted")
        let startup = try #require(rig.tester.takeSentToCSMS { $0.action == "SecurityEventNotification" }.first)
        #expect(startup.payload()["type"] == "StartupOfTheDevice")
        // Critical: on disk until the CSMS acknowledges it.
        await rig.files.flush()
        #expect(try rig.pendingEventTypes() == ["StartupOfTheDevice"])
        rig.tester.csmsAnswers(startup.messageId)
        await rig.files.flush()
        #expect(try rig.pendingEventTypes().isEmpty)
        // The charger reconnects without rebooting (field behaviour): no new startup.
        let reconnect = StageTester(stages: [("certs", rig.stage)], wallTime: Date().timeIntervalSince1970)
        #expect(reconnect.takeSentToCSMS { $0.action == "SecurityEventNotification" }.isEmpty)
    }

    @Test func anUnacknowledgedStartupIsDeliveredWithTheNextSession() async throws {
        let rig = try CertsRig()
        rig.boot()
        #expect(rig.tester.takeSentToCSMS { $0.action == "SecurityEventNotification" }.count == 1)
        rig.tester.endSession()  // the link dropped before the CSMS answered
        await rig.files.flush()
        let next = StageTester(stages: [("certs", rig.stage)], wallTime: Date().timeIntervalSince1970)
        let again = try #require(next.takeSentToCSMS { $0.action == "SecurityEventNotification" }.first)
        #expect(again.payload()["type"] == "StartupOfTheDevice")
    }

    // MARK: Issue 12.7: write errors are logged

    @Test func aSecurityEventThatCannotBeWrittenIsLoggedAndStillSent() async throws {
        let rig = try CertsRig { _, state in
            // Where the charger's folder belongs, a file: nothing can be written there.
            try FileManager.default.createDirectory(atPath: state + "/chargers", withIntermediateDirectories: true)
            try Data().write(to: URL(fileURLWithPath: state + "/chargers/CP001"))
        }
        // The unreadable settings are reported first (the CSMS lane takes one CALL at a time).
        #expect(rig.securityEvents() == ["ReconfigurationOfSecurityParameters"])
        rig.boot()
        #expect(rig.securityEvents() == ["StartupOfTheDevice"])
        await rig.files.flush()
        #expect(rig.logs.text.contains("security events not persisted"))
    }

    // MARK: Issue 12.8: settings.json

    @Test func aCorruptSettingsFileNeverLowersTheProfileAndIsNotOverwritten() async throws {
        let rig = try CertsRig { pki, state in
            try provision(pki, state)
            try "{\"securityProfile\": 3, \"cpoN".write(toFile: state + "/chargers/CP001/settings.json", atomically: true, encoding: .utf8)
        }
        // The CSMS is told when the session starts, once.
        let told = rig.tester.takeSentToCSMS { $0.action == "SecurityEventNotification" }
        #expect(told.map { $0.payload()["type"] } == ["ReconfigurationOfSecurityParameters"])
        #expect(told.first?.payload()["techInfo"]?.stringValue?.contains("settings.json") == true)
        #expect(rig.logs.text.contains("settings.json is unreadable"))
        // The configured profile is 2; a certificate is installed, so the charger may be at 3: it stays there.
        let amended = rig.stage.amendNorthCredentials(NorthCredentials(securityProfile: 2), for: "CP001")
        #expect(amended.securityProfile == 3)
        #expect(amended.privateKeyPath == rig.chargerFolder + "/key.pem")
        // Changes are refused rather than written over the evidence.
        let change = rig.tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "CpoName", "value": "Other CPO"])
        #expect(await rig.answer(change)?["status"] == "Rejected")
        await rig.files.flush()
        #expect(try String(contentsOfFile: rig.chargerFolder + "/settings.json", encoding: .utf8) == "{\"securityProfile\": 3, \"cpoN")
        let next = StageTester(stages: [("certs", rig.stage)], wallTime: Date().timeIntervalSince1970)
        #expect(next.takeSentToCSMS { $0.action == "SecurityEventNotification" }.isEmpty, "once per gateway run")
    }

    @Test func aSettingsFileCorruptedWhileRunningKeepsTheLastGoodSettings() async throws {
        let rig = try CertsRig()
        let secret = "00112233445566778899aabbccddeeff00112233"
        let change = rig.tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "AuthorizationKey", "value": .string(secret)])
        #expect(await rig.answer(change)?["status"] == "Accepted")
        try "garbage".write(toFile: rig.chargerFolder + "/settings.json", atomically: true, encoding: .utf8)
        // A reload builds a new stage instance: it still knows the last good settings.
        let reloaded = try CertsRig.build(#"{"cpo_name": "Example CPO"}"#, state: rig.state, files: rig.files,
                                          north: NorthSettings(securityProfile: 2, caFile: rig.pki.caCertificate),
                                          logger: Logger(label: "reloaded", factory: { _ in SwiftLogNoOpLogHandler() }))
        #expect(reloaded.amendNorthCredentials(NorthCredentials(securityProfile: 2), for: "CP001").basicAuth?.password == secret)
    }

    @Test func concurrentSettingsChangesAreAllKept() async throws {
        let rig = try CertsRig()
        let store = rig.stage.store
        // Two writers change different settings at once (as a boot's serial number and a CSMS's
        // ChangeConfiguration do): read-modify-write under one lock, writes in order.
        await withTaskGroup(of: Void.self) { group in
            for round in 0..<100 {
                group.addTask {
                    if round.isMultiple(of: 2) {
                        store.updateSettings("CP001") { $0.cpoName = "CPO \(round)" }
                    } else {
                        store.updateSettings("CP001") { $0.serialNumber = "SN \(round)" }
                    }
                }
            }
        }
        await rig.files.flush()
        let saved = try JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: rig.chargerFolder + "/settings.json"))) as? [String: Any]
        #expect(saved?["cpoName"] as? String == store.settings("CP001").cpoName && saved?["cpoName"] != nil)
        #expect(saved?["serialNumber"] as? String == store.settings("CP001").serialNumber && saved?["serialNumber"] != nil)
        // A boot's serial number reaches the file too.
        rig.boot(serial: "SN-boot")
        await rig.files.flush()
        #expect(try String(contentsOfFile: rig.chargerFolder + "/settings.json", encoding: .utf8).contains("SN-boot"))
    }

    // MARK: Issue 12.12: a private key others can read

    @Test func aKeyReadableByOthersIsRefusedWithAClearErrorAndAnEvent() async throws {
        let rig = try CertsRig(northProfile: 3) { pki, state in try provision(pki, state, keyMode: 0o644) }
        let amended = rig.stage.amendNorthCredentials(NorthCredentials(securityProfile: 3), for: "CP001")
        #expect(amended.securityProfile == 3 && amended.privateKeyPath == nil, "no key, so the north link is not made with it")
        #expect(rig.logs.text.contains("refusing the charger's private key"))
        #expect(rig.logs.text.contains("chmod 600"))
        _ = rig.stage.amendNorthCredentials(NorthCredentials(securityProfile: 3), for: "CP001")
        #expect(rig.logs.lines.filter { $0.contains("refusing the charger's private key") }.count == 1, "logged once, not per attempt")
        await rig.files.flush()
        #expect(try rig.pendingEventTypes() == ["ReconfigurationOfSecurityParameters"])
        // Fixed by the operator: used again.
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: rig.chargerFolder + "/key.pem")
        #expect(rig.stage.amendNorthCredentials(NorthCredentials(securityProfile: 3), for: "CP001").privateKeyPath == rig.chargerFolder + "/key.pem")
        // Group-readable is refused too.
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: rig.chargerFolder + "/key.pem")
        #expect(rig.stage.amendNorthCredentials(NorthCredentials(securityProfile: 3), for: "CP001").privateKeyPath == nil)
    }

    // MARK: Issue 12.1: errors at their keys

    @Test func configurationMistakesNameTheirKeys() throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("certs-\(UUID().uuidString)").path
        let logger = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
        let files = StageStore(stateDirectory: state, logger: logger)
        #expect(throws: ConfigurationKeyError.self) {
            try CertsRig.build(#"{"charger_ca_file": "missing.pem"}"#, state: state, files: files, north: NorthSettings(securityProfile: 2), logger: logger)
        }
        do {
            _ = try CertsRig.build(#"{"cpo_name": ""}"#, state: state, files: files, north: NorthSettings(securityProfile: 2), logger: logger)
            Issue.record("an empty cpo_name was accepted")
        } catch let error as ConfigurationKeyError {
            #expect(error.key == "cpo_name")
        }
        // Ranges are checked while decoding (outside the gateway's decoder: a DecodingError).
        #expect(throws: DecodingError.self) {
            try CertsRig.build(#"{"renew_before_days": 0}"#, state: state, files: files, north: NorthSettings(securityProfile: 2), logger: logger)
        }
    }
}
