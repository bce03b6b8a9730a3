public import StageKit
import CoreMetrics

/// Asks the pipeline whether a charger may connect. The first stage with an opinion decides;
/// when no stage has one, the charger is refused (deny by default).
public enum ConnectionGate {
    public enum Outcome: Sendable, Equatable {
        case accept(NorthCredentials, decidedBy: String)
        case reject(status: Int, reason: String)
    }

    /// The deciding stage's own decision (`.noOpinion` if none had one), as a stage test wants it.
    public static func decide(_ request: ChargerConnectRequest, pipeline: Pipeline) async -> ConnectDecision {
        let decision = await firstOpinion(request, pipeline: pipeline)?.decision ?? .noOpinion
        if case .reject(let status, _) = decision.kind { notifyRefused(request, status: status, pipeline: pipeline) }
        return decision
    }

    private static func notifyRefused(_ request: ChargerConnectRequest, status: Int, pipeline: Pipeline) {
        for stage in pipeline.stages { stage.instance.chargerRefused(request, status: status) }
    }

    /// The decision the gateway acts on, with the deciding stage named in the reason.
    public static func outcome(_ request: ChargerConnectRequest, pipeline: Pipeline) async -> Outcome {
        guard let (stageId, decision) = await firstOpinion(request, pipeline: pipeline) else {
            notifyRefused(request, status: 403, pipeline: pipeline)
            return .reject(status: 403, reason: "no stage of the pipeline accepted the charger (is the 'auth' stage in \(pipeline.file)?)")
        }
        switch decision.kind {
        case .accept(let proposed):
            let credentials = pipeline.stages.reduce(proposed) { credentials, stage in
                stage.instance.amendNorthCredentials(credentials, for: request.chargerId)
            }
            return .accept(credentials, decidedBy: stageId)
        case .reject(let status, let reason):
            notifyRefused(request, status: status, pipeline: pipeline)
            return .reject(status: status, reason: "stage '\(stageId)': \(reason)")
        case .noOpinion: preconditionFailure("firstOpinion returned no opinion")
        }
    }

    private static func firstOpinion(_ request: ChargerConnectRequest, pipeline: Pipeline) async -> (stageId: String, decision: ConnectDecision)? {
        for stage in pipeline.stages {
            let decision = await stage.instance.chargerConnecting(request)
            if decision.kind != .noOpinion { return (stage.id, decision) }
        }
        return nil
    }
}

extension LoadedStage {
    /// A stage outside any file, for the StageTesting harness.
    public static func forTesting(id: String, instance: any Stage) -> LoadedStage {
        LoadedStage(id: id, type: Swift.type(of: instance).type, fingerprint: "", instance: instance)
    }
}
