import CompressorStage
import Foundation
import MQTTTapStage
import OCPP
import StageKit
import StageTesting
import Testing

/// The compressor behind the tap on OCPP 2.0.1 sessions: MeterValues and TransactionEvent samples
/// are the same series (measurand/phase) as 1.6's, values are JSON numbers in the charger's spelling,
/// a unitOfMeasure multiplier is applied before compressing.
@Suite("compressor stage with the tap, OCPP 2.0.1")
struct Compressor201Tests {
    func rig(_ config: String) throws -> (StageTester, RecordingPublisher) {
        let publisher = RecordingPublisher()
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("compressor201-\(UUID().uuidString)").path
        let compressor = try StageTester.build(CompressorStage.self, config: config)
        let tap = try StageTester.build(MQTTTapStage.self, stateDirectory: state, publisher: publisher)
        return (StageTester(stages: [("compress", compressor), ("telemetry", tap)], version: .v201), publisher)
    }

    static func stamp(_ second: Int) -> String {
        Date(timeIntervalSince1970: 1_795_000_000 + Double(second)).formatted(.iso8601)
    }

    /// Samples as a 2.0.1 charger writes them: `"value":<number as spelled>`, inside a MeterValues
    /// (no transaction) or a TransactionEvent (Updated, then Ended with the last one).
    func send(_ tester: StageTester, _ action: String, measurand: String, unit: String, multiplier: Int? = nil, phase: String? = nil,
              _ samples: [(Int, String)]) {
        for (index, (second, value)) in samples.enumerated() {
            var sample = #"{"value":\#(value),"measurand":"\#(measurand)""#
            if let phase { sample += #","phase":"\#(phase)""# }
            sample += #","unitOfMeasure":{"unit":"\#(unit)""# + (multiplier.map { #","multiplier":\#($0)"# } ?? "") + "}}"
            let meterValue = #"[{"timestamp":"\#(Self.stamp(second))","sampledValue":[\#(sample)]}]"#
            let id = "\(action)-\(second)"
            let payload = action == "MeterValues" ? #"{"evseId":1,"meterValue":\#(meterValue)}"#
                : #"{"eventType":"\#(index == samples.count - 1 ? "Ended" : "Updated")","timestamp":"\#(Self.stamp(second))","triggerReason":"MeterValuePeriodic","seqNo":\#(index),"transactionInfo":{"transactionId":"tx-1"},"meterValue":\#(meterValue)}"#
            tester.chargerSends(#"[2,"\#(id)","\#(action)",\#(payload)]"#)
            if !tester.takeSentToCSMS().isEmpty { tester.csmsAnswers(id) }
            _ = tester.takeSentToCharger()
        }
    }

    @Test func aNoisyPerPhaseVoltageIsCompressedOnThe16SeriesWithNumbersAsSpelled() throws {
        let (tester, publisher) = try rig("default: { algorithm: sdt, deviation: 0.5, max_time: 3600 }")
        let values = (0..<600).map { ($0, String(format: "%.2f", 230 + ($0 % 2 == 0 ? 0.2 : -0.2))) } + [(600, "231.70")]
        send(tester, "MeterValues", measurand: "Voltage", unit: "V", phase: "L1-N", values)
        tester.endSession()
        let points = publisher.take().filter { $0.topic == "test/gateway/CP001/telemetry/Voltage/L1-N" }
        #expect(points.count >= 2 && points.count <= 4, "\(points.count) points for 601 samples")
        #expect(points.first?.text.contains(#""value":230.20"#) == true, "a JSON number, the charger's spelling")
        #expect(points.last?.text.contains(#""value":231.70"#) == true, "the series ends on its true last value")
        #expect(points.first?.json["compression"]?["algorithm"] == "sdt")
    }

    @Test func aTransactionsEnergyWithAMultiplierIsCompressedInWhAndFlushedAtItsEnd() throws {
        let (tester, publisher) = try rig("")
        // 4.000 … 4.299 kWh as unit Wh with multiplier 3: a register rising 1 Wh/s, compressed in Wh
        // with the default 0.5 % of 11040 Wh (55.2 Wh): a straight line is one segment.
        let values = (0..<300).map { ($0, String(format: "%.3f", 4 + Double($0) / 1000)) }
        send(tester, "TransactionEvent", measurand: "Energy.Active.Import.Register", unit: "Wh", multiplier: 3, values)
        let points = publisher.take().filter { $0.topic == "test/gateway/CP001/telemetry/Energy.Active.Import.Register" }
        #expect(points.count >= 2 && points.count <= 3, "\(points.count) points for a straight 300-sample ramp")
        #expect(points.first?.json["compression"]?["deviation"]?.doubleValue == 55.2 && points.first?.json["compression"]?["deviation_unit"] == "Wh")
        #expect(points.last?.text.contains(#""value":4.299"#) == true, "the Ended event flushes the true last value")
        #expect(points.allSatisfy { $0.json["transaction"] == "tx-1" && $0.json["multiplier"] == 3 })
    }

    @Test func measurandsNewIn201HaveDefaultSpans() throws {
        #expect(throws: Never.self) {
            try StageTester.build(CompressorStage.self, config: "measurands: { Energy.Active.Net: { algorithm: sdt, deviation_percent: 1 } }")
        }
        let (tester, publisher) = try rig("")
        let values = (0..<100).map { ($0, String(1000 + $0 % 2)) }
        send(tester, "MeterValues", measurand: "Energy.Apparent.Import", unit: "VAh", values)
        let points = publisher.take().filter { $0.topic.hasSuffix("telemetry/Energy.Apparent.Import") }
        #expect(points.count <= 2, "\(points.count) points: compressed with the energy range")
        #expect(points.first?.json["compression"]?["deviation_unit"] == "VAh")
    }
}
