import Crypto
import _CryptoExtras
import Foundation

/// Password hashes for `south.chargers.<id>.password_hash`, made by `ocpp-gateway hash-password`.
///
/// Format: `pbkdf2-sha256$<rounds>$<salt, base64>$<hash, base64>`. PBKDF2 because it ships with
/// swift-crypto and is what NIST SP 800-132 names; 210,000 rounds per OWASP's current advice.
public enum PasswordHash {
    public static let defaultRounds = 210_000

    public static func make(password: String, rounds: Int = defaultRounds) throws -> String {
        var salt = [UInt8](repeating: 0, count: 16)
        var generator = SystemRandomNumberGenerator()
        for i in salt.indices { salt[i] = UInt8.random(in: .min ... .max, using: &generator) }
        let hash = try derive(password: password, salt: salt, rounds: rounds)
        return "pbkdf2-sha256$\(rounds)$\(Data(salt).base64EncodedString())$\(Data(hash).base64EncodedString())"
    }

    /// Checks a password against a hash; false for a malformed hash too (see `isWellFormed`).
    public static func verify(password: String, hash: String) -> Bool {
        guard let parsed = parse(hash),
              let derived = try? derive(password: password, salt: parsed.salt, rounds: parsed.rounds)
        else { return false }
        return constantTimeEquals(derived, parsed.hash)
    }

    public static func isWellFormed(_ hash: String) -> Bool { parse(hash) != nil }

    private static func parse(_ hash: String) -> (rounds: Int, salt: [UInt8], hash: [UInt8])? {
        let parts = hash.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "pbkdf2-sha256", let rounds = Int(parts[1]), rounds >= 1000,
              let salt = Data(base64Encoded: String(parts[2])), let digest = Data(base64Encoded: String(parts[3])),
              digest.count == 32
        else { return nil }
        return (rounds, Array(salt), Array(digest))
    }

    private static func derive(password: String, salt: [UInt8], rounds: Int) throws -> [UInt8] {
        let key = try KDF.Insecure.PBKDF2.deriveKey(from: Array(password.utf8), salt: salt, using: .sha256, outputByteCount: 32,
                                                     unsafeUncheckedRounds: rounds)
        return key.withUnsafeBytes { Array($0) }
    }
}

/// Compares without leaking, through timing, how many leading bytes matched.
func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
    guard a.count == b.count else { return false }
    var difference: UInt8 = 0
    for i in a.indices { difference |= a[i] ^ b[i] }
    return difference == 0
}
