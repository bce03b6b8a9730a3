import Foundation
import Logging
import MQTTTapStage
import OCPP
import Router
import StageKit
import StageTesting
import Testing

/// The tap on OCPP 2.0.1 sessions: device-model items by component/variable, the `components`
/// rules, 2.0.1 samples on the telemetry topics, PII, bounds.
@Suite("mqtt_tap stage, OCPP 2.0.1")
struct DeviceModel201Tests {
    let state = FileManager.default.temporaryDirectory.appendingPathComponent("tap201-\(UUID().uuidString)").path

    func tester(_ config: String = "", publisher: RecordingPublisher) throws -> StageTester {
        try StageTester(MQTTTapStage.self, config: config, version: .v201, stateDirectory: state, publisher: publisher)
    }

    static let rules = """
        components:
          "EVSE/Temperature": mqtt
          "Connector/Problem": both
          "*/Power": mqtt
          "ChargingStation/*": csms
        """

    static func event(_ id: Int, _ component: String, _ variable: String, _ value: String, evse: Int? = nil, connector: Int? = nil,
                      trigger: String = "Delta", componentInstance: String? = nil) -> JSONValue {
        var componentValue: JSONValue = ["name": .string(component)]
        if let componentInstance { componentValue["instance"] = .string(componentInstance) }
        if let evse {
            var evseValue: JSONValue = ["id": .number(Double(evse))]
            if let connector { evseValue["connectorId"] = .number(Double(connector)) }
            componentValue["evse"] = evseValue
        }
        return ["eventId": .number(Double(id)), "timestamp": "2026-11-25T10:00:00Z", "trigger": .string(trigger), "actualValue": .string(value),
                "eventNotificationType": "HardWiredNotification", "component": componentValue, "variable": ["name": .string(variable)]]
    }

    static func notifyEvent(_ events: [JSONValue], seqNo: Int = 0, tbc: Bool = false) -> JSONValue {
        var payload: JSONValue = ["generatedAt": "2026-11-25T10:00:00Z", "seqNo": .number(Double(seqNo)), "eventData": .array(events)]
        if tbc { payload["tbc"] = true }
        return payload
    }

    /// A frame's payload checked against the OCA 2.0.1 schema of its action.
    func expectValid(_ frame: Frame, sourceLocation: SourceLocation = #_sourceLocation) {
        let action = frame.action ?? ""
        let schema = PayloadSchema.ocpp201(action, response: frame.messageType == .callResult)
        #expect(schema != nil, sourceLocation: sourceLocation)
        #expect(schema?.validate(frame.payload()) == nil, "\(schema?.validate(frame.payload())?.description ?? "")", sourceLocation: sourceLocation)
    }

    /// Sends a CALL from the charger and lets the CSMS answer it if it was forwarded (one CALL in flight at a time).
    @discardableResult
    func send(_ tester: StageTester, _ action: String, _ payload: JSONValue, north: inout [Frame]) -> String {
        let id = tester.chargerSends(call: action, payload: payload)
        let forwarded = tester.takeSentToCSMS()
        north += forwarded
        if !forwarded.isEmpty { tester.csmsAnswers(id) }
        _ = tester.takeSentToCharger()
        return id
    }

    // MARK: Routing rules

