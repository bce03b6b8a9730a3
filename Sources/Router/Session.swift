public import Logging
public import OCPP
public import StageKit
import CoreMetrics
import Foundation

/// One charger's session: the router's core, independent of sockets.
///
/// Every frame from either peer is parsed into an envelope, correlated (a result learns the
/// action of its CALL), passed through the pipeline's stages and then forwarded, dropped or
/// answered. CALLs towards each peer take turns in a `CallLane`, so the one-outstanding-CALL rule
/// holds even when the CSMS and the gateway's own stages both have something to say.
///
/// A session lives on one event loop: every method must be called there (Transport does so;
/// StageTesting runs everything on the test's thread).
public final class Session: SessionContext {
    public let chargerId: String
    public let version: OCPPVersion
    public var logger: Logger
    private let pipelines: PipelineHolder
    private let metrics: RouterMetrics
    /// Read through `driver` (a copy): a call made on the stored existential in place kept the property's
    /// access open across the call, so every access to it was checked for exclusivity at run time.
    private var driverStorage: (any SessionDriver)?
    private var driver: (any SessionDriver)? { driverStorage }
    private var towardsCharger: CallLane
    private var towardsCSMS: CallLane
    /// Stage state, per stage instance (`slot`) or shared (`slot == nil`, `SessionStateScope.session`).
    private var stageState = StateTable()
    /// The stage instance being run: its `process`, a hook, or a closure it handed to the session.
    ///
    /// Not retained: it is set only for the length of `acting(as:)`, whose caller holds the slot (its pipeline's
    /// stage list or a closure bound to it), and restored after. Assigning a retained reference released the old
    /// one inside the access, so every access to it was checked for exclusivity at run time, twice a stage a frame.
    private unowned(unsafe) var activeSlot: StageSlot?
    /// The pipeline whose stages were told `sessionStarted`; a reload is reconciled against it.
    private var startedPipeline: Pipeline?
    /// Timers stages scheduled; all are cancelled when the session ends.
    private var timers: [Int: any ScheduledWork] = [:]
    private var nextTimer = 0
    /// Gateway CALLs waiting for the charger's BootNotification to be accepted.
    private var heldUntilBoot: [(side: Side, call: CallLane.Call)] = []
    /// Per-frame log lines an attacker can provoke, throttled per message.
    private var logThrottles: [String: LogThrottle] = [:]
    /// Frames run through the stages so far (for sampling their timers).
    private var framesThroughStages: UInt32 = 0
    /// The stored flags are private and read through public getters: a `public private(set)` stored
    /// property can be accessed in place from other modules, so each of its accesses here was checked for
    /// exclusivity at run time (~80 instructions each, several per frame).
    private var ended = false
    public var isEnded: Bool { ended }
    public var isClosed: Bool { ended }
    private var northUp = true
    public var isNorthUp: Bool { northUp }
    /// Whether the charger's BootNotification was accepted (in this session or, remembered by the
    /// gateway, an earlier one). Until then nothing of the gateway's own is sent to either side
    /// (OCPP 1.6 §4.2: the Central System sends nothing before it accepted the boot).
    public private(set) var bootAccepted: Bool
    /// Told when the charger's BootNotification is answered (accepted or not) with the answer's payload,
    /// so the gateway can remember it across reconnects and restarts.
    public var onBootAnswered: ((_ accepted: Bool, _ payload: JSONValue) -> Void)?
    /// Translation towards a CSMS of another OCPP version, at the north edge after every stage
    /// (`NorthAdapter`); nil: frames are relayed as they are.
    public var northAdapter: (any NorthAdapter)? {
        get { adapter }
        set {
            _ = exchange(&adapter, with: newValue)
            hasAdapter = newValue != nil
            newValue?.attached(to: self)
        }
    }
    private var adapter: (any NorthAdapter)?
    /// Whether `adapter` is set: frames test this flag first, so that the usual session (no translation) does
    /// not read the adapter reference (checked for exclusivity at run time) on every frame from the CSMS.
    private var hasAdapter = false
    /// The adapter's own CALLs towards the CSMS (already in the CSMS's version): never translated.
    private var northNative: Set<String> = []
    /// CALLs the CSMS answered whose 1.6 answer the adapter gives later (`deliverNorthAnswer`).
    private var deferredNorthAnswers: [String: CallLane.Call] = [:]

    /// - Parameter bootAccepted: the charger's boot was accepted before (it may reconnect without booting again).
    public init(chargerId: String, version: OCPPVersion = .v16, pipelines: PipelineHolder, limits: SessionLimits,
                metrics: RouterMetrics, driver: any SessionDriver, logger: Logger, bootAccepted: Bool = false) {
        self.chargerId = chargerId
        self.version = version
        self.pipelines = pipelines
        self.metrics = metrics
        self.driverStorage = driver
        self.bootAccepted = bootAccepted
        self.towardsCharger = CallLane(timeout: limits.chargerCallTimeout, limit: limits.chargerMaxQueuedCalls)
        self.towardsCSMS = CallLane(timeout: limits.csmsCallTimeout, limit: limits.csmsMaxQueuedCalls)
        var logger = logger
        logger[metadataKey: "charger"] = "\(LogSafe.escape(chargerId))"
        self.logger = logger
    }

