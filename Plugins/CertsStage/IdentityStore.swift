import Crypto
import _CryptoExtras
import Foundation
import Logging
import OCPP
public import StageKit
import Synchronization
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

    /// A new key pair and its PEM (PKCS#8 / SEC1).
    func generate() throws -> (key: Certificate.PrivateKey, pem: String) {
        switch self {
        case .ecP256:
            let k = P256.Signing.PrivateKey()
            return (Certificate.PrivateKey(k), k.pemRepresentation)
        case .ecP384:
            let k = P384.Signing.PrivateKey()
            return (Certificate.PrivateKey(k), k.pemRepresentation)
        case .rsa2048, .rsa3072:
            let k = try _RSA.Signing.PrivateKey(keySize: self == .rsa2048 ? .bits2048 : .bits3072)
            return (Certificate.PrivateKey(k), k.pemRepresentation)
        }
    }
}

/// What a write to a charger's files came to; `completion`s run on the store's writer thread.
public typealias WriteCompletion = @Sendable (Result<Void, StateStoreError>) -> Void

/// Where private keys live. The file provider keeps them as PEM files (0600) in the state
/// directory; a PKCS#11 or TPM provider would hand out keys that only sign, via NIOSSL's custom key hook.
/// Writes never block the caller: they are queued (ordered, off the event loop) and `completion`
/// says how they ended.
public protocol KeyProvider: Sendable {
    /// Makes the key pair for a CSR and keeps it as the charger's pending key. Call it off the event loop.
    func generatePendingKey(chargerId: String, type: KeyType,
                            completion: @escaping @Sendable (Result<Certificate.PrivateKey, any Error>) -> Void)
    func pendingKey(chargerId: String) -> Certificate.PrivateKey?
    /// The pending key becomes the current one; the current one is kept as the previous.
    func promotePendingKey(chargerId: String, completion: @escaping WriteCompletion) throws
    /// The current key as NIOSSL loads it for the north TLS handshake.
    func currentKeyPath(chargerId: String) -> String
}

/// The file layout of one charger's identity under `<state_dir>/chargers/<id>/` (the `StageStore`
/// layout): `key.pem`, `cert.pem`, `previous-key.pem`, `previous-cert.pem`, `pending-key.pem`,
/// `settings.json` (security profile, AuthorizationKey, CpoName), `pending-events.json`, and
/// `roots/<CertificateType>/<hash>.pem`. Every file is written 0600.
public struct IdentityPaths: Sendable {
    public let stateDirectory: String
    public init(stateDirectory: String) { self.stateDirectory = stateDirectory }

    public func folder(_ id: String) -> String { stateDirectory + "/chargers/" + id }
    public func key(_ id: String) -> String { folder(id) + "/" + Name.key }
    public func certificate(_ id: String) -> String { folder(id) + "/" + Name.certificate }
    func roots(_ id: String, _ type: RootType) -> String { folder(id) + "/" + Name.roots(type) }

    /// File names inside a charger's folder.
    enum Name {
        static let key = "key.pem"
        static let certificate = "cert.pem"
        static let previousKey = "previous-key.pem"
        static let previousCertificate = "previous-cert.pem"
        static let pendingKey = "pending-key.pem"
        static let settings = "settings.json"
        static func roots(_ type: RootType) -> String { "roots/" + type.rawValue }
    }
}

public struct FileKeyProvider: KeyProvider {
    let paths: IdentityPaths
    let files: StageStore

    public init(paths: IdentityPaths, files: StageStore) {
        self.paths = paths
        self.files = files
    }

    public func generatePendingKey(chargerId: String, type: KeyType,
                                   completion: @escaping @Sendable (Result<Certificate.PrivateKey, any Error>) -> Void) {
        let made: (key: Certificate.PrivateKey, pem: String)
        do {
            made = try type.generate()
        } catch {
            completion(.failure(error))
            return
        }
        let key = made.key
        files.save(Data(made.pem.utf8), charger: chargerId, name: IdentityPaths.Name.pendingKey) { result in
            completion(result.map { key }.mapError { $0 })
        }
    }

    public func pendingKey(chargerId: String) -> Certificate.PrivateKey? {
        guard let data = try? files.load(charger: chargerId, name: IdentityPaths.Name.pendingKey) else { return nil }
        return try? Certificate.PrivateKey(pemEncoded: String(decoding: data, as: UTF8.self))
    }

    public func promotePendingKey(chargerId: String, completion: @escaping WriteCompletion) throws {
        guard let pending = try files.load(charger: chargerId, name: IdentityPaths.Name.pendingKey) else {
            throw StateStoreError(path: paths.folder(chargerId), reason: "no pending key")
        }
        let batch = WriteBatch()
        if let current = try files.load(charger: chargerId, name: IdentityPaths.Name.key) {
            files.save(current, charger: chargerId, name: IdentityPaths.Name.previousKey, completion: batch.note)
        }
        files.save(pending, charger: chargerId, name: IdentityPaths.Name.key, completion: batch.note)
        files.remove(charger: chargerId, name: IdentityPaths.Name.pendingKey, completion: batch.finish(completion))
    }

