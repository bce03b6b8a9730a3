import Crypto
import _CryptoExtras
import Foundation
import SwiftASN1
public import X509

/// Key algorithms a charger identity can use (Security Whitepaper §4.2: RSA ≥ 2048, EC ≥ 224).
public enum KeyType: String, Decodable, Sendable, CaseIterable {
    case ecP256 = "ec-p256"
    case ecP384 = "ec-p384"
    case rsa2048 = "rsa-2048"
    case rsa3072 = "rsa-3072"

    /// RSA generation takes long enough that it must not run on an event loop.
    var isSlowToGenerate: Bool { self == .rsa2048 || self == .rsa3072 }

    var signatureAlgorithm: Certificate.SignatureAlgorithm {
        switch self {
        case .ecP256: .ecdsaWithSHA256
        case .ecP384: .ecdsaWithSHA384
        case .rsa2048, .rsa3072: .sha256WithRSAEncryption
        }
    }
}

/// Where private keys live. The file provider keeps them as PEM files (0600) in the state
/// directory; a PKCS#11 or TPM provider would hand out keys that only sign, via NIOSSL's custom key hook.
public protocol KeyProvider: Sendable {
    /// Makes the key pair for a CSR and keeps it as the charger's pending key.
    func generatePendingKey(chargerId: String, type: KeyType) throws -> Certificate.PrivateKey
    func pendingKey(chargerId: String) -> Certificate.PrivateKey?
    /// The pending key becomes the current one; the current one is kept as the previous.
    func promotePendingKey(chargerId: String) throws
    /// The current key as NIOSSL loads it for the north TLS handshake.
    func currentKeyPath(chargerId: String) -> String
}

/// The file layout of one charger's identity under `<state_dir>/chargers/<id>/`:
/// `key.pem`, `cert.pem`, `previous-key.pem`, `previous-cert.pem`, `pending-key.pem`,
/// `settings.json` (security profile, AuthorizationKey, CpoName; 0600), and
/// `roots/<CertificateType>/<hash>.pem`.
public struct IdentityPaths: Sendable {
    public let stateDirectory: String
    public init(stateDirectory: String) { self.stateDirectory = stateDirectory }

    public func folder(_ id: String) -> String { stateDirectory + "/chargers/" + Self.safe(id) }
    public func key(_ id: String) -> String { folder(id) + "/key.pem" }
    public func certificate(_ id: String) -> String { folder(id) + "/cert.pem" }
    func previousKey(_ id: String) -> String { folder(id) + "/previous-key.pem" }
    func previousCertificate(_ id: String) -> String { folder(id) + "/previous-cert.pem" }
    func pendingKey(_ id: String) -> String { folder(id) + "/pending-key.pem" }
    func settings(_ id: String) -> String { folder(id) + "/settings.json" }
    func roots(_ id: String, _ type: RootType) -> String { folder(id) + "/roots/" + type.rawValue }

    /// Charge point ids become folder names: nothing may climb out of the state directory.
    static func safe(_ id: String) -> String {
        let cleaned = id.replacingOccurrences(of: "/", with: "%2F")
        return cleaned == "." || cleaned == ".." ? "%2E" + cleaned.dropFirst() : cleaned
    }
}

public struct FileKeyProvider: KeyProvider {
    let paths: IdentityPaths
    public init(paths: IdentityPaths) { self.paths = paths }

    public func generatePendingKey(chargerId: String, type: KeyType) throws -> Certificate.PrivateKey {
        let key: Certificate.PrivateKey
        let pem: String
        switch type {
        case .ecP256:
            let k = P256.Signing.PrivateKey()
            (key, pem) = (Certificate.PrivateKey(k), k.pemRepresentation)
        case .ecP384:
            let k = P384.Signing.PrivateKey()
            (key, pem) = (Certificate.PrivateKey(k), k.pemRepresentation)
        case .rsa2048, .rsa3072:
            let k = try _RSA.Signing.PrivateKey(keySize: type == .rsa2048 ? .bits2048 : .bits3072)
            (key, pem) = (Certificate.PrivateKey(k), k.pemRepresentation)
        }
        try AtomicFile.write(Data(pem.utf8), to: paths.pendingKey(chargerId), mode: 0o600)
        return key
    }

