import Foundation
import Logging
import Metrics
public import OCPP
public import StageKit
import Synchronization

/// The charger's firewall, in both directions.
///
/// Towards the gateway (south): connection attempts per source address are rate-limited, and
/// repeated failed logins lock the source and the charger id out with growing back-off.
/// Per frame: replayed message ids are dropped, unknown actions answered `NotImplemented`,
/// actions from the wrong side refused, payloads checked against the OCPP 1.6J schemas, and
/// every charger's CALLs rate-limited per action class. Towards the charger: a per-action policy
/// for the CSMS, a `ChangeConfiguration` key deny-list and value length cap, a paced CALL rate and
/// a quiet period after boot. Each decision is counted by rule, logged, and (for the events the
/// Security Whitepaper defines) reported north, rate-limited.
public struct FirewallStage: Stage {
    public struct Configuration: Decodable, Sendable {
        /// Token buckets for the charger's CALLs: `default`, or per action class
        /// (`transaction`, `status`, `management`, `smart_charging`, `security`, `core`).
        public var rateLimits: [String: Bucket]?
        /// Seconds within which a message id seen again from the same side of a connection is a replay.
        public var replayWindow: Double?
        /// Message ids remembered per side of a connection; past it the oldest are forgotten.
        public var maxReplayIds: Int?
        /// A rule that refuses frames reports an incident (the dashcam's trigger) at most once per
        /// this many seconds per charger.
        public var incidentInterval: Double?
        public var validatePayloads: Bool?
        /// Check RFC 3339 timestamps (some chargers send them without a time zone).
        public var checkTimestamps: Bool?
        /// Which CSMS → charger actions pass: `allow` (if given, only these) and `deny`.
        public var csmsActions: ActionPolicy?
        public var changeConfiguration: ChangeConfigurationPolicy?
        /// Seconds between CALLs towards the charger (queued, not dropped).
        public var csmsCallInterval: Double?
        /// Seconds after the charger's accepted BootNotification during which CSMS CALLs wait.
        public var quietAfterBoot: Double?
        /// At most one SecurityEventNotification of a type per charger in this many seconds.
        public var securityEventInterval: Double?
        public var connections: ConnectionPolicy?
    }

    public struct Bucket: Decodable, Sendable {
        public var perSecond: Double
        public var burst: Double
    }

    public struct ActionPolicy: Decodable, Sendable {
        public var allow: [String]?
        public var deny: [String]?
    }

    public struct ChangeConfigurationPolicy: Decodable, Sendable {
        public var denyKeys: [String]?
        public var maxValueLength: Int?
    }

    public struct ConnectionPolicy: Decodable, Sendable {
        /// Upgrade requests per second per source address (token bucket with `attempts_burst`).
        public var attemptsPerSecond: Double?
        public var attemptsBurst: Double?
        /// Failed logins (401) from one source address before that source is locked out.
        public var maxFailedLogins: Int?
        /// Distinct source addresses failing to log in as one charger id before the id itself is locked out.
        public var maxFailingSources: Int?
        /// Seconds after which failed logins are forgotten.
        public var failureWindow: Double?
        /// The first lockout in seconds; each further one doubles, up to `lockout_max`.
        public var lockout: Double?
        public var lockoutMax: Double?
    }

    public static let type = "ids"
    public static let summary = "Firewall: connection and CALL rate limits, replay and direction checks, schema validation, CSMS action policy, paced CALLs to the charger."

    let replayWindow: Duration
    let maxReplayIds: Int
    let incidentInterval: Duration
    let validatePayloads: Bool
    let checkTimestamps: Bool
    let allowedCSMSActions: Set<String>?
    let deniedCSMSActions: Set<String>
    let deniedConfigurationKeys: Set<String>
    let maxConfigurationValueLength: Int
    let csmsCallInterval: Duration?
    let quietAfterBoot: Duration?
    let securityEventInterval: Duration
    let connections: ConnectionGuard
    let logger: Logger
    let decisions: DecisionCounters
    /// Per version, what a frame's checks need of its action, found with one lookup of the action name
    /// (the catalogue, the sender rule, the rate-limit bucket and both schemas were five lookups a frame).
    let rules16: RulesTable
    let rules201: RulesTable
    /// The rate-limit buckets: `default` at 0, then each class that has its own (`ActionRules.bucket`).
    let bucketNames: [String]
    let bucketLimits: [Bucket]

