import Foundation
import Logging
public import OCPP
import Outbox
public import StageKit

/// `outbox`: offline autonomy for `north.offline_mode: buffer` (docs/offline.md).
///
/// - Online with an empty outbox every frame passes; the stage only learns (idTagInfo from CSMS answers
///   into the authorization cache, SendLocalList into the local list) and rewrites transaction ids the
///   gateway made while offline (charger → CSMS: local → CSMS id; CSMS → charger: back).
/// - While the CSMS is away, or while the outbox still holds CALLs (replay comes "before any new
///   traffic"), a charger CALL that needs the CSMS is appended durably (fsync'ed) and only then
///   answered locally as OCPP 1.6's offline rules allow.
/// - When the CSMS link is back the outbox is replayed in order, one CALL in flight; a replayed
///   StartTransaction's CSMS id replaces the gateway's in every later message of that transaction.
public struct OutboxStage: Stage {
    public struct Configuration: Decodable, Sendable {
        var offlineAuthorize: OfflineAuthorizePolicy?
        var maxBytesPerCharger: Int?
        var maxBytesTotal: Int?
        var localTransactionIdBase: Int?
        var authCacheSize: Int?
        var maxLocalListEntries: Int?
        var maxFailedRows: Int?
        var errorAttempts: Int?
        var retryInitialDelay: Double?
        var retryMaxDelay: Double?
    }

    public static let type = "outbox"
    public static let summary = "Offline autonomy (north.offline_mode: buffer): answers for the CSMS while it is away, keeps a durable outbox and replays it in order."

    let policy: OfflineAuthorizePolicy
    let limits: OutboxLimits
    let errorAttempts: Int
    let retryInitialDelay: Duration
    let retryMaxDelay: Duration
    let stateDirectory: String
    let store: StageStore
    let logger: Logger

    public init(configuration: Configuration, context: StageSetupContext) throws {
        policy = configuration.offlineAuthorize ?? .cacheOnly
        let defaults = OutboxLimits()
        limits = OutboxLimits(
            maxBytesPerCharger: configuration.maxBytesPerCharger ?? defaults.maxBytesPerCharger,
            maxBytesTotal: configuration.maxBytesTotal ?? defaults.maxBytesTotal,
            maxFailedRows: configuration.maxFailedRows ?? defaults.maxFailedRows,
            authCacheSize: configuration.authCacheSize ?? defaults.authCacheSize,
            maxLocalListEntries: configuration.maxLocalListEntries ?? defaults.maxLocalListEntries,
            localTransactionIdBase: configuration.localTransactionIdBase ?? defaults.localTransactionIdBase)
        guard limits.maxBytesPerCharger > 0, limits.maxBytesTotal > 0 else { throw OutboxConfigurationError("max_bytes_per_charger and max_bytes_total must be positive") }
        guard limits.maxFailedRows >= 0, limits.authCacheSize >= 0, limits.maxLocalListEntries >= 0 else {
            throw OutboxConfigurationError("max_failed_rows, auth_cache_size and max_local_list_entries must not be negative")
        }
        guard (1...Int(Int32.max) - 1_000_000).contains(limits.localTransactionIdBase) else {
            throw OutboxConfigurationError("local_transaction_id_base must be between 1 and \(Int(Int32.max) - 1_000_000)")
        }
        errorAttempts = configuration.errorAttempts ?? 3
        guard errorAttempts >= 1 else { throw OutboxConfigurationError("error_attempts must be at least 1") }
        let initial = configuration.retryInitialDelay ?? 5
        let maximum = configuration.retryMaxDelay ?? 300
        guard initial > 0, maximum >= initial else { throw OutboxConfigurationError("retry delays must be positive, retry_max_delay ≥ retry_initial_delay") }
        retryInitialDelay = .milliseconds(Int(initial * 1000))
        retryMaxDelay = .milliseconds(Int(maximum * 1000))
        stateDirectory = context.stateDirectory
        store = context.store
        logger = context.logger
    }

    // MARK: Per-charger state

