public import Logging
public import OCPP

/// The two peers of a session.
public enum Side: String, Sendable, CustomStringConvertible {
    case charger
    case csms
    public var description: String { rawValue }
}

/// How a CALL the gateway sent ended.
public enum CallOutcome: Sendable, Equatable {
    case result(JSONValue)
    case error(code: String, description: String)
    /// No answer within the call timeout.
    case timedOut
    /// The queue towards that side was full; the CALL was never sent.
    case rejected(reason: String)
    /// The session ended before an answer came.
    case connectionClosed
}

/// Who sees a piece of per-charger state.
public enum SessionStateScope: Sendable {
    /// Only the stage instance that wrote it (the default): two stages of one type never share state.
    case stage
    /// Every stage of the session (a stage hands something to another, like `TelemetryFilterKey`).
    case session
}

/// A key for per-charger stage state, in the style of SwiftUI's environment keys.
public protocol SessionStateKey {
    associatedtype Value
    /// `.stage` unless the key is meant to be shared between stages.
    static var scope: SessionStateScope { get }
}

extension SessionStateKey {
    public static var scope: SessionStateScope { .stage }
}

/// One charger's session, as a stage sees it. Use it only on the call that handed it to you
/// (it lives on the charger's event loop).
public protocol SessionContext: AnyObject {
    var chargerId: String { get }
    var version: OCPPVersion { get }
    /// True once the charger's session is over. In `Stage.sessionEnded` it is false when only the
    /// stage leaves a session that goes on (a reload retired it).
    var isClosed: Bool { get }
    var logger: Logger { get }
    /// Monotonic time; in tests, the harness's fake clock.
    var now: Duration { get }
    /// Seconds since 1970 (UTC); in tests, the harness's fake clock.
    var wallTime: Double { get }

    /// Sends a CALL that the gateway originates, with a fresh UUID message id, to `side`.
    /// It takes its turn in the queue towards that side (one outstanding CALL per direction).
    /// `onOutcome` runs on the session's event loop; the answer is never forwarded.
    func sendCall(_ action: String, payload: JSONValue, to side: Side, onOutcome: @escaping (CallOutcome) -> Void)

    /// Per-charger state for stages.
    subscript<Key: SessionStateKey>(key: Key.Type) -> Key.Value? { get set }

    /// Whether the CSMS link is up. Always true in mirror mode (the session ends with the link); in
    /// `north.offline_mode: buffer` the charger stays connected while it is down.
    var isNorthUp: Bool { get }

    /// The CSMS's certificate (DER) on the current north link; nil without TLS.
    var northPeerCertificate: [UInt8]? { get }

    /// Answers a CALL a stage held with `.answerLater`: a CALLRESULT, or a CALLERROR when `error` is given.
    func answer(_ messageId: String, to side: Side, with payload: JSONValue, error: (code: OCPPErrorCode, description: String)?)

    /// Tells every stage of something that went wrong (see `Stage.incidentReported`).
    func reportIncident(_ description: String)

    /// Paces CALLs towards `side`: at least `minimumInterval` apart, and none before `holdUntil`
    /// (session time). CALLs wait in the queue, in order; none is dropped (the queue's bound still applies).
    func paceCalls(towards side: Side, minimumInterval: Duration?, holdUntil: Duration?)

    /// Runs `body` on the session's event loop after `delay` (the harness's fake clock in tests).
    @discardableResult
    func schedule(after delay: Duration, _ body: @escaping () -> Void) -> any ScheduledWork

    /// A `Sendable` way back to this session from a task doing slow work (disk, key generation).
    var handle: SessionHandle { get }

    /// Opens a new north link with other credentials (a new client certificate, a higher security
    /// profile) and moves the session onto it when no CALL is in flight, then closes the old link.
    /// The charger stays connected. On failure the old link stays in service.
    func relinkNorth(with credentials: NorthCredentials, completion: @escaping (Result<Void, any Error>) -> Void)
}

extension SessionContext {
    /// Per-charger state with a starting value, so a stage can update it in place
    /// (`session[Counters.self, default: Counters()].seen += 1`).
    public subscript<Key: SessionStateKey>(key: Key.Type, default value: @autoclosure () -> Key.Value) -> Key.Value {
        get { self[key] ?? value() }
        set { self[key] = newValue }
    }
}

/// A timer that can be cancelled.
public protocol ScheduledWork {
    func cancel()
}

/// Comes back to a session's event loop from any thread. If the session has ended by then,
/// `body` does not run.
public struct SessionHandle: Sendable {
    public let chargerId: String
    private let enqueue: @Sendable (@escaping @Sendable (any SessionContext) -> Void) -> Void

    public init(chargerId: String, enqueue: @escaping @Sendable (@escaping @Sendable (any SessionContext) -> Void) -> Void) {
        self.chargerId = chargerId
        self.enqueue = enqueue
    }

    public func run(_ body: @escaping @Sendable (any SessionContext) -> Void) { enqueue(body) }
}

/// Thins telemetry before the health channel publishes it. The `compressor` stage puts one in each
/// session (`session[TelemetryFilterKey.self]`); the `mqtt_tap` stage asks it about every sample.
public protocol TelemetryFilter: AnyObject {
    /// The points to publish for one sample of `series` (e.g. `Voltage/L1-N`): none, the sample, or
    /// archived points that reconstruct the series within the configured deviation.
    func filter(series: String, time: Double, value: Double) -> [(time: Double, value: Double)]
    /// Every series' pending last point (transaction end, disconnect), so each ends on its true last value.
    func flush() -> [(series: String, time: Double, value: Double)]
    /// Pending points of compressors a reload replaced; publish them before anything newer.
    func takeRetiredPoints() -> [(series: String, time: Double, value: Double)]
    /// How `series` is compressed, for consumers to reconstruct it (algorithm, deviation).
    func descriptor(series: String) -> JSONValue?
}

public enum TelemetryFilterKey: SessionStateKey {
    public typealias Value = any TelemetryFilter
    public static var scope: SessionStateScope { .session }
}
