public import StageKit
import CoreMetrics

/// Asks the pipeline whether a charger may connect. The first stage with an opinion decides;
/// when no stage has one, the charger is refused (deny by default).
public enum ConnectionGate {
    public enum Outcome: Sendable, Equatable {
        case accept(NorthCredentials, decidedBy: String)
        case reject(status: Int, reason: String)
    }

    public static func decide(_ request: ChargerConnectRequest, pipeline: Pipeline) async -> ConnectDecision {
        switch await outcome(request, pipeline: pipeline) {
        case .accept(let credentials, _): .accept(north: credentials)
        case .reject(let status, let reason): .reject(status: status, reason: reason)
        }
    }

    public static func outcome(_ request: ChargerConnectRequest, pipeline: Pipeline) async -> Outcome {
        for stage in pipeline.stages {
            let decision = await stage.instance.chargerConnecting(request)
            switch decision.kind {
            case .noOpinion: continue
            case .accept(let credentials): return .accept(credentials, decidedBy: stage.id)
            case .reject(let status, let reason): return .reject(status: status, reason: "stage '\(stage.id)': \(reason)")
            }
        }
        return .reject(status: 403, reason: "no stage of the pipeline accepted the charger (is the 'auth' stage in \(pipeline.file)?)")
    }
}

extension LoadedStage {
    /// A stage outside any file, for the StageTesting harness.
    public static func forTesting(id: String, instance: any Stage) -> LoadedStage {
        LoadedStage(id: id, type: Swift.type(of: instance).type, fingerprint: "", instance: instance,
                    timer: .init(label: "ocpp_gateway_stage_duration_seconds", dimensions: [("stage", id)]))
    }
}