    /// The charger's last accepted boot, as the gateway remembers it (`chargers/<id>/boot.json`).
    final class ChargerState {
        var database: OutboxDatabase?
        /// The outbox could not be opened: the stage steps aside (the router answers CALLERRORs offline).
        var broken = false
        /// Work waiting for the database to open, in order.
        var waitingForOpen: [(OutboxDatabase) -> Void] = []
        /// The mappings and figures are loaded: until then everything queues (replay rewrites at send time).
        var ready = false
        var boot: BootRecord?
        /// Local transaction id → CSMS id (nil: the CSMS refused its StartTransaction).
        var csmsIds: [Int: Int?] = [:]
        var localIds: [Int: Int] = [:]
        /// Pending rows as the database last reported them, and appends not yet reported.
        var depth = 0
        var appendsInFlight = 0
        var replaying = false
        var retryTimer: (any ScheduledWork)?
        var retryDelay: Duration = .zero
        var ageTimer: (any ScheduledWork)?
        /// Charger CALLs at the CSMS whose answer the stage learns from: message id → idTag.
        var idTags: [String: String] = [:]
        /// Forwarded StopTransactions of remapped transactions: message id → local id.
        var stops: [String: Int] = [:]
        var logThrottle = LogThrottle()
        /// Charger CALLs held while the outbox opens (online), in order; bounded.
        var heldWhileOpening: [(Envelope, MessageKind, JSONValue)] = []

        /// Whether a charger CALL must go through the outbox even with the CSMS link up.
        var mustQueue: Bool { !ready || depth > 0 || appendsInFlight > 0 }
    }

    enum StateKey: SessionStateKey { typealias Value = ChargerState }

    /// Actions queued (and answered locally) while the CSMS is away or the outbox is not empty.
    static func kind(of action: String, payload: JSONValue) -> MessageKind? {
        switch action {
        case "StartTransaction", "StopTransaction": .transaction
        case "MeterValues": payload["transactionId"]?.intValue != nil ? .transaction : .telemetry
        case "StatusNotification": .status
        case "BootNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification", "SecurityEventNotification",
             "SignedFirmwareStatusNotification", "LogStatusNotification":
            .other
        default: nil
        }
    }

    // MARK: Lifecycle

    public func sessionStarted(_ session: any SessionContext) {
        // An OCPP 2.0.1 station keeps its own offline queue (part 2, E/F: queued TransactionEvents with
        // `offline: true`): without state here, its frames pass untouched.
        guard session.version == .v16 else { return }
        session[StateKey.self] = ChargerState()
        let chargerId = session.chargerId
        let path = OutboxDatabase.path(stateDirectory: stateDirectory, chargerId: chargerId)
        let handle = session.handle
        let (limits, store) = (self.limits, self.store)
        // Opening blocks on disk: never on the event loop.
        DispatchQueue.global().async {
            let opened: OutboxDatabase
            do {
                guard ChargerIdentity.isValid(chargerId) else { throw OutboxError("invalid charger id") }
                opened = try OutboxDatabase.shared(path: path, limits: limits)
            } catch {
                let reason = "\(error)"
                handle.run { session in self.openFailed(reason, session) }
                return
            }
            opened.submit({ db -> ([TransactionMapping], OutboxFigures, BootRecord?) in
                let boot = try? store.load(BootRecord.self, charger: chargerId, name: BootRecord.name)
                return (try db.transactionMappings(), try db.figures(), boot)
            }, completion: { result in
                handle.run { session in
                    switch result {
                    case .success(let (mappings, figures, boot)): self.opened(opened, mappings: mappings, figures: figures, boot: boot, session)
                    case .failure(let error): self.openFailed("\(error)", session)
                    }
                }
            })
        }
    }

    private func openFailed(_ reason: String, _ session: any SessionContext) {
        guard let state = session[StateKey.self] else { return }
        state.broken = true
        state.waitingForOpen = []
        session.logger.error("outbox unavailable; offline buffering is off for this charger", metadata: ["error": "\(LogSafe.escape(reason, limit: 300))"])
    }

