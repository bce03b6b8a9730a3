import Synchronization

/// Connection-level protection shared by all sessions: upgrade attempts per source address, and
/// lockouts after repeated failed logins, for the source and for the charger id it tried.
final class ConnectionGuard: Sendable {
    struct Refusal {
        let rule: String
        let reason: String
    }

    private struct Entry {
        var bucket: TokenBucket?
        var failures = 0
        var lockouts = 0
        var lockedUntil: Duration = .zero
    }

    private let entries = Mutex<[String: Entry]>([:])
    let attemptsPerSecond: Double
    let attemptsBurst: Double
    let maxFailedLogins: Int
    let lockout: Double
    let lockoutMax: Double
    private let clock = ContinuousClock()
    private let start = ContinuousClock.now

    init(attemptsPerSecond: Double, attemptsBurst: Double, maxFailedLogins: Int, lockout: Double, lockoutMax: Double) {
        self.attemptsPerSecond = attemptsPerSecond
        self.attemptsBurst = attemptsBurst
        self.maxFailedLogins = maxFailedLogins
        self.lockout = lockout
        self.lockoutMax = lockoutMax
    }

    private var now: Duration { clock.now - start }

    /// Nil to let the attempt through, or why not.
    func admit(source: String, chargerId: String) -> Refusal? {
        let now = self.now
        return entries.withLock { entries in
            for key in ["source:" + source, "charger:" + chargerId] {
                if let entry = entries[key], entry.lockedUntil > now {
                    let seconds = Int((entry.lockedUntil - now).components.seconds) + 1
                    return Refusal(rule: "login_lockout", reason: "\(key.hasPrefix("source") ? "source" : "charger id") locked out for \(seconds) s after failed logins")
                }
            }
            var entry = entries["source:" + source] ?? Entry()
            var bucket = entry.bucket ?? TokenBucket(rate: attemptsPerSecond, burst: attemptsBurst, now: now)
            let allowed = bucket.take(now: now)
            entry.bucket = bucket
            entries["source:" + source] = entry
            if entries.count > 100_000 { entries = entries.filter { $0.value.lockedUntil > now } }
            return allowed ? nil : Refusal(rule: "connection_rate", reason: "too many connection attempts from \(source)")
        }
    }

    /// Counts a failed login; true when it started a lockout.
    func recordFailedLogin(source: String, chargerId: String) -> Bool {
        let now = self.now
        return entries.withLock { entries in
            var locked = false
            for key in ["source:" + source, "charger:" + chargerId] {
                var entry = entries[key] ?? Entry()
                entry.failures += 1
                if entry.failures >= maxFailedLogins {
                    let seconds = min(lockout * Double(1 << min(entry.lockouts, 20)), lockoutMax)
                    entry.lockedUntil = now + .milliseconds(Int64(seconds * 1000))
                    entry.lockouts += 1
                    entry.failures = 0
                    locked = true
                }
                entries[key] = entry
            }
            return locked
        }
    }
}