    // MARK: SessionContext

    public var now: Duration { driver?.now ?? .zero }
    public var wallTime: Double { driver?.wallTime ?? 0 }
    public var northPeerCertificate: [UInt8]? { driver?.northPeerCertificate }

    public subscript<Key: SessionStateKey>(key: Key.Type) -> Key.Value? {
        // The key's type fixes the value's type, so the box is cast without a check (stages read their
        // state on every frame; a dynamic cast from `Any` and a new existential box per write cost more).
        get {
            guard let box = stageState.value(for: stateKey(key)) else { return nil }
            return unsafeDowncast(box, to: StateBox<Key.Value>.self).value
        }
        set {
            let stateKey = stateKey(key)
            guard let newValue else {
                changeStageState { $0.remove(stateKey) }
                return
            }
            if let box = stageState.value(for: stateKey) {
                _ = exchange(&unsafeDowncast(box, to: StateBox<Key.Value>.self).value, with: newValue)
            } else {
                changeStageState { $0.add(StateBox(newValue), for: stateKey) }
            }
        }
    }

    /// One stage state value (`stageState`), kept in place across writes.
    private final class StateBox<Value> {
        var value: Value
        init(_ value: Value) { self.value = value }
    }

    private struct StateKey: Equatable {
        let slot: ObjectIdentifier?
        let key: ObjectIdentifier
    }

    /// The stage state values, searched in order: a session holds a handful (one or two per stage), and
    /// comparing two identifiers each is cheaper than hashing them (SipHash) for a dictionary on every frame.
    private struct StateTable {
        private var entries: [(key: StateKey, box: AnyObject)] = []

        func value(for key: StateKey) -> AnyObject? {
            for entry in entries where entry.key == key { return entry.box }
            return nil
        }

        /// `key` must not be in the table yet.
        mutating func add(_ box: AnyObject, for key: StateKey) { entries.append((key, box)) }

        mutating func remove(_ key: StateKey) { entries.removeAll { $0.key == key } }

        mutating func removeAll(slot: ObjectIdentifier) { entries.removeAll { $0.key.slot == slot } }

        mutating func removeAll() { entries = [] }
    }

    /// Changes the stage state outside the property's access: taken out, changed, put back. Values released by a
    /// change (any deinit may run) inside the access made every access to `stageState`, two a frame, checked
    /// for exclusivity at run time; reading it per frame is now unchecked.
    private func changeStageState(_ change: (inout StateTable) -> Void) {
        var table = exchange(&stageState, with: StateTable())
        change(&table)
        _ = exchange(&stageState, with: table)
    }

    private func stateKey<Key: SessionStateKey>(_ key: Key.Type) -> StateKey {
        StateKey(slot: Key.scope == .stage ? activeSlot.map(ObjectIdentifier.init) : nil, key: ObjectIdentifier(key))
    }

    /// Runs `body` as the stage instance `slot` (its state, its timers).
    private func acting<T>(as slot: StageSlot?, _ body: () -> T) -> T {
        let previous = activeSlot
        activeSlot = slot
        defer { activeSlot = previous }
        return body()
    }

    /// A closure a stage hands to the session runs later as that same stage.
    private func boundToActiveStage<T>(_ body: @escaping (T) -> Void) -> (T) -> Void {
        let slot = activeSlot
        return { [weak self] value in
            guard let self else { return body(value) }
            self.acting(as: slot) { body(value) }
        }
    }

    public func sendCall(_ action: String, payload: JSONValue, to side: Side, onOutcome: @escaping (CallOutcome) -> Void) {
        guard !isEnded else {
            onOutcome(.connectionClosed)
            return
        }
        let call = Self.gatewayCall(action, payload: payload, onOutcome: boundToActiveStage(onOutcome))
        guard bootAccepted else {
            // Nothing of the gateway's goes to either side before the charger's boot was accepted.
            let limit = side == .charger ? towardsCharger.limit : towardsCSMS.limit
            guard heldUntilBoot.count(where: { $0.side == side }) < limit else {
                onOutcome(.rejected(reason: "the queue towards the \(side) is full"))
                return
            }
            heldUntilBoot.append((side, call))
            metrics.countFrame(.fromGateway, action: action, verdict: .heldUntilBoot, version: version)
            return
        }
        enqueueGatewayCall(call, to: side)
    }

    /// A CALL of the gateway's own, with a fresh message id.
    private static func gatewayCall(_ action: String, payload: JSONValue, onOutcome: @escaping (CallOutcome) -> Void) -> CallLane.Call {
        let id = UUID().uuidString.lowercased()
        return CallLane.Call(id: id, action: action, bytes: FrameEncoder.call(id: id, action: action, payload: payload),
                             origin: .gateway(onOutcome))
    }

