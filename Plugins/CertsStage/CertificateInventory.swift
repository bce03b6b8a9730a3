public import Foundation
import Crypto
import _CryptoExtras
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
        let paths = IdentityPaths(stateDirectory: stateDirectory)
        store = IdentityStore(paths: paths, keys: FileKeyProvider(paths: paths))
        defaultProfile = northSecurityProfile
        provisionedRoots = caFile.flatMap(AtomicFile.read).map(CertificateTools.parseChain) ?? []
    }

    public var chargerIds: [String] {
        let folder = store.paths.stateDirectory + "/chargers"
        return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted()
    }

    public func entry(_ id: String) -> Entry {
        let leaf = store.currentChain(id).first
        return Entry(chargerId: id, subject: leaf.map { "\($0.subject)" }, issuer: leaf.map { "\($0.issuer)" },
                     notAfter: leaf?.notValidAfter, keyType: leaf.map { Self.describe($0.publicKey) },
                     securityProfile: max(defaultProfile, store.settings(id).securityProfile ?? 0),
                     hasPendingKey: store.keys.pendingKey(chargerId: id) != nil)
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
        let key = try store.keys.generatePendingKey(chargerId: chargerId, type: keyType)
        try store.update(chargerId) { if $0.cpoName == nil { $0.cpoName = cpoName } }
        return try CertificateTools.makeCSR(commonName: commonName ?? chargerId, organization: cpoName, key: key, type: keyType)
    }

    /// Installs a certificate (chain) only if it belongs to the charger's pending or current key.
    public func importCertificate(chargerId: String, pem: String) throws -> String {
        let chain = CertificateTools.parseChain(pem)
        guard let leaf = chain.first else { throw StoreError("no PEM certificate in the file") }
        if let pending = store.keys.pendingKey(chargerId: chargerId), pending.publicKey == leaf.publicKey {
            try store.installSignedChain(chargerId, pem: pem)
            return "installed for the pending key; the previous identity is kept as fallback"
        }
        if let currentPEM = AtomicFile.read(store.keys.currentKeyPath(chargerId: chargerId)),
           let current = try? Certificate.PrivateKey(pemEncoded: currentPEM), current.publicKey == leaf.publicKey {
            try AtomicFile.write(Data(pem.utf8), to: store.paths.certificate(chargerId), mode: 0o644)
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
