import Foundation
import Logging
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

    @Test func signedMeterValuesNeverReachMQTTInTheClear() throws {
        // An OCMF record names the driver (its identification data): hashed in events, flagged in telemetry.
        let ocmf = "OCMF|{\"ID\":\"04A2B3C4D5E6F7\",\"RD\":[{\"RV\":9}]}|{\"SD\":\"3045\"}"
        let publisher = RecordingPublisher()
        let tester = try tester(#"routes: { MeterValues: both }"#, publisher: publisher)
        let signed: JSONValue = ["value": .string(ocmf), "format": "SignedData", "measurand": "Energy.Active.Import.Register",
                                 "context": "Transaction.End"]
        tester.chargerSends(call: "MeterValues", payload: ["connectorId": 1, "transactionId": 1,
                                                           "meterValue": [["timestamp": "2026-11-25T11:00:00Z", "sampledValue": [signed]]]])
        tester.chargerSends(call: "StopTransaction", payload: ["transactionId": 1, "meterStop": 9, "timestamp": "2026-11-25T11:00:00Z",
                                                               "transactionData": [["timestamp": "2026-11-25T11:00:00Z", "sampledValue": [signed]]]])
        #expect(tester.takeSentToCSMS().allSatisfy { $0.text.contains("04A2B3C4D5E6F7") }, "the CSMS gets the signed record as it was")
        let messages = publisher.take()
        #expect(!messages.isEmpty)
        #expect(messages.allSatisfy { !$0.text.contains("04A2B3C4D5E6F7") && !$0.text.contains("OCMF") })
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
        let charger = FirmwareCharger(supported: MQTTTapStageTests.allMeasurands)
        let setInterval = tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "MeterValueSampleInterval", "value": "60"])
        let setData = tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "MeterValuesSampledData", "value": "Energy.Active.Import.Register"])
        charger.serve(tester)
        #expect(tester.takeSentToCSMS().map { [$0.messageId, $0.payload()["status"]?.stringValue ?? ""] } == [[setInterval, "Accepted"], [setData, "Accepted"]])
        #expect(charger.changes.first == ["MeterValueSampleInterval", "1"], "the charger samples every second")
        #expect(charger.changes.last == ["MeterValuesSampledData",
                                         "Energy.Active.Import.Register,Voltage,Current.Import,Power.Active.Import,Temperature"],
                "the union of measurands")
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

    static let allMeasurands: Set<String> = [
        "Energy.Active.Import.Register", "Power.Active.Import", "Voltage", "Current.Import", "Temperature", "SoC", "Frequency",
    ]

    /// The charger boots and the CSMS accepts it.
    func boot(_ tester: StageTester) {
        let boot = tester.chargerSends(call: "BootNotification", payload: ["chargePointVendor": "Acme", "chargePointModel": "MCU"])
        _ = tester.takeSentToCSMS()
        tester.csmsAnswers(boot, payload: ["status": "Accepted", "currentTime": "2026-11-25T10:00:00Z", "interval": 300])
        _ = tester.takeSentToCharger { $0.messageId == boot }
        tester.advance(by: .zero)
    }

    @Test func aChargerWithOnlyEnergyAndPowerIsAskedOnlyForWhatItHasAndTheCSMSHearsItsVerdict() throws {
        let publisher = RecordingPublisher()
        let logs = LogCapture()
        let tester = try StageTester(MQTTTapStage.self, config: "health_interval: 1", stateDirectory: state, publisher: publisher,
                                     logger: Logger(label: "test", factory: { _ in logs }))
        let charger = FirmwareCharger(supported: ["Energy.Active.Import.Register", "Power.Active.Import"],
                                      config: ["MeterValuesSampledData": "Energy.Active.Import.Register", "MeterValuesSampledDataMaxLength": "4",
                                               "MeterValueSampleInterval": "60"])
        boot(tester)
        charger.serve(tester)
        #expect(charger.config["MeterValueSampleInterval"] == "1")
        #expect(charger.config["MeterValuesSampledData"] == "Energy.Active.Import.Register,Power.Active.Import",
                "Power reaches the health channel although the charger has no Voltage, Current or Temperature")
        #expect(charger.changes.allSatisfy { $0[1].split(separator: ",").count <= 4 }, "never longer than MeterValuesSampledDataMaxLength")
        #expect(charger.refusals == 4, "the whole list, then Voltage, Current.Import and Temperature one at a time")
        for measurand in ["Voltage", "Current.Import", "Temperature"] {
            #expect(logs.lines.contains { $0.contains("refused a measurand") && $0.contains("measurand=\(measurand)") }, "\(measurand) is logged")
        }
        #expect(!logs.lines.contains { $0.contains("measurand=Power.Active.Import") })

        // The CSMS asks for a measurand the charger has not: it hears Rejected, and reads back what it had.
        let refused = tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "MeterValuesSampledData",
                                                                               "value": "Energy.Active.Import.Register,Voltage"])
        #expect(tester.takeSentToCSMS().isEmpty, "held until the charger has answered")
        charger.serve(tester)
        #expect(tester.takeSentToCSMS().map { [$0.messageId, $0.payload()["status"]?.stringValue ?? ""] } == [[refused, "Rejected"]])
        #expect(charger.config["MeterValuesSampledData"] == "Energy.Active.Import.Register,Power.Active.Import", "unchanged")
        let read = tester.csmsSends(call: "GetConfiguration", payload: ["key": ["MeterValuesSampledData"]])
        #expect(tester.takeSentToCSMS { $0.messageId == read }.first?.payload()["configurationKey"]?.arrayValue?.first?["value"]
            == "Energy.Active.Import.Register")

        // A list the charger takes: Accepted, and the charger still samples Power for the health channel.
        let accepted = tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "MeterValuesSampledData",
                                                                                "value": "Energy.Active.Import.Register,Power.Active.Import"])
        charger.serve(tester)
        #expect(tester.takeSentToCSMS().map { [$0.messageId, $0.payload()["status"]?.stringValue ?? ""] } == [[accepted, "Accepted"]])
        #expect(charger.config["MeterValuesSampledData"] == "Energy.Active.Import.Register,Power.Active.Import")
    }

    @Test func whenTheChargerRefusesTheHealthIntervalTheCSMSSetsItsOwnOnTheCharger() throws {
        let publisher = RecordingPublisher()
        let tester = try tester("health_interval: 1", publisher: publisher)
        let charger = FirmwareCharger(supported: MQTTTapStageTests.allMeasurands, minimumInterval: 10)
        boot(tester)
        charger.serve(tester)
        #expect(charger.config["MeterValueSampleInterval"] == "60", "the charger refused 1 s")
        let tooShort = tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "MeterValueSampleInterval", "value": "5"])
        charger.serve(tester)
        #expect(tester.takeSentToCSMS().map { [$0.messageId, $0.payload()["status"]?.stringValue ?? ""] } == [[tooShort, "Rejected"]],
                "the charger's verdict, not the gateway's")
        let fine = tester.csmsSends(call: "ChangeConfiguration", payload: ["key": "MeterValueSampleInterval", "value": "30"])
        charger.serve(tester)
        #expect(tester.takeSentToCSMS().map { [$0.messageId, $0.payload()["status"]?.stringValue ?? ""] } == [[fine, "Accepted"]])
        #expect(charger.config["MeterValueSampleInterval"] == "30")
        // Samples at the charger's own interval all reach the CSMS.
        var north: [Frame] = []
        for second in [0, 30, 60] {
            tester.chargerSends(call: "MeterValues", payload: ["connectorId": 1, "meterValue": [[
                "timestamp": .string(Date(timeIntervalSince1970: 1_795_000_020 + Double(second)).formatted(.iso8601)),
                "sampledValue": [["value": "1", "measurand": "Energy.Active.Import.Register"]]]]])
            north += answerCSMS(tester)
        }
        #expect(north.count == 3)
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

