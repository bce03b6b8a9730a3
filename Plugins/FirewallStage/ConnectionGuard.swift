import StageKit
import Synchronization

/// Connection-level protection shared by all sessions: upgrade attempts per source address, and
/// lockouts after repeated failed logins.
///
/// A wrong password locks out the *source address* it came from (after `maxFailedLogins`), never
/// the charger id by itself: otherwise anyone on the LAN could lock a charger out with five bad
/// guesses. The charger id is locked only when `maxFailingSources` distinct sources failed for it
/// within `failureWindow` (a distributed guess), and even then the source the charger last logged
/// in from still gets through. A successful login clears the failures of its id and of its source.
final class ConnectionGuard: Sendable {
    struct Refusal {
        let rule: String
        let reason: String
        /// Whether to log it (nil: throttled), and how many similar lines were left out before.
        let log: Int?
    }

    struct FailureOutcome {
        /// What the failure locked out: "source", "charger id", or nothing.
        var locked: [String] = []
    }

    private struct SourceEntry {
        var bucket: TokenBucket?
        var failures = 0
        var firstFailure: Duration = .zero
        var lockouts = 0
        var lockedUntil: Duration = .zero
        var lastSeen: Duration = .zero
        var log = LogThrottle(limit: 5, window: .seconds(60))
    }

    private struct ChargerEntry {
        /// Distinct sources that failed for this id in the current window (at most `maxFailingSources`).
        var failingSources: Set<String> = []
        var firstFailure: Duration = .zero
        var lockouts = 0
        var lockedUntil: Duration = .zero
        /// Where the charger last logged in from: it gets through a lockout of the id.
        var trustedSource: String?
        var lastSeen: Duration = .zero
    }

    private struct Tables {
        var sources: [String: SourceEntry] = [:]
        var chargers: [String: ChargerEntry] = [:]
        /// The source of the latest admitted attempt per charger id, to credit a success to it.
        var pending: [String: String] = [:]
        var pruneAbove = ConnectionGuard.maxEntries
    }

    /// Entries kept per table before the idle ones are pruned (and the oldest, if still too many).
    static let maxEntries = 20_000

    private let tables = Mutex(Tables())
    let attemptsPerSecond: Double
    let attemptsBurst: Double
    let maxFailedLogins: Int
    let maxFailingSources: Int
    let failureWindow: Duration
    let lockout: Double
    let lockoutMax: Double
    private let clock = ContinuousClock()
    private let start = ContinuousClock.now

    init(attemptsPerSecond: Double, attemptsBurst: Double, maxFailedLogins: Int, maxFailingSources: Int, failureWindow: Double,
         lockout: Double, lockoutMax: Double) {
        self.attemptsPerSecond = attemptsPerSecond
        self.attemptsBurst = attemptsBurst
        self.maxFailedLogins = maxFailedLogins
        self.maxFailingSources = maxFailingSources
        self.failureWindow = .milliseconds(Int64(failureWindow * 1000))
        self.lockout = lockout
        self.lockoutMax = lockoutMax
    }

    private var now: Duration { clock.now - start }

    private func lockDuration(_ lockouts: Int) -> Duration {
        .milliseconds(Int64(min(lockout * Double(1 << min(lockouts, 20)), lockoutMax) * 1000))
    }

    /// Nil to let the attempt through, or why not.
    func admit(source: String, chargerId: String) -> Refusal? {
        let now = self.now
        return tables.withLock { tables in
            var entry = tables.sources[source] ?? SourceEntry()
            entry.lastSeen = now
            defer { tables.sources[source] = entry }
            func refusal(_ rule: String, _ reason: String) -> Refusal {
                let (log, suppressed) = entry.log.admit(now: now)
                return Refusal(rule: rule, reason: reason, log: log ? suppressed : nil)
            }
            if entry.lockedUntil > now {
                let seconds = Int((entry.lockedUntil - now).components.seconds) + 1
                return refusal("login_lockout", "source locked out for \(seconds) s after failed logins")
            }
            if let charger = tables.chargers[chargerId], charger.lockedUntil > now, charger.trustedSource != source {
                let seconds = Int((charger.lockedUntil - now).components.seconds) + 1
                return refusal("login_lockout", "charger id locked out for \(seconds) s after failed logins from many sources")
            }
            var bucket = entry.bucket ?? TokenBucket(rate: attemptsPerSecond, burst: attemptsBurst, now: now)
            let allowed = bucket.take(now: now)
            entry.bucket = bucket
            guard allowed else { return refusal("connection_rate", "too many connection attempts from this source") }
            tables.pending[chargerId] = source
            if tables.sources.count + tables.chargers.count + tables.pending.count > tables.pruneAbove { prune(&tables, now: now) }
            return nil
        }
    }

