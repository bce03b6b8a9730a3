import Foundation
import Logging
import Router
import StageKit
import Testing

/// A stage with a typed configuration, to exercise the loader's strictness.
struct RateLimitStage: Stage {
    struct Configuration: Decodable, Sendable {
        var ratePerSecond: Double
        var burst: Int?
        var mode: Mode?
        enum Mode: String, Decodable, Sendable { case drop, queue }
    }
    static let type = "rate_limit"
    static let summary = "test"
    let configuration: Configuration
    init(configuration: Configuration, context: StageSetupContext) throws {
        guard configuration.ratePerSecond > 0 else { throw ConfigurationKeyError(key: "rate_per_second", "must be positive") }
        if let burst = configuration.burst, burst < 0 { throw TestError("'burst' must not be negative") }
        self.configuration = configuration
    }
    func process(_ envelope: OCPP.Envelope, in session: any SessionContext) -> Verdict { .forward }
}

import OCPP

struct TestError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

struct PlainStage: Stage {
    static let type = "plain"
    static let summary = "test"
    init(configuration: NoConfiguration, context: StageSetupContext) {}
    func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict { .forward }
}

func temporaryFile(_ name: String, _ text: String) throws -> String {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ocpp-gateway-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let path = folder.appendingPathComponent(name).path
    try text.write(toFile: path, atomically: true, encoding: .utf8)
    return path
}

