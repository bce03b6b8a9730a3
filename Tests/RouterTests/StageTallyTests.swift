import Logging
import OCPP
@testable import Router
import StageKit
import Testing

/// The per-stage counters of the status page (`LoadedStage.tally`).
@Suite("per-stage counters")
struct StageTallyTests {
    struct Dropper: Stage {
        static let type = "dropper"
        static let summary = "test"
        init(configuration: NoConfiguration, context: StageSetupContext) {}
        init() {}
        func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
            envelope.action == "DataTransfer" ? .drop(reason: "test") : .forward
        }
    }

    final class Recorder: SessionDriver {
        func send(_ bytes: [UInt8], to side: Side) {}
        func closeSession(reason: String) {}
        func schedule(after delay: Duration, _ body: @escaping () -> Void) -> any ScheduledWork { Never() }
        func execute(_ body: @escaping @Sendable () -> Void) { body() }
        func relinkNorth(with credentials: NorthCredentials, isIdle: @escaping () -> Bool,
                         completion: @escaping (Result<Void, any Error>) -> Void) {}
        var now: Duration { .zero }
        var wallTime: Double { 0 }
        var northPeerCertificate: [UInt8]? { nil }
        struct Never: ScheduledWork { func cancel() {} }
    }

    @Test func framesAndVerdictsAreCountedPerStageInFileOrder() {
        let metrics = RouterMetrics()
        let pipeline = Pipeline(stages: [.forTesting(id: "first", instance: Dropper()), .forTesting(id: "second", instance: Dropper())],
                                file: "p.yaml")
        let session = Session(chargerId: "CP001", pipelines: PipelineHolder(pipeline), limits: SessionLimits(), metrics: metrics,
                              driver: Recorder(), logger: Logger(label: "t", factory: { _ in SwiftLogNoOpLogHandler() }))
        session.start()
        session.receive(Array(#"[2,"1","Heartbeat",{}]"#.utf8), from: .charger)
        session.receive(Array(#"[2,"2","DataTransfer",{"vendorId":"x"}]"#.utf8), from: .charger)
        #expect(pipeline.stages[0].tally.frames == 2 && pipeline.stages[0].tally.verdicts == ["forward": 1, "drop": 1])
        #expect(pipeline.stages[1].tally.frames == 1, "the dropped frame never reached it")
        #expect(pipeline.stages[1].tally.verdicts == ["forward": 1])
    }

    @Test func aStageThatSawNothingCountsZero() {
        let stage = LoadedStage.forTesting(id: "idle", instance: Dropper())
        #expect(stage.tally == StageTally())
    }
}
