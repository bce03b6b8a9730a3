public import CoreMetrics
import StageKit
public import OCPP
import Synchronization

/// What the router did with a frame, as the `verdict` label of `ocpp_gateway_frames_total`: a stage's
/// verdict (`Verdict.label`) or one of the router's own outcomes. A closed set, so the label set is bounded.
enum FrameVerdict: Int, CaseIterable, Sendable {
    case forward, modify, drop, answer, error, held
    case heldUntilBoot, queued, malformed, unmatched, consumed

    init(_ verdict: Verdict) {
        switch verdict.kind {
        case .forward: self = .forward
        case .forwardModified: self = .modify
        case .drop: self = .drop
        case .answer: self = .answer
        case .answerError: self = .error
        case .answerLater: self = .held
        }
    }

    var label: String {
        switch self {
        case .forward: "forward"
        case .modify: "modify"
        case .drop: "drop"
        case .answer: "answer"
        case .error: "error"
        case .held: "held"
        case .heldUntilBoot: "held_until_boot"
        case .queued: "queued"
        case .malformed: "malformed"
        case .unmatched: "unmatched"
        case .consumed: "consumed"
        }
    }
}

/// The router's counters.
///
/// `ocpp_gateway_frames_total{direction, action, verdict}` is counted on every frame. Its label set is
/// closed (3 directions × the actions of the 1.6 and 2.0.1 catalogues plus `""` and `other` × `FrameVerdict`;
/// an action is labelled only when it is in the catalogue of the session's version), so the
/// handles live in a fixed table indexed by those three, each slot created at its first use with one
/// atomic compare-and-swap: the frame path takes no lock and hashes only the action name (once, in an
/// immutable dictionary). A slot never changes once set, so every frame of a series counts on one handle.
public final class RouterMetrics: Sendable {
    /// Index of each catalogue action; `""` (no action) and `other` (not in the catalogue) follow.
    private static let actionNames: [String] = Set(MessageCatalogue.ocpp16.keys).union(MessageCatalogue.ocpp201.keys).sorted()
        + ["", "other"]
    private static let noAction = actionNames.count - 2
    private static let otherAction = actionNames.count - 1
    private static let directions: [Direction] = [.fromCharger, .fromCSMS, .fromGateway]

    /// The number of distinct `ocpp_gateway_frames_total` series there can ever be.
    static let frameSeriesLimit = directions.count * actionNames.count * FrameVerdict.allCases.count

    /// One series' handle, set once. The handle is kept as the bits of a retained reference in an
    /// `Atomic<Int>` (a plain load on the frame path; the generic `AtomicLazyReference` was not specialized
    /// across modules and cost ~600 instructions per load).
    private final class Slot: Sendable {
        private let bits = Atomic<Int>(0)

        var counter: Counter? {
            let value = bits.load(ordering: .acquiring)
            guard value != 0, let pointer = UnsafeRawPointer(bitPattern: value) else { return nil }
            return Unmanaged<Counter>.fromOpaque(pointer).takeUnretainedValue()
        }

        /// Stores `counter` unless another thread stored one first; returns the one in the slot.
        func storeIfNil(_ counter: Counter) -> Counter {
            let retained = Unmanaged.passRetained(counter)
            let value = Int(bitPattern: retained.toOpaque())
            let (exchanged, original) = bits.compareExchange(expected: 0, desired: value, ordering: .acquiringAndReleasing)
            if exchanged { return counter }
            retained.release()
            return Unmanaged<Counter>.fromOpaque(UnsafeRawPointer(bitPattern: original)!).takeUnretainedValue()
        }

        deinit {
            let value = bits.load(ordering: .acquiring)
            if value != 0, let pointer = UnsafeRawPointer(bitPattern: value) { Unmanaged<Counter>.fromOpaque(pointer).release() }
        }
    }
    private let frameSlots: [Slot]
    private let factory: (any MetricsFactory)?
    let sessions: Meter
    let reloads: Counter
    let failedReloads: Counter

