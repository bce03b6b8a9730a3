import Metrics
import Synchronization

/// The outbox's metrics, aggregated over every charger (no charger label: the series stay bounded).
///
/// - `ocpp_gateway_outbox_depth`: CALLs waiting in all outboxes.
/// - `ocpp_gateway_outbox_oldest_age_seconds`: the age of the oldest waiting CALL (0 when none waits).
/// - `ocpp_gateway_outbox_replayed_total`: CALLs the CSMS accepted on replay.
/// - `ocpp_gateway_outbox_failed_total`: CALLs the CSMS refused on replay (CALLERROR), kept as failed.
/// - `ocpp_gateway_outbox_dropped_total{kind,reason}`: CALLs removed before replay, `reason` = `quota` | `coalesced`.
public enum OutboxMetrics {
    private static let figures = Mutex<[String: OutboxFigures]>([:])
    private static let depth = Gauge(label: "ocpp_gateway_outbox_depth")
    private static let oldestAge = Gauge(label: "ocpp_gateway_outbox_oldest_age_seconds")
    private static let replayedCounter = Counter(label: "ocpp_gateway_outbox_replayed_total")
    private static let failedCounter = Counter(label: "ocpp_gateway_outbox_failed_total")
    private static let droppedCounters: [String: Counter] = {
        var counters: [String: Counter] = [:]
        for kind in MessageKind.allCases {
            for reason in ["quota", "coalesced"] {
                counters["\(kind.rawValue)/\(reason)"] = Counter(label: "ocpp_gateway_outbox_dropped_total",
                                                                dimensions: [("kind", kind.rawValue), ("reason", reason)])
            }
        }
        return counters
    }()

    /// Records a charger's outbox after a change, and refreshes the gauges (`now`: seconds since 1970).
    public static func update(charger: String, figures new: OutboxFigures, now: Double) {
        let (total, oldest) = figures.withLock { all -> (Int, Double?) in
            if new.depth == 0 { all[charger] = nil } else { all[charger] = new }
            return (all.values.reduce(0) { $0 + $1.depth }, all.values.compactMap(\.oldest).min())
        }
        depth.record(total)
        oldestAge.record(oldest.map { max(0, now - $0) } ?? 0)
    }

    /// Refreshes the age gauge only (a timer calls it while something waits).
    public static func refreshAge(now: Double) {
        let oldest = figures.withLock { $0.values.compactMap(\.oldest).min() }
        oldestAge.record(oldest.map { max(0, now - $0) } ?? 0)
    }

    /// Waiting CALLs in all outboxes this process has seen (tests).
    public static var totalDepth: Int { figures.withLock { $0.values.reduce(0) { $0 + $1.depth } } }

    public static func dropped(_ drops: [AppendResult.Dropped]) {
        for drop in drops { droppedCounters["\(drop.kind.rawValue)/\(drop.reason)"]?.increment() }
    }

    public static func replayed() { replayedCounter.increment() }
    public static func failed() { failedCounter.increment() }
}
