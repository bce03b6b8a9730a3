import Crypto
public import Foundation
import SwiftASN1
import X509

/// A throw-away PKI for development and tests: one CA that signs the development CSMS's server
/// certificate and each charger's client certificate (CN = charge point id, O = CPO name), as
/// Security Profile 3 expects. Never use it in production: the CA key sits next to the certificates.
public struct DevPKI {
    public let directory: String
    public var caCertificate: String { directory + "/pki/ca.pem" }
    public var caKey: String { directory + "/pki/ca-key.pem" }
    public var serverCertificate: String { directory + "/pki/csms.pem" }
    public var serverKey: String { directory + "/pki/csms-key.pem" }
    public func chargerCertificate(_ id: String) -> String { directory + "/chargers/\(id)/cert.pem" }
    public func chargerKey(_ id: String) -> String { directory + "/chargers/\(id)/key.pem" }

    private let caPrivateKey: P256.Signing.PrivateKey
    private let caName: DistinguishedName

    /// Creates (or, with `reuse`, loads) the CA and the server certificate under `directory`.
    public init(directory: String, caName commonName: String = "ocpp-gateway development CA", reuse: Bool = true,
                serverNames: [String] = ["localhost"], serverAddresses: [[UInt8]] = [[127, 0, 0, 1]]) throws {
        self.directory = directory
        caName = try DistinguishedName {
            CommonName(commonName)
            OrganizationName("ocpp-gateway development")
        }
        let fm = FileManager.default
        try fm.createDirectory(atPath: directory + "/pki", withIntermediateDirectories: true)
        if reuse, fm.fileExists(atPath: directory + "/pki/ca-key.pem"), fm.fileExists(atPath: directory + "/pki/csms.pem") {
            caPrivateKey = try P256.Signing.PrivateKey(pemRepresentation: String(contentsOfFile: directory + "/pki/ca-key.pem", encoding: .utf8))
            return
        }
        caPrivateKey = P256.Signing.PrivateKey()
        let now = Date()
        let ca = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(caPrivateKey.publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(10 * 365 * 86400),
            issuer: caName, subject: caName, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: .init(caPrivateKey.publicKey))
            },
            issuerPrivateKey: .init(caPrivateKey))
        try Self.write(Self.pem(ca), to: caCertificate, mode: 0o644)
        try Self.write(caPrivateKey.pemRepresentation, to: caKey, mode: 0o600)

        var names: [GeneralName] = serverNames.map { .dnsName($0) }
        names += serverAddresses.map { .ipAddress(ASN1OctetString(contentBytes: ArraySlice($0))) }
        let serverKeyPair = P256.Signing.PrivateKey()
        let server = try issue(subject: DistinguishedName { CommonName(serverNames.first ?? "localhost") },
                               publicKey: serverKeyPair.publicKey, usage: .serverAuth, alternativeNames: names)
        try Self.write(Self.pem(server), to: serverCertificate, mode: 0o644)
        try Self.write(serverKeyPair.pemRepresentation, to: serverKey, mode: 0o600)
    }

    /// Issues a client certificate for a charger into `chargers/<id>/cert.pem` and `key.pem` (0600).
    @discardableResult
    public func issueChargerCertificate(_ chargerId: String, cpoName: String = "ocpp-gateway dev CPO",
                                        validFor: TimeInterval = 365 * 86400) throws -> (certificate: String, key: String) {
        let folder = directory + "/chargers/\(chargerId)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o700])
        let key = P256.Signing.PrivateKey()
        let certificate = try issue(subject: DistinguishedName {
            CommonName(chargerId)
            OrganizationName(cpoName)
        }, publicKey: key.publicKey, usage: .clientAuth, alternativeNames: [], validFor: validFor)
        try Self.write(key.pemRepresentation, to: chargerKey(chargerId), mode: 0o600)
        try Self.write(Self.pem(certificate), to: chargerCertificate(chargerId), mode: 0o644)
        return (chargerCertificate(chargerId), chargerKey(chargerId))
    }

    /// Signs a charger's CSR (PEM) as the CPO's CA would; returns the certificate as PEM.
    public func sign(csrPEM: String, validFrom: Date = Date().addingTimeInterval(-60), validFor: TimeInterval = 365 * 86400) throws -> String {
        let request = try CertificateSigningRequest(pemEncoded: csrPEM)
        guard request.publicKey.isValidSignature(request.signature, for: request) else { throw DevPKIError("the CSR's signature is invalid") }
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: request.publicKey,
            notValidBefore: validFrom, notValidAfter: validFrom.addingTimeInterval(validFor),
            issuer: caName, subject: request.subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
                try ExtendedKeyUsage([.clientAuth])
            },
            issuerPrivateKey: .init(caPrivateKey))
        return try Self.pem(certificate)
    }

    private func issue(subject: DistinguishedName, publicKey: P256.Signing.PublicKey, usage: ExtendedKeyUsage.Usage,
                       alternativeNames: [GeneralName], validFor: TimeInterval = 365 * 86400) throws -> Certificate {
        let now = Date()
        return try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(publicKey),
            notValidBefore: now.addingTimeInterval(-3600), notValidAfter: now.addingTimeInterval(validFor),
            issuer: caName, subject: subject, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
                try ExtendedKeyUsage([usage])
                if !alternativeNames.isEmpty { SubjectAlternativeNames(alternativeNames) }
            },
            issuerPrivateKey: .init(caPrivateKey))
    }

    static func pem(_ certificate: Certificate) throws -> String {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return PEMDocument(type: "CERTIFICATE", derBytes: serializer.serializedBytes).pemString + "\n"
    }

    /// Writes atomically with the given mode; private keys get 0600 before any byte is written.
    static func write(_ text: String, to path: String, mode: Int) throws {
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: nil, attributes: [.posixPermissions: mode]) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: temporary])
        }
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: temporary))
        try handle.write(contentsOf: Data(text.utf8))
        try handle.synchronize()
        try handle.close()
        if FileManager.default.fileExists(atPath: path) { try FileManager.default.removeItem(atPath: path) }
        try FileManager.default.moveItem(atPath: temporary, toPath: path)
    }
}

public struct DevPKIError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
