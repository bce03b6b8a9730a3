import Foundation
import Router
import Testing

/// `admin.token` and `admin.basic_auth` in gateway.yaml (docs/configuration.md, docs/operations.md).
@Suite("gateway.yaml: admin access")
struct AdminConfigurationTests {
    let base = GatewayConfigurationTests()
    let head = """
        south: { listen: "127.0.0.1:9000", security_profile: 0 }
        north: { url: "wss://csms.example.com/ocpp", security_profile: 3 }
        pipeline: pipeline.yaml

        """
    static let hash = "pbkdf2-sha256$210000$c2FsdHNhbHRzYWx0c2FsdA==$" + Data(repeating: 7, count: 32).base64EncodedString()

    @Test func credentialsAreReadAndNeverInTheWarnings() throws {
        let config = try base.load(head + """
            admin:
              listen: "0.0.0.0:9100"
              token: "0123456789abcdef0123"
              basic_auth: { username: field, password_hash: "\(Self.hash)" }
            """).get()
        #expect(config.adminCredentials == AdminCredentials(token: "0123456789abcdef0123", basicUsername: "field", basicPasswordHash: Self.hash))
        #expect(config.warnings.isEmpty)
    }

    @Test func mistakesAreReportedAtTheirPositions() throws {
        let found = try base.messages(head + """
            admin:
              listen: "127.0.0.1:9100"
              token: "short"
              basic_auth:
                username: "a:b"
                password_hash: "plain-password"
            """)
        #expect(found.count == 3, "\(found)")
        #expect(found.contains { $0.hasPrefix("6:10: admin 'token' must be at least 16") })
        #expect(found.contains { $0.hasPrefix("8:5: admin 'basic_auth' 'username'") })
        #expect(found.contains { $0.hasPrefix("9:20: admin 'basic_auth' 'password_hash' is not a hash") }, "\(found)")
        #expect(!found.joined().contains("plain-password"), "the value is not repeated")
        let unknown = try base.messages(head + "admin: { listen: \"127.0.0.1:9100\", tokn: \"0123456789abcdef0123\" }\n")
        #expect(unknown.first?.contains("tokn") == true)
    }

    @Test func aListenerBeyondLoopbackWithoutCredentialsIsWarnedAbout() throws {
        let open = try base.load(head + "admin: { listen: \"0.0.0.0:9100\" }\n").get()
        #expect(open.warnings.contains { $0.contains("only /healthz, /readyz and /metrics") })
        for loopback in ["127.0.0.1:9100", "[::1]:9100", "localhost:9100"] {
            #expect(try base.load(head + "admin: { listen: \"\(loopback)\" }\n").get().warnings.isEmpty, "\(loopback)")
        }
    }

    @Test func loopbackHosts() {
        for host in ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1", "localhost", "LOCALHOST"] { #expect(AdminCredentials.isLoopback(host: host), "\(host)") }
        for host in ["0.0.0.0", "::", "10.0.0.1", "128.0.0.1", "127.0.0", "127.0.0.1.example.com", "::ffff:10.0.0.1"] {
            #expect(!AdminCredentials.isLoopback(host: host), "\(host)")
        }
    }
}
