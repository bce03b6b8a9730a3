import Crypto
import Foundation
import SwiftASN1
import X509

/// CertificateHashData (Security Whitepaper §6.1), computed as in RFC 6960 §4.1.1.
public struct CertificateHashData: Equatable, Sendable {
    public var hashAlgorithm = "SHA256"
    public var issuerNameHash: String
    public var issuerKeyHash: String
    public var serialNumber: String

    var json: [String: String] {
        ["hashAlgorithm": hashAlgorithm, "issuerNameHash": issuerNameHash, "issuerKeyHash": issuerKeyHash,
         "serialNumber": serialNumber]
    }
}

enum CertificateTools {
    /// Every certificate in a PEM bundle, in order; blocks that are not certificates are skipped.
    static func parseChain(_ pem: String) -> [Certificate] {
        pemBlocks(pem).compactMap { try? Certificate(pemEncoded: $0) }
    }

    static func pemBlocks(_ pem: String) -> [String] {
        var blocks: [String] = []
        var current: [Substring] = []
        for line in pem.split(whereSeparator: \.isNewline) {
            if line.hasPrefix("-----BEGIN ") { current = [line] } else if !current.isEmpty { current.append(line) }
            if line.hasPrefix("-----END "), !current.isEmpty {
                blocks.append(current.joined(separator: "\n"))
                current = []
            }
        }
        return blocks
    }

    /// A PKCS#10 request for `key`, subject CN and O as the whitepaper asks (A02.FR.13).
    static func makeCSR(commonName: String, organization: String, key: Certificate.PrivateKey, type: KeyType) throws -> String {
        let subject = try DistinguishedName {
            CommonName(commonName)
            OrganizationName(organization)
        }
        let request = try CertificateSigningRequest(version: .v1, subject: subject, privateKey: key, attributes: .init(),
                                                    signatureAlgorithm: type.signatureAlgorithm)
        return try request.serializeAsPEM().pemString
    }

    /// The hash data naming `certificate` as issued by `issuer` (a root is its own issuer).
    static func hashData(of certificate: Certificate, issuer: Certificate? = nil) -> CertificateHashData {
        let issuerCertificate = issuer ?? certificate
        var serializer = DER.Serializer()
        let nameBytes = (try? serializer.serialize(certificate.issuer)) != nil ? serializer.serializedBytes : []
        let keyBytes = subjectPublicKeyBits(issuerCertificate.publicKey) ?? Array(issuerCertificate.publicKey.subjectPublicKeyInfoBytes)
        return CertificateHashData(issuerNameHash: hex(SHA256.hash(data: nameBytes)),
                                   issuerKeyHash: hex(SHA256.hash(data: keyBytes)),
                                   serialNumber: hex(Array(certificate.serialNumber.bytes).dropLeadingZeros()))
    }

    /// The subjectPublicKey BIT STRING's contents (RFC 6960: without tag, length and unused-bits count).
    static func subjectPublicKeyBits(_ key: Certificate.PublicKey) -> [UInt8]? {
        guard let root = try? DER.parse(key.subjectPublicKeyInfoBytes), case .constructed(let children) = root.content else { return nil }
        var iterator = children.makeIterator()
        _ = iterator.next()
        guard let bitStringNode = iterator.next(), let bits = try? ASN1BitString(derEncoded: bitStringNode) else { return nil }
        return Array(bits.bytes)
    }

    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        bytes.map { String(format: "%02x", $0) }.joined()
    }

    /// Checks a chain for the leaf's signature path up to one of `anchors`, and every
    /// certificate's validity at `now`. Returns the problem, or nil.
    static func chainProblem(_ chain: [Certificate], anchors: [Certificate], now: Date) -> String? {
        guard let leaf = chain.first else { return "the chain is empty" }
        if leaf.notValidAfter < now { return "the certificate expired at \(leaf.notValidAfter)" }
        for (index, certificate) in chain.enumerated() {
            if index > 0 {
                if certificate.notValidAfter < now || certificate.notValidBefore > now {
                    return "intermediate '\(certificate.subject)' is not valid now"
                }
                guard let constraints = try? certificate.extensions.basicConstraints, case .isCertificateAuthority = constraints else {
                    return "intermediate '\(certificate.subject)' is not a CA"
                }
            }
            let next = index + 1 < chain.count ? chain[index + 1] : nil
            if let next {
                guard next.subject == certificate.issuer, next.publicKey.isValidSignature(certificate.signature, for: certificate) else {
                    return "'\(certificate.subject)' is not signed by the next certificate in the chain"
                }
                continue
            }
            // The top of the chain: it must be, or be signed by, a trusted root.
            if anchors.contains(where: { $0 == certificate }) { return nil }
            let signedByAnchor = anchors.contains { anchor in
                anchor.subject == certificate.issuer && anchor.publicKey.isValidSignature(certificate.signature, for: certificate)
                    && anchor.notValidAfter >= now
            }
            return signedByAnchor ? nil : "the chain does not lead to a trusted root (issuer '\(certificate.issuer)')"
        }
        return nil
    }

    static func commonName(_ name: DistinguishedName) -> String? {
        name.flatMap { $0 }.first { $0.type == .RDNAttributeType.commonName }.flatMap { String($0.value) }
    }

    static func organization(_ name: DistinguishedName) -> String? {
        name.flatMap { $0 }.first { $0.type == .RDNAttributeType.organizationName }.flatMap { String($0.value) }
    }
}

extension Array where Element == UInt8 {
    /// Serial numbers are DER integers: a leading zero only keeps them positive.
    func dropLeadingZeros() -> [UInt8] {
        let trimmed = Array(drop { $0 == 0 })
        return trimmed.isEmpty ? [0] : trimmed
    }
}
