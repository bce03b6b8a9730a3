public import Foundation
import Crypto
import _CryptoExtras
import Logging
import OCPP
import StageKit
import Synchronization
import SwiftASN1
import X509

/// The operator's view of the chargers' identities, for `ocpp-gateway certs …`.
public struct CertificateInventory {
    public struct Entry: Sendable {
        public var chargerId: String
        public var subject: String?
        public var issuer: String?
        public var notAfter: Date?
        public var keyType: String?
        public var securityProfile: Int
        public var hasPendingKey: Bool
        /// Why `settings.json` could not be read (the profile shown is then the one it cannot be lower than).
        public var settingsProblem: String?
        /// Group/other permission bits of `key.pem` when it is not private (the gateway refuses such a key).
        public var exposedKeyMode: String?
    }

    public struct Root: Sendable {
        public var type: String
        public var subject: String
        public var notAfter: Date
        public var serialNumber: String
        public var provisioned: Bool
    }

    let store: IdentityStore
    let defaultProfile: Int
    let provisionedRoots: [Certificate]

    public init(stateDirectory: String, northSecurityProfile: Int, caFile: String?) {
        store = IdentityStore(stateDirectory: stateDirectory,
                              files: StageStore(stateDirectory: stateDirectory, logger: Logger(label: "certs", factory: { _ in SwiftLogNoOpLogHandler() })))
        defaultProfile = northSecurityProfile
        provisionedRoots = caFile.flatMap { try? AtomicFile.read($0) }.map { CertificateTools.parseChain(String(decoding: $0, as: UTF8.self)) } ?? []
    }

    /// Checks a charger id given on the command line (the gateway's rule for ids).
    func check(_ id: String) throws {
        if let problem = ChargerIdentity.problem(with: id) { throw StoreError("invalid charge point id: \(problem)") }
    }

    /// Waits until the writes queued by `body` are on disk; throws the first failure.
    private func writing(_ body: (@escaping WriteCompletion) throws -> Void) throws {
        let outcome = Mutex<Result<Void, StateStoreError>?>(nil)
        try body { result in outcome.withLock { $0 = result } }
        store.files.flushSynchronously()
        if case .failure(let error)? = outcome.withLock({ $0 }) { throw error }
    }

    public var chargerIds: [String] {
        let folder = store.paths.stateDirectory + "/chargers"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
    }

    public func entry(_ id: String) -> Entry {
        let leaf = store.currentChain(id).first
        let settings = store.loadSettings(id)
        var problem: String?
        var profile = defaultProfile
        switch settings {
        case .success(let settings): profile = max(defaultProfile, settings.securityProfile ?? 0)
        case .failure(let error):
            problem = error.reason
            if leaf != nil { profile = max(defaultProfile, 3) }
        }
        return Entry(chargerId: id, subject: leaf.map { "\($0.subject)" }, issuer: leaf.map { "\($0.issuer)" },
                     notAfter: leaf?.notValidAfter, keyType: leaf.map { Self.describe($0.publicKey) },
                     securityProfile: profile, hasPendingKey: store.keys.pendingKey(chargerId: id) != nil,
                     settingsProblem: problem, exposedKeyMode: store.keyExposure(id).map { "0" + String($0, radix: 8) })
    }

    static func describe(_ key: Certificate.PublicKey) -> String {
        if P256.Signing.PublicKey(key) != nil { return "EC P-256" }
        if P384.Signing.PublicKey(key) != nil { return "EC P-384" }
        if P521.Signing.PublicKey(key) != nil { return "EC P-521" }
        if let rsa = _RSA.Signing.PublicKey(key) { return "RSA \(rsa.keySizeInBits)" }
        return "other"
    }

    /// A new pending key and its CSR, for manual enrolment; the key stays in the state directory.
    public func makeCSR(chargerId: String, cpoName: String, commonName: String?, keyType: KeyType = .ecP256) throws -> String {
        try check(chargerId)
        let made = Mutex<Result<Certificate.PrivateKey, any Error>?>(nil)
        store.keys.generatePendingKey(chargerId: chargerId, type: keyType) { result in made.withLock { $0 = result } }
        store.files.flushSynchronously()
        guard let key = try made.withLock({ $0 })?.get() else { throw StoreError("no key was made") }
        try writing { done in store.updateSettings(chargerId, { if $0.cpoName == nil { $0.cpoName = cpoName } }, completion: done) }
        return try CertificateTools.makeCSR(commonName: commonName ?? chargerId, organization: cpoName, key: key, type: keyType)
    }

    /// Installs a certificate (chain) only if it belongs to the charger's pending or current key.
    public func importCertificate(chargerId: String, pem: String) throws -> String {
        try check(chargerId)
        let chain = CertificateTools.parseChain(pem)
        guard let leaf = chain.first else { throw StoreError("no PEM certificate in the file") }
        if let pending = store.keys.pendingKey(chargerId: chargerId), pending.publicKey == leaf.publicKey {
            try writing { done in try store.installSignedChain(chargerId, pem: pem, completion: done) }
            return "installed for the pending key; the previous identity is kept as fallback"
        }
        if let currentPEM = try AtomicFile.read(store.keys.currentKeyPath(chargerId: chargerId)),
           let current = try? Certificate.PrivateKey(pemEncoded: String(decoding: currentPEM, as: UTF8.self)), current.publicKey == leaf.publicKey {
            try writing { done in store.replaceCertificate(chargerId, pem: pem, completion: done) }
            return "installed for the current key"
        }
        throw StoreError("the certificate does not match \(chargerId)'s pending or current key; nothing changed")
    }

    public func roots(_ id: String) -> [Root] {
        var roots = provisionedRoots.map { root(.centralSystem, $0, provisioned: true) }
        for type in RootType.allCases {
            roots += store.roots(id, type).map { root(type, $0.certificate, provisioned: false) }
        }
        return roots
    }

    private func root(_ type: RootType, _ certificate: Certificate, provisioned: Bool) -> Root {
        Root(type: type.rawValue, subject: "\(certificate.subject)", notAfter: certificate.notValidAfter,
             serialNumber: CertificateTools.hashData(of: certificate).serialNumber, provisioned: provisioned)
    }
}
