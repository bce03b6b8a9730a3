import Foundation
import Router
import StageKit
import Testing

@Suite("North201 configuration keys")
struct ConfigurationTests {
    @Test func versionPerGatewayAndPerChargerAndTheIdTokenType() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ocpp-gw-201-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        try "version: 1\nstages: []\n".write(toFile: folder + "/p.yaml", atomically: true, encoding: .utf8)
        let base = """
            south:
              listen: "127.0.0.1:0"
              security_profile: 0
              chargers:
                OLD: { north_ocpp_version: 1.6 }
                NEW: { north_ocpp_version: "2.0.1" }
            north:
              url: "wss://csms.example.com/ocpp"
              security_profile: 3
            %@
            pipeline: p.yaml

            """
        try String(format: base, "").write(toFile: folder + "/a.yaml", atomically: true, encoding: .utf8)
        let defaults = try ResolvedGatewayConfiguration.load(file: folder + "/a.yaml")
        #expect(defaults.northOCPPVersion(for: "ANY") == .v16)
        #expect(defaults.northOCPPVersion(for: "NEW") == .v201)
        #expect(defaults.northIdTokenType == "ISO14443")

        try String(format: base, "  ocpp_version: \"2.0.1\"\n  id_token_type: KeyCode").write(toFile: folder + "/b.yaml", atomically: true, encoding: .utf8)
        let set = try ResolvedGatewayConfiguration.load(file: folder + "/b.yaml")
        #expect(set.northOCPPVersion(for: "ANY") == .v201 && set.northOCPPVersion(for: "OLD") == .v16)
        #expect(set.northIdTokenType == "KeyCode")

        try String(format: base, "  ocpp_version: \"2.0\"\n  id_token_type: RFID").write(toFile: folder + "/c.yaml", atomically: true, encoding: .utf8)
        do {
            _ = try ResolvedGatewayConfiguration.load(file: folder + "/c.yaml")
            Issue.record("a bad version was accepted")
        } catch {
            let text = error.diagnostics.map(\.description).joined(separator: "\n")
            #expect(text.contains("c.yaml:10:"), "positions: \(text)")
        }
        try String(format: base, "  id_token_type: RFID").write(toFile: folder + "/d.yaml", atomically: true, encoding: .utf8)
        do {
            _ = try ResolvedGatewayConfiguration.load(file: folder + "/d.yaml")
            Issue.record("a bad id_token_type was accepted")
        } catch {
            let text = error.diagnostics.map(\.description).joined(separator: "\n")
            #expect(text.contains("d.yaml:10:") && text.contains("id_token_type"), "positions: \(text)")
        }
    }
}
