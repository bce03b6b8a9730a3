import Crypto
import Foundation
public import OCPP
public import StageKit
import Synchronization

/// Who may connect, and what the gateway presents north on their behalf.
///
/// South: with security profile 1 the charger must send HTTP Basic auth whose user name is its
/// charge point id and whose password matches `south.chargers.<id>` (Security Whitepaper §2.2);
/// with profile 0 only the allow-list is checked. North: profile 3 presents the charger's client
/// certificate from the state directory; profile 2 presents Basic auth with the charger's id.
/// Frames, `Authorize` included, pass through untouched.
public struct AuthStage: Stage {
    public struct Configuration: Decodable, Sendable {
        /// With security profile 0, let in chargers missing from `south.chargers`. Off by default.
        public var allowUnlisted: Bool?
        /// Where each charger's client certificate chain lives, relative to `state_dir`; `{id}` is the charger.
        public var certificateFile: String?
        /// Where each charger's private key lives, relative to `state_dir`.
        public var keyFile: String?
    }

    public static let type = "auth"
    public static let summary = "Checks chargers' Basic auth (SP0/SP1) against south.chargers; picks what is presented north (SP2 password, SP3 client certificate)."

    let southProfile: Int
    let northProfile: Int
    let chargers: [String: ChargerCredentials]
    let allowUnlisted: Bool
    let certificateTemplate: String
    let keyTemplate: String
    /// SHA-256 of the last password that verified against a charger's hash: PBKDF2 is slow on
    /// purpose, and a charger reconnecting every few seconds should not pay for it each time.
    private let verifiedPasswords = VerifiedPasswords()

    public init(configuration: Configuration, context: StageSetupContext) throws {
        southProfile = context.south.securityProfile
        northProfile = context.north.securityProfile
        chargers = context.south.chargers
        allowUnlisted = configuration.allowUnlisted ?? false
        if allowUnlisted, southProfile != 0 {
            throw AuthConfigurationError("'allow_unlisted' only applies to south security profile 0; with profile 1 every charger needs a password")
        }
        func template(_ value: String?, _ fallback: String) -> String {
            let path = value ?? fallback
            return path.hasPrefix("/") ? path : context.stateDirectory + "/" + path
        }
        certificateTemplate = template(configuration.certificateFile, "chargers/{id}/cert.pem")
        keyTemplate = template(configuration.keyFile, "chargers/{id}/key.pem")
        for (id, entry) in chargers.sorted(by: { $0.key < $1.key }) {
            if let hash = entry.passwordHash, !PasswordHash.isWellFormed(hash) {
                throw AuthConfigurationError("charger '\(id)': 'password_hash' is not a hash made by 'ocpp-gateway hash-password'")
            }
            if northProfile == 2, entry.northPassword == nil, entry.password == nil {
                throw AuthConfigurationError("charger '\(id)': north security profile 2 needs 'north_password' (or a plain 'password') to present to the CSMS")
            }
        }
    }

    public func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict { .forward }

    public func chargerConnecting(_ request: ChargerConnectRequest) async -> ConnectDecision {
        let id = request.chargerId
        guard let entry = chargers[id] else {
            if southProfile == 0, allowUnlisted { return .accept(north: northCredentials(for: id, entry: ChargerCredentials())) }
            // With Basic auth, do not tell a prober which ids exist.
            return .reject(status: southProfile == 0 ? 404 : 401, reason: "charger '\(LogSafe.escape(id))' is not in south.chargers")
        }
        // An entry with neither 'password' nor 'password_hash' under profile 1 is a charger the gateway
        // authenticates itself: `security_profile: 3` (its client certificate and CN were checked at the
        // door, before any stage) or 0; gateway.yaml refuses such an entry for profiles 1 and 2.
        if southProfile >= 1, entry.password != nil || entry.passwordHash != nil {
            guard let credentials = request.credentials else {
                return .reject(status: 401, reason: request.hasMalformedAuthorization
                    ? "malformed Authorization header" : "no Basic auth credentials")
            }
            guard credentials.username == id else {
                // The user name is not logged: a charger that swapped its fields sends its password there.
                return .reject(status: 401, reason: "Basic auth user is not the charge point id (user name not logged)")
            }
            guard verify(credentials.password, against: entry, chargerId: id) else {
                return .reject(status: 401, reason: "wrong password")
            }
        }
        return .accept(north: northCredentials(for: id, entry: entry))
    }

    private func verify(_ password: String, against entry: ChargerCredentials, chargerId: String) -> Bool {
        if let plain = entry.password {
            return constantTimeEquals(Array(password.utf8), Array(plain.utf8))
        }
        guard let hash = entry.passwordHash else { return false }
        let digest = Array(SHA256.hash(data: Array(password.utf8)))
        if let known = verifiedPasswords.digests.withLock({ $0[chargerId] }), constantTimeEquals(known, digest) { return true }
        guard PasswordHash.verify(password: password, hash: hash) else { return false }
        verifiedPasswords.digests.withLock { $0[chargerId] = digest }
        return true
    }

    private func northCredentials(for id: String, entry: ChargerCredentials) -> NorthCredentials {
        switch northProfile {
        case 3:
            return NorthCredentials(securityProfile: 3,
                                    certificatePath: certificateTemplate.replacingOccurrences(of: "{id}", with: id),
                                    privateKeyPath: keyTemplate.replacingOccurrences(of: "{id}", with: id))
        case 2:
            let password = entry.northPassword ?? entry.password
            return NorthCredentials(securityProfile: 2, basicAuth: password.map { BasicCredentials(username: id, password: $0) })
        default:
            let password = entry.northPassword ?? entry.password
            return NorthCredentials(securityProfile: northProfile,
                                    basicAuth: northProfile == 1 ? password.map { BasicCredentials(username: id, password: $0) } : nil)
        }
    }
}

struct AuthConfigurationError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

private final class VerifiedPasswords: Sendable {
    let digests = Mutex<[String: [UInt8]]>([:])
}
