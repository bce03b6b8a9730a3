public import Logging
import Foundation
public import OCPP
public import Router
public import StageKit
import Synchronization

/// Drives stages with frames, with a fake clock and no sockets, through the real router session
/// (so correlation, queues and timeouts behave exactly as in the gateway).
///
/// ```swift
/// let tester = try StageTester(RateLimitStage.self, config: "frames_per_second: 1")
/// tester.chargerSends(call: "Heartbeat", payload: [:])
/// #expect(tester.takeSentToCSMS().map(\.action) == ["Heartbeat"])
/// ```
public final class StageTester {
    public let chargerId: String
    public let session: Session
    private let pipelineHolder: PipelineHolder
    private let driver: FakeDriver
    private var nextId = 0

    /// Tests a whole pipeline of already-built stages (listed in file order).
    /// - Parameters:
    ///   - wallTime: the fake wall clock when the session starts (seconds since 1970).
    ///   - chargerBooted: the charger's BootNotification was accepted in an earlier session (it reconnected
    ///     without booting), so the gateway's CALLs flow at once. Pass false to start before the boot:
    ///     the router then holds every gateway CALL until `bootAccepted()` or a real BootNotification exchange.
    ///   - version: the OCPP version the charger's link negotiated (`.v201` for a 2.0.1 charger).
    public init(stages: [(id: String, stage: any Stage)], chargerId: String = "CP001", version: OCPPVersion = .v16,
                limits: SessionLimits = SessionLimits(), wallTime: Double? = nil, chargerBooted: Bool = true,
                logger: Logger = Logger(label: "stage-test", factory: { _ in SwiftLogNoOpLogHandler() })) {
        self.chargerId = chargerId
        let loaded = stages.map { LoadedStage.forTesting(id: $0.id, instance: $0.stage) }
        pipelineHolder = PipelineHolder(Pipeline(stages: loaded, file: "<test>"))
        driver = FakeDriver()
        if let wallTime { driver.wallTime = wallTime }
        session = Session(chargerId: chargerId, version: version, pipelines: pipelineHolder, limits: limits, metrics: RouterMetrics(),
                          driver: driver, logger: logger, bootAccepted: chargerBooted)
        session.start()
    }

    /// The pipeline in service.
    public var pipeline: Pipeline { pipelineHolder.pipeline }

    /// Swaps in a new pipeline of built stages as a SIGHUP reload does (stages listed in `keeping` are
    /// the same instances as before) and lets the session adopt it, as the gateway does right after a reload.
    public func reload(to stages: [(id: String, stage: any Stage)], keeping kept: [String] = []) {
        let old = pipelineHolder.pipeline
        let loaded = stages.map { entry in
            kept.contains(entry.id) ? (old.stages.first { $0.id == entry.id } ?? LoadedStage.forTesting(id: entry.id, instance: entry.stage))
                : LoadedStage.forTesting(id: entry.id, instance: entry.stage)
        }
        pipelineHolder.swap(to: Pipeline(stages: loaded, file: "<test>"))
        session.adoptCurrentPipeline()
    }

    /// The charger boots: it sends a BootNotification and the CSMS accepts it (the router opens its gate
    /// for the gateway's own CALLs). The frames are taken from both outboxes.
    public func bootAccepted(interval: Int = 300) {
        let payload: JSONValue = session.version == .v201
            ? ["chargingStation": ["vendorName": "Test", "model": "Test"], "reason": "PowerUp"]
            : ["chargePointVendor": "Test", "chargePointModel": "Test"]
        let id = chargerSends(call: "BootNotification", payload: payload)
        _ = takeSentToCSMS(where: { $0.messageId == id })
        csmsAnswers(id, payload: ["status": "Accepted", "currentTime": "2026-01-01T00:00:00Z", "interval": .number(Double(interval))])
        _ = takeSentToCharger(where: { $0.messageId == id })
    }

    /// Tests one stage type, decoding its configuration from YAML exactly as the pipeline loader does.
    public convenience init<S: Stage>(_ type: S.Type, config yaml: String = "", chargerId: String = "CP001", version: OCPPVersion = .v16,
                                      south: SouthSettings = SouthSettings(securityProfile: 1, chargers: [:]),
                                      north: NorthSettings = NorthSettings(securityProfile: 3),
                                      stateDirectory: String? = nil,
                                      limits: SessionLimits = SessionLimits(), wallTime: Double? = nil, chargerBooted: Bool = true,
                                      publisher: (any MessagePublisher)? = nil,
                                      logger: Logger = Logger(label: "stage-test", factory: { _ in SwiftLogNoOpLogHandler() })) throws {
        let stage = try Self.build(type, config: yaml, south: south, north: north, stateDirectory: stateDirectory, publisher: publisher)
        self.init(stages: [(S.type, stage)], chargerId: chargerId, version: version, limits: limits, wallTime: wallTime, chargerBooted: chargerBooted,
                  logger: logger)
    }