    private func opened(_ database: OutboxDatabase, mappings: [TransactionMapping], figures: OutboxFigures, boot: BootRecord?,
                        _ session: any SessionContext) {
        guard let state = session[StateKey.self] else { return }
        state.database = database
        state.boot = boot
        for mapping in mappings {
            state.csmsIds[mapping.localId] = mapping.csmsId
            if let csms = mapping.csmsId { state.localIds[csms] = mapping.localId }
        }
        state.depth = figures.depth
        OutboxMetrics.update(charger: session.chargerId, figures: figures, now: session.wallTime)
        let waiting = state.waitingForOpen
        state.waitingForOpen = []
        for work in waiting { work(database) }
        state.ready = true
        let held = state.heldWhileOpening
        state.heldWhileOpening = []
        for (envelope, kind, payload) in held {
            if session.isNorthUp, !state.mustQueue {
                relay(envelope, payload: payload, state, session)
            } else {
                enqueue(envelope, kind: kind, payload: payload, state, session)
            }
        }
        if figures.depth > 0 {
            session.logger.info("outbox holds CALLs from before", metadata: ["depth": "\(figures.depth)"])
        }
        armAgeTimer(state, session)
        replay(session)
    }

    public func sessionEnded(_ session: any SessionContext) {
        guard let state = session[StateKey.self] else { return }
        state.retryTimer?.cancel()
        state.ageTimer?.cancel()
    }

    public func northLinkChanged(up: Bool, orphaned: [Envelope], in session: any SessionContext) -> Set<String> {
        guard let state = session[StateKey.self], !state.broken else { return [] }
        if up {
            state.retryDelay = .zero
            replay(session)
            return []
        }
        // The CSMS is gone: the charger's CALLs that were at it or waiting for it are ours now, in order.
        var taken = Set<String>()
        for envelope in orphaned where envelope.isCall {
            state.idTags[envelope.messageId] = nil
            state.stops[envelope.messageId] = nil
            if offlineCall(envelope, state, session) { taken.insert(envelope.messageId) }
        }
        return taken
    }

    // MARK: Frames