@Suite("Pipeline loader")
struct PipelineLoaderTests {
    var loader: PipelineLoader {
        var registry = StageRegistry()
        registry.register(RateLimitStage.self)
        registry.register(PlainStage.self)
        return PipelineLoader(registry: registry, southSettings: SouthSettings(securityProfile: 1, chargers: [:]),
                              northSettings: NorthSettings(securityProfile: 3), stateDirectory: "/tmp",
                              logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
    }

    func diagnostics(_ yaml: String) throws -> [String] {
        let file = try temporaryFile("site.yaml", yaml)
        do {
            _ = try loader.load(file: file)
            return []
        } catch {
            return error.diagnostics.map { $0.description.replacingOccurrences(of: file, with: "site.yaml") }
        }
    }

    @Test func aGoodPipelineLoadsInOrderAndSkipsDisabledStages() throws {
        let file = try temporaryFile("p.yaml", """
            version: 1
            stages:
              - id: guard
                type: rate_limit
                config: { rate_per_second: 20, burst: 40, mode: queue }
              - id: off
                type: plain
                enabled: false
              - id: last
                type: plain
            """)
        let pipeline = try loader.load(file: file)
        #expect(pipeline.stages.map(\.id) == ["guard", "last"])
        let stage = try #require(pipeline.stages.first?.instance as? RateLimitStage)
        #expect(stage.configuration.ratePerSecond == 20)
        #expect(stage.configuration.mode == .queue)
    }

    @Test func everyProblemIsReportedWithItsPosition() throws {
        let found = try diagnostics("""
            version: 1
            stages:
              - id: guard
                type: rate_limt
              - id: ids
                type: rate_limit
                config:
                  rate_per_second: 20
                  brust: 40
              - id: ids2
                type: rate_limit
                config:
                  rate_per_second: fast
            """)
        #expect(found == [
            "site.yaml:4:11: error: unknown stage type 'rate_limt' (did you mean 'rate_limit'?); registered: plain, rate_limit",
            "site.yaml:9:7: error: stage 'ids' (rate_limit): unknown config key 'brust' (did you mean 'burst'?); valid keys: burst, mode, rate_per_second",
            "site.yaml:13:24: error: stage 'ids2' (rate_limit): 'rate_per_second' should be a number, found 'fast'",
        ])
    }

    @Test func structuralMistakes() throws {
        #expect(try diagnostics("stages: []\n") == ["site.yaml:1:1: error: missing 'version: 1'"])
        #expect(try diagnostics("version: 2\nstages: []\n") == [
            "site.yaml:1:10: error: unsupported pipeline version '2'; this gateway reads version 1",
        ])
        #expect(try diagnostics("version: 1\nstages:\n  - id: a\n    type: plain\n  - id: a\n    type: plain\n") == [
            "site.yaml:5:5: error: duplicate stage id 'a' (first used at line 3); ids must be unique",
        ])
        #expect(try diagnostics("version: 1\nstages:\n  - id: a\n    typ: plain\n") == [
            "site.yaml:4:5: error: unknown key 'typ' in a stage (did you mean 'type'?); valid keys: config, enabled, id, type",
            "site.yaml:3:5: error: stage 'a' is missing 'type'",
        ])
        #expect(try diagnostics("version: 1\nstages:\n  - id: a\n    type: plain\n    config: { x: 1 }\n") == [
            "site.yaml:5:15: error: stage 'a' (plain): unknown config key 'x'; this section takes no keys",
        ])
        #expect(try diagnostics("version: 1\nstages:\n  - id: r\n    type: rate_limit\n    config: { burst: 2 }\n") == [
            "site.yaml:5:13: error: stage 'r' (rate_limit): missing required key 'rate_per_second'",
        ])
        // A typo and the missing key it explains are reported together, with every valid key listed.
        #expect(try diagnostics("version: 1\nstages:\n  - id: r\n    type: rate_limit\n    config: { rate_per_secnd: 2, burst: 3 }\n") == [
            "site.yaml:5:15: error: stage 'r' (rate_limit): unknown config key 'rate_per_secnd' (did you mean 'rate_per_second'?); valid keys: burst, mode, rate_per_second",
            "site.yaml:5:13: error: stage 'r' (rate_limit): missing required key 'rate_per_second'",
        ])
        #expect(try diagnostics("version: 1\nstages:\n  - id: r\n    type: rate_limit\n    config: { rate_per_second: 1, mode: sometimes }\n").first?
            .hasPrefix("site.yaml:5:41: error: stage 'r' (rate_limit): 'mode':") == true)
        #expect(try diagnostics("version: 1\nstages:\n  - id: r\n    type: rate_limit\n    config: { rate_per_second: 0 }\n") == [
            "site.yaml:5:32: error: stage 'r' (rate_limit): 'rate_per_second' must be positive",
        ])
    }

    @Test func aStageInitErrorNamingAKeyPointsAtThatKey() throws {
        // ConfigurationKeyError: at the key's value, in block style too.
        #expect(try diagnostics("version: 1\nstages:\n  - id: r\n    type: rate_limit\n    config:\n      burst: 3\n      rate_per_second: -1\n") == [
            "site.yaml:7:24: error: stage 'r' (rate_limit): 'rate_per_second' must be positive",
        ])
        // Any other error keeps pointing at the config mapping.
        #expect(try diagnostics("version: 1\nstages:\n  - id: r\n    type: rate_limit\n    config: { rate_per_second: 1, burst: -2 }\n") == [
            "site.yaml:5:13: error: stage 'r' (rate_limit): 'burst' must not be negative",
        ])
    }

    @Test func yamlSyntaxErrorsAndDuplicateKeysHavePositions() throws {
        let broken = try diagnostics("version: 1\nstages:\n  - id: a\n   type: [plain\n")
        #expect(broken.count == 1 && broken[0].hasPrefix("site.yaml:") && broken[0].contains("error: invalid YAML"))
        let duplicate = try diagnostics("version: 1\nversion: 1\nstages: []\n")
        #expect(duplicate.count == 1 && duplicate[0].contains("duplicate key 'version'"))
    }

    @Test func reloadKeepsStagesWhoseIdTypeAndConfigAreUnchanged() throws {
        let file = try temporaryFile("p.yaml", "version: 1\nstages:\n  - id: a\n    type: rate_limit\n    config: { rate_per_second: 1 }\n  - id: b\n    type: plain\n")
        let first = try loader.load(file: file)
        try "version: 1\nstages:\n  - id: a\n    type: rate_limit\n    config: { rate_per_second: 2 }\n  - id: b\n    type: plain\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let second = try loader.load(file: file, reusing: first)
        let oldA = try #require(first.stages[0].instance as? RateLimitStage)
        let newA = try #require(second.stages[0].instance as? RateLimitStage)
        #expect(oldA.configuration.ratePerSecond == 1 && newA.configuration.ratePerSecond == 2)
        #expect(second.stages[1].fingerprint == first.stages[1].fingerprint)
        #expect(second.stages[0].fingerprint != first.stages[0].fingerprint)
    }
}