    /// Counts a failed login (401); says what it locked out.
    func recordFailedLogin(source: String, chargerId: String) -> FailureOutcome {
        let now = self.now
        return tables.withLock { tables in
            var outcome = FailureOutcome()
            if tables.pending[chargerId] == source { tables.pending[chargerId] = nil }

            var entry = tables.sources[source] ?? SourceEntry()
            entry.lastSeen = now
            if entry.failures > 0, now - entry.firstFailure >= failureWindow { entry.failures = 0 }
            if entry.failures == 0 { entry.firstFailure = now }
            entry.failures += 1
            if entry.failures >= maxFailedLogins {
                entry.lockedUntil = now + lockDuration(entry.lockouts)
                entry.lockouts += 1
                entry.failures = 0
                outcome.locked.append("source")
            }
            tables.sources[source] = entry

            var charger = tables.chargers[chargerId] ?? ChargerEntry()
            charger.lastSeen = now
            if !charger.failingSources.isEmpty, now - charger.firstFailure >= failureWindow { charger.failingSources = [] }
            if charger.failingSources.isEmpty { charger.firstFailure = now }
            charger.failingSources.insert(source)
            if charger.failingSources.count >= maxFailingSources {
                charger.lockedUntil = now + lockDuration(charger.lockouts)
                charger.lockouts += 1
                charger.failingSources = []
                outcome.locked.append("charger id")
            }
            tables.chargers[chargerId] = charger
            if tables.sources.count + tables.chargers.count + tables.pending.count > tables.pruneAbove { prune(&tables, now: now) }
            return outcome
        }
    }

    /// A charger was let in: its id's failures and those of the source it came from are forgotten,
    /// and that source gets through a later lockout of the id.
    func recordSuccessfulLogin(chargerId: String) {
        let now = self.now
        tables.withLock { tables in
            let source = tables.pending.removeValue(forKey: chargerId)
            if var charger = tables.chargers[chargerId] {
                charger.failingSources = []
                charger.lockouts = 0
                charger.trustedSource = source ?? charger.trustedSource
                charger.lastSeen = now
                tables.chargers[chargerId] = charger
            } else if let source {
                tables.chargers[chargerId] = ChargerEntry(trustedSource: source, lastSeen: now)
            }
            if let source, var entry = tables.sources[source] {
                entry.failures = 0
                entry.lockouts = 0
                tables.sources[source] = entry
            }
        }
    }

    /// Forgets what no longer matters (idle, unlocked, no recent failures); if the tables are still
    /// too big (a spread of sources), the least recently seen entries go. Runs when the tables
    /// doubled since the last time, so its cost per attempt stays O(1) amortised.
    private func prune(_ tables: inout Tables, now: Duration) {
        let idle: Duration = .seconds(120)
        tables.sources = tables.sources.filter { _, entry in
            entry.lockedUntil > now || now - entry.lastSeen < idle || (entry.failures > 0 && now - entry.firstFailure < failureWindow)
        }
        tables.chargers = tables.chargers.filter { _, entry in
            entry.lockedUntil > now || entry.trustedSource != nil || now - entry.lastSeen < idle
                || (!entry.failingSources.isEmpty && now - entry.firstFailure < failureWindow)
        }
        if tables.pending.count > Self.maxEntries { tables.pending = [:] }
        if tables.sources.count > Self.maxEntries {
            tables.sources = Dictionary(uniqueKeysWithValues: tables.sources.sorted { $0.value.lastSeen > $1.value.lastSeen }
                .prefix(Self.maxEntries / 2).map { ($0.key, $0.value) })
        }
        if tables.chargers.count > Self.maxEntries {
            tables.chargers = Dictionary(uniqueKeysWithValues: tables.chargers.sorted { $0.value.lastSeen > $1.value.lastSeen }
                .prefix(Self.maxEntries / 2).map { ($0.key, $0.value) })
        }
        tables.pruneAbove = min(3 * Self.maxEntries, max(Self.maxEntries, 2 * (tables.sources.count + tables.chargers.count + tables.pending.count)))
    }

    /// How many entries the tables hold (for tests of the bound).
    var entryCount: Int { tables.withLock { $0.sources.count + $0.chargers.count + $0.pending.count } }
}
