import Crypto
import Logging
import Foundation
public import OCPP
public import StageKit
import SwiftASN1
import X509

/// Owns each charger's OCPP security identity, so a legacy charger looks like a compliant
/// Security Whitepaper (edition 3) charge point to the CSMS.
///
/// Answers, and never forwards: `ExtendedTriggerMessage(SignChargePointCertificate)` (new key +
/// CSR north), `CertificateSigned` (validate, install), `InstallCertificate`, `DeleteCertificate`,
/// `GetInstalledCertificateIds`, and `ChangeConfiguration`/`GetConfiguration` for the keys the
/// gateway owns. Upgrades the north link's security profile (A05) and renews the certificate
/// before it expires (A03).
public struct CertsStage: Stage {
    public struct Configuration: Decodable, Sendable {
        /// CpoName until the CSMS sets one: the O of the CSR subject.
        public var cpoName: String?
        /// The CSR's CN: the charge point id (`identity`) or the serial number from its BootNotification.
        public var commonName: CommonNameSource?
        public var keyType: KeyType?
        /// Start renewing this many days before the certificate expires (A03: one month).
        public var renewBeforeDays: Int?
        /// Seconds before retrying a renewal the CSMS did not accept (doubles up to a day).
        public var renewalRetry: Double?
        public var certificateSignedMaxChainSize: Int?
        public var certificateStoreMaxLength: Int?
        public var additionalRootCertificateCheck: Bool?
        /// Extra CAs of the CPO hierarchy that may sign charger certificates (PEM), besides the CSMS roots.
        public var chargerCaFile: String?
    }

    public enum CommonNameSource: String, Decodable, Sendable {
        case identity
        case serialNumber = "serial_number"
    }

    public static let type = "certs"
    public static let summary = "Owns chargers' keys and certificates: CSRs, CertificateSigned, root store, security profile upgrades, renewal."

    let store: IdentityStore
    let events: SecurityEventOutbox
    let configuredProfile: Int
    let provisionedRoots: [Certificate]
    let chargerAnchors: [Certificate]
    let defaultCpoName: String?
    let commonNameSource: CommonNameSource
    let keyType: KeyType
    let renewBefore: Double
    let renewalRetry: Double
    let maxChainSize: Int
    let maxStoredRoots: Int
    let additionalRootCheck: Bool

    public init(configuration: Configuration, context: StageSetupContext) throws {
        let paths = IdentityPaths(stateDirectory: context.stateDirectory)
        store = IdentityStore(paths: paths, keys: FileKeyProvider(paths: paths))
        events = SecurityEventOutbox(paths: paths)
        configuredProfile = context.north.securityProfile
        provisionedRoots = try context.north.caFile.map { file in
            guard let pem = AtomicFile.read(file) else { throw StoreError("cannot read north.ca_file \(file)") }
            return CertificateTools.parseChain(pem)
        } ?? []
        chargerAnchors = try configuration.chargerCaFile.map { file in
            let path = file.hasPrefix("/") ? file : context.stateDirectory + "/" + file
            guard let pem = AtomicFile.read(path) else { throw StoreError("'charger_ca_file' \(path) cannot be read") }
            let certificates = CertificateTools.parseChain(pem)
            guard !certificates.isEmpty else { throw StoreError("'charger_ca_file' \(path) holds no certificate") }
            return certificates
        } ?? []
        defaultCpoName = configuration.cpoName
        commonNameSource = configuration.commonName ?? .identity
        keyType = configuration.keyType ?? .ecP256
        renewBefore = Double(configuration.renewBeforeDays ?? 30) * 86400
        renewalRetry = configuration.renewalRetry ?? 3600
        maxChainSize = configuration.certificateSignedMaxChainSize ?? 10_000
        maxStoredRoots = configuration.certificateStoreMaxLength ?? 20
        additionalRootCheck = configuration.additionalRootCertificateCheck ?? false
        guard renewBefore > 0, renewalRetry > 0, maxChainSize > 0, maxStoredRoots > 0 else {
            throw StoreError("'renew_before_days', 'renewal_retry', 'certificate_signed_max_chain_size' and 'certificate_store_max_length' must be positive")
        }
    }