@Suite("gateway.yaml")
struct GatewayConfigurationTests {
    func load(_ yaml: String) throws -> Result<ResolvedGatewayConfiguration, ConfigurationError> {
        let file = try temporaryFile("gateway.yaml", yaml)
        try "version: 1\nstages: []\n".write(toFile: (file as NSString).deletingLastPathComponent + "/pipeline.yaml", atomically: true, encoding: .utf8)
        do {
            return .success(try ResolvedGatewayConfiguration.load(file: file))
        } catch {
            return .failure(error)
        }
    }

    @Test func defaultsAndRelativePaths() throws {
        let config = try load("""
            south: { listen: "127.0.0.1:9000", security_profile: 1, chargers: { CP001: { password: "p" } } }
            north: { url: "wss://csms.example.com/ocpp", security_profile: 3 }
            pipeline: pipeline.yaml
            """).get()
        #expect(config.southPath == "/ocpp")
        #expect(config.southMaxFrameBytes == 65_536)
        #expect(config.southCallTimeout == .seconds(30))
        #expect(config.pipelineFile.hasSuffix("/pipeline.yaml") && config.pipelineFile.hasPrefix("/"))
        #expect(config.stateDirectory.hasSuffix("/state"))
        #expect(config.warnings.count == 1)
        #expect(config.chargers["CP001"]?.password == "p")
    }

    func messages(_ yaml: String) throws -> [String] {
        guard case .failure(let error) = try load(yaml) else { return [] }
        return error.diagnostics.map { "\($0.line):\($0.column): \($0.message)" }
    }

    @Test func rangesAreCheckedWithPositionsAndAllReportedAtOnce() throws {
        let found = try messages("""
            south:
              listen: "127.0.0.1:9000"
              security_profile: 0
              call_timeout: -5
              max_queued_calls: -1
              ping_interval: -2
              max_frame_bytes: 100
            north:
              url: "wss://csms.example.com/ocpp"
              security_profile: 3
              connect_timeout: -1
              call_timeout: 0
              reconnect: { initial_delay: -3, max_delay: 60 }
            pipeline: pipeline.yaml
            """)
        #expect(found == [
            "4:17: 'call_timeout' must be greater than 0, found -5.0",
            "5:21: 'max_queued_calls' must be greater than 0, found -1",
            "6:18: 'ping_interval' must be 0 or more, found -2.0",
            "7:20: 'max_frame_bytes' must be at least 1024, found 100",
            "11:20: 'connect_timeout' must be greater than 0, found -1.0",
            "12:17: 'call_timeout' must be greater than 0, found 0.0",
            "13:31: 'initial_delay' must be greater than 0, found -3.0",
        ])
        // A range problem and a structural one (missing key) come out together.
        let mixed = try messages("""
            south: { listen: "127.0.0.1:9000", security_profile: 0, call_timeout: -5 }
            north: { url: "wss://csms.example.com/ocpp" }
            pipeline: pipeline.yaml
            """)
        #expect(mixed.contains("1:71: 'call_timeout' must be greater than 0, found -5.0"))
        #expect(mixed.contains { $0.contains("missing required key 'security_profile'") })
        // Good values still resolve.
        let good = try load("""
            south: { listen: "127.0.0.1:9000", security_profile: 0, call_timeout: 5, ping_interval: 0, max_queued_calls: 4 }
            north: { url: "wss://csms.example.com/ocpp", security_profile: 3, reconnect: { initial_delay: 0.5 } }
            pipeline: pipeline.yaml
            """).get()
        #expect(good.southCallTimeout == .seconds(5) && good.southPingInterval == nil && good.southMaxQueuedCalls == 4)
        #expect(good.reconnectInitialDelay == .milliseconds(500))
    }

    @Test func secretsAreNeverEchoedAndChargerIdsAreNotRenamed() throws {
        // A charger written as `id: "<password>"`.
        let scalar = try messages("""
            south:
              listen: "127.0.0.1:9000"
              security_profile: 1
              chargers:
                CP0000: "hunter2-secret"
            north: { url: "wss://csms.example.com/ocpp", security_profile: 3 }
            pipeline: pipeline.yaml
            """)
        #expect(scalar.contains { $0.hasPrefix("5:13: 'CP0000' should be a mapping") }, "\(scalar)")
        #expect(!scalar.joined().contains("hunter2"))
        #expect(!scalar.joined().contains("c_p0000"))
        // A control character in a password: the YAML error does not quote the line.
        let control = try messages("""
            south:
              listen: "127.0.0.1:9000"
              security_profile: 1
              chargers:
                CP0000: { password: "hunter2\u{07}secret" }
            north: { url: "wss://csms.example.com/ocpp", security_profile: 3 }
            pipeline: pipeline.yaml
            """)
        #expect(control.count == 1 && control[0].hasPrefix("5:") && control[0].contains("invalid YAML"), "\(control)")
        #expect(!control.joined().contains("hunter2"))
        // A password of the wrong shape is described, not shown.
        let shape = try messages("""
            south: { listen: "127.0.0.1:9000", security_profile: 1, chargers: { CP0000: { password: [ "hunter2" ] } } }
            north: { url: "wss://csms.example.com/ocpp", security_profile: 3 }
            pipeline: pipeline.yaml
            """)
        #expect(shape.contains { $0.contains("'password' should be a string, found a list") }, "\(shape)")
        // Ordinary values are still quoted where that helps.
        let ordinary = try messages("""
            south: { listen: "127.0.0.1:9000", security_profile: one }
            north: { url: "wss://csms.example.com/ocpp", security_profile: 3 }
            pipeline: pipeline.yaml
            """)
        #expect(ordinary.contains("1:54: 'security_profile' should be a whole number, found 'one'"), "\(ordinary)")
    }

    @Test func mistakesPointAtTheirKeys() throws {
        guard case .failure(let error) = try load("""
            south:
              listen: "nowhere"
              security_profile: 2
              chargers:
                CP001: { pasword: "p" }
            north:
              url: "ws://csms.example.com/ocpp"
              security_profile: 3
              ca_file: missing.pem
            pipeline: pipeline.yaml
            """) else {
            Issue.record("a broken gateway.yaml loaded")
            return
        }
        let messages = error.diagnostics.map { "\($0.line):\($0.column): \($0.message)" }
        #expect(messages.contains("5:14: unknown config key 'pasword' (did you mean 'password'?); valid keys: north_ocpp_version, north_password, ocpp_versions, offline_mode, password, password_hash, security_profile"))
        guard case .failure(let second) = try load("""
            south: { listen: "nowhere", security_profile: 2 }
            north: { url: "ws://csms.example.com/ocpp", security_profile: 3, ca_file: missing.pem }
            pipeline: pipeline.yaml
            """) else {
            Issue.record("a broken gateway.yaml loaded")
            return
        }
        let semantic = second.diagnostics.map { "\($0.line):\($0.column): \($0.message)" }
        #expect(semantic.contains("1:18: 'listen' should be host:port, e.g. \"127.0.0.1:9000\""))
        #expect(semantic.contains("1:47: south 'security_profile' must be 0 or 1 (the gateway terminates TLS north, not south)"))
        #expect(semantic.contains { $0.hasPrefix("2:15: north 'url' is ws:// (no TLS)") })
        #expect(semantic.contains { $0.hasPrefix("2:75: 'ca_file' ") && $0.hasSuffix("missing.pem does not exist or cannot be read") })
    }
}