/// Charger firmware as the field notes describe it: it takes a MeterValuesSampledData list only when
/// it has every measurand in it, and answers the gateway's CALLs until none is left.
final class FirmwareCharger {
    let supported: Set<String>
    let minimumInterval: Int
    var config: [String: String]
    /// Every ChangeConfiguration asked of it, as [key, value].
    var changes: [[String]] = []
    var refusals = 0

    init(supported: Set<String>, minimumInterval: Int = 1,
         config: [String: String] = ["MeterValuesSampledData": "Energy.Active.Import.Register", "MeterValueSampleInterval": "60"]) {
        self.supported = supported
        self.minimumInterval = minimumInterval
        self.config = config
    }

    func serve(_ tester: StageTester) {
        while true {
            let calls = tester.takeSentToCharger { $0.messageType == .call && ["GetConfiguration", "ChangeConfiguration"].contains($0.action) }
            if calls.isEmpty { return }
            for call in calls {
                let payload = call.payload()
                if call.action == "GetConfiguration" {
                    let keys = payload["key"]?.arrayValue?.compactMap(\.stringValue) ?? Array(config.keys.sorted())
                    tester.chargerAnswers(call.messageId, payload: [
                        "configurationKey": .array(keys.compactMap { key in config[key].map { ["key": .string(key), "readonly": false, "value": .string($0)] } }),
                        "unknownKey": .array(keys.filter { config[$0] == nil }.map { .string($0) })])
                    continue
                }
                let key = payload["key"]?.stringValue ?? "", value = payload["value"]?.stringValue ?? ""
                changes.append([key, value])
                let accepted = switch key {
                case "MeterValuesSampledData": value.split(separator: ",").allSatisfy { supported.contains(String($0)) }
                    && value.split(separator: ",").count <= Int(config["MeterValuesSampledDataMaxLength"] ?? "99")!
                case "MeterValueSampleInterval": (Int(value) ?? -1) >= minimumInterval
                default: true
                }
                if accepted { config[key] = value } else { refusals += 1 }
                tester.chargerAnswers(call.messageId, payload: ["status": accepted ? "Accepted" : "Rejected"])
            }
        }
    }
}
