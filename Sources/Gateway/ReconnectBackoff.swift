import Synchronization

/// Exponential back-off with jitter for north connections, per charger.
///
/// In mirror mode the charger drives reconnection: each time it reconnects, the gateway tries
/// the CSMS again, unless that charger's back-off window is still open, in which case the
/// charger gets an immediate 502 and the CSMS is spared a storm of handshakes.
final class ReconnectBackoff: Sendable {
    private struct State {
        var failures: Int
        var retryAfter: UInt64
    }
    private let states = Mutex<[String: State]>([:])
    let initialDelay: Duration
    let maxDelay: Duration

    init(initialDelay: Duration, maxDelay: Duration) {
        self.initialDelay = initialDelay
        self.maxDelay = maxDelay
    }

    /// Nanoseconds until `chargerId` may try again; nil if it may try now.
    func waitRemaining(for chargerId: String, now: UInt64) -> UInt64? {
        states.withLock { states in
            guard let state = states[chargerId], state.retryAfter > now else { return nil }
            return state.retryAfter - now
        }
    }

    /// Records a failed (or lost) north connection; returns the delay chosen.
    @discardableResult
    func recordFailure(for chargerId: String, now: UInt64) -> Duration {
        states.withLock { states in
            var state = states[chargerId] ?? State(failures: 0, retryAfter: 0)
            state.failures += 1
            let exponent = min(state.failures - 1, 30)
            let base = min(Double(initialDelay.components.seconds) + Double(initialDelay.components.attoseconds) / 1e18,
                           1e9) * Double(1 << exponent)
            let cap = Double(maxDelay.components.seconds) + Double(maxDelay.components.attoseconds) / 1e18
            // "Full jitter" between half and all of the delay: chargers that lost the CSMS together do not return together.
            let delay = min(base, cap) * Double.random(in: 0.5...1.0)
            state.retryAfter = now + UInt64(delay * 1e9)
            states[chargerId] = state
            return .nanoseconds(Int64(delay * 1e9))
        }
    }

    func recordSuccess(for chargerId: String) {
        _ = states.withLock { $0.removeValue(forKey: chargerId) }
    }
}