    public func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        guard let state = session[StateKey.self], !state.broken else { return .forward }
        switch (envelope.direction, envelope.messageType) {
        case (.fromCharger, .call):
            return chargerCall(envelope, state, session)
        case (.fromCSMS, .callResult), (.fromCSMS, .callError):
            learn(from: envelope, state, session)
            return .forward
        case (.fromCSMS, .call):
            return csmsCall(envelope, state, session)
        default:
            return .forward
        }
    }

    private func chargerCall(_ envelope: Envelope, _ state: ChargerState, _ session: any SessionContext) -> Verdict {
        let action = envelope.action ?? ""
        if !session.isNorthUp {
            return offlineCall(envelope, state, session) ? .answerLater : .forward
        }
        let payload = envelope.payload()
        guard let kind = Self.kind(of: action, payload: payload) else {
            // Not transaction-related (Authorize, Heartbeat, DataTransfer…): may go at once (1.6 §3.7).
            if action == "Authorize", let tag = payload["idTag"]?.stringValue { remember(tag, for: envelope.messageId, state) }
            return .forward
        }
        if action == "BootNotification", state.boot?.accepted != true || !state.ready { return .forward }
        if !state.ready {
            // The outbox is still opening: whether something from before must go first is not known yet.
            // Hold the CALL; once open it is queued behind what waits, or relayed to the CSMS as it is.
            guard state.heldWhileOpening.count < 32 else {
                return .answerError(.genericError, "the gateway is opening this charger's outbox; retry")
            }
            state.heldWhileOpening.append((envelope, kind, payload))
            return .answerLater
        }
        if state.mustQueue {
            enqueue(envelope, kind: kind, payload: payload, state, session)
            return .answerLater
        }
        return passThrough(envelope, action: action, payload: payload, state)
    }

    /// Answers a charger CALL for the absent CSMS (queueing it first if it must reach the CSMS later).
    /// Returns false for CALLs nothing can answer offline (the router answers them with a CALLERROR).
    private func offlineCall(_ envelope: Envelope, _ state: ChargerState, _ session: any SessionContext) -> Bool {
        let action = envelope.action ?? ""
        let payload = envelope.payload()
        let id = envelope.messageId
        switch action {
        case "Heartbeat":
            session.answer(id, to: .charger, with: ["currentTime": .string(Self.timestamp(session.wallTime))], error: nil)
            return true
        case "Authorize":
            guard let tag = payload["idTag"]?.stringValue else { return false }
            let (handle, policy, now) = (session.handle, self.policy, session.wallTime)
            withDatabase(state) { database in
                database.submit({ try $0.authorize(idTag: tag, policy: policy, now: now) }, completion: { result in
                    handle.run { session in
                        switch result {
                        case .success(let info): session.answer(id, to: .charger, with: ["idTagInfo": Self.json(info)], error: nil)
                        case .failure: session.answer(id, to: .charger, with: [:], error: (.internalError, "the gateway cannot read its authorization cache"))
                        }
                    }
                })
            }
            return true
        case "DataTransfer":
            // What an unreachable CSMS's vendor extension can say: not accepted (DataTransfer.conf status).
            session.answer(id, to: .charger, with: ["status": "Rejected"], error: nil)
            return true
        case "BootNotification":
            // Decided once the outbox is open (the charger's last boot record is read with it).
            withDatabase(state) { _ in
                if state.boot?.accepted == true {
                    self.enqueue(envelope, kind: .other, payload: payload, state, session)
                } else {
                    // Never accepted by the CSMS: the gateway may not accept it either; the charger retries after `interval`.
                    session.answer(id, to: .charger, with: ["status": "Pending", "currentTime": .string(Self.timestamp(session.wallTime)),
                                                            "interval": 60], error: nil)
                }
            }
            return true
        default:
            guard let kind = Self.kind(of: action, payload: payload) else { return false }
            enqueue(envelope, kind: kind, payload: payload, state, session)
            return true
        }
    }

    private func withDatabase(_ state: ChargerState, _ work: @escaping (OutboxDatabase) -> Void) {
        if let database = state.database { work(database) } else { state.waitingForOpen.append(work) }
    }

    /// Appends the CALL durably, then answers it as the CSMS would have.
    private func enqueue(_ envelope: Envelope, kind: MessageKind, payload: JSONValue, _ state: ChargerState, _ session: any SessionContext) {
        let action = envelope.action ?? ""
        let id = envelope.messageId
        let message = NewMessage(action: action, payload: Array(envelope.frame.payloadBytes), kind: kind,
                                 connector: payload["connectorId"]?.intValue,
                                 transactionId: action == "StartTransaction" ? nil : payload["transactionId"]?.intValue,
                                 enqueuedAt: session.wallTime)
        let idTag = action == "StartTransaction" || action == "StopTransaction" ? payload["idTag"]?.stringValue : nil
        let (handle, policy, now) = (session.handle, self.policy, session.wallTime)
        state.appendsInFlight += 1
        withDatabase(state) { database in
            database.submit({ database -> (AppendResult, IdTagInfo?) in
                let appended = try database.append(message)
                let info = try idTag.map { try database.authorize(idTag: $0, policy: policy, now: now) }
                return (appended, info)
            }, completion: { result in
                handle.run { session in self.appended(result, id: id, action: action, session) }
            })
        }
    }

    private func appended(_ result: Result<(AppendResult, IdTagInfo?), any Error>, id: String, action: String, _ session: any SessionContext) {
        guard let state = session[StateKey.self] else { return }
        state.appendsInFlight -= 1
        let appended: AppendResult, info: IdTagInfo?
        switch result {
        case .failure(let error):
            // Not stored, so not acknowledged: the charger keeps it and tries again.
            log(.error, "outbox append failed; the charger is told to retry", ["action": action, "error": "\(error)"], state, session)
            session.answer(id, to: .charger, with: [:], error: (.internalError, "the gateway could not store the message; retry later"))
            replay(session)
            return
        case .success(let value):
            (appended, info) = value
        }
        state.depth = appended.figures.depth
        OutboxMetrics.update(charger: session.chargerId, figures: appended.figures, now: session.wallTime)
        if !appended.dropped.isEmpty {
            OutboxMetrics.dropped(appended.dropped)
            let quota = appended.dropped.filter { $0.reason == "quota" }
            if !quota.isEmpty {
                log(.warning, "outbox over quota; messages dropped", [
                    "dropped": "\(quota.count)", "kinds": Set(quota.map(\.kind.rawValue)).sorted().joined(separator: ","),
                ], state, session)
            }
        }
        let now = JSONValue.string(Self.timestamp(session.wallTime))
        let answer: JSONValue
        switch action {
        case "BootNotification":
            answer = ["status": "Accepted", "currentTime": now, "interval": .number(state.boot?.interval ?? 300)]
        case "StartTransaction":
            answer = ["transactionId": .number(appended.localTransactionId ?? 0),
                      "idTagInfo": Self.json(info ?? IdTagInfo(status: policy == .accept ? "Accepted" : "Invalid"))]
        case "StopTransaction":
            answer = info.map { ["idTagInfo": Self.json($0)] } ?? [:]
        default:
            answer = [:]
        }
        session.answer(id, to: .charger, with: answer, error: nil)
        armAgeTimer(state, session)
        replay(session)
    }

    /// Online with an empty outbox: the frame passes, with a gateway-made transaction id replaced by the CSMS's.
    private func passThrough(_ envelope: Envelope, action: String, payload: JSONValue, _ state: ChargerState) -> Verdict {
        if let tag = payload["idTag"]?.stringValue, action == "StartTransaction" || action == "StopTransaction" {
            remember(tag, for: envelope.messageId, state)
        }
        guard action == "StopTransaction" || action == "MeterValues", let local = payload["transactionId"]?.intValue,
              let known = state.csmsIds[local] else { return .forward }
        if action == "StopTransaction" {
            if state.stops.count >= 64 { state.stops.removeAll() }  // answers that never come must not pile up
            state.stops[envelope.messageId] = local
        }
        guard let csms = known else { return .forward }
        return .forward(modifiedPayload: payload.setting("transactionId", to: .number(csms)))
    }

    /// A CALL held while the outbox opened, with nothing queued before it: the CSMS answers it through the gateway's
    /// own CALL (its answer goes to the charger under the charger's message id). If the link drops first, it is queued.
    private func relay(_ envelope: Envelope, payload: JSONValue, _ state: ChargerState, _ session: any SessionContext) {
        let action = envelope.action ?? ""
        let id = envelope.messageId
        let rewritten: JSONValue
        if case .forwardModified(let modified) = passThrough(envelope, action: action, payload: payload, state).kind {
            rewritten = modified
        } else {
            rewritten = payload
        }
        state.idTags[id] = nil
        let tag = action == "StartTransaction" || action == "StopTransaction" ? payload["idTag"]?.stringValue : nil
        let endedLocal = state.stops.removeValue(forKey: id)
        session.sendCall(action, payload: rewritten, to: .csms) { outcome in
            guard let state = session[StateKey.self] else { return }
            switch outcome {
            case .result(let answer):
                self.learned(tag: tag, info: answer["idTagInfo"].flatMap(Self.idTagInfo), endedLocal: endedLocal, state, session)
                session.answer(id, to: .charger, with: answer, error: nil)
            case .error(let code, let description):
                session.answer(id, to: .charger, with: [:], error: (OCPPErrorCode(rawValue: code), description))
            case .timedOut, .rejected:
                session.answer(id, to: .charger, with: [:], error: (.genericError, "no answer from the CSMS"))
            case .connectionClosed:
                guard !session.isClosed else { return }
                self.enqueue(envelope, kind: Self.kind(of: action, payload: payload) ?? .other, payload: payload, state, session)
            }
        }
    }

    private func remember(_ idTag: String, for messageId: String, _ state: ChargerState) {
        // Bounded: answers that never come (timeouts) must not pile up.
        if state.idTags.count >= 64 { state.idTags.removeAll() }
        state.idTags[messageId] = idTag
    }

    /// A CSMS answer to a charger CALL: learn idTagInfo, end remapped transactions, note the boot.
    private func learn(from envelope: Envelope, _ state: ChargerState, _ session: any SessionContext) {
        let id = envelope.messageId
        let tag = state.idTags.removeValue(forKey: id)
        let endedLocal = state.stops.removeValue(forKey: id)
        guard envelope.messageType == .callResult else { return }
        let payload = envelope.payload()
        if envelope.action == "BootNotification" {
            state.boot = BootRecord(accepted: payload["status"]?.stringValue == "Accepted", interval: payload["interval"]?.intValue,
                                    answeredAt: session.wallTime)
        }
        learned(tag: tag, info: payload["idTagInfo"].flatMap(Self.idTagInfo), endedLocal: endedLocal, state, session)
    }

    /// Keeps what a CSMS answer taught: an idTag's verdict, the end of a remapped transaction.
    private func learned(tag: String?, info: IdTagInfo?, endedLocal: Int?, _ state: ChargerState, _ session: any SessionContext) {
        let now = session.wallTime
        if let local = endedLocal {
            if let csms = state.csmsIds[local] ?? nil { state.localIds[csms] = nil }
            state.csmsIds[local] = nil
        }
        guard (tag != nil && info != nil) || endedLocal != nil else { return }
        withDatabase(state) { database in
            database.submit({ database in
                if let tag, let info { try database.learn(idTag: tag, info: info, at: now) }
                if let endedLocal { try database.endTransaction(local: endedLocal) }
            }, completion: { _ in })
        }
    }

    /// CSMS CALLs: the local list is kept; transaction ids the charger knows under the gateway's number are rewritten back.
    private func csmsCall(_ envelope: Envelope, _ state: ChargerState, _ session: any SessionContext) -> Verdict {
        switch envelope.action {
        case "SendLocalList":
            let payload = envelope.payload()
            guard let version = payload["listVersion"]?.intValue, let type = payload["updateType"]?.stringValue else { return .forward }
            let entries = (payload["localAuthorizationList"]?.arrayValue ?? []).compactMap { entry -> (idTag: String, info: IdTagInfo?)? in
                guard let tag = entry["idTag"]?.stringValue else { return nil }
                return (tag, entry["idTagInfo"].flatMap(Self.idTagInfo))
            }
            withDatabase(state) { database in
                database.submit({ try $0.applyLocalList(version: version, updateType: type, entries: entries) }, completion: { _ in })
            }
            return .forward
        case "RemoteStopTransaction":
            let payload = envelope.payload()
            guard let csms = payload["transactionId"]?.intValue, let local = state.localIds[csms] else { return .forward }
            return .forward(modifiedPayload: payload.setting("transactionId", to: .number(local)))
        case "SetChargingProfile":
            let payload = envelope.payload()
            guard let profile = payload["csChargingProfiles"], let csms = profile["transactionId"]?.intValue,
                  let local = state.localIds[csms] else { return .forward }
            return .forward(modifiedPayload: payload.setting("csChargingProfiles", to: profile.setting("transactionId", to: .number(local))))
        default:
            return .forward
        }
    }

    // MARK: Replay

    private enum Step: Sendable {
        /// Nothing waits.
        case empty
        /// A row that cannot be sent was marked failed.
        case skipped(OutboxFigures)
        case send(QueuedMessage, JSONValue)
    }

    /// Sends the oldest waiting CALL to the CSMS, if the link is up and none is in flight.
    private func replay(_ session: any SessionContext) {
        guard let state = session[StateKey.self], let database = state.database, state.ready, !state.broken, session.isNorthUp,
              !state.replaying, state.retryTimer == nil, state.depth > 0 || state.appendsInFlight > 0 else { return }
        state.replaying = true
        let handle = session.handle
        let base = limits.localTransactionIdBase
        let now = session.wallTime
        database.submit({ database -> Step in
            guard let row = try database.next() else { return .empty }
            guard var payload = try? JSONValue(parsing: row.payload) else {
                return .skipped(try database.failed(seq: row.seq, error: "the stored payload is not JSON", at: now))
            }
            if row.action == "StopTransaction" || row.action == "MeterValues", let local = row.localTransactionId, local >= base,
               let mapping = try database.mapping(local: local) {
                guard let csms = mapping.csmsId else {
                    return .skipped(try database.failed(seq: row.seq, error: "the CSMS refused this transaction's StartTransaction", at: now))
                }
                payload = payload.setting("transactionId", to: .number(csms))
            }
            return .send(row, payload)
        }, completion: { result in
            handle.run { session in self.replayStep(result, session) }
        })
    }

    private func replayStep(_ result: Result<Step, any Error>, _ session: any SessionContext) {
        guard let state = session[StateKey.self] else { return }
        state.replaying = false
        switch result {
        case .failure(let error):
            log(.error, "outbox read failed; retrying", ["error": "\(error)"], state, session)
            scheduleRetry(state, session)
        case .success(.empty):
            if state.depth > 0 { session.logger.info("outbox replayed; CALLs pass directly again") }
            state.depth = 0
            OutboxMetrics.update(charger: session.chargerId, figures: OutboxFigures(), now: session.wallTime)
            replay(session)  // appends that came meanwhile
        case .success(.skipped(let figures)):
            OutboxMetrics.failed()
            state.depth = figures.depth
            OutboxMetrics.update(charger: session.chargerId, figures: figures, now: session.wallTime)
            replay(session)
        case .success(.send(let row, let payload)):
            state.replaying = true
            session.sendCall(row.action, payload: payload, to: .csms) { outcome in
                self.replayed(row, payload: payload, outcome: outcome, session)
            }
        }
    }

    private func replayed(_ row: QueuedMessage, payload: JSONValue, outcome: CallOutcome, _ session: any SessionContext) {
        guard let state = session[StateKey.self], let database = state.database else { return }
        let handle = session.handle
        let now = session.wallTime
        switch outcome {
        case .result(let answer):
            if row.action == "StartTransaction", row.localTransactionId != nil, answer["transactionId"]?.intValue == nil {
                return refused(row, error: "the CSMS's StartTransaction answer has no transactionId", state, session)
            }
            let mapping: TransactionMapping? = row.action == "StartTransaction"
                ? row.localTransactionId.map { TransactionMapping(localId: $0, csmsId: answer["transactionId"]?.intValue) } : nil
            let ended: Int? = row.action == "StopTransaction" ? row.localTransactionId.flatMap { state.csmsIds[$0] != nil ? $0 : nil } : nil
            let tag = row.action == "StartTransaction" || row.action == "StopTransaction" ? payload["idTag"]?.stringValue : nil
            let info = answer["idTagInfo"].flatMap(Self.idTagInfo)
            database.submit({ database -> OutboxFigures in
                let figures = try database.delivered(seq: row.seq, mapping: mapping, endTransaction: ended, at: now)
                if let tag, let info { try? database.learn(idTag: tag, info: info, at: now) }
                return figures
            }, completion: { result in
                handle.run { session in
                    guard let state = session[StateKey.self] else { return }
                    state.replaying = false
                    guard case .success(let figures) = result else { return self.scheduleRetry(state, session) }
                    OutboxMetrics.replayed()
                    if let mapping {
                        state.csmsIds[mapping.localId] = mapping.csmsId
                        if let csms = mapping.csmsId { state.localIds[csms] = mapping.localId }
                    }
                    if let ended {
                        if let csms = state.csmsIds[ended] ?? nil { state.localIds[csms] = nil }
                        state.csmsIds[ended] = nil
                    }
                    state.retryDelay = .zero
                    state.depth = figures.depth
                    OutboxMetrics.update(charger: session.chargerId, figures: figures, now: session.wallTime)
                    self.replay(session)
                }
            })
        case .error(let code, let description):
            let error = "\(code): \(description)"
            if row.attempts + 1 >= errorAttempts {
                refused(row, error: error, state, session)
            } else {
                database.submit({ try $0.attemptFailed(seq: row.seq, error: error) }, completion: { _ in
                    handle.run { session in
                        guard let state = session[StateKey.self] else { return }
                        state.replaying = false
                        self.scheduleRetry(state, session)
                    }
                })
            }
        case .timedOut, .rejected:
            let error = outcome == .timedOut ? "no answer from the CSMS" : "the queue towards the CSMS is full"
            database.submit({ try $0.attemptFailed(seq: row.seq, error: error) }, completion: { _ in
                handle.run { session in
                    guard let state = session[StateKey.self] else { return }
                    state.replaying = false
                    self.scheduleRetry(state, session)
                }
            })
        case .connectionClosed:
            // The link dropped (the row stays; replay resumes when it is back) or the charger left.
            state.replaying = false
        }
    }

    /// The CSMS refused a replayed CALL for good: it is kept as failed, counted, and the replay goes on.
    private func refused(_ row: QueuedMessage, error: String, _ state: ChargerState, _ session: any SessionContext) {
        guard let database = state.database else { return }
        let handle = session.handle
        let now = session.wallTime
        let refusedStart = row.action == "StartTransaction" ? row.localTransactionId : nil
        log(.warning, "the CSMS refused a replayed CALL; kept as failed", ["action": row.action, "error": error], state, session)
        database.submit({ try $0.failed(seq: row.seq, error: error, refusedTransaction: refusedStart, at: now) }, completion: { result in
            handle.run { session in
                guard let state = session[StateKey.self] else { return }
                state.replaying = false
                guard case .success(let figures) = result else { return self.scheduleRetry(state, session) }
                OutboxMetrics.failed()
                if let refusedStart { state.csmsIds[refusedStart] = .some(nil) }
                state.depth = figures.depth
                OutboxMetrics.update(charger: session.chargerId, figures: figures, now: session.wallTime)
                self.replay(session)
            }
        })
    }

    private func scheduleRetry(_ state: ChargerState, _ session: any SessionContext) {
        guard state.retryTimer == nil else { return }
        state.retryDelay = state.retryDelay == .zero ? retryInitialDelay : min(state.retryDelay * 2, retryMaxDelay)
        state.retryTimer = session.schedule(after: state.retryDelay) {
            state.retryTimer = nil
            self.replay(session)
        }
    }

    /// Keeps the oldest-age gauge moving while something waits.
    private func armAgeTimer(_ state: ChargerState, _ session: any SessionContext) {
        guard state.ageTimer == nil, state.depth > 0 else { return }
        state.ageTimer = session.schedule(after: .seconds(15)) {
            state.ageTimer = nil
            OutboxMetrics.refreshAge(now: session.wallTime)
            self.armAgeTimer(state, session)
        }
    }

    private func log(_ level: Logger.Level, _ message: String, _ metadata: [String: String], _ state: ChargerState,
                     _ session: any SessionContext) {
        let (admit, suppressed) = state.logThrottle.admit(now: session.now)
        guard admit else { return }
        var fields = Logger.Metadata()
        for (key, value) in metadata { fields[key] = .string(LogSafe.escape(value, limit: 300)) }
        if suppressed > 0 { fields["similar_lines_left_out"] = "\(suppressed)" }
        session.logger.log(level: level, "\(message)", metadata: fields)
    }

    // MARK: JSON

    static func timestamp(_ wallTime: Double) -> String {
        Date(timeIntervalSince1970: wallTime).formatted(.iso8601)
    }

    static func json(_ info: IdTagInfo) -> JSONValue {
        var fields: [(key: String, value: JSONValue)] = [("status", .string(info.status))]
        if let expiry = info.expiryDate { fields.append(("expiryDate", .string(expiry))) }
        if let parent = info.parentIdTag { fields.append(("parentIdTag", .string(parent))) }
        return .object(fields)
    }

    static func idTagInfo(_ value: JSONValue) -> IdTagInfo? {
        guard let status = value["status"]?.stringValue else { return nil }
        return IdTagInfo(status: status, expiryDate: value["expiryDate"]?.stringValue, parentIdTag: value["parentIdTag"]?.stringValue)
    }
}

extension JSONValue {
    /// The object with `key` set (replaced in place, or appended); other values are returned unchanged.
    func setting(_ key: String, to value: JSONValue) -> JSONValue {
        guard case .object(var fields) = self else { return self }
        if let index = fields.firstIndex(where: { $0.key == key }) { fields[index].value = value } else { fields.append((key, value)) }
        return .object(fields)
    }
}

struct OutboxConfigurationError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
