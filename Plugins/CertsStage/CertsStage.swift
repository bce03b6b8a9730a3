import Crypto
import Logging
import Foundation
public import OCPP
public import StageKit
import Synchronization
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
        public var renewBeforeDays: Positive<Int>?
        /// Seconds before retrying a renewal the CSMS did not accept (doubles up to a day).
        public var renewalRetry: Positive<Double>?
        public var certificateSignedMaxChainSize: Positive<Int>?
        public var certificateStoreMaxLength: Positive<Int>?
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
    let logger: Logger
    /// Chargers whose key.pem was refused for its permissions (logged once until it is fixed).
    let exposedKeys = ExposedKeys()

    public init(configuration: Configuration, context: StageSetupContext) throws {
        store = IdentityStore(stateDirectory: context.stateDirectory, files: context.store)
        events = SecurityEventOutbox(files: context.store, logger: context.logger)
        logger = context.logger
        configuredProfile = context.north.securityProfile
        provisionedRoots = try context.north.caFile.map { file in
            guard let pem = try? AtomicFile.read(file) else { throw StoreError("cannot read north.ca_file \(file)") }
            return CertificateTools.parseChain(String(decoding: pem, as: UTF8.self))
        } ?? []
        chargerAnchors = try configuration.chargerCaFile.map { file in
            let path = file.hasPrefix("/") ? file : context.stateDirectory + "/" + file
            guard let pem = try? AtomicFile.read(path) else { throw ConfigurationKeyError(key: "charger_ca_file", "\(path) cannot be read") }
            let certificates = CertificateTools.parseChain(String(decoding: pem, as: UTF8.self))
            guard !certificates.isEmpty else { throw ConfigurationKeyError(key: "charger_ca_file", "\(path) holds no certificate") }
            return certificates
        } ?? []
        defaultCpoName = configuration.cpoName
        commonNameSource = configuration.commonName ?? .identity
        keyType = configuration.keyType ?? .ecP256
        // Ranges (> 0) are checked while the configuration is decoded, at each key's position.
        renewBefore = Double(configuration.renewBeforeDays?.value ?? 30) * 86400
        renewalRetry = configuration.renewalRetry?.value ?? 3600
        maxChainSize = configuration.certificateSignedMaxChainSize?.value ?? 10_000
        maxStoredRoots = configuration.certificateStoreMaxLength?.value ?? 20
        additionalRootCheck = configuration.additionalRootCertificateCheck ?? false
        if let name = configuration.cpoName, name.isEmpty || name.count > 64 {
            throw ConfigurationKeyError(key: "cpo_name", "must be 1 to 64 characters (CpoName)")
        }
    }

    // MARK: Frames

    public func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        // A 2.0.1 station runs its own certificate flows (Passthrough201.swift): observed, never answered.
        if envelope.version == .v201 { return observe201(envelope, session) }
        switch (envelope.direction, envelope.messageType, envelope.action ?? "") {
        case (.fromCSMS, .call, "ExtendedTriggerMessage"): return extendedTrigger(envelope.payload(), session)
        case (.fromCSMS, .call, "CertificateSigned"): return certificateSigned(envelope, session)
        case (.fromCSMS, .call, "InstallCertificate"): return installCertificate(envelope, session)
        case (.fromCSMS, .call, "DeleteCertificate"): return deleteCertificate(envelope, session)
        case (.fromCSMS, .call, "GetInstalledCertificateIds"): return installedCertificateIds(envelope.payload(), session)
        case (.fromCSMS, .call, "ChangeConfiguration"): return changeConfiguration(envelope, session)
        case (.fromCSMS, .call, "GetConfiguration"): return getConfiguration(envelope, session)
        case (.fromCharger, .callResult, "GetConfiguration"): return mergeConfiguration(envelope, session)
        case (.fromCharger, .call, "BootNotification"):
            rememberSerialNumber(envelope.payload(), session)
            return .forward
        case (.fromCSMS, .callResult, "BootNotification"):
            // The charger has booted and the CSMS took it in: that, not a (re)connection, is a startup.
            if envelope.payload()["status"]?.stringValue == "Accepted" {
                events.raise(.startupOfTheDevice, techInfo: "legacy charger booted (BootNotification accepted)", in: session)
            }
            return .forward
        default: return .forward
        }
    }

    public func amendNorthCredentials(_ credentials: NorthCredentials, for chargerId: String) -> NorthCredentials {
        var amended = credentials
        let settings = store.settings(chargerId)
        amended.securityProfile = max(credentials.securityProfile, effectiveProfile(chargerId))
        if amended.securityProfile == 3 {
            amended.certificatePath = store.paths.certificate(chargerId)
            amended.privateKeyPath = usableKeyPath(chargerId)
        }
        if amended.securityProfile == 2, let key = settings.authorizationKey {
            amended.basicAuth = BasicCredentials(username: chargerId, password: key)
        }
        return amended
    }

    /// The charger's key file for the north TLS handshake, or nil when it is readable by group or
    /// others: such a key is refused (the north link then fails and the charger gets 502), with an
    /// error that says how to fix it and a security event, rather than used.
    func usableKeyPath(_ chargerId: String) -> String? {
        let path = store.keys.currentKeyPath(chargerId: chargerId)
        guard let exposure = store.keyExposure(chargerId) else {
            exposedKeys.fixed(chargerId)
            return path
        }
        if exposedKeys.firstReport(chargerId) {
            let mode = String(exposure, radix: 8)
            logger.error("refusing the charger's private key: it is readable or writable by group or others; run chmod 600 on it", metadata: [
                "charger": "\(chargerId)", "file": "\(path)", "group_other_bits": "0\(mode)",
            ])
            events.record(.reconfigurationOfSecurityParameters,
                          techInfo: "private key file refused: group/other permission bits 0\(mode); chmod 600 key.pem",
                          chargerId: chargerId, at: Date().timeIntervalSince1970)
        }
        return nil
    }

    public func northConnectionFailed(chargerId: String, failure: NorthFailure) {
        let event: SecurityEvent
        switch failure.kind {
        case .untrustedCentralSystemCertificate: event = .invalidCentralSystemCertificate
        case .tlsVersion: event = .invalidTLSVersion
        case .other: return
        }
        // The write itself is queued to the state store's writer, off whichever thread reported the failure.
        events.record(event, techInfo: failure.detail, chargerId: chargerId, at: Date().timeIntervalSince1970)
    }

    /// Leaving service: what is queued for the disk gets there.
    public func shutdown() async {
        await store.files.flush()
    }

    public func sessionStarted(_ session: any SessionContext) {
        // The gateway holds no identity for a 2.0.1 station: no renewal, no events of its own.
        guard session.version == .v16 else { return }
        events.flush(in: session)
        if let problem = store.takeUnreportedSettingsProblem(session.chargerId) {
            session.logger.error("settings.json is unreadable: keeping the security profile it cannot lower, refusing changes until it is fixed",
                                 metadata: ["error": "\(problem)", "security_profile": "\(effectiveProfile(session.chargerId))"])
            events.raise(.reconfigurationOfSecurityParameters,
                         techInfo: "settings.json unreadable; security profile kept at \(effectiveProfile(session.chargerId)), changes refused",
                         in: session)
        }
        checkRenewal(session)
    }
    /// The status page: the expiry of the charger's north certificate (one small file of the state store),
    /// and whether a CSR is out.
    public func status(in session: any SessionContext) -> [String: String] {
        var fields: [String: String] = [:]
        if let notValidAfter = store.currentLeafExpiry(session.chargerId) {
            fields["certificate_expiry"] = notValidAfter.formatted(.iso8601)
        }
        if session[CSRInFlight.self] == true { fields["csr"] = "pending" }
        return fields
    }

    /// A CSR is out and its certificate not yet installed.
    enum CSRInFlight: SessionStateKey { typealias Value = Bool }
    enum RenewalAttempts: SessionStateKey { typealias Value = Int }
    /// GetConfiguration requests forwarded to the charger whose answers get the gateway's keys merged in.
    enum ConfigurationRequests: SessionStateKey { typealias Value = [String: Set<String>?] }

    /// The security profile the charger's north link uses. When `settings.json` is unreadable and no
    /// good copy is known, it is never lowered: with a certificate installed the charger may have been
    /// raised to 3, so 3 it is.
    func effectiveProfile(_ id: String) -> Int {
        switch store.loadSettings(id) {
        case .success(let settings): max(configuredProfile, settings.securityProfile ?? 0)
        case .failure: store.currentChain(id).isEmpty ? configuredProfile : max(configuredProfile, 3)
        }
    }
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
        // Key generation and the key file write leave the event loop; the CSR comes back to it
        // once the pending key is on disk.
        Task.detached {
            store.keys.generatePendingKey(chargerId: id, type: keyType) { made in
                let result = Result { try CertificateTools.makeCSR(commonName: commonName, organization: organization, key: made.get(), type: keyType) }
                handle.run { session in sendCSR(result, session) }
            }
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

    private func certificateSigned(_ envelope: Envelope, _ session: any SessionContext) -> Verdict {
        let payload = envelope.payload()
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
        // The files are written off the event loop; the CSMS is answered once they are on disk.
        let messageId = envelope.messageId
        let handle = session.handle
        let notBefore = leaf.notValidBefore
        let notAfter = leaf.notValidAfter
        let installed: WriteCompletion = { result in
            handle.run { session in installedSignedChain(result, messageId: messageId, notBefore: notBefore, notAfter: notAfter, session) }
        }
        do {
            try store.installSignedChain(id, pem: pem, completion: installed)
        } catch {
            session.logger.error("could not store the signed certificate", metadata: ["error": "\(error)"])
            return .answer(["status": "Rejected"])
        }
        return .answerLater
    }

    private func installedSignedChain(_ result: Result<Void, StateStoreError>, messageId: String, notBefore: Date, notAfter: Date,
                                      _ session: any SessionContext) {
        if case .failure(let error) = result {
            session.logger.error("could not store the signed certificate", metadata: ["error": "\(error)"])
            session.answer(messageId, to: .csms, with: ["status": "Rejected"], error: nil)
            return
        }
        session[CSRInFlight.self] = false
        session[RenewalAttempts.self] = 0
        session.logger.notice("new charger certificate installed", metadata: [
            "not_before": "\(notBefore)", "not_after": "\(notAfter)",
        ])
        session.answer(messageId, to: .csms, with: ["status": "Accepted"], error: nil)
        // A02.FR.08: in use from its notBefore; with profile 3 the north link moves over without dropping the charger.
        if effectiveProfile(session.chargerId) == 3 {
            let wait = max(0, notBefore.timeIntervalSince1970 - session.wallTime)
            session.schedule(after: .milliseconds(Int64(wait * 1000))) { relink(session, profile: 3, because: "new charger certificate") }
        }
    }

    private func relink(_ session: any SessionContext, profile: Int, because reason: String, onSuccess: (() -> Void)? = nil) {
        var credentials = NorthCredentials(securityProfile: profile)
        credentials = amendNorthCredentials(credentials, for: session.chargerId)
        credentials.securityProfile = profile
        if profile == 3 {
            credentials.certificatePath = store.paths.certificate(session.chargerId)
            credentials.privateKeyPath = usableKeyPath(session.chargerId)
            guard credentials.privateKeyPath != nil else {
                session.logger.error("north re-link not attempted: the charger's private key is refused; keeping the previous link",
                                     metadata: ["reason": "\(reason)"])
                events.raise(.reconfigurationOfSecurityParameters, techInfo: "re-link for \(reason) not attempted: key.pem refused", in: session)
                return
            }
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
        if let notValidAfter = store.currentLeafExpiry(session.chargerId) {
            let remaining = notValidAfter.timeIntervalSince1970 - session.wallTime
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
            guard let notValidAfter = store.currentLeafExpiry(session.chargerId),
                  notValidAfter.timeIntervalSince1970 - session.wallTime <= renewBefore
            else { return }
            startCSR(session, reason: "retry \(attempts) of the renewal")
        }
    }

    // MARK: M03 / M04 / M05: the root stores

    private func rootType(_ payload: JSONValue) -> RootType? {
        payload["certificateType"]?.stringValue.flatMap(RootType.init(rawValue:))
    }

    private func installCertificate(_ envelope: Envelope, _ session: any SessionContext) -> Verdict {
        let payload = envelope.payload()
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
        let messageId = envelope.messageId
        let handle = session.handle
        let subject = "\(certificate.subject)"
        do {
            try store.addRoot(id, type, certificate: certificate) { result in
                handle.run { session in
                    switch result {
                    case .success:
                        session.logger.notice("root certificate installed", metadata: ["type": "\(type.rawValue)", "subject": "\(subject)"])
                        session.answer(messageId, to: .csms, with: ["status": "Accepted"], error: nil)
                    case .failure(let error):
                        session.logger.error("could not store a root certificate", metadata: ["error": "\(error)"])
                        session.answer(messageId, to: .csms, with: ["status": "Failed"], error: nil)
                    }
                }
            }
        } catch {
            session.logger.error("could not store a root certificate", metadata: ["error": "\(error)"])
            return .answer(["status": "Failed"])
        }
        return .answerLater
    }

    private func deleteCertificate(_ envelope: Envelope, _ session: any SessionContext) -> Verdict {
        let payload = envelope.payload()
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
                let messageId = envelope.messageId
                let handle = session.handle
                let subject = "\(root.certificate.subject)"
                store.removeRoot(id, root) { result in
                    handle.run { session in
                        switch result {
                        case .success:
                            session.logger.notice("root certificate deleted", metadata: ["type": "\(type.rawValue)", "subject": "\(subject)"])
                            session.answer(messageId, to: .csms, with: ["status": "Accepted"], error: nil)
                        case .failure(let error):
                            session.logger.error("could not delete a root certificate", metadata: ["error": "\(error)"])
                            session.answer(messageId, to: .csms, with: ["status": "Failed"], error: nil)
                        }
                    }
                }
                return .answerLater
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

    static let ownedKeys: [String] = [
        "SecurityProfile", "AuthorizationKey", "CpoName", "CertificateSignedMaxChainSize", "CertificateStoreMaxLength",
        "AdditionalRootCertificateCheck",
    ]

    /// The owned key a name means: OCPP configuration keys (CiString) compare without case.
    static func ownedKey(_ name: String) -> String? {
        ownedKeys.first { $0.caseInsensitiveCompare(name) == .orderedSame }
    }

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
            track(envelope.messageId, nil, session)
            return .forward
        }
        let ours = Set(requested.compactMap(Self.ownedKey))
        if ours.isEmpty { return .forward }
        let theirs = requested.filter { Self.ownedKey($0) == nil }
        if theirs.isEmpty {
            // AuthorizationKey is write-only: asked for, it is reported as unknown (never its value).
            let unknown = ours.contains("AuthorizationKey") ? [JSONValue.string("AuthorizationKey")] : []
            return .answer(["configurationKey": .array(configurationEntries(id, only: ours)), "unknownKey": .array(unknown)])
        }
        track(envelope.messageId, ours, session)
        var payload = envelope.payload()
        payload["key"] = .array(theirs.map { .string($0) })
        return .forward(modifiedPayload: payload)
    }

    /// Remembers a forwarded request; requests whose answers never came (timed out) are forgotten
    /// beyond a few, so a CSMS cannot grow the session's memory.
    private func track(_ messageId: String, _ wanted: Set<String>?, _ session: any SessionContext) {
        var requests = session[ConfigurationRequests.self] ?? [:]
        if requests.count >= 8 { requests.removeAll() }
        requests[messageId] = .some(wanted)
        session[ConfigurationRequests.self] = requests
    }

    /// Every GetConfiguration answer from the charger passes here on its way to the CSMS, whether
    /// or not this stage saw the request (a reload in between, another stage's rewrite): the
    /// charger's copies of the gateway's keys never leave — AuthorizationKey above all (it would
    /// carry the charger's secret in clear) — and the gateway's own values take their place.
    private func mergeConfiguration(_ envelope: Envelope, _ session: any SessionContext) -> Verdict {
        let tracked = session[ConfigurationRequests.self]?.removeValue(forKey: envelope.messageId)
        var payload = envelope.payload()
        let keys = payload["configurationKey"]?.arrayValue ?? []
        let unknown = payload["unknownKey"]?.arrayValue ?? []
        let theirsOfOurs = Set(keys.compactMap { $0["key"]?.stringValue.flatMap(Self.ownedKey) })
        let unknownOfOurs = unknown.contains { $0.stringValue.flatMap(Self.ownedKey) != nil }
        guard tracked != nil || !theirsOfOurs.isEmpty || unknownOfOurs else { return .forward }
        // The charger's own copy of a key the gateway owns would be stale, or secret: ours wins.
        var merged = keys.filter { $0["key"]?.stringValue.flatMap(Self.ownedKey) == nil }
        var unknownKeys = unknown.filter { $0.stringValue.flatMap(Self.ownedKey) == nil }
        let wanted: Set<String>?
        switch tracked {
        case .some(.some(let ours)): wanted = ours
        case .some(.none): wanted = nil
        case .none: wanted = theirsOfOurs.union(unknown.compactMap { $0.stringValue.flatMap(Self.ownedKey) })
        }
        merged += configurationEntries(session.chargerId, only: wanted)
        if wanted?.contains("AuthorizationKey") == true { unknownKeys.append("AuthorizationKey") }
        payload["configurationKey"] = .array(merged)
        if payload["unknownKey"] != nil || !unknownKeys.isEmpty { payload["unknownKey"] = .array(unknownKeys) }
        return .forward(modifiedPayload: payload)
    }

    private func changeConfiguration(_ envelope: Envelope, _ session: any SessionContext) -> Verdict {
        let payload = envelope.payload()
        guard let name = payload["key"]?.stringValue, let key = Self.ownedKey(name) else { return .forward }
        let value = payload["value"]?.stringValue ?? ""
        let id = session.chargerId
        let messageId = envelope.messageId
        let handle = session.handle
        /// Answers once the change is on disk: Accepted, or Rejected if it could not be kept.
        func persist(_ change: (inout ChargerSettings) -> Void, then accepted: @escaping @Sendable (any SessionContext) -> Void) -> Verdict {
            store.updateSettings(id, change) { result in
                handle.run { session in
                    switch result {
                    case .success:
                        session.answer(messageId, to: .csms, with: ["status": "Accepted"], error: nil)
                        accepted(session)
                    case .failure(let error):
                        session.logger.error("configuration key not changed: could not store it", metadata: ["key": "\(key)", "error": "\(error)"])
                        session.answer(messageId, to: .csms, with: ["status": "Rejected"], error: nil)
                    }
                }
            }
            return .answerLater
        }
        switch key {
        case "SecurityProfile":
            return changeSecurityProfile(to: Int(value), session)
        case "AuthorizationKey":
            // A00.FR.205: 16 to 20 bytes, as up to 40 hexadecimal digits. Never logged (A01.FR.12).
            guard (32...40).contains(value.count), value.allSatisfy(\.isHexDigit) else { return .answer(["status": "Rejected"]) }
            let events = self.events
            return persist({ $0.authorizationKey = value }) { session in
                session.logger.notice("AuthorizationKey changed (value not logged)")
                events.raise(.reconfigurationOfSecurityParameters, techInfo: "AuthorizationKey changed", in: session)
            }
        case "CpoName":
            guard !value.isEmpty, value.count <= 64 else { return .answer(["status": "Rejected"]) }
            return persist({ $0.cpoName = value }) { _ in }
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
        if case .failure = store.loadSettings(id) { return refuse("settings.json is unreadable; fix it before changing the profile") }
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
                let logger = session.logger
                store.updateSettings(id, { $0.securityProfile = requested }) { result in
                    if case .failure(let error) = result {
                        logger.error("could not persist the new security profile; it holds until the gateway restarts", metadata: ["error": "\(error)"])
                    }
                }
                events.raise(.reconfigurationOfSecurityParameters, techInfo: "SecurityProfile \(current) → \(requested)", in: session)
            }
        }
        return .answer(["status": "Accepted"])
    }

    private func rememberSerialNumber(_ payload: JSONValue, _ session: any SessionContext) {
        guard let serial = payload["chargePointSerialNumber"]?.stringValue ?? payload["chargeBoxSerialNumber"]?.stringValue,
              serial.count <= 64, store.settings(session.chargerId).serialNumber != serial
        else { return }
        // In memory at once, on disk off the event loop.
        store.updateSettings(session.chargerId) { $0.serialNumber = serial }
    }
}

/// Chargers whose key file was refused for its permissions, so the error is logged once, not on every attempt.
final class ExposedKeys: Sendable {
    private let reported = Mutex<Set<String>>([])
    /// True the first time a charger's key is refused (until it is fixed).
    func firstReport(_ id: String) -> Bool { reported.withLock { $0.insert(id).inserted } }
    func fixed(_ id: String) { _ = reported.withLock { $0.remove(id) } }
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
