import AuthStage
import CertsStage
import CompressorStage
import DashcamStage
import FirewallStage
import MQTTTapStage
import NapExportStage
import OutboxStage
import SmartChargingStage
public import Router

/// Every stage type this build of the gateway knows. Adding a stage module to the gateway is
/// one line here (and its target in Package.swift).
public func makeStageRegistry() -> StageRegistry {
    var registry = StageRegistry()
    registry.register(AuthStage.self)
    registry.register(CertsStage.self)
    registry.register(FirewallStage.self)
    registry.register(SmartChargingStage.self)
    registry.register(MQTTTapStage.self)
    registry.register(DashcamStage.self)
    registry.register(CompressorStage.self)
    registry.register(OutboxStage.self)
    registry.register(NapExportStage.self)
    return registry
}
