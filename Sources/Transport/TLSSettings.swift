public import NIOSSL

/// TLS as the Security Whitepaper wants it towards a CSMS (edition 3, §2.3 / §2.4).
public enum NorthTLS {
    /// The suites a CSMS must offer (whitepaper §2.4.1), plus their ECDHE-RSA twins so an RSA
    /// CSMS certificate still gets forward secrecy. TLS 1.3 suites are always enabled.
    public static let cipherSuites: [NIOTLSCipher] = [
        .TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
        .TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
        .TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        .TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
        .TLS_RSA_WITH_AES_128_GCM_SHA256,
        .TLS_RSA_WITH_AES_256_GCM_SHA384,
    ]

    /// A client configuration: TLS ≥ 1.2, the suites above, full verification against `caFile`
    /// (or the system roots), and a client certificate for Security Profile 3.
    public static func clientConfiguration(caFile: String?, certificateFile: String?, keyFile: String?) throws -> TLSConfiguration {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        tls.cipherSuiteValues = cipherSuites
        tls.certificateVerification = .fullVerification
        if let caFile {
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(caFile))
        }
        if let certificateFile, let keyFile {
            tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) }
            tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem))
        }
        return tls
    }
}