    public func currentKeyPath(chargerId: String) -> String { paths.key(chargerId) }
}

/// Collects the outcome of several queued writes; the last one's completion reports the first failure.
/// The store's writer is serial, so the last write queued completes last.
final class WriteBatch: Sendable {
    private let failure = Mutex<StateStoreError?>(nil)

    var note: WriteCompletion {
        { [self] result in
            if case .failure(let error) = result { failure.withLock { if $0 == nil { $0 = error } } }
        }
    }

    func finish(_ completion: @escaping WriteCompletion) -> WriteCompletion {
        { [self] result in
            note(result)
            completion(failure.withLock { $0 }.map { .failure($0) } ?? .success(()))
        }
    }
}

/// The two root stores of the Security Whitepaper.
public enum RootType: String, Sendable, CaseIterable {
    case centralSystem = "CentralSystemRootCertificate"
    case manufacturer = "ManufacturerRootCertificate"
}

/// Settings the gateway keeps for a charger, as OCPP configuration keys the CSMS can read and write.
struct ChargerSettings: Codable, Equatable, Sendable {
    var securityProfile: Int?
    var authorizationKey: String?
    var cpoName: String?
    var serialNumber: String?
}

/// One charger's certificates and settings on disk. All reads and writes go through here, and
/// every write through the gateway's `StageStore`: off the event loop, serialised per gateway,
/// atomic, 0600.
///
/// `settings.json` is read once per gateway run and kept in memory (a reload keeps it). A file
/// that cannot be read or decoded is an error, never "defaults": the last good settings stay in
/// service, changes are refused so the file is not overwritten, and the stage raises a security event.
public struct IdentityStore: Sendable {
    public let paths: IdentityPaths
    public let files: StageStore
    public let keys: any KeyProvider

    public init(stateDirectory: String, files: StageStore, keys: (any KeyProvider)? = nil) {
        paths = IdentityPaths(stateDirectory: stateDirectory)
        self.files = files
        self.keys = keys ?? FileKeyProvider(paths: paths, files: files)
    }

    public func currentChain(_ id: String) -> [Certificate] {
        guard let data = try? files.load(charger: id, name: IdentityPaths.Name.certificate) else { return [] }
        return CertificateTools.parseChain(String(decoding: data, as: UTF8.self))
    }

    /// When the charger's current certificate (the chain's leaf) expires; nil without one. What renewal and
    /// the status page ask at every session start: the chain is parsed again only when the file's bytes
    /// changed (their SHA-256 is kept, with the date, per certificate file), because parsing it made about
    /// 7 % of the gateway's work in a connect storm of 1,000 chargers (`ocpp-bench`, scenario D).
    func currentLeafExpiry(_ id: String) -> Date? {
        guard let data = try? files.load(charger: id, name: IdentityPaths.Name.certificate) else { return nil }
        let digest = Array(SHA256.hash(data: data))
        let file = paths.certificate(id)
        if let known = Self.leafExpiries.withLock({ $0[file] }), known.digest == digest { return known.notValidAfter }
        let notValidAfter = CertificateTools.parseChain(String(decoding: data, as: UTF8.self)).first?.notValidAfter
        Self.leafExpiries.withLock { $0[file] = LeafExpiry(digest: digest, notValidAfter: notValidAfter) }
        return notValidAfter
    }

    struct LeafExpiry: Sendable {
        var digest: [UInt8]
        var notValidAfter: Date?
    }

    /// The leaf's expiry per certificate file, for the whole process (one entry per charger with a
    /// certificate: the chargers are configured, so the table is bounded by the configuration).
    private static let leafExpiries = Mutex<[String: LeafExpiry]>([:])

    // MARK: Settings

    enum Remembered: Sendable {
        case good(ChargerSettings, version: Int)
        /// Unreadable, and no good version was ever read in this run.
        case unreadable(StateStoreError, reported: Bool)
    }

    /// The last good settings of each charger, per settings file, for the whole process.
    private static let remembered = Mutex<[String: Remembered]>([:])

    /// The charger's settings; an error when `settings.json` is unreadable and no good version is known.
    func loadSettings(_ id: String) -> Result<ChargerSettings, StateStoreError> {
        let file = paths.folder(id) + "/" + IdentityPaths.Name.settings
        return Self.remembered.withLock { memory in
            switch memory[file] ?? read(id, into: &memory, file: file) {
            case .good(let settings, _): .success(settings)
            case .unreadable(let error, _): .failure(error)
            }
        }
    }

    private func read(_ id: String, into memory: inout [String: Remembered], file: String) -> Remembered {
        let state: Remembered
        do throws(StateStoreError) {
            state = .good(try files.load(ChargerSettings.self, charger: id, name: IdentityPaths.Name.settings) ?? ChargerSettings(), version: 0)
        } catch {
            state = .unreadable(error, reported: false)
        }
        memory[file] = state
        return state
    }

    /// Settings as far as they are known: the last good ones, or nothing when they are unreadable.
    func settings(_ id: String) -> ChargerSettings { (try? loadSettings(id).get()) ?? ChargerSettings() }

