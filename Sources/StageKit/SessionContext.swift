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

/// A key for per-charger stage state, in the style of SwiftUI's environment keys.
public protocol SessionStateKey {
    associatedtype Value
}

/// One charger's session, as a stage sees it. Use it only on the call that handed it to you
/// (it lives on the charger's event loop).
public protocol SessionContext: AnyObject {
    var chargerId: String { get }
    var version: OCPPVersion { get }
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
}