    /// - Parameter native: a `NorthAdapter`'s own CALL, already in the CSMS's version (never translated).
    private func enqueueGatewayCall(_ call: CallLane.Call, to side: Side, native: Bool = false) {
        let accepted = side == .charger ? towardsCharger.enqueue(call) : towardsCSMS.enqueue(call)
        guard accepted else {
            if case .gateway(let onOutcome) = call.origin { onOutcome(.rejected(reason: "the queue towards the \(side) is full")) }
            return
        }
        if native { northNative.insert(call.id) }
        metrics.countFrame(.fromGateway, action: call.action, verdict: .queued, version: native ? northAdapter?.northVersion ?? version : version)
        pump(towards: side)
    }

    /// The charger's BootNotification was answered (by the CSMS, or locally by a stage).
    private func bootAnswered(_ payload: JSONValue) {
        let accepted = payload["status"]?.stringValue == "Accepted"
        onBootAnswered?(accepted, payload)
        guard accepted != bootAccepted else { return }
        bootAccepted = accepted
        guard accepted else { return }
        let held = heldUntilBoot
        heldUntilBoot = []
        for (side, call) in held { enqueueGatewayCall(call, to: side) }
    }

    @discardableResult
    public func schedule(after delay: Duration, _ body: @escaping () -> Void) -> any ScheduledWork {
        guard let driver, !isEnded else { return NoWork() }
        let bound = boundToActiveStage { (_: Void) in body() }
        return track { [weak self] id in
            driver.schedule(after: delay) {
                guard let self, !self.isEnded else { return }
                self.timers[id] = nil
                bound(())
            }
        }
    }

    /// Keeps a timer so that the end of the session cancels it (and releases what its closure holds).
    private func track(_ make: (Int) -> any ScheduledWork) -> any ScheduledWork {
        nextTimer &+= 1
        let id = nextTimer
        let work = make(id)
        timers[id] = work
        return SessionTimer(id: id, work: work, session: self)
    }

    fileprivate func forgetTimer(_ id: Int) { timers[id] = nil }

    public var handle: SessionHandle {
        let session = UncheckedSession(self)
        let driver = UncheckedDriver(self.driver)
        let slot = UncheckedSlot(activeSlot)
        return SessionHandle(chargerId: chargerId) { body in
            driver.value?.execute {
                // On the session's loop again: the only place the session is touched.
                guard let live = session.value, !live.isEnded else { return }
                live.acting(as: slot.value) { body(live) }
            }
        }
    }

    public func relinkNorth(with credentials: NorthCredentials, completion: @escaping (Result<Void, any Error>) -> Void) {
        guard let driver, !isEnded else {
            completion(.failure(SessionEndedError()))
            return
        }
        driver.relinkNorth(with: credentials, isIdle: { [weak self] in
            guard let self else { return true }
            return self.towardsCharger.inFlight == nil && self.towardsCSMS.inFlight == nil
        }, completion: boundToActiveStage(completion))
    }

    // MARK: Lifecycle

    /// Both links are up: tell the stages.
    public func start() {
        metrics.sessions.increment()
        let pipeline = pipelines.pipeline
        startedPipeline = pipeline
        for stage in pipeline.stages { acting(as: stage.slot) { stage.instance.sessionStarted(self) } }
    }

    /// The stages in service for this session. After a reload, stages the new pipeline retired are
    /// told `sessionEnded` (with `isClosed` false: the session goes on) and their state is dropped;
    /// stages it added are told `sessionStarted`. Called before every frame and by the gateway
    /// right after a reload, so a reload reaches quiet sessions too.
    @discardableResult
    public func adoptCurrentPipeline() -> Pipeline {
        let current = pipelines.pipeline
        guard let started = startedPipeline, started !== current, !isEnded else { return current }
        startedPipeline = current
        let retired = started.stages.filter { old in !current.stages.contains { $0.isSameInstance(as: old) } }
        let added = current.stages.filter { new in !started.stages.contains { $0.isSameInstance(as: new) } }
        for stage in retired {
            acting(as: stage.slot) { stage.instance.sessionEnded(self) }
            let slot = ObjectIdentifier(stage.slot)
            changeStageState { $0.removeAll(slot: slot) }
        }
        for stage in added { acting(as: stage.slot) { stage.instance.sessionStarted(self) } }
        if !retired.isEmpty || !added.isEmpty {
            logger.debug("session adopted the reloaded pipeline", metadata: [
                "retired": "\(retired.map(\.id).joined(separator: ","))", "added": "\(added.map(\.id).joined(separator: ","))",
            ])
        }
        return current
    }

    /// The session is over (either link closed). Pending gateway CALLs learn `.connectionClosed`;
    /// every timer is cancelled.
    public func end() {
        guard !isEnded else { return }
        ended = true
        metrics.sessions.decrement()
        let pending = towardsCharger.drain() + towardsCSMS.drain() + heldUntilBoot.map(\.call)
        heldUntilBoot = []
        northNative = []
        let deferred = Array(deferredNorthAnswers.values)
        deferredNorthAnswers = [:]
        for call in pending + deferred {
            if case .gateway(let onOutcome) = call.origin { onOutcome(.connectionClosed) }
        }
        northAdapter?.sessionEnded()
        let scheduled = timers.values
        timers = [:]
        for timer in scheduled { timer.cancel() }
        callSweep?.work.cancel()
        callSweep = nil
        for stage in (startedPipeline ?? pipelines.pipeline).stages { acting(as: stage.slot) { stage.instance.sessionEnded(self) } }
        changeStageState { $0.removeAll() }
        driverStorage = nil
    }

