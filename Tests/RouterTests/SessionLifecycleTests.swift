import Logging
import OCPP
import Router
import StageKit
import StageTesting
import Testing

/// Remembers the message ids it saw in its per-charger state and drops a repeat (a tiny replay filter).
struct SeenIdsStage: Stage {
    static let type = "seen_ids"
    static let summary = "test: drops repeated message ids"
    enum Seen: SessionStateKey { typealias Value = Set<String> }

    init(configuration: NoConfiguration, context: StageSetupContext) {}
    init() {}

    func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        guard envelope.isCall else { return .forward }
        if session[Seen.self, default: []].contains(envelope.messageId) { return .drop(reason: "seen") }
        session[Seen.self, default: []].insert(envelope.messageId)
        return .forward
    }
}

/// Sends a gateway CALL to each side when the session starts, and records the lifecycle it is told of.
final class HookStage: Stage, @unchecked Sendable {
    static let type = "hooks"
    static let summary = "test: lifecycle hooks"
    enum Mark: SessionStateKey { typealias Value = String }
    let name: String
    let calls: Bool
    private(set) var events: [String] = []

    init(configuration: NoConfiguration, context: StageSetupContext) { fatalError("built directly in tests") }
    init(_ name: String, sendsCalls: Bool = false) {
        self.name = name
        self.calls = sendsCalls
    }

    func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict { .forward }

    func sessionStarted(_ session: any SessionContext) {
        events.append("started")
        session[Mark.self] = name
        if calls {
            session.sendCall("GetConfiguration", payload: [:], to: .charger) { [self] outcome in events.append("charger:\(outcome)") }
            session.sendCall("SecurityEventNotification", payload: ["type": "StartupOfTheDevice", "timestamp": "2026-01-01T00:00:00Z"],
                             to: .csms) { [self] outcome in events.append("csms:\(outcome)") }
        }
    }

    func sessionEnded(_ session: any SessionContext) {
        events.append("ended(closed: \(session.isClosed), mark: \(session[Mark.self] ?? "-"))")
    }
}

/// Runs a closure with the session on every frame.
struct SessionStage: Stage {
    static let type = "session_probe"
    static let summary = "test"
    let body: @Sendable (any SessionContext) -> Void
    init(configuration: NoConfiguration, context: StageSetupContext) { fatalError("built directly in tests") }
    init(_ body: @escaping @Sendable (any SessionContext) -> Void) { self.body = body }
    func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        body(session)
        return .forward
    }
}

/// Something a timer closure holds; it must be released when the session ends.
final class Canary: Sendable {}

struct LongTimerStage: Stage {
    static let type = "long_timer"
    static let summary = "test: a 24 h timer holding the session"
    let canaries: WeakCanaries
    init(configuration: NoConfiguration, context: StageSetupContext) { fatalError("built directly in tests") }
    init(canaries: WeakCanaries) { self.canaries = canaries }
    func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict { .forward }
    func sessionStarted(_ session: any SessionContext) {
        let canary = Canary()
        canaries.add(canary)
        // Like the certs stage's daily renewal check: the closure holds the session and more.
        session.schedule(after: .seconds(86_400)) { _ = (session, canary) }
    }
}

final class WeakCanaries: @unchecked Sendable {
    private var refs: [() -> Canary?] = []
    func add(_ canary: Canary) {
        refs.append { [weak canary] in canary }
    }
    var alive: Int { refs.count { $0() != nil } }
}

@Suite("Session lifecycle")
struct SessionLifecycleTests {
    @Test func twoStagesOfOneTypeKeepTheirOwnState() {
        let tester = StageTester(stages: [("first", SeenIdsStage()), ("second", SeenIdsStage())])
        tester.chargerSends(call: "Heartbeat", id: "a")
        #expect(tester.takeSentToCSMS().map(\.messageId) == ["a"], "the second instance has not seen 'a' before")
        tester.csmsAnswers("a", payload: ["currentTime": "2026-01-01T00:00:00Z"])
        tester.chargerSends(call: "Heartbeat", id: "a")
        #expect(tester.takeSentToCSMS().isEmpty, "a true repeat is still dropped")
    }

    @Test func sharedKeysAreSeenByEveryStage() {
        final class Filter: TelemetryFilter {
            func filter(series: String, time: Double, value: Double) -> [(time: Double, value: Double)] { [] }
            func flush() -> [(series: String, time: Double, value: Double)] { [] }
            func takeRetiredPoints() -> [(series: String, time: Double, value: Double)] { [] }
            func descriptor(series: String) -> JSONValue? { nil }
        }
        enum Private: SessionStateKey { typealias Value = Int }
        let found = Recorder()
        let writer = SessionStage { session in
            session[TelemetryFilterKey.self] = Filter()
            session[Private.self] = 1
        }
        let reader = SessionStage { session in
            found.append("filter:\(session[TelemetryFilterKey.self] != nil) private:\(session[Private.self] != nil)")
        }
        let tester = StageTester(stages: [("writer", writer), ("reader", reader)])
        tester.chargerSends(call: "Heartbeat")
        #expect(found.entries == ["filter:true private:false"])
    }

