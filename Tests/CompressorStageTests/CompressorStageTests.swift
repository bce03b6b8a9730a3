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
        #expect(values == ["230.0", "231.2", "229.9"], "the charger's own spelling")
    }

    @Test func badSettingsAreRefused() {
        #expect(throws: (any Error).self) { try StageTester.build(CompressorStage.self, config: "default: { algorithm: zip }") }
        #expect(throws: (any Error).self) { try StageTester.build(CompressorStage.self, config: "default: { algorithm: sdt }") }
        #expect(throws: (any Error).self) { try StageTester.build(CompressorStage.self, config: "default: { algorithm: sdt, deviation: -1 }") }
        #expect(throws: (any Error).self) {
            try StageTester.build(CompressorStage.self, config: "measurands: { Volts: { algorithm: sdt, deviation: 1 } }")
        }
        #expect(throws: (any Error).self) {
            try StageTester.build(CompressorStage.self, config: "measurands: { \"Voltage/L4\": { algorithm: sdt, deviation: 1 } }")
        }
        // A percentage without a span is of each measurand's own span.
        #expect(throws: Never.self) { try StageTester.build(CompressorStage.self, config: "default: { algorithm: sdt, deviation_percent: 1 }") }
    }

    /// Sends one series as the charger spells it: (timestamp, value) strings.
    func send(_ tester: StageTester, measurand: String, unit: String, _ samples: [(String, String)]) {
        for (timestamp, value) in samples {
            let id = tester.chargerSends(call: "MeterValues", payload: ["connectorId": 1, "transactionId": 3, "meterValue": [[
                "timestamp": .string(timestamp),
                "sampledValue": [["value": .string(value), "measurand": .string(measurand), "unit": .string(unit)]]]]])
            tester.csmsAnswers(id)
        }
    }

    static func stamp(_ second: Int, millis: Int) -> String {
        String(Date(timeIntervalSince1970: 1_795_000_000 + Double(second)).formatted(.iso8601).dropLast()) + String(format: ".%03dZ", millis)
    }

    @Test func theDefaultsKeepACurrentStepAndThinANoisyPowerPlateau() throws {
        let (tester, publisher) = try rig("")
        // 15 A, a step to 16 A, back to 15 A: one deviation of 2 (in every unit) lost the step.
        let current = (0..<180).map { (Self.stamp($0, millis: 0), $0 >= 60 && $0 < 120 ? "16.00" : "15.00") }
        send(tester, measurand: "Current.Import", unit: "A", current)
        // 11 kW ± 20 W: 2 W would publish nearly every sample.
        let power = (0..<300).map { (Self.stamp(1000 + $0, millis: 0), String(11_000 + [0, 20, -20, 10, -10][$0 % 5])) }
        send(tester, measurand: "Power.Active.Import", unit: "W", power)
        // The same in kW: compressed in W, so the same points.
        let kilowatts = (0..<300).map { (Self.stamp(2000 + $0, millis: 0), String(format: "%.3f", Double(11_000 + [0, 20, -20, 10, -10][$0 % 5]) / 1000)) }
        send(tester, measurand: "Power.Active.Export", unit: "kW", kilowatts)
        tester.chargerSends(call: "StopTransaction", payload: ["transactionId": 3, "meterStop": 10, "timestamp": "2026-11-25T10:10:01Z"])
        let messages = publisher.take()
        let amps = messages.filter { $0.topic.hasSuffix("telemetry/Current.Import") }.compactMap { $0.json["value"]?.stringValue }
        #expect(amps.contains("16.00"), "the 15→16 A step survives: \(amps)")
        #expect(messages.first { $0.topic.hasSuffix("telemetry/Current.Import") }?.json["compression"]?["deviation"]?.doubleValue == 0.16)
        let watts = messages.filter { $0.topic.hasSuffix("telemetry/Power.Active.Import") }
        #expect(watts.count <= 4, "\(watts.count) points for a flat 11 kW ± 20 W")
        #expect(watts.first?.json["compression"]?["deviation"]?.doubleValue == 55.2)
        #expect(watts.first?.json["compression"]?["deviation_unit"] == "W")
        let exported = messages.filter { $0.topic.hasSuffix("telemetry/Power.Active.Export") }
        #expect(exported.count == watts.count, "kW is compressed as W")
        #expect(exported.allSatisfy { $0.json["unit"] == "kW" && ($0.json["value"]?.stringValue?.split(separator: ".").last?.count == 3) })
    }

    @Test func aDCChargersCurrentIsCompressedInItsOwnRange() throws {
        let (tester, publisher) = try rig("")
        let amps = (0..<300).map { (Self.stamp($0, millis: 0), String(format: "%.1f", 375 + [0, 0.8, -0.6, 0.3, -0.9][$0 % 5])) }
        send(tester, measurand: "Current.Import", unit: "A", amps)
        let points = publisher.take().filter { $0.topic.hasSuffix("telemetry/Current.Import") }
        #expect(points.count <= 4, "\(points.count) points for 375 A ± 1 A")
        #expect(points.last?.json["compression"]?["deviation"]?.doubleValue == 2.5)
    }

    /// The descriptor a point carries is made once per series and deviation: a series that moves to
    /// another range carries the new deviation from then on, not the one first seen.
    @Test func aSeriesThatChangesItsRangeCarriesItsNewDeviation() throws {
        let (tester, publisher) = try rig("")
        let ac = (0..<60).map { (Self.stamp($0, millis: 0), $0 % 20 < 10 ? "15.0" : "16.0") }
        let dc = (60..<120).map { (Self.stamp($0, millis: 0), $0 % 20 < 10 ? "370.0" : "380.0") }
        send(tester, measurand: "Current.Import", unit: "A", ac + dc)
        tester.chargerSends(call: "StopTransaction", payload: ["transactionId": 3, "meterStop": 10, "timestamp": .string(Self.stamp(121, millis: 0))])
        let points = publisher.take().filter { $0.topic.hasSuffix("telemetry/Current.Import") }
        let deviations = points.map { $0.json["compression"]?["deviation"]?.doubleValue }
        #expect(deviations.first == 0.16, "\(deviations)")
        #expect(deviations.last == 2.5, "\(deviations)")
        #expect(points.contains { $0.json["value"] == "16.0" } && points.contains { $0.json["value"] == "380.0" })
    }

    /// Each frame checks that the session's compressors are this instance's: a reload to the same settings
    /// keeps them (nothing flushed early), a reload to other settings ends them on their last value.
    @Test func aReloadKeepsTheCompressorsOnlyWhenTheSettingsAreTheSame() throws {
        let publisher = RecordingPublisher()
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("compressor-\(UUID().uuidString)").path
        let config = "default: { algorithm: sdt, deviation: 0.5, max_time: 3600 }"
        let tap = try StageTester.build(MQTTTapStage.self, stateDirectory: state, publisher: publisher)
        let tester = StageTester(stages: [("compress", try StageTester.build(CompressorStage.self, config: config)), ("telemetry", tap)])
        let plateau = (0..<100).map { 230 + ($0 % 2 == 0 ? 0.2 : -0.2) }
        sendVoltage(tester, plateau)
        let first = publisher.take().filter { $0.topic.hasSuffix("telemetry/Voltage/L1-N") }.count
        tester.reload(to: [("compress", try StageTester.build(CompressorStage.self, config: config)), ("telemetry", tap)], keeping: ["telemetry"])
        sendVoltage(tester, plateau, start: 1_795_000_100)
        #expect(publisher.take().filter { $0.topic.hasSuffix("telemetry/Voltage/L1-N") }.isEmpty,
                "the same settings: the plateau goes on in the same compressor (\(first) points before)")
        tester.reload(to: [("compress", try StageTester.build(CompressorStage.self, config: "default: { algorithm: none }")), ("telemetry", tap)],
                      keeping: ["telemetry"])
        sendVoltage(tester, [231], start: 1_795_000_200)
        let after = publisher.take().filter { $0.topic.hasSuffix("telemetry/Voltage/L1-N") }
        #expect(after.contains { $0.json["value"] == "229.8" && $0.json["timestamp"] == .string(Date(timeIntervalSince1970: 1_795_000_199).formatted(.iso8601)) },
                "the old compressor ends on its last value: \(after.map(\.text))")
        #expect(after.last?.json["value"] == "231.0" && after.last?.json["compression"] == nil)
    }

    @Test func pointsSDTDidNotMoveAreTheChargersStringsAndTimesKeepMilliseconds() throws {
        let (tester, publisher) = try rig("default: { algorithm: sdt, deviation: 0.05, max_time: 3600 }")
        // A noisy ramp: SDT archives some samples as they are and places others on a slope.
        var samples: [(String, String)] = []
        for second in 0..<200 {
            let phase = Double(second % 40)
            let value = 15 + (phase < 20 ? phase : 40 - phase) * 0.05 + [0, 0.03, -0.02, 0.01, -0.03, 0.02, 0][second % 7]
            samples.append((Self.stamp(second, millis: 752), String(format: "%.2f", value)))
        }
        samples += [(Self.stamp(200, millis: 1), "229.00")]
        send(tester, measurand: "Current.Import", unit: "A", samples)
        tester.chargerSends(call: "StopTransaction", payload: ["transactionId": 3, "meterStop": 10, "timestamp": "2026-11-25T10:10:01Z"])
        let points = publisher.take().filter { $0.topic.hasSuffix("telemetry/Current.Import") }
        let sent = Dictionary(samples.map { ($0.0, $0.1) }, uniquingKeysWith: { a, _ in a })
        #expect(points.count > 5 && points.count < 100)
        var unmoved = 0, moved = 0
        for point in points {
            let timestamp = try #require(point.json["timestamp"]?.stringValue)
            let value = try #require(point.json["value"]?.stringValue)
            let original = try #require(sent[timestamp], "\(timestamp) is a sample's own timestamp, milliseconds kept")
            if value == original {
                unmoved += 1
            } else {
                moved += 1
                #expect(value.split(separator: ".").last?.count == 2, "\(value): rounded to the charger's two decimals")
                #expect(abs(Double(value)! - Double(original)!) <= 0.05 + 0.005)
            }
        }
        #expect(unmoved > 0 && moved > 0, "both kinds of points: \(unmoved) unmoved, \(moved) moved")
        #expect(points.first?.json["value"] == "15.00" && points.first?.json["timestamp"] == .string(Self.stamp(0, millis: 752)))
        #expect(points.last?.json["value"] == "229.00" && points.last?.json["timestamp"] == .string(Self.stamp(200, millis: 1)))
    }
}