    // MARK: The north link in buffer mode

    /// The CSMS link is gone but the charger stays (`north.offline_mode: buffer`). The charger's CALLs that
    /// were at the CSMS or waiting for it are offered to the stages; those none takes over are answered
    /// with a CALLERROR. The gateway's own CALL at the CSMS learns `.connectionClosed`; its waiting ones stay.
    public func northLinkDown() {
        guard isNorthUp, !isEnded else { return }
        northUp = false
        let (relayed, gatewayInFlight) = towardsCSMS.takeForLinkLoss()
        if let northAdapter {
            for call in relayed + (gatewayInFlight.map { [$0] } ?? []) where northNative.remove(call.id) == nil {
                northAdapter.callAbandoned(id: call.id)
            }
            northAdapter.northLinkChanged(up: false)
        }
        if case .gateway(let onOutcome)? = gatewayInFlight?.origin { onOutcome(.connectionClosed) }
        let orphaned = relayed.compactMap { call -> Envelope? in
            guard let frame = try? Frame.parse(call.bytes) else { return nil }
            return Envelope(chargerId: chargerId, direction: .fromCharger, frame: frame, action: call.action, version: version,
                            receivedAt: now)
        }
        var taken = Set<String>()
        for stage in adoptCurrentPipeline().stages {
            taken.formUnion(acting(as: stage.slot) { stage.instance.northLinkChanged(up: false, orphaned: orphaned, in: self) })
        }
        for call in relayed where !taken.contains(call.id) {
            send(FrameEncoder.callError(id: call.id, code: OCPPErrorCode.genericError.rawValue,
                                        description: "the CSMS link was lost before it answered"), to: .charger)
        }
        logger.warning("CSMS link lost; the charger stays connected", metadata: [
            "orphaned_calls": "\(relayed.count)", "taken_over": "\(taken.count)",
        ])
    }

    /// The CSMS link is back: stages are told, and the gateway's waiting CALLs go out.
    public func northLinkUp() {
        guard !isNorthUp, !isEnded else { return }
        northUp = true
        northAdapter?.northLinkChanged(up: true)
        for stage in adoptCurrentPipeline().stages {
            _ = acting(as: stage.slot) { stage.instance.northLinkChanged(up: true, orphaned: [], in: self) }
        }
        logger.info("CSMS link back")
        pump(towards: .csms)
    }

    /// CALLs in flight or waiting, both ways (for a drain: 0 means nothing is left to answer).
    public var callsPending: Int {
        (towardsCharger.inFlight == nil ? 0 : 1) + (towardsCSMS.inFlight == nil ? 0 : 1) + towardsCharger.queuedCount
            + towardsCSMS.queuedCount
    }

    // MARK: Frames

    /// Handles one text frame from a peer.
    public func receive(_ bytes: [UInt8], from side: Side) {
        guard !isEnded else { return }
        let direction: Direction = side == .charger ? .fromCharger : .fromCSMS
        let frame: Frame
        do {
            frame = try Frame.parse(bytes)
        } catch {
            rejectMalformed(bytes, error: error, from: side, direction: direction)
            return
        }
        switch frame.messageType {
        case .call:
            handleCall(frame, from: side, direction: direction)
        case .callResult, .callError:
            handleAnswer(frame, from: side, direction: direction)
        }
    }

    private func rejectMalformed(_ bytes: [UInt8], error: FrameError, from side: Side, direction: Direction) {
        let code = error.errorCode(for: side == .csms ? northAdapter?.northVersion ?? version : version)
        throttledLog(.warning, "malformed frame refused", [
            "from": "\(side)", "error": "\(error.detail)", "code": "\(code)", "bytes": "\(bytes.count)",
        ])
        metrics.countFrame(direction, action: nil, verdict: .malformed, version: version)
        send(FrameEncoder.callError(id: error.messageId ?? "-1", code: code.rawValue, description: error.detail), to: side)
    }