    /// A version's catalogue actions by (length, first byte, last byte): a frame finds its action's rules by
    /// comparing a name or two, without hashing the action (SipHash) for a dictionary. The lists are the
    /// catalogue's, so whatever a peer sends, a lookup compares at most a few names.
    struct RulesTable: Sendable {
        private var buckets: [[(name: String, rules: ActionRules)]] = Array(repeating: [], count: 256)

        init(_ rules: [String: ActionRules]) {
            for (name, entry) in rules.sorted(by: { $0.key < $1.key }) {
                buckets[Self.bucket(name.utf8.count, name.utf8.first!, name.utf8.last!)].append((name, entry))
            }
        }

        private static func bucket(_ count: Int, _ first: UInt8, _ last: UInt8) -> Int {
            (count &* 31 &+ Int(first) &* 7 &+ Int(last)) & 255
        }

        subscript(action: String) -> ActionRules? {
            let utf8 = action.utf8
            guard let first = utf8.first, let last = utf8.last else { return nil }
            for entry in buckets[Self.bucket(utf8.count, first, last)] where entry.name == action { return entry.rules }
            return nil
        }
    }

    /// What the firewall checks of one catalogue action.
    /// A class: a frame's lookup hands out one reference (a struct's copy retained each schema, twice a frame).
    final class ActionRules: Sendable {
        let sender: SenderSet
        /// Index into `bucketNames`/`bucketLimits`.
        let bucket: Int
        let request: PayloadSchema?
        let response: PayloadSchema?

        init(sender: SenderSet, bucket: Int, request: PayloadSchema?, response: PayloadSchema?) {
            self.sender = sender
            self.bucket = bucket
            self.request = request
            self.response = response
        }
    }

    public init(configuration: Configuration, context: StageSetupContext) throws {
        var limits = configuration.rateLimits ?? [:]
        if limits["default"] == nil { limits["default"] = Bucket(perSecond: 10, burst: 30) }
        let classes = Set(ActionClass.allCases.map(\.rawValue) + ["default"])
        for (name, bucket) in limits {
            guard classes.contains(name) else {
                throw FirewallConfigurationError("unknown action class '\(name)' in 'rate_limits'; use \(classes.sorted().joined(separator: ", "))")
            }
            guard bucket.perSecond > 0, bucket.burst >= 1 else {
                throw FirewallConfigurationError("'rate_limits.\(name)' needs per_second > 0 and burst ≥ 1")
            }
        }
        // One policy for both versions: a name counts if the CSMS sends it in either (a 1.6-only name
        // simply never matches a 2.0.1 session's frames, and the other way round).
        for action in (configuration.csmsActions?.allow ?? []) + (configuration.csmsActions?.deny ?? [])
        where !OCPPVersion.allCases.contains(where: { MessageCatalogue.descriptor(for: action, version: $0)?.sender.contains(.centralSystem) == true }) {
            throw FirewallConfigurationError("'csms_actions' names '\(action)', which is not an action the CSMS sends in OCPP 1.6J or 2.0.1")
        }
        func seconds(_ value: Double?, _ fallback: Double?, _ name: String) throws -> Duration? {
            guard let value = value ?? fallback else { return nil }
            guard value >= 0 else { throw FirewallConfigurationError("'\(name)' must not be negative") }
            return value == 0 ? nil : .milliseconds(Int64(value * 1000))
        }
        replayWindow = try seconds(configuration.replayWindow, 300, "replay_window") ?? .zero
        maxReplayIds = configuration.maxReplayIds ?? 4096
        guard maxReplayIds >= 1 else { throw FirewallConfigurationError("'max_replay_ids' must be at least 1") }
        incidentInterval = try seconds(configuration.incidentInterval, 60, "incident_interval") ?? .zero
        validatePayloads = configuration.validatePayloads ?? true
        checkTimestamps = configuration.checkTimestamps ?? true
        allowedCSMSActions = configuration.csmsActions?.allow.map(Set.init)
        deniedCSMSActions = Set(configuration.csmsActions?.deny ?? [])
        deniedConfigurationKeys = Set(configuration.changeConfiguration?.denyKeys ?? [])
        maxConfigurationValueLength = configuration.changeConfiguration?.maxValueLength ?? 500
        csmsCallInterval = try seconds(configuration.csmsCallInterval, nil, "csms_call_interval")
        quietAfterBoot = try seconds(configuration.quietAfterBoot, nil, "quiet_after_boot")
        securityEventInterval = try seconds(configuration.securityEventInterval, 60, "security_event_interval") ?? .seconds(60)
        let policy = configuration.connections
        let failureWindow = policy?.failureWindow ?? 900
        guard failureWindow > 0 else { throw FirewallConfigurationError("'connections.failure_window' must be positive") }
        let maxFailedLogins = policy?.maxFailedLogins ?? 5
        let maxFailingSources = policy?.maxFailingSources ?? 10
        guard maxFailedLogins >= 1, maxFailingSources >= 1 else {
            throw FirewallConfigurationError("'connections.max_failed_logins' and 'connections.max_failing_sources' must be at least 1")
        }
        connections = ConnectionGuard(
            attemptsPerSecond: policy?.attemptsPerSecond ?? 5, attemptsBurst: policy?.attemptsBurst ?? 10,
            maxFailedLogins: maxFailedLogins, maxFailingSources: maxFailingSources,
            failureWindow: failureWindow,
            lockout: policy?.lockout ?? 30, lockoutMax: policy?.lockoutMax ?? 3600)
        logger = context.logger
        decisions = DecisionCounters()
        let names = ["default"] + ActionClass.allCases.map(\.rawValue).filter { limits[$0] != nil }
        bucketNames = names
        bucketLimits = names.map { limits[$0]! }
        func rules(_ version: OCPPVersion) -> [String: ActionRules] {
            MessageCatalogue.actions(version: version).mapValues { descriptor in
                ActionRules(sender: descriptor.sender, bucket: names.firstIndex(of: descriptor.actionClass.rawValue) ?? 0,
                            request: PayloadSchema.schema(for: descriptor.name, version: version, response: false),
                            response: PayloadSchema.schema(for: descriptor.name, version: version, response: true))
            }
        }
        rules16 = RulesTable(rules(.v16))
        rules201 = RulesTable(rules(.v201))
    }

