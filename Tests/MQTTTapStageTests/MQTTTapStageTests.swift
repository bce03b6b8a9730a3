import Foundation
import MQTTTapStage
import OCPP
import StageKit
import StageTesting
import Testing

@Suite("mqtt_tap stage")
struct MQTTTapStageTests {
    let state = FileManager.default.temporaryDirectory.appendingPathComponent("tap-\(UUID().uuidString)").path

    func tester(_ config: String = "", publisher: RecordingPublisher) throws -> StageTester {
        try StageTester(MQTTTapStage.self, config: config, stateDirectory: state, publisher: publisher)
    }

    static let meterValues: JSONValue = ["connectorId": 1, "transactionId": 7, "meterValue": [[
        "timestamp": "2026-11-25T10:00:00Z",
        "sampledValue": [
            ["value": "1250.0", "measurand": "Energy.Active.Import.Register", "unit": "Wh", "format": "SignedData"],
            ["value": "230.4", "measurand": "Voltage", "phase": "L1-N", "unit": "V"],
            ["value": "16.1", "measurand": "Current.Import", "phase": "L1", "unit": "A"],
            ["value": "41", "measurand": "Temperature", "unit": "Celsius"],
        ],
    ]]]

    @Test func meterValuesAreSplitBetweenTheTwoChannels() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(publisher: publisher)
        tester.chargerSends(call: "MeterValues", payload: Self.meterValues, id: "m1")
        let north = try #require(tester.takeSentToCSMS().first).payload()
        let samples = north["meterValue"]?.arrayValue?.first?["sampledValue"]?.arrayValue ?? []
        #expect(samples.compactMap { $0["measurand"]?.stringValue } == ["Energy.Active.Import.Register"], "only value data goes to the CSMS")
        #expect(samples.first?["value"] == "1250.0")
        let topics = publisher.take().map(\.topic)
        #expect(topics == ["test/gateway/CP001/telemetry/Energy.Active.Import.Register", "test/gateway/CP001/telemetry/Voltage/L1-N",
                           "test/gateway/CP001/telemetry/Current.Import/L1", "test/gateway/CP001/telemetry/Temperature"])
    }

    @Test func aFrameWithOnlyValueDataPassesByteForByte() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(publisher: publisher)
        let text = #"[2,"m2","MeterValues",{"connectorId":1,"meterValue":[{"timestamp":"2026-11-25T10:00:00Z","sampledValue":[{"value":"1.50E+3","measurand":"Energy.Active.Import.Register"}]}]}]"#
        tester.chargerSends(text)
        #expect(tester.takeSentToCSMS().map(\.text) == [text])
        #expect(publisher.take().first?.json["value"] == "1.50E+3")
    }

    @Test func healthOnlyFramesAreAnsweredByTheGateway() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(publisher: publisher)
        tester.chargerSends(call: "MeterValues", payload: ["connectorId": 1, "meterValue": [[
            "timestamp": "2026-11-25T10:00:00Z", "sampledValue": [["value": "50.01", "measurand": "Frequency"]]]]], id: "h1")
        tester.chargerSends(call: "DataTransfer", payload: ["vendorId": "acme", "messageId": "diag", "data": "fan=ok"], id: "d1")
        #expect(tester.takeSentToCSMS().isEmpty)
        #expect(tester.takeSentToCharger().map { $0.payload() } == [[:], ["status": "Accepted"]])
        #expect(publisher.take().map(\.topic) == ["test/gateway/CP001/telemetry/Frequency", "test/gateway/CP001/diagnostics"])
    }

    @Test func idTagsNeverReachMQTTInTheClear() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(publisher: publisher)
        tester.chargerSends(call: "Authorize", payload: ["idTag": "04A2B3C4D5E6F7"])
        tester.chargerSends(call: "StartTransaction", payload: ["connectorId": 1, "idTag": "04A2B3C4D5E6F7", "meterStart": 0,
                                                                 "timestamp": "2026-11-25T10:00:00Z"])
        tester.chargerSends(call: "StopTransaction", payload: ["transactionId": 1, "meterStop": 9, "timestamp": "2026-11-25T11:00:00Z",
                                                               "transactionData": [["timestamp": "2026-11-25T11:00:00Z", "sampledValue": [["value": "9"]]]],
                                                               "idTag": "04A2B3C4D5E6F7"])
        #expect(tester.takeSentToCSMS().allSatisfy { $0.text.contains("04A2B3C4D5E6F7") }, "the CSMS still gets the real idTag")
        let messages = publisher.take()
        #expect(messages.count == 3)
        #expect(messages.allSatisfy { !$0.text.contains("04A2B3C4D5E6F7") })
        let hashes = Set(messages.compactMap { $0.json["payload"]?["idTag"]?.stringValue })
        #expect(hashes.count == 1 && hashes.first?.hasPrefix("hmac-sha256:") == true, "the same idTag hashes the same")
        let key = try FileManager.default.attributesOfItem(atPath: state + "/health-channel.key")
        #expect((key[.posixPermissions] as? Int) == 0o600)
    }

    @Test func theHashKeyIsMadeOnceWith0600AndNeverSilentlyReplaced() throws {
        let publisher = RecordingPublisher()
        _ = try tester(publisher: publisher)
        let path = state + "/health-channel.key"
        let key = try #require(FileManager.default.contents(atPath: path))
        #expect(key.count == 32)
        #expect((try FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) == 0o600)
        #expect(try FileManager.default.contentsOfDirectory(atPath: state) == ["health-channel.key"], "no temporary file left")
        _ = try tester(publisher: publisher)
        #expect(FileManager.default.contents(atPath: path) == key, "the same key on the next start")
        // A damaged key is an error, not a reason to make a new one (every hash would change unnoticed).
        try Data(key.prefix(20)).write(to: URL(fileURLWithPath: path))
        #expect(throws: (any Error).self) { try StageTester.build(MQTTTapStage.self, stateDirectory: state, publisher: publisher) }
        #expect(FileManager.default.contents(atPath: path)?.count == 20)
    }

    @Test func statusIsRetainedPerConnector() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(publisher: publisher)
        tester.chargerSends(call: "StatusNotification", payload: ["connectorId": 1, "errorCode": "GroundFailure", "status": "Faulted"])
        #expect(tester.takeSentToCSMS().count == 1, "status goes to both")
        let status = try #require(publisher.take().first)
        #expect(status.topic == "test/gateway/CP001/status/1" && status.retain)
        #expect(status.json["status"] == "Faulted" && status.json["errorCode"] == "GroundFailure" && status.json["v"] == 1)
    }

    @Test func routesAreConfigurable() throws {
        let publisher = RecordingPublisher()
        let tester = try tester("routes: { Heartbeat: mqtt }\nmeasurands: { Voltage: csms }", publisher: publisher)
        tester.chargerSends(call: "Heartbeat", id: "hb")
        #expect(tester.takeSentToCharger().first?.payload()["currentTime"] != nil)
        tester.chargerSends(call: "MeterValues", payload: Self.meterValues)
        let north = try #require(tester.takeSentToCSMS { $0.action == "MeterValues" }.first).payload()
        #expect(north["meterValue"]?.arrayValue?.first?["sampledValue"]?.arrayValue?.compactMap { $0["measurand"]?.stringValue }
            == ["Energy.Active.Import.Register", "Voltage"])
        #expect(throws: (any Error).self) { try StageTester.build(MQTTTapStage.self, config: "routes: { Reset: mqtt }", publisher: publisher) }
        #expect(throws: (any Error).self) { try StageTester.build(MQTTTapStage.self) }
    }

    /// What reached the CSMS since the last look, each answered so the next can go.
    func answerCSMS(_ tester: StageTester) -> [Frame] {
        let frames = tester.takeSentToCSMS()
        for frame in frames where frame.messageType == .call { tester.csmsAnswers(frame.messageId) }
        return frames
    }

    @Test func theCSMSKeepsItsIntervalWhileTheChargerSamplesForTheHealthChannel() throws {
        let publisher = RecordingPublisher()
        let tester = try tester("health_interval: 1", publisher: publisher)
        let setInterval = tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "MeterValueSampleInterval", "value": "60"])
        let setData = tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "MeterValuesSampledData", "value": "Energy.Active.Import.Register"])
        #expect(tester.takeSentToCSMS().map { [$0.messageId, $0.payload()["status"]?.stringValue ?? ""] } == [[setInterval, "Accepted"], [setData, "Accepted"]])
        tester.advance(by: .zero)
        let interval = try #require(tester.takeSentToCharger().first)
        #expect(interval.action == "ChangeConfiguration" && interval.payload()["value"] == "1", "the charger samples every second")
        tester.chargerAnswers(interval.messageId, payload: ["status": "Accepted"])
        let data = try #require(tester.takeSentToCharger().first)
        #expect(data.payload()["value"]?.stringValue?.hasPrefix("Energy.Active.Import.Register,Voltage") == true, "the union of measurands")
        tester.chargerAnswers(data.messageId, payload: ["status": "Accepted"])
        _ = publisher.take()

        let start = 1_795_000_020.0  // on a minute boundary
        var north: [Frame] = []
        for second in 0..<120 {
            let stamp = Date(timeIntervalSince1970: start + Double(second)).formatted(.iso8601)
            tester.chargerSends(call: "MeterValues", payload: ["connectorId": 1, "meterValue": [[
                "timestamp": .string(stamp), "sampledValue": [
                    ["value": .string("\(1000 + second)"), "measurand": "Energy.Active.Import.Register"],
                    ["value": "230.0", "measurand": "Voltage"],
                    ["value": "40", "measurand": "Temperature"],
                ]]]])
            north += answerCSMS(tester)
        }
        #expect(north.count == 2, "one MeterValues a minute")
        #expect(north.map { $0.payload()["meterValue"]?.arrayValue?.first?["sampledValue"]?.arrayValue?.compactMap { $0["measurand"]?.stringValue } ?? [] }
            == [["Energy.Active.Import.Register"], ["Energy.Active.Import.Register"]])
        #expect(north.map { $0.payload()["meterValue"]?.arrayValue?.first?["sampledValue"]?.arrayValue?.first?["value"]?.stringValue } == ["1000", "1060"])
        #expect(tester.takeSentToCharger().count == 120, "118 answered by the gateway, 2 by the CSMS")
        #expect(publisher.take().count == 360, "every sample reaches MQTT")

        let read = tester.csmsSends(call: "GetConfiguration", payload: ["key": ["MeterValueSampleInterval"]])
        #expect(tester.takeSentToCSMS { $0.messageId == read }.first?.payload()["configurationKey"]?.arrayValue?.first?["value"] == "60")
        let readAll = tester.csmsSends(call: "GetConfiguration")
        let forwarded = try #require(tester.takeSentToCharger().first)
        #expect(forwarded.messageId == readAll)
        tester.chargerAnswers(readAll, payload: ["configurationKey": [["key": "MeterValueSampleInterval", "readonly": false, "value": "1"],
                                                                      ["key": "HeartbeatInterval", "readonly": false, "value": "300"]]])
        let answer = try #require(tester.takeSentToCSMS().first).payload()["configurationKey"]?.arrayValue
        #expect(answer?.compactMap { $0["value"]?.stringValue } == ["60", "300"], "the CSMS reads back what it set")
    }

    @Test func transactionValuesAlwaysReachTheCSMS() throws {
        let publisher = RecordingPublisher()
        let tester = try tester("health_interval: 1", publisher: publisher)
        tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "MeterValueSampleInterval", "value": "900"])
        _ = tester.takeSentToCSMS()
        var north: [Frame] = []
        for (n, context) in ["Sample.Periodic", "Sample.Periodic", "Transaction.End"].enumerated() {
            tester.chargerSends(call: "MeterValues", payload: ["connectorId": 1, "meterValue": [[
                "timestamp": .string(Date(timeIntervalSince1970: 1_795_000_000 + Double(n)).formatted(.iso8601)),
                "sampledValue": [["value": .string("\(n)"), "measurand": "Energy.Active.Import.Register", "context": .string(context)]]]]])
            north += answerCSMS(tester)
        }
        #expect(north.compactMap { $0.payload()["meterValue"]?.arrayValue?.first?["sampledValue"]?.arrayValue?.first?["value"]?.stringValue }
            == ["0", "2"])
    }
}