    private func handleCall(_ frame: consuming Frame, from side: Side, direction: Direction) {
        adoptCurrentPipeline()
        var frame = frame
        if side == .csms, hasAdapter, let northAdapter {
            switch northAdapter.incomingCall(id: frame.messageId, action: frame.action ?? "", payload: frame.payload()) {
            case .relay(let action, let payload):
                frame = Frame.encoded(FrameEncoder.call(id: frame.messageId, action: action, payload: payload))
            case .answer(let payload):
                metrics.countFrame(direction, action: frame.action, verdict: .answer, version: northAdapter.northVersion)
                driver?.send(FrameEncoder.callResult(id: frame.messageId, payload: payload), to: .csms)
                return
            case .error(let code, let description):
                metrics.countFrame(direction, action: frame.action, verdict: .error, version: northAdapter.northVersion)
                driver?.send(FrameEncoder.callError(id: frame.messageId, code: code.spelled(for: northAdapter.northVersion).rawValue,
                                                    description: description), to: .csms)
                return
            case .handled:
                metrics.countFrame(direction, action: frame.action, verdict: .held, version: northAdapter.northVersion)
                return
            }
        }
        let action = frame.action ?? ""
        let envelope = Envelope(chargerId: chargerId, direction: direction, frame: frame, action: action, version: version,
                                receivedAt: now)
        let (verdict, decidedBy, result) = runStages(envelope)
        metrics.countFrame(direction, action: action, verdict: FrameVerdict(verdict), version: version)
        switch verdict.kind {
        case .forward, .forwardModified:
            let target = side.other
            guard target == .charger || isNorthUp else {
                // Buffer mode with the CSMS away and no stage answering for it: say so at once.
                send(FrameEncoder.callError(id: envelope.frame.messageId, code: OCPPErrorCode.genericError.rawValue,
                                            description: "the CSMS is unreachable; retry later"), to: side)
                return
            }
            let call = CallLane.Call(id: envelope.frame.messageId, action: action, bytes: result?.frame.bytes ?? envelope.frame.bytes, origin: .relayed)
            let accepted = target == .charger ? towardsCharger.enqueue(call) : towardsCSMS.enqueue(call)
            guard accepted else {
                throttledLog(.warning, "CALL refused: queue full", ["action": "\(action)", "towards": "\(target)"])
                send(FrameEncoder.callError(id: envelope.frame.messageId, code: OCPPErrorCode.genericError.rawValue,
                                            description: "the gateway's queue towards the \(target) is full; retry later"), to: side)
                return
            }
            pump(towards: target)
        case .drop(let reason):
            throttledLog(.info, "CALL dropped", ["action": "\(action)", "stage": "\(decidedBy ?? "")", "reason": "\(reason)"])
        case .answer(let payload):
            send(FrameEncoder.callResult(id: envelope.frame.messageId, payload: payload), to: side)
            if side == .charger, action == "BootNotification" { bootAnswered(payload) }
        case .answerError(let code, let description, let details):
            send(FrameEncoder.callError(id: envelope.frame.messageId, code: code.rawValue, description: description, details: details), to: side)
        case .answerLater:
            break
        }
    }

    public func answer(_ messageId: String, to side: Side, with payload: JSONValue, error: (code: OCPPErrorCode, description: String)?) {
        guard !isEnded else { return }
        if let error {
            send(FrameEncoder.callError(id: messageId, code: error.code.rawValue, description: error.description), to: side)
        } else {
            send(FrameEncoder.callResult(id: messageId, payload: payload), to: side)
        }
    }

    /// - Parameter translated: the answer is already in 1.6 (a `NorthAdapter` answered locally).
    private func handleAnswer(_ frame: consuming Frame, from side: Side, direction: Direction, translated: Bool = false) {
        // An answer from `side` settles the CALL that travelled towards `side`.
        let completed = side == .charger ? towardsCharger.complete(id: frame.messageId) : towardsCSMS.complete(id: frame.messageId)
        guard let call = completed else {
            throttledLog(.warning, "answer to no outstanding CALL dropped", ["from": "\(side)", "id": "\(frame.messageId)"])
            metrics.countFrame(direction, action: nil, verdict: .unmatched, version: version)
            return
        }
        var frame = frame
        if side == .csms, !translated, hasAdapter, let northAdapter, northNative.remove(call.id) == nil {
            // The CSMS's answer to a translated CALL becomes the 1.6 answer before any stage sees it.
            guard let translated = northAdapter.answerFromCSMS(id: call.id, action: call.action, answer: NorthAnswer(frame)) else {
                // The adapter answers later (`deliverNorthAnswer`); the lane towards the CSMS is free meanwhile.
                deferredNorthAnswers[call.id] = call
                pump(towards: side)
                return
            }
            frame = Self.encode(translated, id: call.id)
        }
        defer { pump(towards: side) }
        settle(call, answer: frame, from: side, direction: direction)
    }

    /// Gives the 1.6 answer to a CSMS answer the adapter held (`NorthAdapter.answerFromCSMS` returned nil):
    /// it takes the usual path, through the stages to the caller.
    public func deliverNorthAnswer(id: String, answer: NorthAnswer) {
        guard !isEnded, let call = deferredNorthAnswers.removeValue(forKey: id) else { return }
        settle(call, answer: Self.encode(answer, id: id), from: .csms, direction: .fromCSMS)
    }

