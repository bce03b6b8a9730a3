import CompressorStage
import Foundation
import MQTTTapStage
import OCPP
import StageKit
import StageTesting
import Testing

@Suite("compressor stage with the tap")
struct CompressorStageTests {
    func rig(_ config: String) throws -> (StageTester, RecordingPublisher) {
        let publisher = RecordingPublisher()
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("compressor-\(UUID().uuidString)").path
        let compressor = try StageTester.build(CompressorStage.self, config: config)
        let tap = try StageTester.build(MQTTTapStage.self, stateDirectory: state, publisher: publisher)
        return (StageTester(stages: [("compress", compressor), ("telemetry", tap)]), publisher)
    }

    func sendVoltage(_ tester: StageTester, _ values: [Double], start: Double = 1_795_000_000) {
        for (second, value) in values.enumerated() {
            let id = tester.chargerSends(call: "MeterValues", payload: ["connectorId": 1, "transactionId": 3, "meterValue": [[
                "timestamp": .string(Date(timeIntervalSince1970: start + Double(second)).formatted(.iso8601)),
                "sampledValue": [["value": .string(String(value)), "measurand": "Voltage", "phase": "L1-N", "unit": "V"]]]]])
            tester.csmsAnswers(id)
        }
    }

    @Test func aNoisyPlateauBecomesAFewPointsAndEndsOnItsTrueLastValue() throws {
        let (tester, publisher) = try rig("default: { algorithm: sdt, deviation: 0.5, max_time: 3600 }")
        let values = (0..<600).map { 230 + ($0 % 2 == 0 ? 0.2 : -0.2) } + [231.7]
        sendVoltage(tester, values)
        tester.chargerSends(call: "StopTransaction", payload: ["transactionId": 3, "meterStop": 10, "timestamp": "2026-11-25T10:10:01Z"])
        let points = publisher.take().filter { $0.topic.hasSuffix("telemetry/Voltage/L1-N") }
        #expect(points.count <= 4 && points.count >= 2, "\(points.count) points for 601 samples")
        #expect(points.first?.json["value"] == "230.2")
        #expect(points.last?.json["value"] == "231.7", "the series ends on its true last value")
        #expect(points.first?.json["compression"]?["algorithm"] == "sdt" && points.first?.json["compression"]?["deviation"]?.doubleValue == 0.5)
    }

    @Test func measurandsCanUseDifferentAlgorithms() throws {
        let (tester, publisher) = try rig("measurands: { Voltage: { algorithm: deadband, deviation: 1 } }")
        sendVoltage(tester, [230, 230.5, 231.2, 231.5, 229.9])
        let values = publisher.take().filter { $0.topic.contains("Voltage") }.compactMap { $0.json["value"]?.stringValue }
        #expect(values == ["230", "231.2", "229.9"])
    }

    @Test func badSettingsAreRefused() {
        #expect(throws: (any Error).self) { try StageTester.build(CompressorStage.self, config: "default: { algorithm: zip }") }
        #expect(throws: (any Error).self) { try StageTester.build(CompressorStage.self, config: "default: { algorithm: sdt }") }
        #expect(throws: (any Error).self) { try StageTester.build(CompressorStage.self, config: "default: { algorithm: sdt, deviation_percent: 1 }") }
    }
}