    /// Builds a stage from YAML config text; errors are `ConfigurationError`s with positions in "<config>".
    public static func build<S: Stage>(_ type: S.Type, config yaml: String = "",
                                       south: SouthSettings = SouthSettings(securityProfile: 1, chargers: [:]),
                                       north: NorthSettings = NorthSettings(securityProfile: 3),
                                       stateDirectory: String? = nil,
                                       publisher: (any MessagePublisher)? = nil) throws -> S {
        let node = try composeYAML(yaml, file: "<config>")
        let configuration = try NodeDecoder(file: "<config>").decode(S.Configuration.self, from: node, subject: "stage '\(S.type)'")
        // Without a folder of its own, every built stage gets a fresh one: tests never see each other's state.
        let stateDirectory = stateDirectory ?? Self.freshStateDirectory()
        let context = StageSetupContext(stageId: S.type, logger: Logger(label: "stage-test", factory: { _ in SwiftLogNoOpLogHandler() }),
                                        stateDirectory: stateDirectory, south: south, north: north, publisher: publisher)
        return try S(configuration: configuration, context: context)
    }

    /// A new empty folder under the temporary directory, for a test's `state_dir`.
    public static func freshStateDirectory() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("ocpp-gateway-test-\(UUID().uuidString)").path
    }

    // MARK: Clock

    /// Monotonic fake time.
    public var now: Duration { driver.now }
    /// Wall-clock fake time, seconds since 1970.
    public var wallTime: Double {
        get { driver.wallTime }
        set { driver.wallTime = newValue }
    }

    /// Moves the fake clock forward, firing due timers in order (after work handed back from tasks).
    public func advance(by duration: Duration) {
        driver.runHandedBackWork()
        driver.advance(by: duration)
    }

    /// Waits until work a stage handed to a task comes back to the session (`SessionHandle.run`),
    /// and runs it; returns false if none came within `timeout`.
    @discardableResult
    public func settle(timeout: Duration = .seconds(30)) async -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if driver.runHandedBackWork() > 0 { return true }
            try? await Task.sleep(for: .milliseconds(2))
        }
        return false
    }

    // MARK: North re-link

    /// The CSMS certificate (DER) the session reports for its north link.
    public var northPeerCertificate: [UInt8]? {
        get { driver.northPeerCertificate }
        set { driver.northPeerCertificate = newValue }
    }

    /// The credentials of a north re-link a stage asked for and the test has not settled yet.
    public var requestedNorthRelink: NorthCredentials? { driver.relink?.credentials }

    /// Ends the pending north re-link as the transport would: success moves the session over.
    public func completeNorthRelink(succeeded: Bool) {
        guard let relink = driver.relink else { return }
        driver.relink = nil
        relink.completion(succeeded ? .success(()) : .failure(TestRelinkError()))
    }

    // MARK: Sending

    /// The charger sends raw text (any bytes, valid or not).
    public func chargerSends(_ text: String) { session.receive(Array(text.utf8), from: .charger) }
    /// The CSMS sends raw text.
    public func csmsSends(_ text: String) { session.receive(Array(text.utf8), from: .csms) }

    /// The charger sends a CALL; returns its message id.
    @discardableResult
    public func chargerSends(call action: String, payload: JSONValue = [:], id: String? = nil) -> String {
        let id = id ?? freshId()
        session.receive(FrameEncoder.call(id: id, action: action, payload: payload), from: .charger)
        return id
    }

    /// The CSMS sends a CALL; returns its message id.
    @discardableResult
    public func csmsSends(call action: String, payload: JSONValue = [:], id: String? = nil) -> String {
        let id = id ?? freshId()
        session.receive(FrameEncoder.call(id: id, action: action, payload: payload), from: .csms)
        return id
    }

    public func chargerAnswers(_ id: String, payload: JSONValue = [:]) {
        session.receive(FrameEncoder.callResult(id: id, payload: payload), from: .charger)
    }

    public func csmsAnswers(_ id: String, payload: JSONValue = [:]) {
        session.receive(FrameEncoder.callResult(id: id, payload: payload), from: .csms)
    }

    public func chargerAnswersError(_ id: String, code: OCPPErrorCode, description: String = "") {
        session.receive(FrameEncoder.callError(id: id, code: code.rawValue, description: description), from: .charger)
    }

    public func csmsAnswersError(_ id: String, code: OCPPErrorCode, description: String = "") {
        session.receive(FrameEncoder.callError(id: id, code: code.rawValue, description: description), from: .csms)
    }

    // MARK: Observing

    /// Frames written to the charger since the last call, parsed.
    public func takeSentToCharger() -> [Frame] { driver.take(.charger) }
    /// Frames written to the CSMS since the last call, parsed.
    public func takeSentToCSMS() -> [Frame] { driver.take(.csms) }
    /// Takes only the frames written to the charger that match, leaving the others for later.
    public func takeSentToCharger(where matches: (Frame) -> Bool) -> [Frame] { driver.take(.charger, where: matches) }
    /// Takes only the frames written to the CSMS that match, leaving the others for later.
    public func takeSentToCSMS(where matches: (Frame) -> Bool) -> [Frame] { driver.take(.csms, where: matches) }

    /// Set once the session asked to close both links.
    public var closeReason: String? { driver.closeReason }

    /// Runs the connection hooks of every stage, as the south server does on an upgrade request.
    public func connect(_ request: ChargerConnectRequest) async -> ConnectDecision {
        await ConnectionGate.decide(request, pipeline: pipeline)
    }

    /// Ends the session (charger or CSMS gone).
    public func endSession() { session.end() }

    /// Timers the session still has armed (stages' and the router's own); 0 after `endSession()`.
    public var pendingTimers: Int { driver.pendingTimers }

    private func freshId() -> String {
        nextId += 1
        return "test-\(nextId)"
    }
}