    @Test func notifyEventItemsFollowTheComponentRules() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(Self.rules, publisher: publisher)
        tester.chargerSends(call: "NotifyEvent", payload: Self.notifyEvent([
            Self.event(1, "EVSE", "Temperature", "41.5", evse: 1),                  // mqtt (exact rule)
            Self.event(2, "Connector", "Problem", "true", evse: 1, connector: 2),   // both (exact rule)
            Self.event(3, "EVSE", "Power", "7400", evse: 2),                       // mqtt (*/Power)
            Self.event(4, "ChargingStation", "Problem", "false"),                  // csms (ChargingStation/*)
            Self.event(5, "Controller", "Tripped", "true", componentInstance: "main"),  // unlisted: both
        ]), id: "n1")
        let north = try #require(tester.takeSentToCSMS().first)
        expectValid(north)
        #expect(north.payload()["eventData"]?.arrayValue?.compactMap { $0["eventId"]?.intValue } == [2, 4, 5])
        #expect(north.payload()["seqNo"] == 0)
        let messages = publisher.take()
        #expect(messages.map(\.topic) == [
            "test/gateway/CP001/dm/EVSE/1/0/Temperature", "test/gateway/CP001/dm/Connector/1/2/Problem", "test/gateway/CP001/dm/EVSE/2/0/Power",
            "test/gateway/CP001/dm/Controller.main/0/0/Tripped",
        ])
        try #require(messages.count == 4)
        let first = messages[0].json
        #expect(first["v"] == 1 && first["charger"] == "CP001" && first["action"] == "NotifyEvent")
        #expect(first["component"] == "EVSE" && first["variable"] == "Temperature" && first["evse"] == 1 && first["value"] == "41.5")
        #expect(first["trigger"] == "Delta" && first["eventId"] == 1 && first["timestamp"] == "2026-11-25T10:00:00Z")
        #expect(messages[1].json["connector"] == 2)
        #expect(messages[3].json["componentInstance"] == "main")
    }

    @Test func aNotifyEventRoutedToMQTTOnlyIsAnsweredByTheGateway() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(Self.rules, publisher: publisher)
        tester.chargerSends(call: "NotifyEvent", payload: Self.notifyEvent([Self.event(1, "EVSE", "Temperature", "40", evse: 1)]), id: "n1")
        #expect(tester.takeSentToCSMS().isEmpty, "the CSMS never sees it")
        let answer = try #require(tester.takeSentToCharger().first)
        #expect(answer.messageType == .callResult && answer.messageId == "n1" && answer.payload() == [:])
        #expect(publisher.take().map(\.topic) == ["test/gateway/CP001/dm/EVSE/1/0/Temperature"])
    }

    /// NotifyEvent's eventData cannot be empty: a last page with only MQTT items cannot go without
    /// them, yet the CSMS, sent an earlier page with tbc true, waits for the end of the sequence.
    @Test func aNotifyEventSequenceTheCSMSSawBeginAlwaysEndsThere() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(Self.rules, publisher: publisher)
        tester.chargerSends(call: "NotifyEvent", payload: Self.notifyEvent([Self.event(1, "EVSE", "Temperature", "40", evse: 1)],
                                                                         seqNo: 0, tbc: true), id: "e0")
        #expect(tester.takeSentToCSMS().isEmpty, "telemetry only, and more to come: answered by the gateway")
        _ = tester.takeSentToCharger()
        tester.chargerSends(call: "NotifyEvent", payload: Self.notifyEvent([Self.event(2, "Connector", "Problem", "true", evse: 1, connector: 1)],
                                                                         seqNo: 1, tbc: true), id: "e1")
        let first = try #require(tester.takeSentToCSMS().first)
        expectValid(first)
        #expect(first.payload()["seqNo"] == 0 && first.payload()["tbc"] == true)
        tester.csmsAnswers("e1")
        _ = tester.takeSentToCharger()
        tester.chargerSends(call: "NotifyEvent", payload: Self.notifyEvent([Self.event(3, "EVSE", "Temperature", "41", evse: 1)],
                                                                         seqNo: 2, tbc: false), id: "e2")
        let last = try #require(tester.takeSentToCSMS().first, "the CSMS must see its sequence end")
        expectValid(last)
        #expect(last.payload()["seqNo"] == 1 && last.payload()["tbc"] == nil)
        #expect(last.payload()["eventData"]?.arrayValue?.count == 1)
        tester.csmsAnswers("e2")
        // A new sequence whose only page is telemetry is the gateway's again.
        tester.chargerSends(call: "NotifyEvent", payload: Self.notifyEvent([Self.event(4, "EVSE", "Temperature", "42", evse: 1)]), id: "e3")
        #expect(tester.takeSentToCSMS().isEmpty)
        #expect(publisher.take().map(\.topic).filter { $0.hasSuffix("/Temperature") }.count == 3)
    }

    @Test func aFrameTheRulesLeaveWholePassesByteForByte() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(Self.rules, publisher: publisher)
        let text = #"[2,"n9","NotifyEvent",{"generatedAt":"2026-11-25T10:00:00.120Z","seqNo":0,"eventData":[{"eventId":7,"timestamp":"2026-11-25T10:00:00.120Z","trigger":"Alerting","actualValue":"true","eventNotificationType":"HardWiredNotification","component":{"name":"Connector","evse":{"id":1,"connectorId":1}},"variable":{"name":"Problem"}}]}]"#
        tester.chargerSends(text)
        #expect(tester.takeSentToCSMS().map(\.text) == [text])
        #expect(publisher.take().map(\.topic) == ["test/gateway/CP001/dm/Connector/1/1/Problem"])
    }

    @Test func withoutRulesEverythingGoesBothWaysAndCsmsRoutesKeepItOffMQTT() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(publisher: publisher)
        let id = tester.chargerSends(call: "NotifyEvent", payload: Self.notifyEvent([Self.event(1, "EVSE", "Temperature", "40", evse: 1)]))
        #expect(tester.takeSentToCSMS().map(\.messageId) == [id])
        #expect(publisher.take().count == 1)

        let quiet = try StageTester(MQTTTapStage.self, config: "routes: { NotifyEvent: csms }", version: .v201, stateDirectory: state,
                                    publisher: publisher)
        quiet.chargerSends(call: "NotifyEvent", payload: Self.notifyEvent([Self.event(1, "EVSE", "Temperature", "40", evse: 1)]))
        #expect(quiet.takeSentToCSMS().count == 1)
        #expect(publisher.take().isEmpty)

        // The action's route is the default for unlisted components: mqtt keeps all but the listed ones off the CSMS.
        let telemetry = try StageTester(MQTTTapStage.self, config: "routes: { NotifyEvent: mqtt }\ncomponents: { \"Connector/Problem\": both }",
                                        version: .v201, stateDirectory: state, publisher: publisher)
        telemetry.chargerSends(call: "NotifyEvent", payload: Self.notifyEvent([
            Self.event(1, "EVSE", "Temperature", "40", evse: 1), Self.event(2, "Connector", "Problem", "true", evse: 1, connector: 1),
        ]))
        #expect(telemetry.takeSentToCSMS().first?.payload()["eventData"]?.arrayValue?.compactMap { $0["eventId"]?.intValue } == [2])
    }

    static func reportItem(_ component: String, _ variable: String, _ value: String, evse: Int? = nil) -> JSONValue {
        var componentValue: JSONValue = ["name": .string(component)]
        if let evse { componentValue["evse"] = ["id": .number(Double(evse))] }
        return ["component": componentValue, "variable": ["name": .string(variable)],
                "variableAttribute": [["type": "Actual", "value": .string(value), "mutability": "ReadOnly"]],
                "variableCharacteristics": ["dataType": "decimal", "supportsMonitoring": true]]
    }

    static func report(_ requestId: Int, seqNo: Int, tbc: Bool, _ items: [JSONValue]) -> JSONValue {
        var payload: JSONValue = ["requestId": .number(Double(requestId)), "generatedAt": "2026-11-25T10:00:00Z", "seqNo": .number(Double(seqNo))]
        if !items.isEmpty { payload["reportData"] = .array(items) }
        if tbc { payload["tbc"] = true }
        return payload
    }

    @Test func reportPagesAreSplitAndRenumberedSoTheCSMSSeesNoGapAndItsReportEnds() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(Self.rules, publisher: publisher)
        // Page 0: telemetry only → answered by the gateway.
        tester.chargerSends(call: "NotifyReport", payload: Self.report(7, seqNo: 0, tbc: true, [Self.reportItem("EVSE", "Temperature", "40", evse: 1)]),
                            id: "r0")
        #expect(tester.takeSentToCSMS().isEmpty)
        #expect(tester.takeSentToCharger().map(\.messageId) == ["r0"])
        // Page 1: mixed → the CSMS's first page, seqNo 0.
        tester.chargerSends(call: "NotifyReport", payload: Self.report(7, seqNo: 1, tbc: true, [
            Self.reportItem("EVSE", "Power", "7400", evse: 1), Self.reportItem("Connector", "Problem", "false", evse: 1),
        ]), id: "r1")
        let page1 = try #require(tester.takeSentToCSMS().first)
        expectValid(page1)
        #expect(page1.payload()["seqNo"] == 0 && page1.payload()["tbc"] == true)
        #expect(page1.payload()["reportData"]?.arrayValue?.count == 1)
        tester.csmsAnswers("r1")
        _ = tester.takeSentToCharger()
        // Page 2, the last: telemetry only, yet the CSMS gets it (without items) so its report ends.
        tester.chargerSends(call: "NotifyReport", payload: Self.report(7, seqNo: 2, tbc: false, [Self.reportItem("EVSE", "Temperature", "41", evse: 1)]),
                            id: "r2")
        let page2 = try #require(tester.takeSentToCSMS().first)
        expectValid(page2)
        #expect(page2.payload()["seqNo"] == 1 && page2.payload()["tbc"] == nil && page2.payload()["reportData"] == nil)
        #expect(page2.payload()["requestId"] == 7)
        tester.csmsAnswers("r2")
        // The next report starts afresh.
        let text = #"[2,"s0","NotifyReport",{"requestId":8,"generatedAt":"2026-11-25T10:00:00Z","seqNo":0,"reportData":[{"component":{"name":"Connector","evse":{"id":1,"connectorId":1}},"variable":{"name":"Problem"},"variableAttribute":[{"value":"false"}]}]}]"#
        tester.chargerSends(text)
        #expect(tester.takeSentToCSMS().map(\.text) == [text])

        let messages = publisher.take()
        #expect(messages.map(\.topic).filter { $0.hasSuffix("/Temperature") }.count == 2)
        let power = try #require(messages.first { $0.topic == "test/gateway/CP001/dm/EVSE/1/0/Power" }).json
        #expect(power["action"] == "NotifyReport" && power["requestId"] == 7 && power["attributes"]?.arrayValue?.first?["value"] == "7400")
        #expect(power["characteristics"]?["dataType"] == "decimal")
    }

    @Test func monitoringReportsAreRoutedByComponent() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(Self.rules, publisher: publisher)
        let monitor: (String, String) -> JSONValue = { component, variable in
            ["component": ["name": .string(component), "evse": ["id": 1]], "variable": ["name": .string(variable)],
             "variableMonitoring": [["id": 3, "transaction": false, "value": 60, "type": "UpperThreshold", "severity": 4]]]
        }
        tester.chargerSends(call: "NotifyMonitoringReport", payload: ["requestId": 4, "generatedAt": "2026-11-25T10:00:00Z", "seqNo": 0,
                                                                       "monitor": [monitor("EVSE", "Temperature"), monitor("Connector", "Problem")]])
        let north = try #require(tester.takeSentToCSMS().first)
        expectValid(north)
        #expect(north.payload()["monitor"]?.arrayValue?.count == 1)
        let messages = publisher.take()
        #expect(messages.map(\.topic) == ["test/gateway/CP001/dm/EVSE/1/0/Temperature", "test/gateway/CP001/dm/Connector/1/0/Problem"])
        try #require(messages.count == 2)
        #expect(messages[0].json["monitors"]?.arrayValue?.first?["type"] == "UpperThreshold")
    }

    // MARK: Configuration

    func diagnostics(_ config: String) throws -> [String] {
        var registry = StageRegistry()
        registry.register(MQTTTapStage.self)
        let loader = PipelineLoader(registry: registry, southSettings: SouthSettings(securityProfile: 1, chargers: [:]),
                                    northSettings: NorthSettings(securityProfile: 3), stateDirectory: state,
                                    logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), publisher: RecordingPublisher())
        try FileManager.default.createDirectory(atPath: state, withIntermediateDirectories: true)
        let file = state + "/site.yaml"
        try Data("version: 1\nstages:\n  - id: tap\n    type: mqtt_tap\n    config:\n\(config)".utf8).write(to: URL(fileURLWithPath: file))
        do {
            _ = try loader.load(file: file)
            return []
        } catch {
            return error.diagnostics.map { $0.description.replacingOccurrences(of: file, with: "site.yaml") }
        }
    }

    @Test func badRulesAreReportedAtTheirPositions() throws {
        #expect(try diagnostics("      components:\n        \"EVSE/Temperature\": mqtt\n        \"*/Power\": both\n") == [])
        let problems = try diagnostics("      components:\n        \"EVSE\": mqtt\n        \"EV*/Temperature\": mqtt\n        \"a/b/c\": csms\n")
        #expect(problems == [
            "site.yaml:8:28: error: stage 'tap' (mqtt_tap): 'components.EV*/Temperature' has 'EV*': '*' stands alone for any name (no partial wildcards)",
            "site.yaml:7:17: error: stage 'tap' (mqtt_tap): 'components.EVSE' is not a rule: write 'Component/Variable' (names of 1 to 50 characters; '*' for any), e.g. 'EVSE/Temperature', '*/Power'",
            "site.yaml:9:18: error: stage 'tap' (mqtt_tap): 'components.a/b/c' is not a rule: write 'Component/Variable' (names of 1 to 50 characters; '*' for any), e.g. 'EVSE/Temperature', '*/Power'",
        ])
        let route = try diagnostics("      components: { \"EVSE/Temperature\": telemetry }\n")
        #expect(route.count == 1 && route[0].hasPrefix("site.yaml:6:41: error:"), "\(route)")
        let billing = try diagnostics("      routes: { TransactionEvent: mqtt }\n")
        #expect(billing.count == 1 && billing[0].contains("'routes.TransactionEvent' must reach the CSMS"), "\(billing)")
        #expect(try diagnostics("      max_series: 0\n").first?.contains("'max_series' must be at least 1") == true)
    }

    // MARK: Samples

    @Test func meterValuesSamplesAreSplitAsFor16AndKeepTheirSpelling() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(publisher: publisher)
        let text = #"[2,"m1","MeterValues",{"evseId":1,"meterValue":[{"timestamp":"2026-11-25T10:00:00.250Z","sampledValue":[{"value":1250.50,"measurand":"Energy.Active.Import.Register","unitOfMeasure":{"unit":"Wh"}},{"value":230.40,"measurand":"Voltage","phase":"L1-N","unitOfMeasure":{"unit":"V"}},{"value":16.1,"measurand":"Current.Import","phase":"L1","location":"Outlet"}]}]}]"#
        tester.chargerSends(text)
        let north = try #require(tester.takeSentToCSMS().first)
        expectValid(north)
        #expect(north.text.contains(#"{"value":1250.50,"measurand":"Energy.Active.Import.Register","unitOfMeasure":{"unit":"Wh"}}"#),
                "the sample the CSMS keeps is unchanged, number spelling included")
        #expect(north.payload()["meterValue"]?.arrayValue?.first?["sampledValue"]?.arrayValue?.count == 1)
        let messages = publisher.take()
        #expect(messages.map(\.topic) == ["test/gateway/CP001/telemetry/Energy.Active.Import.Register", "test/gateway/CP001/telemetry/Voltage/L1-N",
                                          "test/gateway/CP001/telemetry/Current.Import/L1"])
        try #require(messages.count == 3)
        #expect(messages[1].text.contains(#""value":230.40"#), "the charger's number as spelled")
        #expect(messages[1].json["evse"] == 1 && messages[1].json["unit"] == "V" && messages[1].json["phase"] == "L1-N")
        #expect(messages[1].json["timestamp"] == "2026-11-25T10:00:00.250Z")

        // Health data only: the gateway answers.
        tester.chargerSends(call: "MeterValues", payload: ["evseId": 1, "meterValue": [["timestamp": "2026-11-25T10:00:01Z",
                                                                                         "sampledValue": [["value": 50.01, "measurand": "Frequency"]]]]], id: "m2")
        // Frequency is health data as in 1.6.
        #expect(tester.takeSentToCSMS().isEmpty)
        #expect(tester.takeSentToCharger().map(\.messageId) == ["m2"])
    }

    @Test func transactionEventsAlwaysReachTheCSMSByteForByteWithTheirSamplesCopied() throws {
        let publisher = RecordingPublisher()
        // Even a rule sending energy to MQTT only cannot take billing off the CSMS.
        let tester = try tester("measurands: { Energy.Active.Import.Register: mqtt }", publisher: publisher)
        let text = #"[2,"t1","TransactionEvent",{"eventType":"Updated","timestamp":"2026-11-25T10:00:00Z","triggerReason":"MeterValuePeriodic","seqNo":3,"transactionInfo":{"transactionId":"tx-42"},"evse":{"id":1,"connectorId":1},"meterValue":[{"timestamp":"2026-11-25T10:00:00Z","sampledValue":[{"value":4.2,"measurand":"Energy.Active.Import.Register","unitOfMeasure":{"unit":"Wh","multiplier":3},"signedMeterValue":{"signedMeterData":"T0NNRnx7IklEIjoiMDRBMkIzQzRENUU2RjcifQ==","signingMethod":"ECDSA","encodingMethod":"OCMF","publicKey":"MFkw"}}]}]}]"#
        tester.chargerSends(text)
        #expect(tester.takeSentToCSMS().map(\.text) == [text])
        let messages = publisher.take()
        let sample = try #require(messages.first { $0.topic == "test/gateway/CP001/telemetry/Energy.Active.Import.Register" })
        #expect(sample.json["transaction"] == "tx-42" && sample.json["evse"] == 1 && sample.json["connector"] == 1)
        #expect(sample.json["multiplier"] == 3 && sample.json["signed"] == true)
        #expect(messages.allSatisfy { !$0.text.contains("T0NNRn") }, "signed meter data (OCMF carries the token) is never in clear on MQTT")
        #expect(messages.contains { $0.topic == "test/gateway/CP001/events" && $0.json["action"] == "TransactionEvent" })
    }

    @Test func statusIsRetainedPerEVSEAndConnector() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(publisher: publisher)
        tester.chargerSends(call: "StatusNotification", payload: ["timestamp": "2026-11-25T10:00:00Z", "connectorStatus": "Faulted", "evseId": 2,
                                                                   "connectorId": 1])
        #expect(tester.takeSentToCSMS().count == 1)
        let status = try #require(publisher.take().first)
        #expect(status.topic == "test/gateway/CP001/status/2/1" && status.retain)
        #expect(status.json["status"] == "Faulted" && status.json["evse"] == 2 && status.json["connector"] == 1)
    }

    @Test func mqttOnlyActionsAreAnsweredOnlyWhereTheGatewayCanGiveTheCSMSsAnswer() throws {
        let publisher = RecordingPublisher()
        let tester = try tester("routes: { Heartbeat: mqtt, Authorize: mqtt }", publisher: publisher)
        tester.chargerSends(call: "Heartbeat", id: "h")
        let answer = try #require(tester.takeSentToCharger().first)
        #expect(answer.payload()["currentTime"] != nil)
        // Authorize needs the CSMS's idTokenInfo: it goes to the CSMS whatever the route says.
        tester.chargerSends(call: "Authorize", payload: ["idToken": ["idToken": "04A2B3C4", "type": "ISO14443"]], id: "a")
        #expect(tester.takeSentToCSMS().map(\.messageId) == ["a"])
    }

    @Test func theSampleIntervalSplitIsFor16ChargersOnly() throws {
        // A 2.0.1 charger has no GetConfiguration/ChangeConfiguration: the tap never sends it 1.6 CALLs.
        let publisher = RecordingPublisher()
        let tester = try StageTester(MQTTTapStage.self, config: "health_interval: 1", version: .v201, stateDirectory: state,
                                     chargerBooted: false, publisher: publisher)
        tester.bootAccepted()
        tester.advance(by: .seconds(1))
        #expect(tester.takeSentToCharger().isEmpty)
        let id = tester.csmsSends(call: "SetVariables", payload: ["setVariableData": [[
            "attributeValue": "60", "component": ["name": "SampledDataCtrlr"], "variable": ["name": "TxUpdatedInterval"]]]])
        #expect(tester.takeSentToCharger().map(\.messageId) == [id], "the CSMS's own CALLs pass")
    }

    // MARK: Personal data

    @Test func tokensCustomerDataAndVehicleIdsNeverReachMQTTInTheClear() throws {
        let publisher = RecordingPublisher()
        let tester = try tester("routes: { NotifyCustomerInformation: both }", publisher: publisher)
        let token = "04A2B3C4D5E6F7"
        var north: [Frame] = []
        send(tester, "Authorize", ["idToken": ["idToken": .string(token), "type": "ISO14443",
                                               "additionalInfo": [["additionalIdToken": "ADD-998877", "type": "custom"]]]], north: &north)
        send(tester, "TransactionEvent", [
            "eventType": "Started", "timestamp": "2026-11-25T10:00:00Z", "triggerReason": "Authorized", "seqNo": 0,
            "transactionInfo": ["transactionId": "tx-1"], "idToken": ["idToken": .string(token), "type": "ISO14443"],
        ], north: &north)
        send(tester, "NotifyCustomerInformation", ["data": "Jane Doe, 12 Main St", "seqNo": 0, "generatedAt": "2026-11-25T10:00:00Z",
                                                   "requestId": 1], north: &north)
        send(tester, "NotifyEvent", Self.notifyEvent([
            Self.event(1, "ConnectedEV", "VehicleId", "010203040A0B", evse: 1), Self.event(2, "TokenReader", "Token", token),
        ]), north: &north)
        send(tester, "NotifyReport", Self.report(1, seqNo: 0, tbc: false, [Self.reportItem("ConnectedEV", "VehicleId", "010203040A0B")]),
             north: &north)
        #expect(north.count == 5 && north.filter { $0.text.contains(token) }.count == 3, "the CSMS gets the real values")
        let messages = publisher.take()
        #expect(messages.count == 6)
        for secret in [token, "ADD-998877", "Jane Doe", "010203040A0B"] {
            #expect(messages.allSatisfy { !$0.text.contains(secret) }, "\(secret) in clear on MQTT")
        }
        let authorize = try #require(messages.first { $0.json["action"] == "Authorize" }).json
        let hashed = try #require(authorize["payload"]?["idToken"]?["idToken"]?.stringValue)
        #expect(hashed.hasPrefix("hmac-sha256:") && authorize["payload"]?["idToken"]?["type"] == "ISO14443", "the token type stays readable")
        // The same scheme and key as 1.6's idTag: the same token hashes the same on both versions.
        let tester16 = try StageTester(MQTTTapStage.self, stateDirectory: state, publisher: publisher)
        tester16.chargerSends(call: "Authorize", payload: ["idTag": .string(token)])
        #expect(publisher.take().first?.json["payload"]?["idTag"]?.stringValue == hashed)
        let event = try #require(messages.first { $0.topic.hasSuffix("/dm/TokenReader/0/0/Token") }).json
        #expect(event["value"]?.stringValue == hashed)
    }

    // MARK: Bounds

    @Test func aChargerInventingComponentsCannotGrowTopicsWithoutBound() throws {
        let publisher = RecordingPublisher()
        let tap = try StageTester.build(MQTTTapStage.self, config: "max_series: 5", stateDirectory: state, publisher: publisher)
        let tester = StageTester(stages: [("tap", tap)], version: .v201)
        var north: [Frame] = []
        for n in 0..<20 {
            send(tester, "NotifyEvent", Self.notifyEvent([Self.event(n, "Invented\(n)", "Temperature", "1", evse: 1)]), north: &north)
        }
        // Known topics keep flowing.
        send(tester, "NotifyEvent", Self.notifyEvent([Self.event(99, "Invented0", "Temperature", "2", evse: 1)]), north: &north)
        let topics = publisher.take().map(\.topic)
        #expect(topics.count == 6 && Set(topics).count == 5)
        #expect(tap.droppedSeries == 15)
        #expect(north.count == 21, "the CSMS still gets every frame")
    }

    @Test func namesBecomeOneEscapedBoundedLevel() throws {
        let publisher = RecordingPublisher()
        let tester = try tester(publisher: publisher)
        let long = String(repeating: "x", count: 300)
        tester.chargerSends(call: "NotifyEvent", payload: Self.notifyEvent([
            Self.event(1, "a/b+#c", "v.w", "1", evse: 1, componentInstance: "i/j"),
            Self.event(2, long, long, "1"),
        ]))
        let topics = publisher.take().map(\.topic)
        #expect(topics.first == "test/gateway/CP001/dm/a_b__c.i_j/1/0/v_w")
        let levels = try #require(topics.last).split(separator: "/", omittingEmptySubsequences: false)
        #expect(levels.count == 8 && levels[4].count == 50 && levels[7].count == 50)
    }
}
