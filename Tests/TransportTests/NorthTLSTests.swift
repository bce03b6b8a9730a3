import Crypto
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import StageKit
import SwiftASN1
import Testing
import X509
@testable import Gateway
@testable import Transport

/// Certificates made by the test, each broken in one way, behind a real TLS WebSocket server.
struct TestCA {
    let key = P256.Signing.PrivateKey()
    let name: DistinguishedName
    let certificate: Certificate

    init(name commonName: String = "transport test CA") throws {
        name = try DistinguishedName { CommonName(commonName) }
        let now = Date()
        certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-86400), notValidAfter: now.addingTimeInterval(86400 * 30),
            issuer: name, subject: name, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(key))
    }

    /// A server certificate for `names` (SAN dNSName; none: CN only), valid in [from, until], with `usage`.
    func leaf(names: [String] = ["localhost"], commonName: String = "localhost", from: Date = Date().addingTimeInterval(-3600),
              until: Date = Date().addingTimeInterval(86400), usage: ExtendedKeyUsage.Usage = .serverAuth) throws -> (NIOSSLCertificate, NIOSSLPrivateKey) {
        let leafKey = P256.Signing.PrivateKey()
        let certificate = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(leafKey.publicKey),
            notValidBefore: from, notValidAfter: until,
            issuer: name, subject: try DistinguishedName { CommonName(commonName) }, signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyAgreement: true))
                try ExtendedKeyUsage([usage])
                if !names.isEmpty { SubjectAlternativeNames(names.map { .dnsName($0) }) }
            },
            issuerPrivateKey: .init(key))
        return (try NIOSSLCertificate(bytes: Array(try Self.pem(certificate).utf8), format: .pem),
                try NIOSSLPrivateKey(bytes: Array(leafKey.pemRepresentation.utf8), format: .pem))
    }

    /// Writes the CA certificate to a PEM file (for `north.ca_file`).
    func writeFile() throws -> String {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("transport-ca-\(UUID().uuidString).pem").path
        try Self.pem(certificate).write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func pem(_ certificate: Certificate) throws -> String {
        var serializer = DER.Serializer()
        try serializer.serialize(certificate)
        return PEMDocument(type: "CERTIFICATE", derBytes: serializer.serializedBytes).pemString + "\n"
    }
}