/// The fake side of the world: records writes, keeps timers, owns the clock.
final class FakeDriver: SessionDriver {
    final class Timer: ScheduledWork {
        let deadline: Duration
        private(set) var body: (() -> Void)?
        var cancelled: Bool { body == nil }
        init(deadline: Duration, body: @escaping () -> Void) {
            self.deadline = deadline
            self.body = body
        }
        /// Like a cancelled NIO task, a cancelled timer lets go of its closure at once.
        func cancel() { body = nil }
    }

    /// Timers not yet fired or cancelled.
    var pendingTimers: Int { timers.count { !$0.cancelled } }

    var now: Duration = .zero
    var northPeerCertificate: [UInt8]?
    var relink: (credentials: NorthCredentials, completion: (Result<Void, any Error>) -> Void)?
    private let handedBack = Mutex<[@Sendable () -> Void]>([])
    var wallTime: Double = 1_767_225_600  // 2026-01-01T00:00:00Z
    var closeReason: String?
    private var timers: [Timer] = []
    private var outbox: [Side: [Frame]] = [:]

    func send(_ bytes: [UInt8], to side: Side) {
        do {
            outbox[side, default: []].append(try Frame.parse(bytes))
        } catch {
            preconditionFailure("the router wrote an invalid frame to the \(side): \(error) — \(String(decoding: bytes, as: UTF8.self))")
        }
    }

    func closeSession(reason: String) { closeReason = reason }

    func execute(_ body: @escaping @Sendable () -> Void) {
        handedBack.withLock { $0.append(body) }
    }

    @discardableResult
    func runHandedBackWork() -> Int {
        let work = handedBack.withLock { queue in
            defer { queue = [] }
            return queue
        }
        for body in work { body() }
        return work.count
    }

    func relinkNorth(with credentials: NorthCredentials, isIdle: @escaping () -> Bool,
                     completion: @escaping (Result<Void, any Error>) -> Void) {
        relink = (credentials, completion)
    }

    func schedule(after delay: Duration, _ body: @escaping () -> Void) -> any ScheduledWork {
        let timer = Timer(deadline: now + delay, body: body)
        timers.append(timer)
        return timer
    }

    func advance(by duration: Duration) {
        let end = now + duration
        while let index = timers.indices.filter({ !timers[$0].cancelled && timers[$0].deadline <= end })
            .min(by: { timers[$0].deadline < timers[$1].deadline })
        {
            let timer = timers.remove(at: index)
            let step = timer.deadline - now
            now = now + step
            wallTime += Double(step.components.seconds) + Double(step.components.attoseconds) / 1e18
            timer.body?()
        }
        let rest = end - now
        wallTime += Double(rest.components.seconds) + Double(rest.components.attoseconds) / 1e18
        now = end
        timers.removeAll { $0.cancelled }
    }

    func take(_ side: Side, where matches: (Frame) -> Bool = { _ in true }) -> [Frame] {
        let frames = outbox[side] ?? []
        outbox[side] = frames.filter { !matches($0) }
        return frames.filter(matches)
    }
}

struct TestRelinkError: Error, CustomStringConvertible {
    var description: String { "the test failed the north re-link" }
}