    @Test func gatewayCallsWaitForTheChargersBootToBeAccepted() {
        let stage = HookStage("h", sendsCalls: true)
        let tester = StageTester(stages: [("h", stage)], chargerBooted: false)
        #expect(tester.takeSentToCharger().isEmpty, "nothing of the gateway's reaches the charger before its boot")
        #expect(tester.takeSentToCSMS().isEmpty, "nor the CSMS")

        // A boot the CSMS leaves Pending keeps the gate closed; CSMS CALLs still pass.
        let boot = tester.chargerSends(call: "BootNotification", payload: ["chargePointVendor": "V", "chargePointModel": "M"])
        #expect(tester.takeSentToCSMS().map(\.messageId) == [boot])
        tester.csmsAnswers(boot, payload: ["status": "Pending", "currentTime": "2026-01-01T00:00:00Z", "interval": 10])
        #expect(tester.takeSentToCharger().map(\.messageId) == [boot])
        let csmsCall = tester.csmsSends(call: "GetConfiguration")
        #expect(tester.takeSentToCharger().map(\.messageId) == [csmsCall])
        tester.chargerAnswers(csmsCall, payload: ["configurationKey": []])
        _ = tester.takeSentToCSMS()

        let again = tester.chargerSends(call: "BootNotification", payload: ["chargePointVendor": "V", "chargePointModel": "M"])
        _ = tester.takeSentToCSMS()
        tester.csmsAnswers(again, payload: ["status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": 300])
        let toCharger = tester.takeSentToCharger()
        #expect(toCharger.map(\.messageId).first == again, "the boot answer goes first")
        #expect(toCharger.dropFirst().map(\.action) == ["GetConfiguration"], "then the held gateway CALL")
        #expect(tester.takeSentToCSMS().map(\.action) == ["SecurityEventNotification"])
        #expect(tester.session.bootAccepted)
    }

    @Test func aChargerKnownToHaveBootedIsServedAtOnce() {
        let tester = StageTester(stages: [("h", HookStage("h", sendsCalls: true))], chargerBooted: true)
        #expect(tester.takeSentToCharger().map(\.action) == ["GetConfiguration"])
    }

    @Test func theBootAnswerIsReportedForTheGatewayToRemember() {
        let tester = StageTester(stages: [], chargerBooted: false)
        let answers = Recorder()
        tester.session.onBootAnswered = { accepted, payload in answers.append("\(accepted):\(payload["interval"].map { "\($0)" } ?? "-")") }
        tester.bootAccepted(interval: 120)
        #expect(answers.entries.count == 1)
        #expect(answers.entries.first?.hasPrefix("true:") == true)
    }

    @Test func heldCallsLearnTheSessionEnded() {
        let stage = HookStage("h", sendsCalls: true)
        let tester = StageTester(stages: [("h", stage)], chargerBooted: false)
        tester.endSession()
        #expect(stage.events.contains("charger:connectionClosed"))
        #expect(stage.events.contains("csms:connectionClosed"))
    }

    @Test func aReloadStartsAddedStagesAndEndsRetiredOnesOnLiveSessions() {
        let kept = HookStage("kept")
        let retired = HookStage("retired")
        let tester = StageTester(stages: [("kept", kept), ("retired", retired)])
        let added = HookStage("added", sendsCalls: true)
        tester.reload(to: [("kept", kept), ("added", added)], keeping: ["kept"])

        #expect(kept.events == ["started"], "an unchanged stage is not told anything")
        #expect(retired.events == ["started", "ended(closed: false, mark: retired)"], "its own state, and the session goes on")
        #expect(added.events == ["started"])
        #expect(tester.takeSentToCharger().map(\.action) == ["GetConfiguration"], "the added stage works on the live session")

        tester.endSession()
        #expect(kept.events.last == "ended(closed: true, mark: kept)")
        #expect(added.events.last == "ended(closed: true, mark: added)")
        #expect(retired.events.count == 2, "a retired stage is not told twice")
    }

    @Test func aFrameAfterASwapAdoptsTheNewPipelineFirst() {
        let seenByNew = Recorder()
        let tester = StageTester(stages: [("old", ProbeStage())])
        tester.reload(to: [("new", ProbeStage(seen: seenByNew))])
        tester.chargerSends(call: "Heartbeat")
        #expect(seenByNew.entries == ["from_charger:CALL:Heartbeat"])
    }

    @Test func endingASessionCancelsItsTimersAndReleasesWhatTheyHold() {
        let canaries = WeakCanaries()
        for _ in 0..<10_000 {
            let tester = StageTester(stages: [("timer", LongTimerStage(canaries: canaries))])
            #expect(tester.pendingTimers == 1)
            tester.endSession()
            #expect(tester.pendingTimers == 0)
        }
        #expect(canaries.alive == 0, "10,000 ended sessions hold nothing for 24 h")
    }