    /// An answer from `side` to `call`: to the stage that sent it, or through the stages to the peer that did.
    private func settle(_ call: CallLane.Call, answer frame: consuming Frame, from side: Side, direction: Direction) {
        adoptCurrentPipeline()
        switch call.origin {
        case .gateway(let onOutcome):
            metrics.countFrame(direction, action: call.action, verdict: .consumed, version: version)
            if frame.messageType == .callResult {
                onOutcome(.result(frame.payload()))
            } else {
                onOutcome(.error(code: frame.errorCode ?? "", description: frame.errorDescription ?? ""))
            }
        case .relayed:
            let envelope = Envelope(chargerId: chargerId, direction: direction, frame: frame, action: call.action,
                                    version: version, receivedAt: now)
            let (verdict, decidedBy, result) = runStages(envelope)
            metrics.countFrame(direction, action: call.action, verdict: FrameVerdict(verdict), version: version)
            // The peer that sent the CALL waits for an answer: whatever a stage decides, it gets one now.
            let caller = side.other
            switch verdict.kind {
            case .forward, .forwardModified:
                send(result?.frame.bytes ?? envelope.frame.bytes, to: caller)
                if side == .csms, call.action == "BootNotification", envelope.frame.messageType == .callResult {
                    bootAnswered(result?.payload() ?? envelope.frame.payload())
                }
            case .drop(let reason):
                throttledLog(.warning, "answer refused; the caller gets a CALLERROR", [
                    "action": "\(call.action)", "stage": "\(decidedBy ?? "")", "reason": "\(reason)",
                ])
                send(FrameEncoder.callError(id: envelope.frame.messageId, code: OCPPErrorCode.genericError.rawValue,
                                            description: "the gateway refused the \(side)'s answer"), to: caller)
            case .answerError(let code, let description, let details):
                throttledLog(.warning, "answer replaced by a CALLERROR", [
                    "action": "\(call.action)", "stage": "\(decidedBy ?? "")", "code": "\(code.rawValue)", "reason": "\(description)",
                ])
                send(FrameEncoder.callError(id: envelope.frame.messageId, code: code.rawValue, description: description, details: details),
                     to: caller)
            case .answer(let payload):
                send(FrameEncoder.callResult(id: envelope.frame.messageId, payload: payload), to: caller)
                if side == .csms, call.action == "BootNotification" { bootAnswered(payload) }
            case .answerLater:
                break
            }
        }
    }

    /// Runs the envelope through the stages: in file order from the charger, reversed from the CSMS.
    /// Returns the envelope a stage rewrote (nil while none did: the frame goes on as received).
    ///
    /// The hot path: stages are visited by index (no copy of `LoadedStage` per stage) and the envelope is
    /// passed as it came until a stage modifies it (no copy of its strings and bytes per frame). One loop and
    /// no closure capturing `rewritten`: the nested functions that did kept it in a box whose every read
    /// (one a stage) was checked for exclusivity at run time.
    private func runStages(_ envelope: Envelope) -> (Verdict, String?, Envelope?) {
        let stages = (startedPipeline ?? pipelines.pipeline).stages
        var rewritten: Envelope?
        // The last payload a stage wrote: what the rewritten frame holds (not decoded again from its bytes).
        var rewrittenPayload: JSONValue?
        // Stage durations are sampled: one frame in `LoadedStage.timingSampleInterval` per session is timed.
        framesThroughStages &+= 1
        let timed = framesThroughStages % LoadedStage.timingSampleInterval == 1
        let count = stages.count
        let reversed = envelope.direction == .fromCSMS
        var position = 0
        while position < count {
            let index = reversed ? count - 1 - position : position
            position += 1
            let verdict = rewritten == nil ? runStage(stages, index, envelope, timed: timed)
                : runStage(stages, index, rewritten!, timed: timed)
            switch verdict.kind {
            case .forward:
                continue
            case .forwardModified(let payload):
                let current = rewritten ?? envelope
                let frame = Frame.encoded(FrameEncoder.replacingPayload(of: current.frame, with: payload))
                rewritten = Envelope(chargerId: chargerId, direction: current.direction, frame: frame, action: current.action,
                                     version: version, receivedAt: current.receivedAt)
                rewrittenPayload = payload
            default:
                return (verdict, stages[index].id, rewritten)
            }
        }
        return (rewrittenPayload.map { .forward(modifiedPayload: $0) } ?? .forward, nil, rewritten)
    }

    /// One stage's verdict on `envelope`, run as that stage (`acting(as:)` written out: no closure context per
    /// stage); its duration recorded when `timed`.
    private func runStage(_ stages: [LoadedStage], _ index: Int, _ envelope: Envelope, timed: Bool) -> Verdict {
        let slot = stages[index].slot
        let previous = activeSlot
        activeSlot = slot
        let verdict: Verdict
        if timed {
            let start = ContinuousClock.now
            verdict = stages[index].instance.process(envelope, in: self)
            stages[index].timer.recordNanoseconds((ContinuousClock.now - start).nanoseconds)
        } else {
            verdict = stages[index].instance.process(envelope, in: self)
        }
        activeSlot = previous
        slot.count(verdict)
        return verdict
    }

    // MARK: Queues

    public func reportIncident(_ description: String) {
        guard !isEnded else { return }
        for stage in adoptCurrentPipeline().stages { acting(as: stage.slot) { stage.instance.incidentReported(description, in: self) } }
    }

    public func paceCalls(towards side: Side, minimumInterval: Duration?, holdUntil: Duration?) {
        if side == .charger {
            towardsCharger.minimumInterval = minimumInterval ?? towardsCharger.minimumInterval
            towardsCharger.notBefore = holdUntil ?? towardsCharger.notBefore
        } else {
            towardsCSMS.minimumInterval = minimumInterval ?? towardsCSMS.minimumInterval
            towardsCSMS.notBefore = holdUntil ?? towardsCSMS.notBefore
        }
        pump(towards: side)
    }

