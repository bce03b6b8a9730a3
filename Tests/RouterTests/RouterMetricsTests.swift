import CoreMetrics
import Foundation
import OCPP
import StageKit
import Synchronization
import Testing
@testable import Router

/// Records every counter the router makes, with its labels and what it counted.
private final class RecordingFactory: MetricsFactory, Sendable {
    final class Recorded: CounterHandler, Sendable {
        let label: String
        let dimensions: [String]
        let value = Atomic<Int64>(0)
        init(label: String, dimensions: [(String, String)]) {
            self.label = label
            self.dimensions = dimensions.map { "\($0.0)=\($0.1)" }
        }
        func increment(by amount: Int64) { value.add(amount, ordering: .relaxed) }
        func reset() { value.store(0, ordering: .relaxed) }
    }
    let counters = Mutex<[Recorded]>([])

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        let counter = Recorded(label: label, dimensions: dimensions)
        counters.withLock { $0.append(counter) }
        return counter
    }
    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler { NOOPMetricsHandler.instance }
    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler { NOOPMetricsHandler.instance }
    func destroyCounter(_ handler: any CounterHandler) {}
    func destroyRecorder(_ handler: any RecorderHandler) {}
    func destroyTimer(_ handler: any TimerHandler) {}

    /// `ocpp_gateway_frames_total` series: labels → total counted (handles of one label set added up).
    var frames: [[String]: Int64] {
        counters.withLock { counters in
            counters.filter { $0.label == "ocpp_gateway_frames_total" }
                .reduce(into: [:]) { $0[$1.dimensions, default: 0] += $1.value.load(ordering: .relaxed) }
        }
    }
}

/// `ocpp_gateway_frames_total` keeps its names and labels (dashboards and alerts use them) while the
/// handles come from a fixed table instead of a locked dictionary.
@Suite("router metrics")
struct RouterMetricsTests {
    @Test func labelsAreThoseDashboardsKnow() {
        let factory = RecordingFactory()
        let metrics = RouterMetrics(factory: factory)
        metrics.countFrame(.fromCharger, action: "Authorize", verdict: .forward)
        metrics.countFrame(.fromCSMS, action: "Authorize", verdict: FrameVerdict(.answer(.object([]))))
        metrics.countFrame(.fromGateway, action: "GetConfiguration", verdict: .heldUntilBoot)
        metrics.countFrame(.fromCharger, action: nil, verdict: .malformed)
        metrics.countFrame(.fromCSMS, action: "MadeUpAction", verdict: .unmatched)
        metrics.countFrame(.fromCharger, action: "", verdict: FrameVerdict(.answerLater))
        #expect(factory.frames == [
            ["direction=from_charger", "action=Authorize", "verdict=forward"]: 1,
            ["direction=from_csms", "action=Authorize", "verdict=answer"]: 1,
            ["direction=from_gateway", "action=GetConfiguration", "verdict=held_until_boot"]: 1,
            ["direction=from_charger", "action=", "verdict=malformed"]: 1,
            ["direction=from_csms", "action=other", "verdict=unmatched"]: 1,
            ["direction=from_charger", "action=", "verdict=held"]: 1,
        ])
    }

    @Test func everyVerdictKeepsItsLabel() {
        let verdicts: [Verdict] = [.forward, .forward(modifiedPayload: .object([])), .drop(reason: "x"), .answer(.object([])),
                                   .answerError(.genericError, "x"), .answerLater]
        for verdict in verdicts { #expect(FrameVerdict(verdict).label == verdict.label) }
        #expect(Set(FrameVerdict.allCases.map(\.label)).count == FrameVerdict.allCases.count)
    }

    @Test func everyCatalogueActionIsItsOwnLabelAndAnythingElseIsOther() {
        let factory = RecordingFactory()
        let metrics = RouterMetrics(factory: factory)
        let actions = Array(MessageCatalogue.ocpp16.keys)
        for action in actions { metrics.countFrame(.fromCharger, action: action, verdict: .forward) }
        // Names a peer invents, some close to real ones: all `other`, the same as `actionLabel` says.
        let invented = ["authorize", "Authorize ", "Heartbeat2", "BootNotificatio", "X", "HeartbeaT", "other", "Ä"]
        for action in invented {
            metrics.countFrame(.fromCharger, action: action, verdict: .forward)
            #expect(RouterMetrics.actionLabel(action) == "other")
        }
        var expected: [[String]: Int64] = [["direction=from_charger", "action=other", "verdict=forward"]: Int64(invented.count)]
        for action in actions { expected[["direction=from_charger", "action=\(action)", "verdict=forward"]] = 1 }
        #expect(factory.frames == expected)
    }

    @Test func theSeriesAreBoundedWhateverPeersSend() {
        let factory = RecordingFactory()
        let metrics = RouterMetrics(factory: factory)
        for index in 0..<20_000 {
            metrics.countFrame(index % 2 == 0 ? .fromCharger : .fromCSMS, action: "Action\(index)", verdict: .forward)
        }
        #expect(factory.frames.count == 2)
        #expect(factory.counters.withLock { $0.count } <= RouterMetrics.frameSeriesLimit + 3)
        #expect(factory.frames.values.reduce(0, +) == 20_000)
    }

    @Test func oneSeriesCountsEveryFrameWhenThreadsRace() async {
        let factory = RecordingFactory()
        let metrics = RouterMetrics(factory: factory)
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<8 {
                group.addTask { for _ in 0..<2_000 { metrics.countFrame(.fromCharger, action: "Heartbeat", verdict: .forward) } }
            }
        }
        #expect(factory.frames == [["direction=from_charger", "action=Heartbeat", "verdict=forward"]: 16_000])
    }
}