    // MARK: Frames

    public func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        switch (envelope.direction, envelope.messageType, envelope.action ?? "") {
        case (.fromCSMS, .call, "ExtendedTriggerMessage"): return extendedTrigger(envelope.payload(), session)
        case (.fromCSMS, .call, "CertificateSigned"): return certificateSigned(envelope.payload(), session)
        case (.fromCSMS, .call, "InstallCertificate"): return installCertificate(envelope.payload(), session)
        case (.fromCSMS, .call, "DeleteCertificate"): return deleteCertificate(envelope.payload(), session)
        case (.fromCSMS, .call, "GetInstalledCertificateIds"): return installedCertificateIds(envelope.payload(), session)
        case (.fromCSMS, .call, "ChangeConfiguration"): return changeConfiguration(envelope.payload(), session)
        case (.fromCSMS, .call, "GetConfiguration"): return getConfiguration(envelope, session)
        case (.fromCharger, .callResult, "GetConfiguration"): return mergeConfiguration(envelope, session)
        case (.fromCharger, .call, "BootNotification"):
            rememberSerialNumber(envelope.payload(), session)
            return .forward
        default: return .forward
        }
    }

    public func amendNorthCredentials(_ credentials: NorthCredentials, for chargerId: String) -> NorthCredentials {
        var amended = credentials
        let settings = store.settings(chargerId)
        amended.securityProfile = max(credentials.securityProfile, settings.securityProfile ?? 0)
        if amended.securityProfile == 3 {
            amended.certificatePath = store.paths.certificate(chargerId)
            amended.privateKeyPath = store.keys.currentKeyPath(chargerId: chargerId)
        }
        if amended.securityProfile == 2, let key = settings.authorizationKey {
            amended.basicAuth = BasicCredentials(username: chargerId, password: key)
        }
        return amended
    }

    public func northConnectionFailed(chargerId: String, failure: NorthFailure) {
        let event: SecurityEvent
        switch failure.kind {
        case .untrustedCentralSystemCertificate: event = .invalidCentralSystemCertificate
        case .tlsVersion: event = .invalidTLSVersion
        case .other: return
        }
        let events = self.events
        let now = Date().timeIntervalSince1970
        // Disk work off whichever thread reported the failure.
        Task.detached { events.record(event, techInfo: failure.detail, chargerId: chargerId, at: now) }
    }

    public func sessionStarted(_ session: any SessionContext) {
        events.flush(in: session)
        if session[StartupReported.self] == nil {
            session[StartupReported.self] = true
            events.raise(.startupOfTheDevice, techInfo: "ocpp-gateway session for a legacy charger", in: session)
        }
        checkRenewal(session)
    }

    enum StartupReported: SessionStateKey { typealias Value = Bool }
    /// A CSR is out and its certificate not yet installed.
    enum CSRInFlight: SessionStateKey { typealias Value = Bool }
    enum RenewalAttempts: SessionStateKey { typealias Value = Int }
    /// GetConfiguration requests forwarded to the charger whose answers get the gateway's keys merged in.
    enum ConfigurationRequests: SessionStateKey { typealias Value = [String: Set<String>?] }

    func effectiveProfile(_ id: String) -> Int { max(configuredProfile, store.settings(id).securityProfile ?? 0) }
    func cpoName(_ id: String) -> String? { store.settings(id).cpoName ?? defaultCpoName }

    // MARK: A02 / A03: key pair, CSR, CertificateSigned

    private func extendedTrigger(_ payload: JSONValue, _ session: any SessionContext) -> Verdict {
        guard payload["requestedMessage"]?.stringValue == "SignChargePointCertificate" else {
            // The legacy charger cannot receive ExtendedTriggerMessage; its own triggers stay with TriggerMessage.
            return .answer(["status": "NotImplemented"])
        }
        guard cpoName(session.chargerId) != nil else {
            session.logger.warning("SignChargePointCertificate refused: CpoName is not set (set 'cpo_name' or ChangeConfiguration CpoName)")
            return .answer(["status": "Rejected"])
        }
        // A02.FR.02: the key pair is made after the answer has gone out.
        session.schedule(after: .zero) { startCSR(session, reason: "requested by the CSMS") }
        return .answer(["status": "Accepted"])
    }

    func startCSR(_ session: any SessionContext, reason: String) {
        guard session[CSRInFlight.self] != true, let organization = cpoName(session.chargerId) else { return }
        session[CSRInFlight.self] = true
        let id = session.chargerId
        let commonName = commonNameSource == .serialNumber ? (store.settings(id).serialNumber ?? id) : id
        let store = self.store
        let keyType = self.keyType
        session.logger.info("making a key pair and CSR", metadata: ["reason": "\(reason)", "key_type": "\(keyType.rawValue)"])
        let handle = session.handle
        let work: @Sendable () -> Result<String, any Error> = {
            Result {
                let key = try store.keys.generatePendingKey(chargerId: id, type: keyType)
                return try CertificateTools.makeCSR(commonName: commonName, organization: organization, key: key, type: keyType)
            }
        }
        // Key generation and the key file write leave the event loop; the CSR comes back to it.
        Task.detached {
            let result = work()
            handle.run { session in sendCSR(result, session) }
        }
    }

    private func sendCSR(_ result: Result<String, any Error>, _ session: any SessionContext) {
        switch result {
        case .failure(let error):
            session[CSRInFlight.self] = false
            session.logger.error("could not make a CSR", metadata: ["error": "\(error)"])
        case .success(let csr):
            session.sendCall("SignCertificate", payload: ["csr": .string(csr)], to: .csms) { outcome in
                guard case .result(let answer) = outcome, answer["status"]?.stringValue == "Accepted" else {
                    session[CSRInFlight.self] = false
                    session.logger.warning("the CSMS did not accept the CSR", metadata: ["outcome": "\(outcome)"])
                    scheduleRenewalRetry(session)
                    return
                }
                session.logger.info("CSR accepted by the CSMS; waiting for CertificateSigned")
            }
        }
    }

    private func certificateSigned(_ payload: JSONValue, _ session: any SessionContext) -> Verdict {
        let id = session.chargerId
        func reject(_ problem: String) -> Verdict {
            session.logger.warning("CertificateSigned rejected", metadata: ["problem": "\(problem)"])
            events.raise(.invalidChargePointCertificate, techInfo: problem, in: session)
            return .answer(["status": "Rejected"])
        }
        guard let pem = payload["certificateChain"]?.stringValue else {
            return .answerError(.formatViolation(for: session.version), "certificateChain is required")
        }
        guard pem.count <= maxChainSize else { return reject("the chain is \(pem.count) characters; CertificateSignedMaxChainSize is \(maxChainSize)") }
        let chain = CertificateTools.parseChain(pem)
        guard let leaf = chain.first else { return reject("no PEM certificate in certificateChain") }
        guard let pending = store.keys.pendingKey(chargerId: id) else { return reject("no CSR is pending for this charger") }
        guard leaf.publicKey == pending.publicKey else { return reject("the certificate does not match the key of the pending CSR") }
        let now = Date(timeIntervalSince1970: session.wallTime)
        let anchors = provisionedRoots + store.roots(id, .centralSystem).map(\.certificate) + chargerAnchors
        if let problem = CertificateTools.chainProblem(chain, anchors: anchors, now: now) { return reject(problem) }
        let expectedCN = commonNameSource == .serialNumber ? (store.settings(id).serialNumber ?? id) : id
        guard CertificateTools.commonName(leaf.subject) == expectedCN else { return reject("the subject CN is not '\(expectedCN)'") }
        if let organization = cpoName(id), CertificateTools.organization(leaf.subject) != organization {
            return reject("the subject O is not the CpoName '\(organization)'")
        }
        do {
            try store.installSignedChain(id, pem: pem)
        } catch {
            session.logger.error("could not store the signed certificate", metadata: ["error": "\(error)"])
            return .answer(["status": "Rejected"])
        }
        session[CSRInFlight.self] = false
        session[RenewalAttempts.self] = 0
        session.logger.notice("new charger certificate installed", metadata: [
            "not_before": "\(leaf.notValidBefore)", "not_after": "\(leaf.notValidAfter)",
        ])
        // A02.FR.08: in use from its notBefore; with profile 3 the north link moves over without dropping the charger.
        if effectiveProfile(id) == 3 {
            let wait = max(0, leaf.notValidBefore.timeIntervalSince1970 - session.wallTime)
            session.schedule(after: .milliseconds(Int64(wait * 1000))) { relink(session, profile: 3, because: "new charger certificate") }
        }
        return .answer(["status": "Accepted"])
    }

    private func relink(_ session: any SessionContext, profile: Int, because reason: String, onSuccess: (() -> Void)? = nil) {
        var credentials = NorthCredentials(securityProfile: profile)
        credentials = amendNorthCredentials(credentials, for: session.chargerId)
        credentials.securityProfile = profile
        if profile == 3 {
            credentials.certificatePath = store.paths.certificate(session.chargerId)
            credentials.privateKeyPath = store.keys.currentKeyPath(chargerId: session.chargerId)
        }
        session.relinkNorth(with: credentials) { result in
            switch result {
            case .success:
                session.logger.notice("north link now uses the new identity", metadata: ["reason": "\(reason)", "security_profile": "\(profile)"])
                onSuccess?()
            case .failure(let error):
                // A05.FR.08: the previous link and profile stay in service.
                session.logger.error("north re-link failed; keeping the previous link", metadata: ["reason": "\(reason)", "error": "\(error)"])
                events.raise(.reconfigurationOfSecurityParameters, techInfo: "re-link for \(reason) failed: \(error)", in: session)
            }
        }
    }

    // MARK: A03: renewal

    func checkRenewal(_ session: any SessionContext) {
        if let leaf = store.currentChain(session.chargerId).first {
            let remaining = leaf.notValidAfter.timeIntervalSince1970 - session.wallTime
            if remaining <= renewBefore {
                startCSR(session, reason: "the certificate expires in \(Int(remaining / 86400)) days")
            }
        }
        // Look again tomorrow: sessions of a year are not unusual.
        session.schedule(after: .seconds(86400)) { checkRenewal(session) }
    }

    private func scheduleRenewalRetry(_ session: any SessionContext) {
        let attempts = (session[RenewalAttempts.self] ?? 0) + 1
        session[RenewalAttempts.self] = attempts
        let delay = min(renewalRetry * pow(2, Double(attempts - 1)), 86400)
        session.schedule(after: .milliseconds(Int64(delay * 1000))) {
            guard let leaf = store.currentChain(session.chargerId).first,
                  leaf.notValidAfter.timeIntervalSince1970 - session.wallTime <= renewBefore
            else { return }
            startCSR(session, reason: "retry \(attempts) of the renewal")
        }
    }

    // MARK: M03 / M04 / M05: the root stores

    private func rootType(_ payload: JSONValue) -> RootType? {
        payload["certificateType"]?.stringValue.flatMap(RootType.init(rawValue:))
    }

    private func installCertificate(_ payload: JSONValue, _ session: any SessionContext) -> Verdict {
        let id = session.chargerId
        guard let type = rootType(payload), let pem = payload["certificate"]?.stringValue else {
            return .answerError(.formatViolation(for: session.version), "certificateType and certificate are required")
        }
        let certificates = CertificateTools.parseChain(pem)
        guard certificates.count == 1, let certificate = certificates.first,
              let constraints = try? certificate.extensions.basicConstraints, case .isCertificateAuthority = constraints,
              certificate.notValidAfter > Date(timeIntervalSince1970: session.wallTime)
        else {
            session.logger.warning("InstallCertificate rejected: not one valid CA certificate")
            return .answer(["status": "Rejected"])
        }
        let installed = RootType.allCases.reduce(0) { $0 + store.roots(id, $1).count }
        guard installed < maxStoredRoots else { return .answer(["status": "Rejected"]) }
        if additionalRootCheck, type == .centralSystem {
            let current = store.roots(id, .centralSystem).map(\.certificate) + provisionedRoots
            // M05.FR.09/10: a new CSMS root must be signed by the one it replaces.
            let vouched = current.contains { $0.subject == certificate.issuer && $0.publicKey.isValidSignature(certificate.signature, for: certificate) }
            guard current.isEmpty || vouched else { return .answer(["status": "Rejected"]) }
        }
        do {
            try store.addRoot(id, type, certificate: certificate)
        } catch {
            session.logger.error("could not store a root certificate", metadata: ["error": "\(error)"])
            return .answer(["status": "Failed"])
        }
        session.logger.notice("root certificate installed", metadata: ["type": "\(type.rawValue)", "subject": "\(certificate.subject)"])
        return .answer(["status": "Accepted"])
    }

    private func deleteCertificate(_ payload: JSONValue, _ session: any SessionContext) -> Verdict {
        let id = session.chargerId
        guard let data = payload["certificateHashData"], let wanted = hashData(from: data) else {
            return .answerError(.formatViolation(for: session.version), "certificateHashData is required")
        }
        // M04.FR.05: the charge point certificate itself cannot be deleted.
        let chain = store.currentChain(id)
        if let leaf = chain.first, CertificateTools.hashData(of: leaf, issuer: chain.dropFirst().first ?? leaf).matches(wanted) {
            return .answer(["status": "Failed"])
        }
        if provisionedRoots.contains(where: { CertificateTools.hashData(of: $0).matches(wanted) }) {
            // Provisioned by the operator in north.ca_file; OCPP cannot remove it.
            return .answer(["status": "Failed"])
        }
        for type in RootType.allCases {
            for root in store.roots(id, type) where CertificateTools.hashData(of: root.certificate).matches(wanted) {
                if type == .centralSystem, isInUse(root.certificate, session) { return .answer(["status": "Failed"]) }
                guard unlink(root.path) == 0 else { return .answer(["status": "Failed"]) }
                session.logger.notice("root certificate deleted", metadata: ["type": "\(type.rawValue)", "subject": "\(root.certificate.subject)"])
                return .answer(["status": "Accepted"])
            }
        }
        return .answer(["status": "NotFound"])
    }

    /// M04.FR.06: a CentralSystemRootCertificate that anchors the CSMS certificate of the current link.
    private func isInUse(_ root: Certificate, _ session: any SessionContext) -> Bool {
        guard let der = session.northPeerCertificate, let peer = try? Certificate(derEncoded: der) else { return false }
        return root == peer || (root.subject == peer.issuer && root.publicKey.isValidSignature(peer.signature, for: peer))
    }

    private func installedCertificateIds(_ payload: JSONValue, _ session: any SessionContext) -> Verdict {
        guard let type = rootType(payload) else {
            return .answerError(.formatViolation(for: session.version), "certificateType must be CentralSystemRootCertificate or ManufacturerRootCertificate")
        }
        var certificates = store.roots(session.chargerId, type).map(\.certificate)
        if type == .centralSystem { certificates = provisionedRoots + certificates }
        guard !certificates.isEmpty else { return .answer(["status": "NotFound"]) }
        let hashes = certificates.map { certificate in
            JSONValue.object(CertificateTools.hashData(of: certificate).json.sorted { $0.key < $1.key }.map { ($0.key, .string($0.value)) })
        }
        return .answer(["status": "Accepted", "certificateHashData": .array(hashes)])
    }

    private func hashData(from value: JSONValue) -> CertificateHashData? {
        guard let name = value["issuerNameHash"]?.stringValue, let key = value["issuerKeyHash"]?.stringValue,
              let serial = value["serialNumber"]?.stringValue
        else { return nil }
        return CertificateHashData(hashAlgorithm: value["hashAlgorithm"]?.stringValue ?? "SHA256", issuerNameHash: name.lowercased(),
                                   issuerKeyHash: key.lowercased(), serialNumber: serial.lowercased())
    }

    // MARK: Configuration keys the gateway owns (whitepaper §7)

    static let ownedKeys: Set<String> = [
        "SecurityProfile", "AuthorizationKey", "CpoName", "CertificateSignedMaxChainSize", "CertificateStoreMaxLength",
        "AdditionalRootCertificateCheck",
    ]

    /// The gateway's keys as GetConfiguration reports them (AuthorizationKey is write-only, never read back).
    func configurationEntries(_ id: String, only wanted: Set<String>?) -> [JSONValue] {
        var entries: [(String, Bool, String?)] = [
            ("SecurityProfile", false, String(effectiveProfile(id))),
            ("CpoName", false, cpoName(id)),
            ("CertificateSignedMaxChainSize", true, String(maxChainSize)),
            ("CertificateStoreMaxLength", true, String(maxStoredRoots)),
            ("AdditionalRootCertificateCheck", true, additionalRootCheck ? "true" : "false"),
        ]
        if let wanted { entries = entries.filter { wanted.contains($0.0) } }
        return entries.map { key, readonly, value in
            var entry: JSONValue = ["key": .string(key), "readonly": .bool(readonly)]
            if let value { entry["value"] = .string(value) }
            return entry
        }
    }

    private func getConfiguration(_ envelope: Envelope, _ session: any SessionContext) -> Verdict {
        let requested = envelope.payload()["key"]?.arrayValue?.compactMap(\.stringValue) ?? []
        let id = session.chargerId
        if requested.isEmpty {
            // All keys: the charger's, then ours merged into its answer.
            session[ConfigurationRequests.self, default: [:]][envelope.messageId] = .some(nil)
            return .forward
        }
        let ours = Set(requested).intersection(Self.ownedKeys)
        if ours.isEmpty { return .forward }
        let theirs = requested.filter { !Self.ownedKeys.contains($0) }
        if theirs.isEmpty {
            let unknown = ours.contains("AuthorizationKey") ? [JSONValue.string("AuthorizationKey")] : []
            return .answer(["configurationKey": .array(configurationEntries(id, only: ours)), "unknownKey": .array(unknown)])
        }
        session[ConfigurationRequests.self, default: [:]][envelope.messageId] = .some(ours)
        var payload = envelope.payload()
        payload["key"] = .array(theirs.map { .string($0) })
        return .forward(modifiedPayload: payload)
    }

    private func mergeConfiguration(_ envelope: Envelope, _ session: any SessionContext) -> Verdict {
        guard let wanted = session[ConfigurationRequests.self]?.removeValue(forKey: envelope.messageId) else { return .forward }
        var payload = envelope.payload()
        var keys = payload["configurationKey"]?.arrayValue ?? []
        // The charger's own copy of a key the gateway owns would be stale: ours wins.
        keys.removeAll { Self.ownedKeys.contains($0["key"]?.stringValue ?? "") }
        keys += configurationEntries(session.chargerId, only: wanted)
        payload["configurationKey"] = .array(keys)
        return .forward(modifiedPayload: payload)
    }

    private func changeConfiguration(_ payload: JSONValue, _ session: any SessionContext) -> Verdict {
        guard let key = payload["key"]?.stringValue, Self.ownedKeys.contains(key) else { return .forward }
        let value = payload["value"]?.stringValue ?? ""
        let id = session.chargerId
        switch key {
        case "SecurityProfile":
            return changeSecurityProfile(to: Int(value), session)
        case "AuthorizationKey":
            // A00.FR.205: 16 to 20 bytes, as up to 40 hexadecimal digits. Never logged (A01.FR.12).
            guard (32...40).contains(value.count), value.allSatisfy(\.isHexDigit) else { return .answer(["status": "Rejected"]) }
            do {
                try store.update(id) { $0.authorizationKey = value }
            } catch {
                return .answer(["status": "Rejected"])
            }
            session.logger.notice("AuthorizationKey changed (value not logged)")
            events.raise(.reconfigurationOfSecurityParameters, techInfo: "AuthorizationKey changed", in: session)
            return .answer(["status": "Accepted"])
        case "CpoName":
            guard !value.isEmpty, value.count <= 64 else { return .answer(["status": "Rejected"]) }
            do {
                try store.update(id) { $0.cpoName = value }
            } catch {
                return .answer(["status": "Rejected"])
            }
            return .answer(["status": "Accepted"])
        default:
            return .answer(["status": "Rejected"])  // read-only keys
        }
    }

    /// A05: only upwards, only with its prerequisites, and only kept if the new link works.
    private func changeSecurityProfile(to requested: Int?, _ session: any SessionContext) -> Verdict {
        let id = session.chargerId
        let current = effectiveProfile(id)
        guard let requested, (0...3).contains(requested) else { return .answer(["status": "Rejected"]) }
        func refuse(_ why: String) -> Verdict {
            session.logger.warning("SecurityProfile change refused", metadata: ["from": "\(current)", "to": "\(requested)", "why": "\(why)"])
            return .answer(["status": "Rejected"])
        }
        guard requested > current else { return refuse("a security profile can only be raised (A05.FR.01)") }
        let now = Date(timeIntervalSince1970: session.wallTime)
        let roots = provisionedRoots + store.roots(id, .centralSystem).map(\.certificate)
        guard requested < 2 || roots.contains(where: { $0.notValidAfter > now }) else {
            return refuse("no valid CentralSystemRootCertificate installed (A05.FR.03)")
        }
        if requested == 3 {
            guard let leaf = store.currentChain(id).first, leaf.notValidBefore <= now, leaf.notValidAfter > now else {
                return refuse("no valid charge point certificate installed (A05.FR.04)")
            }
        }
        if requested == 2, store.settings(id).authorizationKey == nil, current < 2 {
            return refuse("no AuthorizationKey (A05.FR.02)")
        }
        session.schedule(after: .zero) {
            relink(session, profile: requested, because: "SecurityProfile \(current) → \(requested)") {
                do {
                    try store.update(id) { $0.securityProfile = requested }
                } catch {
                    session.logger.error("could not persist the new security profile", metadata: ["error": "\(error)"])
                }
                events.raise(.reconfigurationOfSecurityParameters, techInfo: "SecurityProfile \(current) → \(requested)", in: session)
            }
        }
        return .answer(["status": "Accepted"])
    }

    private func rememberSerialNumber(_ payload: JSONValue, _ session: any SessionContext) {
        guard let serial = payload["chargePointSerialNumber"]?.stringValue ?? payload["chargeBoxSerialNumber"]?.stringValue,
              store.settings(session.chargerId).serialNumber != serial
        else { return }
        let store = self.store
        let id = session.chargerId
        Task.detached { try? store.update(id) { $0.serialNumber = serial } }
    }
}

extension CertificateHashData {
    func matches(_ other: CertificateHashData) -> Bool {
        issuerNameHash == other.issuerNameHash && issuerKeyHash == other.issuerKeyHash
            && serialNumber.trimmingLeadingZeros == other.serialNumber.trimmingLeadingZeros
    }
}

extension String {
    var trimmingLeadingZeros: String {
        let trimmed = drop { $0 == "0" }
        return trimmed.isEmpty ? "0" : String(trimmed)
    }
}