    private func pump(towards side: Side) {
        guard let driver, side == .charger || isNorthUp else { return }
        // The lane is read in place, not copied (a copy retained and released everything it holds).
        // One access to the lane for the whole turn (each access to a class's stored property is checked); the
        // clock is read only when the lane has a CALL to send.
        let clock = { driver.now }
        let (turn, now) = side == .charger ? towardsCharger.takeTurn(clock: clock) : towardsCSMS.takeTurn(clock: clock)
        let call: CallLane.Call
        switch turn {
        case .wait:
            return
        case .pacedUntil(let until):
            _ = track { id in
                driver.schedule(after: until - now) { [weak self] in
                    guard let self else { return }
                    self.timers[id] = nil
                    if side == .charger { self.towardsCharger.pacingTimerArmed = false } else { self.towardsCSMS.pacingTimerArmed = false }
                    self.pump(towards: side)
                }
            }
            return
        case .send(let next, let deadline):
            call = next
            armCallSweep(at: deadline, now: now)
        }
        if side == .csms, hasAdapter, let northAdapter {
            sendTranslated(call, via: northAdapter)
        } else {
            send(call.bytes, to: side)
        }
    }

    // MARK: The north edge (NorthAdapter)

    /// Writes a CALL to the CSMS in its version, or completes it locally as the adapter decides.
    private func sendTranslated(_ call: CallLane.Call, via adapter: any NorthAdapter) {
        if northNative.contains(call.id) {
            driver?.send(call.bytes, to: .csms)
            return
        }
        let payload = (try? Frame.parse(call.bytes))?.payload() ?? .object([])
        let fromGateway = if case .gateway = call.origin { true } else { false }
        switch adapter.outgoingCall(id: call.id, action: call.action, payload: payload, fromGateway: fromGateway) {
        case .send(let action, let payload):
            driver?.send(FrameEncoder.call(id: call.id, action: action, payload: payload), to: .csms)
        case .answerLocally(let answer):
            // As if the CSMS had answered: the lane completes and the answer takes the usual path.
            handleAnswer(Self.encode(answer, id: call.id), from: .csms, direction: .fromCSMS, translated: true)
        }
    }

    private static func encode(_ answer: NorthAnswer, id: String) -> Frame {
        switch answer {
        case .result(let payload): Frame.encoded(FrameEncoder.callResult(id: id, payload: payload))
        case .error(let code, let description): Frame.encoded(FrameEncoder.callError(id: id, code: code.rawValue, description: description))
        }
    }

    /// Sends a CALL of the adapter's own to the CSMS, already in its version (no translation), in turn
    /// with the other CALLs towards the CSMS. `onOutcome` gets the CSMS's answer as it is.
    public func sendNorthNative(_ action: String, payload: JSONValue, onOutcome: @escaping (CallOutcome) -> Void) {
        guard !isEnded else {
            onOutcome(.connectionClosed)
            return
        }
        enqueueGatewayCall(Self.gatewayCall(action, payload: payload, onOutcome: onOutcome), to: .csms, native: true)
    }

    /// Answers a CSMS CALL the adapter took (`NorthIncomingDecision.handled`), already in the CSMS's version.
    public func answerNorth(_ messageId: String, with answer: NorthAnswer) {
        guard !isEnded else { return }
        driver?.send(Self.encode(answer, id: messageId).bytes, to: .csms)
    }

    /// An answer on its way to the CSMS (from the charger through the stages, or from a stage) in the CSMS's version.
    private func sendAnswerNorth(_ bytes: [UInt8], via adapter: any NorthAdapter) {
        guard let frame = try? Frame.parse(bytes), frame.messageType != .call else {
            driver?.send(bytes, to: .csms)
            return
        }
        var translated = adapter.answerToCSMS(id: frame.messageId, answer: NorthAnswer(frame))
        if case .error(let code, let description) = translated { translated = .error(code: code.spelled(for: adapter.northVersion), description: description) }
        driver?.send(Self.encode(translated, id: frame.messageId).bytes, to: .csms)
    }

    /// The one timer that times out the CALLs in flight, both ways. It is armed for the earliest deadline
    /// and left armed when a CALL is answered; when it fires it times out what is overdue and re-arms for the
    /// deadline of what is in flight by then. A CALL round trip thus costs no timer of its own: scheduling and
    /// cancelling an event-loop task per CALL cost ~5,000 instructions (two heap allocations, a failed
    /// promise), the sweep one timer per call timeout while CALLs keep flowing. Deadlines stay exact.
    private var callSweep: (at: Duration, work: any ScheduledWork)?

    private func armCallSweep(at deadline: Duration, now: Duration) {
        guard let driver else { return }
        if let callSweep {
            guard deadline < callSweep.at else { return }
            callSweep.work.cancel()
        }
        let work = driver.schedule(after: deadline - now) { [weak self] in self?.sweepCalls() }
        callSweep = (deadline, work)
    }