    /// The problem with `settings.json`, once per gateway run (for the security event).
    func takeUnreportedSettingsProblem(_ id: String) -> StateStoreError? {
        let file = paths.folder(id) + "/" + IdentityPaths.Name.settings
        return Self.remembered.withLock { memory in
            guard case .unreadable(let error, reported: false) = memory[file] ?? read(id, into: &memory, file: file) else { return nil }
            memory[file] = .unreadable(error, reported: true)
            return error
        }
    }

    /// Changes the settings in memory at once and on disk off the event loop, in order.
    /// If the write fails, the change is taken back (unless a later change came meanwhile).
    /// Refused (completion with the error, nothing written) while the file is unreadable.
    func updateSettings(_ id: String, _ change: (inout ChargerSettings) -> Void, completion: WriteCompletion? = nil) {
        enum Outcome { case queued, unchanged, refused(StateStoreError) }
        let file = paths.folder(id) + "/" + IdentityPaths.Name.settings
        let files = self.files
        let outcome: Outcome = Self.remembered.withLock { memory in
            let state = memory[file] ?? read(id, into: &memory, file: file)
            guard case .good(let previous, let version) = state else {
                if case .unreadable(let error, _) = state {
                    return .refused(StateStoreError(path: error.path, reason: "not changed: the file is unreadable (\(error.reason))"))
                }
                return .unchanged
            }
            do throws(StateStoreError) {
                _ = try files.path(charger: id, name: IdentityPaths.Name.settings)
            } catch {
                return .refused(error)
            }
            var next = previous
            change(&next)
            guard next != previous else { return .unchanged }
            memory[file] = .good(next, version: version + 1)
            // Queued under the lock, so the file's writes are in the order of the versions.
            files.save(next, charger: id, name: IdentityPaths.Name.settings) { result in
                if case .failure = result {
                    Self.remembered.withLock { memory in
                        if case .good(_, let current)? = memory[file], current == version + 1 {
                            memory[file] = .good(previous, version: version + 2)
                        }
                    }
                }
                completion?(result)
            }
            return .queued
        }
        switch outcome {
        case .queued: break
        case .unchanged: completion?(.success(()))
        case .refused(let error): completion?(.failure(error))
        }
    }

    /// Forgets what was read (tests that edit files behind the store's back, the command line).
    static func forgetSettings(stateDirectory: String) {
        remembered.withLock { memory in memory = memory.filter { !$0.key.hasPrefix(stateDirectory + "/") } }
    }

    // MARK: Certificates

    /// Installs a signed chain for the pending key: the old identity becomes the fallback.
    /// The writes are queued in order (previous-cert, previous-key, key, cert); `completion` says how they ended.
    func installSignedChain(_ id: String, pem: String, completion: @escaping WriteCompletion) throws {
        let batch = WriteBatch()
        if let current = try files.load(charger: id, name: IdentityPaths.Name.certificate) {
            files.save(current, charger: id, name: IdentityPaths.Name.previousCertificate, completion: batch.note)
        }
        try keys.promotePendingKey(chargerId: id, completion: batch.note)
        files.save(Data(pem.utf8), charger: id, name: IdentityPaths.Name.certificate, completion: batch.finish(completion))
    }

    /// Replaces the certificate of the current key (manual import).
    func replaceCertificate(_ id: String, pem: String, completion: @escaping WriteCompletion) {
        files.save(Data(pem.utf8), charger: id, name: IdentityPaths.Name.certificate, completion: completion)
    }

    /// Group or other permission bits of the charger's `key.pem` (e.g. 0o044), nil when it is private or absent.
    func keyExposure(_ id: String) -> mode_t? {
        AtomicFile.exposedModeBits(keys.currentKeyPath(chargerId: id))
    }

    // MARK: Roots

    struct InstalledRoot {
        let type: RootType
        let certificate: Certificate
        /// The file name under the charger's folder, for `removeRoot`.
        let name: String
    }

    func roots(_ id: String, _ type: RootType) -> [InstalledRoot] {
        let folder = paths.roots(id, type)
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).filter { $0.hasSuffix(".pem") }.sorted()
        return names.compactMap { file in
            let name = IdentityPaths.Name.roots(type) + "/" + file
            guard let data = try? files.load(charger: id, name: name),
                  let certificate = try? Certificate(pemEncoded: String(decoding: data, as: UTF8.self))
            else { return nil }
            return InstalledRoot(type: type, certificate: certificate, name: name)
        }
    }

    func addRoot(_ id: String, _ type: RootType, certificate: Certificate, completion: @escaping WriteCompletion) throws {
        let serial = CertificateTools.hashData(of: certificate).serialNumber
        let pem = try certificate.serializeAsPEM().pemString + "\n"
        files.save(Data(pem.utf8), charger: id, name: IdentityPaths.Name.roots(type) + "/\(serial).pem", completion: completion)
    }

    func removeRoot(_ id: String, _ root: InstalledRoot, completion: @escaping WriteCompletion) {
        files.remove(charger: id, name: root.name, completion: completion)
    }
}

struct StoreError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
