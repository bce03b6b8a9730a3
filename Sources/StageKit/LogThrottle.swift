/// Keeps a flood of bad frames from becoming a flood of log lines (and a full disk): at most
/// `limit` lines a `window`, then one line saying how many were left out.
public struct LogThrottle: Sendable {
    public let limit: Int
    public let window: Duration
    private var windowStart: Duration?
    private var logged = 0
    private var suppressed = 0

    public init(limit: Int = 10, window: Duration = .seconds(60)) {
        self.limit = limit
        self.window = window
    }

    /// Whether to log now; `suppressed` is how many lines were left out since the last one logged.
    public mutating func admit(now: Duration) -> (log: Bool, suppressed: Int) {
        if windowStart == nil || now - windowStart! >= window {
            windowStart = now
            logged = 0
        }
        guard logged < limit else {
            suppressed += 1
            return (false, 0)
        }
        logged += 1
        defer { suppressed = 0 }
        return (true, suppressed)
    }
}
