import Metrics
public import OCPP
import Synchronization

/// The router's counters, created once per label set and cached (creating a swift-metrics
/// handle per frame would cost a factory lookup and an allocation every time).
public final class RouterMetrics: Sendable {
    private struct FrameKey: Hashable {
        let direction: String
        let action: String
        let verdict: String
    }
    private let frameCounters = Mutex<[FrameKey: Counter]>([:])
    let sessions = Meter(label: "ocpp_gateway_sessions")
    let reloads = Counter(label: "ocpp_gateway_reloads_total", dimensions: [("result", "ok")])
    let failedReloads = Counter(label: "ocpp_gateway_reloads_total", dimensions: [("result", "failed")])

    public init() {}

    /// Labels carry only actions of the catalogue: a peer that invents action names must not create
    /// metric series (each name a new series, each up to a frame long). Everything else is `other`.
    public static func actionLabel(_ action: String?, version: OCPPVersion = .v16) -> String {
        guard let action, !action.isEmpty else { return "" }
        return MessageCatalogue.descriptor(for: action, version: version) != nil ? action : "other"
    }

    func countFrame(_ direction: Direction, action: String?, verdict: String, version: OCPPVersion = .v16) {
        let key = FrameKey(direction: direction.rawValue, action: Self.actionLabel(action, version: version), verdict: verdict)
        let counter = frameCounters.withLock { counters in
            if let existing = counters[key] { return existing }
            let counter = Counter(label: "ocpp_gateway_frames_total",
                                  dimensions: [("direction", key.direction), ("action", key.action), ("verdict", key.verdict)])
            counters[key] = counter
            return counter
        }
        counter.increment()
    }

    public func recordReload(succeeded: Bool) {
        (succeeded ? reloads : failedReloads).increment()
    }
}