    @Test func aCancelledTimerIsForgotten() {
        struct Rearm: Stage {
            static let type = "rearm"
            static let summary = "test"
            init(configuration: NoConfiguration, context: StageSetupContext) {}
            init() {}
            func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
                session.schedule(after: .seconds(60)) {}.cancel()
                return .forward
            }
        }
        let tester = StageTester(stages: [("rearm", Rearm())])
        for index in 0..<100 { tester.chargerSends(call: "Heartbeat", id: "\(index)") }
        #expect(tester.pendingTimers <= 1, "only the CALL timeout towards the CSMS is armed")
    }

    @Test func answersAStageRefusesAreReplacedByACallError() {
        let tester = StageTester(stages: [("probe", ProbeStage(decide: { envelope in
            guard envelope.messageType == .callResult else { return .forward }
            return envelope.action == "Reset" ? .answerError(.formationViolation, "invalid Reset result") : .drop(reason: "no")
        }))])
        let reset = tester.csmsSends(call: "Reset", payload: ["type": "Soft"])
        _ = tester.takeSentToCharger()
        tester.chargerAnswers(reset, payload: ["status": "Maybe"])
        let answer = tester.takeSentToCSMS()
        #expect(answer.map(\.errorCode) == ["FormationViolation"])
        #expect(answer.map(\.messageId) == [reset])

        let auth = tester.chargerSends(call: "Authorize", payload: ["idTag": "A"])
        _ = tester.takeSentToCSMS()
        tester.csmsAnswers(auth, payload: ["idTagInfo": ["status": "Accepted"]])
        #expect(tester.takeSentToCharger().map(\.errorCode) == ["GenericError"], "a dropped answer still answers the charger")
    }

    @Test func metricLabelsNameOnlyCatalogueActions() {
        #expect(RouterMetrics.actionLabel("Heartbeat") == "Heartbeat")
        #expect(RouterMetrics.actionLabel("InventedAction42") == "other")
        #expect(RouterMetrics.actionLabel(String(repeating: "x", count: 65_536)) == "other")
        #expect(RouterMetrics.actionLabel(nil) == "")
    }

    @Test func peerStringsAreEscapedInLogLines() {
        let logs = LogCapture()
        let tester = StageTester(stages: [], logger: Logger(label: "test", factory: { _ in logs }))
        tester.chargerSends(#"[3,"x\nforged line: level=critical",{}]"#)
        #expect(logs.lines.count == 1)
        #expect(logs.lines.allSatisfy { !$0.dropLast().contains("\n") })
        #expect(logs.lines.first?.contains(#"x\nforged"#) == true)
    }
}

/// Takes over StartTransaction CALLs orphaned by a lost CSMS link and answers them itself.
final class TakeOverStage: Stage, @unchecked Sendable {
    static let type = "take_over"
    static let summary = "test: answers orphaned StartTransactions"
    private(set) var told: [String] = []
    init(configuration: NoConfiguration, context: StageSetupContext) { fatalError("built directly in tests") }
    init() {}
    func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict { .forward }
    func northLinkChanged(up: Bool, orphaned: [Envelope], in session: any SessionContext) -> Set<String> {
        told.append("up:\(up) orphaned:\(orphaned.map { $0.action ?? "-" }.joined(separator: ","))")
        let starts = orphaned.filter { $0.action == "StartTransaction" }
        for start in starts {
            session.answer(start.messageId, to: .charger, with: ["transactionId": 2_000_000_001, "idTagInfo": ["status": "Accepted"]],
                           error: nil)
        }
        return Set(starts.map(\.messageId))
    }
}

@Suite("North link in buffer mode")
struct NorthLinkTests {
    @Test func orphanedCallsAreTakenOverOrAnsweredAndGatewayCallsWait() {
        let stage = TakeOverStage()
        let tester = StageTester(stages: [("take", stage)])
        let start = tester.chargerSends(call: "StartTransaction", payload: ["connectorId": 1, "idTag": "A", "meterStart": 0,
                                                                            "timestamp": "2026-01-01T00:00:00Z"])
        let heartbeat = tester.chargerSends(call: "Heartbeat")
        #expect(tester.takeSentToCSMS().map(\.messageId) == [start], "one CALL in flight; the heartbeat waits")

        tester.session.northLinkDown()
        #expect(stage.told == ["up:false orphaned:StartTransaction,Heartbeat"])
        let answers = tester.takeSentToCharger()
        #expect(answers.first { $0.messageId == start }?.messageType == .callResult, "taken over by the stage")
        #expect(answers.first { $0.messageId == heartbeat }?.errorCode == "GenericError", "nobody took it: answered at once")

        let late = tester.chargerSends(call: "Heartbeat")
        #expect(tester.takeSentToCharger().map(\.errorCode) == ["GenericError"], "\(late): the CSMS is away")
        var outcome: CallOutcome?
        tester.session.sendCall("SecurityEventNotification", payload: ["type": "X", "timestamp": "2026-01-01T00:00:00Z"], to: .csms) {
            outcome = $0
        }
        #expect(tester.takeSentToCSMS().isEmpty, "gateway CALLs wait for the link")

        tester.session.northLinkUp()
        #expect(stage.told.last == "up:true orphaned:")
        #expect(tester.takeSentToCSMS().map(\.action) == ["SecurityEventNotification"])
        #expect(outcome == nil)
    }
}
