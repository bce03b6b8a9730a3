import DevPKI
import Foundation
import OCPP
import Router
import Testing

@Suite("south.tls and ocpp_versions keys")
struct South201ConfigurationTests {
    /// Loads a gateway.yaml whose `south:` section is `south` (files under a fresh folder with a dev PKI).
    func load(_ south: String, keyMode: Int = 0o600) throws -> Result<ResolvedGatewayConfiguration, ConfigurationError> {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ocpp-gw-cfg201-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        _ = try DevPKI(directory: folder, reuse: false)
        chmod(folder + "/pki/csms-key.pem", mode_t(keyMode))
        try "version: 1\nstages: []\n".write(toFile: folder + "/pipeline.yaml", atomically: true, encoding: .utf8)
        try "south:\n\(south)\nnorth: { url: \"wss://csms.example/ocpp\", security_profile: 3 }\npipeline: pipeline.yaml\n"
            .write(toFile: folder + "/gateway.yaml", atomically: true, encoding: .utf8)
        do { return .success(try ResolvedGatewayConfiguration.load(file: folder + "/gateway.yaml")) } catch { return .failure(error) }
    }

    func errors(_ south: String, keyMode: Int = 0o600) throws -> [String] {
        guard case .failure(let error) = try load(south, keyMode: keyMode) else { return [] }
        return error.diagnostics.map { "\($0.line):\($0.column): \($0.message)" }
    }

    static let tls = """
          listen: "127.0.0.1:9000"
          security_profile: 1
          tls: { listen: "127.0.0.1:9443", cert_file: pki/csms.pem, key_file: pki/csms-key.pem, client_ca_file: pki/ca.pem }
        """

    @Test func theTLSListenerAndPerChargerProfilesAndVersionsResolve() throws {
        let resolved = try load(Self.tls + """

              chargers:
                "CS1": { security_profile: 3, ocpp_versions: ["2.0.1"] }
                "CP1": { password: "p" }
            """).get()
        let tls = try #require(resolved.southTLS)
        #expect(tls.port == 9443 && tls.securityProfile == 3 && tls.clientCAFile?.hasSuffix("/pki/ca.pem") == true)
        #expect(resolved.southSecurityProfile(for: "CS1", on: .tls) == 3)
        #expect(resolved.southSecurityProfile(for: "CS1", on: .plain) == nil, "an SP3 charger never over ws://")
        #expect(resolved.southSecurityProfile(for: "CP1", on: .plain) == 1)
        #expect(resolved.southSecurityProfile(for: "CP1", on: .tls) == 3, "unmarked chargers get the TLS listener's profile there")
        // Offer order is the charger's; the operator's list limits it.
        #expect(resolved.negotiateVersion(offered: ["ocpp1.6", "ocpp2.0.1"], chargerId: "CP1") == .v16)
        #expect(resolved.negotiateVersion(offered: ["ocpp2.0.1", "ocpp1.6"], chargerId: "CP1") == .v201)
        #expect(resolved.negotiateVersion(offered: ["ocpp1.6"], chargerId: "CS1") == nil)
        #expect(resolved.negotiateVersion(offered: ["ocpp2.0", "ocpp1.6"], chargerId: "CP1") == .v16)
    }

    @Test func mistakesAreReportedWithTheirPositions() throws {
        #expect(try errors(Self.tls + "\n  chargers: { \"X\": { security_profile: 3, ocpp_versions: [\"2.0\"] } }")
            == ["5:58: charger 'X': unknown OCPP version '2.0' in 'ocpp_versions'; use \"1.6\", \"2.0.1\""])
        #expect(try errors(Self.tls, keyMode: 0o644).first?.contains("chmod 600") == true)
        #expect(try errors("""
              listen: "127.0.0.1:9000"
              security_profile: 1
              chargers: { "X": { security_profile: 3 } }
            """) == ["4:40: charger 'X': security profile 3 needs the TLS listener ('south.tls')"])
        #expect(try errors("""
              listen: "127.0.0.1:9000"
              security_profile: 0
              tls: { listen: "127.0.0.1:9443", cert_file: pki/csms.pem, key_file: pki/csms-key.pem, security_profile: 2 }
            """).first?.contains("needs south 'security_profile: 1'") == true)
        #expect(try errors("""
              listen: "127.0.0.1:9000"
              security_profile: 1
              tls: { listen: "127.0.0.1:9443", cert_file: pki/csms.pem, key_file: pki/csms-key.pem }
            """).first?.contains("needs 'client_ca_file'") == true)
        // A charger on profile 1 or 2 still needs its password; one on 3 does not.
        #expect(try errors(Self.tls + "\n  chargers: { \"A\": { security_profile: 2 }, \"B\": { security_profile: 3 } }")
            .map { $0.contains("charger 'A': security profile 2 needs a 'password'") } == [true])
    }
}