    public func pendingKey(chargerId: String) -> Certificate.PrivateKey? {
        AtomicFile.read(paths.pendingKey(chargerId)).flatMap { try? Certificate.PrivateKey(pemEncoded: $0) }
    }

    public func promotePendingKey(chargerId: String) throws {
        guard let pending = AtomicFile.read(paths.pendingKey(chargerId)) else { throw StoreError("no pending key for \(chargerId)") }
        if let current = AtomicFile.read(paths.key(chargerId)) {
            try AtomicFile.write(Data(current.utf8), to: paths.previousKey(chargerId), mode: 0o600)
        }
        try AtomicFile.write(Data(pending.utf8), to: paths.key(chargerId), mode: 0o600)
        unlink(paths.pendingKey(chargerId))
    }

    public func currentKeyPath(chargerId: String) -> String { paths.key(chargerId) }
}

/// The two root stores of the Security Whitepaper.
public enum RootType: String, Sendable, CaseIterable {
    case centralSystem = "CentralSystemRootCertificate"
    case manufacturer = "ManufacturerRootCertificate"
}

/// Settings the gateway keeps for a charger, as OCPP configuration keys the CSMS can read and write.
struct ChargerSettings: Codable, Equatable {
    var securityProfile: Int?
    var authorizationKey: String?
    var cpoName: String?
    var serialNumber: String?
}

/// One charger's certificates and settings on disk. All reads and writes go through here.
public struct IdentityStore: Sendable {
    public let paths: IdentityPaths
    public let keys: any KeyProvider

    public init(paths: IdentityPaths, keys: any KeyProvider) {
        self.paths = paths
        self.keys = keys
    }

    public func currentChain(_ id: String) -> [Certificate] {
        AtomicFile.read(paths.certificate(id)).map(CertificateTools.parseChain) ?? []
    }

    func settings(_ id: String) -> ChargerSettings {
        guard let data = FileManager.default.contents(atPath: paths.settings(id)),
              let settings = try? JSONDecoder().decode(ChargerSettings.self, from: data)
        else { return ChargerSettings() }
        return settings
    }

    func update(_ id: String, _ change: (inout ChargerSettings) -> Void) throws {
        var settings = settings(id)
        change(&settings)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try AtomicFile.write(try encoder.encode(settings), to: paths.settings(id), mode: 0o600)
    }

    /// Installs a signed chain for the pending key: the old identity becomes the fallback.
    func installSignedChain(_ id: String, pem: String) throws {
        if let current = AtomicFile.read(paths.certificate(id)) {
            try AtomicFile.write(Data(current.utf8), to: paths.previousCertificate(id), mode: 0o644)
        }
        try keys.promotePendingKey(chargerId: id)
        try AtomicFile.write(Data(pem.utf8), to: paths.certificate(id), mode: 0o644)
    }

    // MARK: Roots

    struct InstalledRoot {
        let type: RootType
        let certificate: Certificate
        let path: String
    }

    func roots(_ id: String, _ type: RootType) -> [InstalledRoot] {
        let folder = paths.roots(id, type)
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".pem") }.sorted()
        return files.compactMap { file in
            guard let pem = AtomicFile.read(folder + "/" + file), let certificate = try? Certificate(pemEncoded: pem) else { return nil }
            return InstalledRoot(type: type, certificate: certificate, path: folder + "/" + file)
        }
    }

    func addRoot(_ id: String, _ type: RootType, certificate: Certificate) throws {
        let name = CertificateTools.hashData(of: certificate).serialNumber
        let pem = try certificate.serializeAsPEM().pemString + "\n"
        try AtomicFile.write(Data(pem.utf8), to: paths.roots(id, type) + "/\(name).pem", mode: 0o644)
    }
}
