import FirewallStage
import Foundation
import Logging
import OCPP
import Router
import StageKit
import StageTesting
import Synchronization
import Testing

@Suite("ids (firewall) stage")
struct FirewallStageTests {
    static let config = """
        rate_limits:
          default: { per_second: 1, burst: 3 }
          transaction: { per_second: 10, burst: 10 }
        csms_actions: { deny: [UpdateFirmware, GetDiagnostics] }
        change_configuration: { deny_keys: [AuthorizationKey], max_value_length: 128 }
        security_event_interval: 60
        """

    func tester(_ config: String = config, charger: String = "CP001") throws -> StageTester {
        try StageTester(FirewallStage.self, config: config, chargerId: charger)
    }

    func events(_ tester: StageTester) -> [String] {
        var types: [String] = []
        while let event = tester.takeSentToCSMS(where: { $0.action == "SecurityEventNotification" }).first {
            types.append(event.payload()["type"]?.stringValue ?? "?")
            tester.csmsAnswers(event.messageId)
        }
        return types
    }

    @Test func aFloodFromOneChargerDoesNotStopAnothersAuthorize() throws {
        let stage = try StageTester.build(FirewallStage.self, config: Self.config)
        let flooder = StageTester(stages: [("ids", stage)], chargerId: "CP-FLOOD")
        let victim = StageTester(stages: [("ids", stage)], chargerId: "CP-OK")
        for n in 0..<50 {
            let id = flooder.chargerSends(call: "Heartbeat", id: "h\(n)")
            flooder.csmsAnswers(id, payload: ["currentTime": "2026-01-01T00:00:00Z"])
        }
        let refused = flooder.takeSentToCharger().filter { $0.messageType == .callError }
        #expect(refused.count == 47, "a burst of 3, then refusals")
        #expect(refused.first?.errorCode == "GenericError")
        victim.chargerSends(call: "Authorize", payload: ["idTag": "04A2B3C4"], id: "a1")
        #expect(victim.takeSentToCSMS().map(\.messageId) == ["a1"])
        // The bucket refills with time.
        flooder.advance(by: .seconds(2))
        flooder.chargerSends(call: "Heartbeat", id: "later")
        #expect(flooder.takeSentToCSMS().contains { $0.messageId == "later" })
    }