    func rules(for action: String, version: OCPPVersion) -> ActionRules? {
        version == .v201 ? rules201[action] : rules16[action]
    }

    // MARK: Per-session state

    /// A class, so that a frame's checks mutate it in place: a struct read out of the session
    /// and written back would copy its replay table on every frame.
    final class SessionState {
        /// Indexed like `FirewallStage.bucketNames`; made at the first CALL of their class.
        var buckets: [TokenBucket?]
        /// Message ids each side used within the replay window (this connection only).
        var replay: ReplayTables
        var lastEvent: [String: Duration] = [:]
        /// When each rule last reported an incident (one per rule per `incident_interval`).
        var lastIncident: [String: Duration] = [:]
        var logs: [String: LogThrottle] = [:]

        init(replayWindow: Duration, maxReplayIds: Int, buckets: Int) {
            self.buckets = Array(repeating: nil, count: buckets)
            replay = ReplayTables(charger: ReplayTable(window: replayWindow, capacity: maxReplayIds),
                                  csms: ReplayTable(window: replayWindow, capacity: maxReplayIds))
        }
    }

    struct ReplayTables {
        var charger: ReplayTable
        var csms: ReplayTable
        subscript(side: Side) -> ReplayTable {
            get { side == .charger ? charger : csms }
            _modify {
                if side == .charger { yield &charger } else { yield &csms }
            }
        }
    }

    enum State: SessionStateKey { typealias Value = SessionState }

    func newState() -> SessionState { SessionState(replayWindow: replayWindow, maxReplayIds: maxReplayIds, buckets: bucketNames.count) }

    public func sessionStarted(_ session: any SessionContext) {
        session[State.self] = newState()
        if let csmsCallInterval { session.paceCalls(towards: .charger, minimumInterval: csmsCallInterval, holdUntil: nil) }
    }

    // MARK: Frames