    /// - Parameter factory: where the handles come from; nil for the process-wide `MetricsSystem` (tests pass their own).
    public init(factory: (any MetricsFactory)? = nil) {
        self.factory = factory
        frameSlots = (0..<Self.frameSeriesLimit).map { _ in Slot() }
        if let factory {
            sessions = Meter(label: "ocpp_gateway_sessions", factory: factory)
            reloads = Counter(label: "ocpp_gateway_reloads_total", dimensions: [("result", "ok")], factory: factory)
            failedReloads = Counter(label: "ocpp_gateway_reloads_total", dimensions: [("result", "failed")], factory: factory)
        } else {
            sessions = Meter(label: "ocpp_gateway_sessions")
            reloads = Counter(label: "ocpp_gateway_reloads_total", dimensions: [("result", "ok")])
            failedReloads = Counter(label: "ocpp_gateway_reloads_total", dimensions: [("result", "failed")])
        }
    }

    /// Labels carry only actions of the catalogue: a peer that invents action names must not create
    /// metric series (each name a new series, each up to a frame long). Everything else is `other`.
    public static func actionLabel(_ action: String?, version: OCPPVersion = .v16) -> String {
        guard let action, !action.isEmpty else { return "" }
        return MessageCatalogue.descriptor(for: action, version: version) != nil ? action : "other"
    }

    /// Each version's catalogue actions by (length, first byte, last byte), each list checked by comparing
    /// the names: cheaper per frame than hashing the name (SipHash) for a dictionary lookup.
    private static func buckets(for catalogue: [String: ActionDescriptor]) -> [[Int]] {
        var buckets = [[Int]](repeating: [], count: 256)
        for (index, name) in actionNames.enumerated() where catalogue[name] != nil {
            buckets[bucket(name.utf8.count, name.utf8.first!, name.utf8.last!)].append(index)
        }
        return buckets
    }
    private static let actionBuckets16 = buckets(for: MessageCatalogue.ocpp16)
    private static let actionBuckets201 = buckets(for: MessageCatalogue.ocpp201)

    private static func bucket(_ count: Int, _ first: UInt8, _ last: UInt8) -> Int {
        (count &* 31 &+ Int(first) &* 7 &+ Int(last)) & 255
    }

    /// Where `action` sits in the table: the same label `actionLabel` gives (the version's catalogue, else `other`).
    static func actionSlot(_ action: String?, version: OCPPVersion = .v16) -> Int {
        guard let action, let first = action.utf8.first, let last = action.utf8.last else { return noAction }
        let buckets = version == .v201 ? actionBuckets201 : actionBuckets16
        for index in buckets[bucket(action.utf8.count, first, last)] where actionNames[index] == action { return index }
        return otherAction
    }

    /// The `action` label of a table slot.
    static func actionName(_ slot: Int) -> String { actionNames[slot] }

    private static func directionSlot(_ direction: Direction) -> Int {
        switch direction {
        case .fromCharger: 0
        case .fromCSMS: 1
        case .fromGateway: 2
        }
    }

    func countFrame(_ direction: Direction, action: String?, verdict: FrameVerdict, version: OCPPVersion = .v16) {
        let actionSlot = Self.actionSlot(action, version: version)
        let index = (Self.directionSlot(direction) * Self.actionNames.count + actionSlot) * FrameVerdict.allCases.count + verdict.rawValue
        let slot = frameSlots[index]
        if let counter = slot.counter {
            counter.increment()
            return
        }
        let dimensions = [("direction", direction.rawValue), ("action", Self.actionNames[actionSlot]), ("verdict", verdict.label)]
        let made = factory.map { Counter(label: "ocpp_gateway_frames_total", dimensions: dimensions, factory: $0) }
            ?? Counter(label: "ocpp_gateway_frames_total", dimensions: dimensions)
        // Two threads may race to the first frame of a series: both end up on the one stored.
        slot.storeIfNil(made).increment()
    }

    public func recordReload(succeeded: Bool) {
        (succeeded ? reloads : failedReloads).increment()
    }
}