    @Test func invalidPayloadsGetTheRightCodeFromEitherSideAndGoNowhere() throws {
        let tester = try tester()
        tester.chargerSends(call: "StatusNotification", payload: ["connectorId": 1, "errorCode": "Melted", "status": "Charging"], id: "s1")
        tester.chargerSends(call: "StartTransaction", payload: ["connectorId": 1, "idTag": "t", "timestamp": "2026-01-01T00:00:00Z"], id: "s2")
        tester.chargerSends(call: "Authorize", payload: ["idTag": .string(String(repeating: "x", count: 21))], id: "s3")
        tester.chargerSends(call: "Authorize", payload: ["idTag": 42], id: "s4")
        tester.chargerSends(call: "Authorize", payload: ["idTag": "ok", "extra": true], id: "s5")
        let answers = tester.takeSentToCharger()
        #expect(answers.map(\.errorCode) == ["PropertyConstraintViolation", "OccurrenceConstraintViolation", "TypeConstraintViolation",
                                             "TypeConstraintViolation", "FormationViolation"])
        #expect(answers.map(\.messageId) == ["s1", "s2", "s3", "s4", "s5"])
        #expect(tester.takeSentToCSMS { $0.action != "SecurityEventNotification" }.isEmpty)

        tester.csmsSends(call: "Reset", payload: ["type": "Sometimes"], id: "c1")
        #expect(tester.takeSentToCSMS { $0.messageId == "c1" }.first?.errorCode == "PropertyConstraintViolation")
        #expect(tester.takeSentToCharger().isEmpty)
        #expect(events(tester) == ["InvalidMessages"], "one event per interval, not one per frame")
    }

    @Test func anInvalidResultIsAnsweredAtOnceWithTheCallErrorItsSenderWouldHaveGot() throws {
        let tester = try tester()
        let id = tester.csmsSends(call: "Reset", payload: ["type": "Soft"])
        _ = tester.takeSentToCharger()
        tester.chargerAnswers(id, payload: ["status": "Maybe"])
        let answers = tester.takeSentToCSMS { $0.messageId == id }
        #expect(answers.map(\.messageType) == [.callError], "the invalid result is never forwarded; the caller does not wait")
        #expect(answers.first?.errorCode == "PropertyConstraintViolation", "the code the charger would have sent, not a GenericError")
        #expect(events(tester) == ["InvalidMessages"])

        // Towards the charger too: an invalid CSMS result.
        let authorize = tester.chargerSends(call: "Authorize", payload: ["idTag": "04A2B3C4"])
        #expect(tester.takeSentToCSMS().map(\.messageId) == [authorize])
        tester.csmsAnswers(authorize, payload: ["idTagInfo": ["status": "Accepted"], "extra": 1])
        #expect(tester.takeSentToCharger { $0.messageId == authorize }.map(\.errorCode) == ["FormationViolation"])
        let valid = tester.chargerSends(call: "Authorize", payload: ["idTag": "04A2B3C4"])
        tester.csmsAnswers(valid, payload: ["idTagInfo": ["status": "Accepted"]])
        #expect(tester.takeSentToCharger { $0.messageId == valid }.map(\.messageType) == [.callResult])
    }

    @Test func replayedMessageIdsAreDroppedAndReported() throws {
        let tester = try tester()
        tester.csmsSends(call: "GetConfiguration", id: "same")
        tester.chargerAnswers("same", payload: ["configurationKey": []])
        tester.csmsSends(call: "GetConfiguration", id: "same")
        #expect(tester.takeSentToCharger().map(\.messageId) == ["same"])
        #expect(events(tester) == ["AttemptedReplayAttacks"])
        tester.advance(by: .seconds(301))
        tester.csmsSends(call: "GetConfiguration", id: "same")
        #expect(tester.takeSentToCharger().map(\.messageId) == ["same"], "outside the window it is a new message")
    }

    @Test func unknownAndWrongDirectionActions() throws {
        let tester = try tester()
        tester.chargerSends(call: "MakeCoffee", id: "u1")
        tester.chargerSends(call: "RemoteStartTransaction", payload: ["idTag": "x"], id: "w1")
        #expect(tester.takeSentToCharger().map(\.errorCode) == ["NotImplemented", "NotSupported"])
        tester.csmsSends(call: "BootNotification", payload: ["chargePointVendor": "x", "chargePointModel": "y"], id: "w2")
        #expect(tester.takeSentToCSMS { $0.messageId == "w2" }.first?.errorCode == "NotSupported")
        #expect(tester.takeSentToCharger().isEmpty)
    }

    @Test func theCSMSPolicyProtectsTheCharger() throws {
        let tester = try tester()
        tester.csmsSends(call: "UpdateFirmware", payload: ["location": "https://x/fw.bin", "retrieveDate": "2026-01-01T00:00:00Z"], id: "f1")
        let refusal = try #require(tester.takeSentToCSMS { $0.messageId == "f1" }.first)
        #expect(refusal.errorCode == "SecurityError" && refusal.errorDescription?.contains("policy") == true)
        tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "AuthorizationKey", "value": "00"], id: "k1")
        tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "Note", "value": .string(String(repeating: "v", count: 129))], id: "k2")
        #expect(tester.takeSentToCSMS { $0.messageId.hasPrefix("k") }.map { $0.payload()["status"] } == ["Rejected", "Rejected"])
        #expect(tester.takeSentToCharger().isEmpty, "the charger sees nothing")
        tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "HeartbeatInterval", "value": "60"], id: "k3")
        #expect(tester.takeSentToCharger().map(\.messageId) == ["k3"])
    }

    @Test func csmsCallsArePacedInOrderAndHeldAfterBoot() throws {
        let tester = try tester(Self.config + "\ncsms_call_interval: 2\nquiet_after_boot: 10")
        let boot = tester.chargerSends(call: "BootNotification", payload: ["chargePointVendor": "V", "chargePointModel": "M"])
        tester.csmsAnswers(boot, payload: ["status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300])
        #expect(tester.takeSentToCharger().map(\.messageId) == [boot])
        for n in 1...3 { tester.csmsSends(call: "GetConfiguration", id: "g\(n)") }
        tester.advance(by: .seconds(9))
        #expect(tester.takeSentToCharger().isEmpty, "quiet after boot")
        tester.advance(by: .seconds(1))
        #expect(tester.takeSentToCharger().map(\.messageId) == ["g1"])
        tester.chargerAnswers("g1", payload: ["configurationKey": []])
        #expect(tester.takeSentToCharger().isEmpty, "two seconds apart")
        tester.advance(by: .seconds(2))
        #expect(tester.takeSentToCharger().map(\.messageId) == ["g2"])
        tester.chargerAnswers("g2", payload: ["configurationKey": []])
        tester.advance(by: .seconds(2))
        #expect(tester.takeSentToCharger().map(\.messageId) == ["g3"])
        #expect(tester.takeSentToCSMS { $0.messageType == .callError }.isEmpty, "queued, not dropped")
    }

    @Test func connectionAttemptsAreLimitedPerSource() async throws {
        let tester = try tester(Self.config + "\nconnections: { attempts_per_second: 1, attempts_burst: 3 }")
        let request = ChargerConnectRequest(chargerId: "CP001", remoteAddress: "10.0.0.9")
        for _ in 0..<3 { #expect(await tester.connect(request) == .noOpinion) }
        let limited = await tester.connect(request)
        guard case .reject = limited.kind else { Issue.record("not rate-limited: \(limited)"); return }
        #expect(await tester.connect(ChargerConnectRequest(chargerId: "CP002", remoteAddress: "10.0.0.10")) == .noOpinion,
                "another source is unaffected")
    }

    /// Logs in as the gateway does: the connection hooks, then (accepted) the north credentials, or (refused) the failure.
    func login(_ tester: StageTester, _ id: String, from source: String, succeeds: Bool) async throws -> ConnectDecision {
        let request = ChargerConnectRequest(chargerId: id, remoteAddress: source)
        let decision = await tester.connect(request)
        guard decision == .noOpinion else { return decision }
        let stage = try #require(tester.pipeline.stages.first?.instance)
        if succeeds {
            _ = stage.amendNorthCredentials(NorthCredentials(securityProfile: 3), for: id)
        } else {
            stage.chargerRefused(request, status: 401)
        }
        return decision
    }

    func isLockedOut(_ decision: ConnectDecision) -> Bool {
        if case .reject(status: 429, let reason) = decision.kind { return reason.contains("locked out") }
        return false
    }

    @Test func wrongPasswordsLockTheSourceNotTheCharger() async throws {
        let tester = try tester(Self.config + "\nconnections: { attempts_burst: 1000, max_failed_logins: 5, lockout: 0.3 }")
        for _ in 0..<5 { #expect(try await !isLockedOut(login(tester, "CP003", from: "10.0.0.66", succeeds: false))) }
        #expect(try await isLockedOut(login(tester, "CP003", from: "10.0.0.66", succeeds: true)), "the guessing source is locked")
        #expect(try await isLockedOut(login(tester, "CP004", from: "10.0.0.66", succeeds: true)), "for every charger id")
        #expect(try await !isLockedOut(login(tester, "CP003", from: "10.0.0.7", succeeds: true)),
                "the real charger, from its own address, still gets in: five bad guesses are no denial of service")
        try await Task.sleep(for: .milliseconds(400))
        #expect(try await !isLockedOut(login(tester, "CP003", from: "10.0.0.66", succeeds: true)), "the lockout ends")
    }

    @Test func aSuccessfulLoginResetsTheCount() async throws {
        let tester = try tester(Self.config + "\nconnections: { attempts_burst: 1000, max_failed_logins: 5, lockout: 30 }")
        for _ in 0..<4 { _ = try await login(tester, "CP005", from: "10.0.0.5", succeeds: false) }
        #expect(try await !isLockedOut(login(tester, "CP005", from: "10.0.0.5", succeeds: true)))
        for _ in 0..<4 { _ = try await login(tester, "CP005", from: "10.0.0.5", succeeds: false) }
        #expect(try await !isLockedOut(login(tester, "CP005", from: "10.0.0.5", succeeds: true)),
                "eight failures, but never five in a row: a charger with a flaky password store is not locked out")
    }

    @Test func manyFailingSourcesLockTheChargerIdButNotItsKnownSource() async throws {
        let tester = try tester(Self.config + "\nconnections: { attempts_burst: 1000, max_failed_logins: 5, max_failing_sources: 4, lockout: 30 }")
        #expect(try await !isLockedOut(login(tester, "CP006", from: "10.0.0.6", succeeds: true)))
        for n in 1...4 { _ = try await login(tester, "CP006", from: "10.1.0.\(n)", succeeds: false) }
        #expect(try await isLockedOut(login(tester, "CP006", from: "10.1.0.9", succeeds: true)), "a distributed guess locks the id")
        #expect(try await !isLockedOut(login(tester, "CP007", from: "10.1.0.9", succeeds: true)), "only that id")
        #expect(try await !isLockedOut(login(tester, "CP006", from: "10.0.0.6", succeeds: true)),
                "the address the charger last logged in from still gets through")
    }

    @Test func connectionRefusalsAreLoggedThrottledPerSourceAndEscaped() async throws {
        let logs = LogCapture()
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        let configuration = try decoder.decode(FirewallStage.Configuration.self,
                                               from: Data(#"{"connections": {"attempts_per_second": 0.001, "attempts_burst": 1}}"#.utf8))
        let stage = try FirewallStage(configuration: configuration, context: StageSetupContext(
            stageId: "guard", logger: Logger(label: "test", factory: { _ in logs }), stateDirectory: "/tmp/ocpp-gateway-test-state",
            south: SouthSettings(securityProfile: 1, chargers: [:]), north: NorthSettings(securityProfile: 3)))
        let tester = StageTester(stages: [("guard", stage)])
        for _ in 0..<500 { _ = await tester.connect(ChargerConnectRequest(chargerId: "CP\nforged line", remoteAddress: "10.0.0.8")) }
        _ = await tester.connect(ChargerConnectRequest(chargerId: "CP001", remoteAddress: "10.0.0.9"))
        _ = await tester.connect(ChargerConnectRequest(chargerId: "CP001", remoteAddress: "10.0.0.9"))
        let lines = logs.lines.filter { $0.contains("connection_rate") }
        #expect(lines.count(where: { $0.contains("10.0.0.8") }) <= 5, "a flood from one source is a handful of lines")
        #expect(lines.contains { $0.contains("10.0.0.9") }, "another source is still logged")
        #expect(!logs.text.contains("CP\nforged"), "a peer's string cannot start a new log line")
        #expect(logs.text.contains(#"CP\nforged line"#))
    }

    @Test func theConnectionTablesStayBoundedUnderASpreadOfSources() async throws {
        let stage = try StageTester.build(FirewallStage.self, config: "connections: { max_failed_logins: 1 }")
        let tester = StageTester(stages: [("ids", stage)])
        for n in 0..<70_000 {
            // Every attempt from a new address, for a new charger id, and every one a failed login (locking its source).
            let request = ChargerConnectRequest(chargerId: "X\(n)", remoteAddress: "fd00::\(String(n, radix: 16))")
            _ = await tester.connect(request)
            stage.chargerRefused(request, status: 401)
        }
        #expect(stage.connectionTableEntries <= 60_000, "at most three times 20,000 entries, whatever the spread")
        #expect(await tester.connect(ChargerConnectRequest(chargerId: "CP001", remoteAddress: "10.0.0.1")) == .noOpinion)
    }

    // MARK: Replay table (issue 11.1)

    /// Rate limits high enough that every frame is forwarded and so enters the table.
    static let open = "rate_limits: { default: { per_second: 1000000, burst: 1000000 } }\nvalidate_payloads: false"

    @Test func fiftyThousandUniqueIdsKeepTheReplayTableBounded() throws {
        let tester = try tester(Self.open)  // the default cap, 4,096 ids per side
        for n in 0..<50_000 {
            let id = tester.chargerSends(call: "Heartbeat", id: "u\(n)")
            tester.csmsAnswers(id, payload: ["currentTime": "2026-01-01T00:00:00Z"])
        }
        #expect(tester.takeSentToCSMS().count == 50_000, "unique ids all pass")
        _ = tester.takeSentToCharger()
        // The newest ids are remembered…
        tester.chargerSends(call: "Heartbeat", id: "u49999")
        #expect(events(tester) == ["AttemptedReplayAttacks"], "a replay of a recent id is caught")
        #expect(tester.takeSentToCSMS().isEmpty)
        // …the oldest were forgotten to keep the table at its cap.
        tester.chargerSends(call: "Heartbeat", id: "u0")
        #expect(tester.takeSentToCSMS().map(\.messageId) == ["u0"])

        var table = ReplayTable(window: .seconds(300), capacity: 1000)
        for n in 0..<50_000 { table.insert("id-\(n)", now: .milliseconds(Int64(n))) }
        #expect(table.count == 1000)
        #expect(table.evicted == 49_000)
        let newest = table.contains("id-49999", now: .seconds(50)), evicted = table.contains("id-48999", now: .seconds(50))
        #expect(newest && !evicted)
    }

    @Test func idsExpireWithTheWindowWithoutAFullScan() {
        var table = ReplayTable(window: .seconds(10), capacity: 100_000)
        for n in 0..<20_000 { table.insert("a\(n)", now: .milliseconds(Int64(n / 2))) }  // 20,000 ids over 10 s
        #expect(table.count == 20_000)
        let justInside = table.contains("a0", now: .milliseconds(9_999))
        #expect(justInside)
        let atTheEnd = table.contains("a0", now: .seconds(10))
        #expect(!atTheEnd, "exactly the window")
        #expect(table.count == 19_998, "only the expired ids went")
        let late = table.contains("a19999", now: .seconds(20))
        #expect(!late)
        #expect(table.count == 0)
        table.insert("again", now: .seconds(21))
        let inside = table.contains("again", now: .seconds(30)), outside = table.contains("again", now: .seconds(31))
        #expect(inside && !outside)
    }

    /// A charger connected for days sends thousands of CALLs, a few per window: the table keeps what the
    /// window holds, not every id since the connection began.
    @Test func aLongQuietSessionKeepsOnlyTheWindow() {
        var table = ReplayTable(window: .seconds(10), capacity: 1000)
        for n in 0..<5_000 { table.insert("q\(n)", now: .seconds(Int64(n) * 60)) }  // one CALL a minute, ~3.5 days
        #expect(table.count == 1)
        #expect(table.storedEntries <= 32, "expired ids are given back: \(table.storedEntries) entries kept")
    }

    @Test func refusedFramesNeverEnterTheReplayTable() throws {
        let tester = try tester()  // default class: 1/s, burst 3
        for n in 0..<3 {
            tester.chargerSends(call: "Heartbeat", id: "ok\(n)")
            tester.csmsAnswers("ok\(n)", payload: ["currentTime": "2026-01-01T00:00:00Z"])
        }
        _ = tester.takeSentToCSMS()
        tester.chargerSends(call: "Heartbeat", id: "limited")
        #expect(tester.takeSentToCharger().last?.errorCode == "GenericError", "rate-limited")
        tester.chargerSends(call: "MakeCoffee", id: "unknown")
        tester.chargerSends(call: "RemoteStartTransaction", payload: ["idTag": "x"], id: "wrong-way")
        tester.chargerSends(call: "Authorize", payload: ["idTag": 42], id: "invalid")
        _ = tester.takeSentToCharger()
        #expect(events(tester) == ["InvalidMessages"])
        tester.advance(by: .seconds(10))
        // The same ids, now for CALLs that pass: none of them is a replay.
        for id in ["limited", "unknown", "wrong-way"] { tester.chargerSends(call: "Heartbeat", id: id) }
        tester.chargerSends(call: "Authorize", payload: ["idTag": "04A2B3C4"], id: "invalid")
        #expect(tester.takeSentToCSMS { $0.action != "SecurityEventNotification" }.map(\.messageId) == ["limited"],
                "one outstanding CALL at a time; the first went out")
        for id in ["limited", "unknown", "wrong-way", "invalid"] {
            tester.csmsAnswers(id, payload: id == "invalid" ? ["idTagInfo": ["status": "Accepted"]] : ["currentTime": "2026-01-01T00:00:00Z"])
        }
        #expect(tester.takeSentToCSMS { $0.action != "SecurityEventNotification" }.map(\.messageId) == ["unknown", "wrong-way", "invalid"])
        #expect(tester.takeSentToCharger().allSatisfy { $0.messageType == .callResult })
    }

    @Test func theTableIsPerConnection() throws {
        let stage = try StageTester.build(FirewallStage.self, config: Self.open)
        let first = StageTester(stages: [("ids", stage)])
        first.chargerSends(call: "BootNotification", payload: ["chargePointVendor": "V", "chargePointModel": "M"], id: "boot-1")
        #expect(first.takeSentToCSMS().count == 1)
        first.endSession()
        // The charger restarted and reuses its ids (field behaviour): a new connection starts clean.
        let second = StageTester(stages: [("ids", stage)])
        second.chargerSends(call: "BootNotification", payload: ["chargePointVendor": "V", "chargePointModel": "M"], id: "boot-1")
        #expect(second.takeSentToCSMS().map(\.messageId) == ["boot-1"])
    }

    // MARK: Incidents (issue 11.8)

    @Test func aFloodOfRefusalsIsOneIncidentPerRulePerInterval() throws {
        let probe = IncidentProbe()
        let stage = try StageTester.build(FirewallStage.self, config: Self.config)  // incident_interval: 60 by default
        let tester = StageTester(stages: [("ids", stage), ("probe", probe)])
        for n in 0..<500 { tester.chargerSends(call: "Heartbeat", id: "h\(n)") }
        for n in 0..<500 { tester.chargerSends(call: "MakeCoffee", id: "c\(n)") }
        #expect(probe.firewall == ["firewall rule rate_limit"], "the unknown actions were rate-limited too, one incident")
        tester.advance(by: .seconds(61))
        for n in 0..<3 { tester.chargerSends(call: "MakeCoffee", id: "later\(n)") }
        for n in 0..<100 { tester.chargerSends(call: "MakeCoffee", id: "again\(n)") }
        #expect(probe.firewall == ["firewall rule rate_limit", "firewall rule unknown_action", "firewall rule rate_limit"])
    }

    @Test func configurationMistakesAreCaught() {
        #expect(throws: (any Error).self) { try tester("rate_limits: { telemetry: { per_second: 1, burst: 1 } }") }
        #expect(throws: (any Error).self) { try tester("csms_actions: { deny: [BootNotification] }") }
        #expect(throws: (any Error).self) { try tester("replay_window: -1") }
        #expect(throws: (any Error).self) { try tester("max_replay_ids: 0") }
        #expect(throws: (any Error).self) { try tester("connections: { max_failing_sources: 0 }") }
    }
}

/// Records the incidents the session reports to every stage.
final class IncidentProbe: Stage {
    static let type = "probe"
    static let summary = "test"
    let incidents = Mutex<[String]>([])
    var firewall: [String] { incidents.withLock { $0 }.filter { $0.hasPrefix("firewall") } }
    init() {}
    init(configuration: NoConfiguration, context: StageSetupContext) {}
    func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict { .forward }
    func incidentReported(_ description: String, in session: any SessionContext) { incidents.withLock { $0.append(description) } }
}