    public func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        let state: SessionState
        if let existing = session[State.self] {
            state = existing
        } else {
            state = newState()
            session[State.self] = state
        }
        let side: Side = envelope.direction == .fromCSMS ? .csms : .charger
        let action = envelope.action ?? ""
        // The session's version picks the catalogue: its sender rules, classes and schemas.
        let version = envelope.version
        let rules = rules(for: action, version: version)

        guard envelope.isCall else {
            if envelope.messageType == .callResult {
                if side == .csms, action == "BootNotification", let quietAfterBoot,
                   envelope.payload()["status"]?.stringValue == "Accepted" {
                    // Fragile chargers hang when CALLs arrive too soon after boot: hold them back.
                    session.paceCalls(towards: .charger, minimumInterval: nil, holdUntil: session.now + quietAfterBoot)
                }
                // Checked on the frame's bytes: the payload is never decoded for it.
                if validatePayloads, let schema = rules?.response,
                   let problem = schema.validate(bytes: envelope.frame.payloadBytes, checkFormats: checkTimestamps) {
                    // The peer waiting for this answer gets, at once, the CALLERROR its counterpart
                    // would have sent for it (the router sends it in place of the answer).
                    let code = problem.code == .formationViolation ? OCPPErrorCode.formatViolation(for: session.version) : problem.code
                    return refuse(.answerError(code, "invalid \(action) result from the \(side == .charger ? "charge point" : "central system"): \(problem)"),
                                  rule: "invalid_payload", side: side, event: "InvalidMessages", state: state, session: session)
                }
            }
            return .forward
        }