@Suite("log safety")
struct LogSafetyTests {
    @Test func aRefusedURIIsLoggedWithoutQueryOrUserInfo() {
        #expect(loggableURI("/ocpp/CP001") == "/ocpp/CP001")
        #expect(loggableURI("/wrong/CP001?password=s3cret") == "/wrong/CP001 (query not logged)")
        #expect(loggableURI("/x#frag") == "/x (query not logged)")
        #expect(loggableURI("ws://user:s3cret@host:9000/ocpp/CP001") == "ws://host:9000/ocpp/CP001 (user info not logged)")
        #expect(loggableURI("/ocpp/\u{1b}[31mred\nforged") == "/ocpp/\\u{1b}[31mred\\nforged")
        #expect(loggableURI(String(repeating: "a", count: 1000)).count < 230)
    }

    @Test func aPrivateKeyOthersCanReadIsNamedAsAProblem() throws {
        let key = try temporaryFile("key.pem", "-----BEGIN PRIVATE KEY-----\n")
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: key)
        #expect(privateKeyFileProblem(key) == nil)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: key)
        #expect(privateKeyFileProblem(key)?.contains("chmod 600") == true)
        try FileManager.default.setAttributes([.posixPermissions: 0o620], ofItemAtPath: key)
        #expect(privateKeyFileProblem(key) != nil)
        #expect(privateKeyFileProblem(key + ".missing") == nil)
    }
}