    private func sweepCalls() {
        callSweep = nil
        guard let driver, !isEnded else { return }
        let now = driver.now
        if let call = towardsCharger.expired(at: now) { callTimedOut(id: call.id, towards: .charger) }
        if !isEnded, let call = towardsCSMS.expired(at: now) { callTimedOut(id: call.id, towards: .csms) }
        guard !isEnded else { return }
        if let deadline = towardsCharger.deadline { armCallSweep(at: deadline, now: now) }
        if let deadline = towardsCSMS.deadline { armCallSweep(at: deadline, now: now) }
    }

    private func callTimedOut(id: String, towards side: Side) {
        let expired = side == .charger ? towardsCharger.complete(id: id) : towardsCSMS.complete(id: id)
        guard let call = expired else { return }
        if side == .csms, let northAdapter, northNative.remove(call.id) == nil { northAdapter.callAbandoned(id: call.id) }
        let timeout = side == .charger ? towardsCharger.timeout : towardsCSMS.timeout
        logger.warning("CALL timed out", metadata: [
            "action": "\(LogSafe.escape(call.action))", "towards": "\(side)", "id": "\(LogSafe.escape(id))",
        ])
        reportIncident("\(call.action) to the \(side) timed out")
        switch call.origin {
        case .gateway(let onOutcome):
            onOutcome(.timedOut)
        case .relayed:
            // Tell the sender instead of leaving it to guess; a late answer will find no CALL and be dropped.
            send(FrameEncoder.callError(id: call.id, code: OCPPErrorCode.genericError.rawValue,
                                        description: "no answer from the \(side) within \(timeout)"), to: side.other)
        }
        pump(towards: side)
    }

    private func throttledLog(_ level: Logger.Level, _ message: String, _ metadata: Logger.Metadata) {
        let (log, suppressed) = logThrottles[message, default: LogThrottle()].admit(now: now)
        guard log else { return }
        // Values here come from peers (ids, actions, reasons quoting payloads): escape them.
        var metadata = metadata.mapValues { Logger.MetadataValue.string(LogSafe.escape("\($0)", limit: 200)) }
        if suppressed > 0 { metadata["similar_lines_left_out"] = "\(suppressed)" }
        logger.log(level: level, "\(message)", metadata: metadata)
    }

    private func send(_ bytes: [UInt8], to side: Side) {
        if side == .csms, hasAdapter, let northAdapter { return sendAnswerNorth(bytes, via: northAdapter) }
        driver?.send(bytes, to: side)
    }

    /// Number of CALLs waiting (not in flight) towards a side; for tests and metrics.
    public func queuedCalls(towards side: Side) -> Int {
        side == .charger ? towardsCharger.queuedCount : towardsCSMS.queuedCount
    }

    // MARK: Status page

    /// Each stage's `Stage.status(in:)` for this charger, in pipeline order, run as that stage (its own
    /// per-charger state). Stages with nothing to say are left out. Must run on the session's event loop.
    public func stageStatus() -> [(stage: String, fields: [String: String])] {
        guard !isEnded else { return [] }
        return (startedPipeline ?? pipelines.pipeline).stages.compactMap { stage in
            let fields = acting(as: stage.slot) { stage.instance.status(in: self) }
            return fields.isEmpty ? nil : (stage.id, fields)
        }
    }
}

extension Side {
    public var other: Side { self == .charger ? .csms : .charger }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}

/// Lets a `SessionHandle` carry the session to its own event loop; it is only dereferenced there.
private struct UncheckedSession: @unchecked Sendable {
    weak var value: Session?
    init(_ value: Session) { self.value = value }
}

private struct UncheckedDriver: @unchecked Sendable {
    weak var value: (any SessionDriver)?
    init(_ value: (any SessionDriver)?) { self.value = value }
}

private struct UncheckedSlot: @unchecked Sendable {
    let value: StageSlot?
    init(_ value: StageSlot?) { self.value = value }
}

private struct NoWork: ScheduledWork {
    func cancel() {}
}

/// A stage's timer: cancelling it also forgets it, so a stage that re-arms timers all day keeps none.
private final class SessionTimer: ScheduledWork {
    let id: Int
    let work: any ScheduledWork
    weak var session: Session?
    init(id: Int, work: any ScheduledWork, session: Session) {
        self.id = id
        self.work = work
        self.session = session
    }
    func cancel() {
        work.cancel()
        session?.forgetTimer(id)
    }
}

public struct SessionEndedError: Error, CustomStringConvertible {
    public init() {}
    public var description: String { "the session has ended" }
}

extension NorthAnswer {
    /// The answer a CALLRESULT or CALLERROR frame carries.
    init(_ frame: Frame) {
        self = frame.messageType == .callResult
            ? .result(frame.payload())
            : .error(code: OCPPErrorCode(rawValue: frame.errorCode ?? ""), description: frame.errorDescription ?? "")
    }
}

/// Puts `value` into `slot` and hands back what was there. Stored properties of `Session` are set with it where
/// the old value may be released: a release can run any deinit, so an assignment that released inside the
/// property's access made the optimizer keep the run-time exclusivity check on every access to that property
/// (~80 instructions each, on every frame); the old value returned is released after the access.
@inline(__always)
private func exchange<T>(_ slot: inout T, with value: T) -> T {
    var value = value
    swap(&slot, &value)
    return value
}