        // Cheap checks first (rate, catalogue, direction, policy), so refused frames never reach the replay table.
        let now = session.now
        if side == .charger {
            let index = rules?.bucket ?? 0
            // One access to the state's buckets (each is checked for exclusivity at run time), the bucket taken in place.
            let allowed = Self.takeToken(&state.buckets[index], rate: bucketLimits[index].perSecond, burst: bucketLimits[index].burst, now: now)
            guard allowed else {
                return refuse(.answerError(.genericError, "rate limit for \(bucketNames[index]) CALLs exceeded; slow down"), rule: "rate_limit",
                              side: side, event: nil, state: state, session: session)
            }
        }
        guard let rules else {
            return refuse(.answerError(.notImplemented, "unknown action '\(action.prefix(40))'"), rule: "unknown_action", side: side,
                          event: nil, state: state, session: session)
        }
        guard rules.sender.allows(envelope.direction) else {
            return refuse(.answerError(.notSupported, "\(action) is not sent by the \(side == .charger ? "charge point" : "central system")"),
                          rule: "wrong_direction", side: side, event: "InvalidMessages", state: state, session: session)
        }
        if side == .csms {
            let permitted = (allowedCSMSActions?.contains(action) ?? true) && !deniedCSMSActions.contains(action)
            if !permitted {
                return refuse(.answerError(.securityError, "\(action) is not allowed towards this charger by the gateway's policy"),
                              rule: "csms_policy", side: side, event: nil, state: state, session: session)
            }
        }
        if replayWindow > .zero, state.replay[side].contains(envelope.messageId, now: now) {
            return refuse(.drop(reason: "message id seen again within the replay window"), rule: "replay",
                          side: side, event: "AttemptedReplayAttacks", state: state, session: session)
        }
        if validatePayloads, let schema = rules.request,
           let problem = schema.validate(bytes: envelope.frame.payloadBytes, checkFormats: checkTimestamps) {
            let code = problem.code == .formationViolation ? OCPPErrorCode.formatViolation(for: session.version) : problem.code
            return refuse(.answerError(code, "\(action): \(problem)"), rule: "invalid_payload", side: side,
                          event: "InvalidMessages", state: state, session: session)
        }
        if side == .csms, version == .v16, action == "ChangeConfiguration" {
            let payload = envelope.payload()
            let key = payload["key"]?.stringValue ?? ""
            if deniedConfigurationKeys.contains(key) {
                return refuse(.answer(["status": "Rejected"]), rule: "configuration_key", side: side, event: nil, state: state, session: session)
            }
            if (payload["value"]?.stringValue?.count ?? 0) > maxConfigurationValueLength {
                return refuse(.answer(["status": "Rejected"]), rule: "configuration_value_length", side: side, event: nil, state: state,
                              session: session)
            }
        }
        // Only a CALL that passes every rule is remembered: refused frames cost the table nothing.
        if replayWindow > .zero, state.replay[side].insert(envelope.messageId, now: now) {
            decisions.count(rule: "replay_table_full")
        }
        return .forward
    }

    /// Takes a token from a charger's bucket of one action class, made full at its first CALL.
    private static func takeToken(_ slot: inout TokenBucket?, rate: Double, burst: Double, now: Duration) -> Bool {
        var bucket = slot ?? TokenBucket(rate: rate, burst: burst, now: now)
        let allowed = bucket.take(now: now)
        slot = bucket
        return allowed
    }

    /// Counts, logs and (rate-limited) reports a refusal.
    private func refuse(_ verdict: Verdict, rule: String, side: Side, event: String?, state: SessionState,
                        session: any SessionContext) -> Verdict {
        decisions.count(rule: rule)
        // One incident per rule per interval: a flood of refusals is one fault for the dashcam, not thousands.
        let lastIncident = state.lastIncident[rule]
        if lastIncident == nil || session.now - lastIncident! >= incidentInterval {
            state.lastIncident[rule] = session.now
            session.reportIncident("firewall rule \(rule)")
        }
        let (log, suppressed) = state.logs[rule, default: LogThrottle()].admit(now: session.now)
        if log {
            session.logger.warning("firewall", metadata: [
                "rule": "\(rule)", "from": "\(side)", "verdict": "\(verdict.label)",
                "similar_lines_left_out": "\(suppressed)",
            ])
        }
        if let event {
            let last = state.lastEvent[event]
            if last == nil || session.now - last! >= securityEventInterval {
                state.lastEvent[event] = session.now
                session.sendCall("SecurityEventNotification", payload: [
                    "type": .string(event), "timestamp": .string(Date(timeIntervalSince1970: session.wallTime).formatted(.iso8601)),
                    "techInfo": .string("ocpp-gateway firewall rule \(rule), from the \(side == .charger ? "charger" : "CSMS")"),
                ], to: .csms) { _ in }
            }
        }
        return verdict
    }

    // MARK: Connections

    public func chargerConnecting(_ request: ChargerConnectRequest) async -> ConnectDecision {
        let source = request.remoteAddress ?? "?"
        if let refusal = connections.admit(source: source, chargerId: request.chargerId) {
            decisions.count(rule: refusal.rule)
            if let suppressed = refusal.log {
                logger.warning("firewall", metadata: ["rule": "\(refusal.rule)", "charger": "\(LogSafe.escape(request.chargerId))",
                                                       "source": "\(LogSafe.escape(source))", "similar_lines_left_out": "\(suppressed)"])
            }
            return .reject(status: 429, reason: refusal.reason)
        }
        return .noOpinion
    }

    public func chargerRefused(_ request: ChargerConnectRequest, status: Int) {
        guard status == 401 else { return }
        let source = request.remoteAddress ?? "?"
        let locked = connections.recordFailedLogin(source: source, chargerId: request.chargerId)
        for what in locked.locked {
            decisions.count(rule: "login_lockout")
            logger.warning("firewall: locking out after repeated failed logins", metadata: [
                "locked": "\(what)", "charger": "\(LogSafe.escape(request.chargerId))", "source": "\(LogSafe.escape(source))",
            ])
        }
    }

    /// Entries in the connection guard's tables (sources, charger ids, pending logins), for tests of their bound.
    package var connectionTableEntries: Int { connections.entryCount }

    /// Called only for a charger that was let in: its successful login clears the failures counted
    /// against its id and against the source it came from.
    public func amendNorthCredentials(_ credentials: NorthCredentials, for chargerId: String) -> NorthCredentials {
        connections.recordSuccessfulLogin(chargerId: chargerId)
        return credentials
    }
}

/// `ocpp_gateway_firewall_decisions_total{rule}`, one counter per rule, made once.
final class DecisionCounters: Sendable {
    private let counters = Mutex<[String: Counter]>([:])

    func count(rule: String) {
        let counter = counters.withLock { counters in
            if let existing = counters[rule] { return existing }
            let counter = Counter(label: "ocpp_gateway_firewall_decisions_total", dimensions: [("rule", rule)])
            counters[rule] = counter
            return counter
        }
        counter.increment()
    }
}

struct FirewallConfigurationError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
