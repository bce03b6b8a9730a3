public import StageKit

/// What a session needs from the world: sockets to write to, a clock and timers.
/// Transport implements it on a SwiftNIO event loop; StageTesting implements it with a fake clock.
public protocol SessionDriver: AnyObject {
    /// Writes one text frame to a peer.
    func send(_ bytes: [UInt8], to side: Side)
    /// Ends the session: closes both links.
    func closeSession(reason: String)
    /// Runs `body` on the session's event loop after `delay`.
    func schedule(after delay: Duration, _ body: @escaping () -> Void) -> any ScheduledWork
    /// Monotonic time.
    var now: Duration { get }
    /// Seconds since 1970 (UTC).
    var wallTime: Double { get }
    /// The CSMS's certificate (DER) on the current north link.
    var northPeerCertificate: [UInt8]? { get }
    /// Runs `body` on the session's event loop, from any thread.
    func execute(_ body: @escaping @Sendable () -> Void)
    /// Opens a new north link with `credentials` and moves the session onto it between frames.
    func relinkNorth(with credentials: NorthCredentials, isIdle: @escaping () -> Bool,
                     completion: @escaping (Result<Void, any Error>) -> Void)
}


/// Limits of the CALL queues of a session.
public struct SessionLimits: Sendable {
    public var chargerCallTimeout: Duration
    public var chargerMaxQueuedCalls: Int
    public var csmsCallTimeout: Duration
    public var csmsMaxQueuedCalls: Int

    public init(chargerCallTimeout: Duration = .seconds(30), chargerMaxQueuedCalls: Int = 32,
                csmsCallTimeout: Duration = .seconds(30), csmsMaxQueuedCalls: Int = 32) {
        self.chargerCallTimeout = chargerCallTimeout
        self.chargerMaxQueuedCalls = chargerMaxQueuedCalls
        self.csmsCallTimeout = csmsCallTimeout
        self.csmsMaxQueuedCalls = csmsMaxQueuedCalls
    }
}