@Suite("north TLS failures", .serialized)
struct NorthTLSTests {
    /// Connects the north client (the gateway's TLS settings, `caFile`) to a TLS WebSocket server
    /// presenting `leaf`; returns the outcome.
    static func connect(serving leaf: (NIOSSLCertificate, NIOSSLPrivateKey), trusting ca: TestCA, serverName: String = "localhost",
                        maxServerVersion: TLSVersion? = nil, allowCommonName: Bool = false) async throws -> Result<WebSocketConnection, any Error> {
        var serverTLS = TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(leaf.0)], privateKey: .privateKey(leaf.1))
        if let maxServerVersion {
            serverTLS.maximumTLSVersion = maxServerVersion
            serverTLS.minimumTLSVersion = .tlsv1
        }
        let server = try await TestServer(WebSocketServerOptions(host: "127.0.0.1", port: 0, tls: serverTLS))
        let caFile = try ca.writeFile()
        defer { try? FileManager.default.removeItem(atPath: caFile) }
        let options = WebSocketClientOptions(url: URL(string: "wss://127.0.0.1:\(server.port)/ocpp/CP001")!,
                                             tls: try NorthTLS.clientConfiguration(caFile: caFile, certificateFile: nil, keyFile: nil),
                                             serverName: serverName, connectTimeout: .seconds(5), allowCommonNameMatch: allowCommonName)
        let result: Result<WebSocketConnection, any Error>
        do {
            result = .success(try await WebSocketClient.connect(options, on: MultiThreadedEventLoopGroup.singleton.next()).get())
        } catch {
            result = .failure(error)
        }
        if case .success(let connection) = result { try? await connection.channel.close() }
        await server.stop()
        return result
    }

    /// The check the transport names, and the kind the gateway's classifier makes of the error.
    static func diagnosis(_ result: Result<WebSocketConnection, any Error>) -> (TLSHandshakeFailure.Check?, NorthFailure.Kind?, String) {
        guard case .failure(let error) = result else { return (nil, nil, "connected") }
        var check: TLSHandshakeFailure.Check?
        if case WebSocketConnectError.tls(let failure) = error { check = failure.check }
        return (check, GatewayRuntime.classify(error), "\(error)")
    }

    @Test func aValidCertificateConnects() async throws {
        let ca = try TestCA()
        let result = try await Self.connect(serving: try ca.leaf(), trusting: ca)
        #expect((try? result.get()) != nil, "\(Self.diagnosis(result).2)")
    }

    @Test func anExpiredCertificateIsNamedAsExpired() async throws {
        let ca = try TestCA()
        let leaf = try ca.leaf(from: Date().addingTimeInterval(-86400 * 3), until: Date().addingTimeInterval(-86400))
        let (check, kind, text) = Self.diagnosis(try await Self.connect(serving: leaf, trusting: ca))
        #expect(check == .expired, "\(text)")
        #expect(kind == .untrustedCentralSystemCertificate)
        #expect(text.contains("expired"))
    }

    @Test func aNotYetValidCertificateIsNamedAsSuch() async throws {
        let ca = try TestCA()
        let leaf = try ca.leaf(from: Date().addingTimeInterval(86400), until: Date().addingTimeInterval(86400 * 3))
        let (check, kind, text) = Self.diagnosis(try await Self.connect(serving: leaf, trusting: ca))
        #expect(check == .notYetValid, "\(text)")
        #expect(kind == .untrustedCentralSystemCertificate)
    }

    @Test func aCertificateWithoutServerAuthIsNamedAsWrongEKU() async throws {
        let ca = try TestCA()
        let (check, kind, text) = Self.diagnosis(try await Self.connect(serving: try ca.leaf(usage: .clientAuth), trusting: ca))
        #expect(check == .wrongExtendedKeyUsage, "\(text)")
        #expect(kind == .untrustedCentralSystemCertificate)
    }

    @Test func aCertificateFromAnotherCAIsNamedAsUntrusted() async throws {
        let ca = try TestCA()
        let other = try TestCA(name: "someone else's CA")
        let (check, kind, text) = Self.diagnosis(try await Self.connect(serving: try other.leaf(), trusting: ca))
        #expect(check == .untrustedChain, "\(text)")
        #expect(kind == .untrustedCentralSystemCertificate)
    }

    @Test func aHostnameMismatchIsAnInvalidCentralSystemCertificate() async throws {
        let ca = try TestCA()
        let (check, kind, text) = Self.diagnosis(try await Self.connect(serving: try ca.leaf(names: ["csms.example.com"]), trusting: ca))
        #expect(check == .hostname, "\(text)")
        #expect(kind == .untrustedCentralSystemCertificate, "a hostname mismatch raises InvalidCentralSystemCertificate")
    }

    @Test func aTLS11OnlyServerIsAnInvalidTLSVersion() async throws {
        let ca = try TestCA()
        let (check, kind, text) = Self.diagnosis(try await Self.connect(serving: try ca.leaf(), trusting: ca, maxServerVersion: .tlsv11))
        #expect(check == .protocolVersion, "\(text)")
        #expect(kind == .tlsVersion, "a TLS 1.0/1.1-only CSMS raises InvalidTLSVersion")
    }

    @Test func aCommonNameOnlyCertificateIsRefusedByDefault() async throws {
        let ca = try TestCA()
        let (check, kind, text) = Self.diagnosis(try await Self.connect(serving: try ca.leaf(names: []), trusting: ca))
        #expect(check == .commonNameOnly, "RFC 6125: no subjectAltName, no match (\(text))")
        #expect(kind == .untrustedCentralSystemCertificate)
    }

    @Test func aCommonNameOnlyCertificateIsAcceptedWhenAllowed() async throws {
        let ca = try TestCA()
        let result = try await Self.connect(serving: try ca.leaf(names: []), trusting: ca, allowCommonName: true)
        #expect((try? result.get()) != nil, "\(Self.diagnosis(result).2)")
        // Even then, the common name must match.
        let wrong = try await Self.connect(serving: try ca.leaf(names: [], commonName: "csms.example.com"), trusting: ca, allowCommonName: true)
        #expect(Self.diagnosis(wrong).0 == .hostname)
    }

    @Test func theClassifierReadsTypedErrorsNotText() {
        #expect(GatewayRuntime.classify(NIOSSLExtraError.failedToValidateHostname) == .untrustedCentralSystemCertificate)
        #expect(GatewayRuntime.classify(WebSocketConnectError.timedOut(.seconds(10))) == .other)
        // Text that merely mentions a certificate is not a certificate failure.
        #expect(GatewayRuntime.classify(WebSocketConnectError.tlsFailure("hostname CERTIFICATE_VERIFY_FAILED not trusted")) == .other)
    }
}
