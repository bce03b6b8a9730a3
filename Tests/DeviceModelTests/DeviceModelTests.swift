import Foundation
import North201
import OCPP
import Testing

@Suite struct DeviceModelTableTests {
    @Test func namesAndKeysAreUnique() {
        var variables = Set<String>()
        var keys = Set<String>()
        for row in DeviceModelMap.standardTable {
            #expect(variables.insert("\(row.component).\(row.variable)[\(row.variableInstance ?? "")]").inserted, "\(row)")
            if case .featureProfile = row.conversion { continue }
            #expect(keys.insert(row.key.lowercased()).inserted, "1.6 key \(row.key) mapped twice")
        }
    }

    /// Standard variable → 1.6 key: GetVariables asks the charger for the row's key and reads the value converted.
    @Test(arguments: DeviceModelMap.standardTable)
    func everyRowReads(_ row: DeviceModelRow) {
        let map = DeviceModelMap()
        let request = item(row)
        #expect(map.planGet(request) == .askCharger(key: row.key))
        let value = sample(row)
        let result = map.getResult(
            for: request, configuration: [ConfigurationEntry(key: row.key, value: value.charger, readonly: !row.writable)],
            unknownKeys: [])
        #expect(result.status == "Accepted")
        #expect(result["attributeValue"]?.stringValue == value.variable)
        #expect(result["attributeType"]?.stringValue == "Actual")  // B06.FR.11
        #expect(result["component"] == item(row)["component"])
        #expect(result["variable"] == item(row)["variable"])
        expectValidGetResult(result)

        // The charger does not have the key: UnknownVariable, no value (B06.FR.07).
        let unknown = map.getResult(for: request, configuration: [], unknownKeys: [row.key])
        #expect(unknown.status == "UnknownVariable")
        #expect(unknown["attributeValue"] == nil)
        expectValidGetResult(unknown)
    }

    /// Standard variable → 1.6 key: SetVariables becomes ChangeConfiguration with the value converted;
    /// a read-only variable is Rejected without asking the charger.
    @Test(arguments: DeviceModelMap.standardTable)
    func everyRowWrites(_ row: DeviceModelRow) {
        let map = DeviceModelMap()
        if row.writable, let write = writeSample(row) {
            let request = item(row, value: write.variable)
            #expect(map.planSet(request) == .changeConfiguration(key: row.key, value: write.charger))
            let result = map.setResult(for: request, changeConfigurationStatus: "Accepted")
            #expect(result.status == "Accepted")
            #expect(result["attributeType"]?.stringValue == "Actual")  // B05.FR.12
            expectValidSetResult(result)
        } else {
            #expect(!row.writable)
            let result = answer(map.planSet(item(row, value: "1")))
            #expect(result?.status == "Rejected")
            #expect(result?.reasonCode == "ReadOnly")
            if let result { expectValidSetResult(result) }
        }
    }

    /// 1.6 key → standard variable: a full report of a configuration holding every key lists every row
    /// under its 2.0.1 name with the converted value, and none of those keys under the vendor component.
    @Test func everyKeyIsReportedUnderItsStandardName() throws {
        let map = DeviceModelMap()
        let report = map.reportData(configuration: fullConfiguration(), reportBase: "FullInventory")
        for row in DeviceModelMap.standardTable {
            let found = report.filter {
                $0["component"]?["name"]?.stringValue == row.component && $0["variable"]?["name"]?.stringValue == row.variable
                    && $0["variable"]?["instance"]?.stringValue == row.variableInstance
            }
            #expect(found.count == 1, "\(row.component).\(row.variable)")
            let attribute = try #require(found.first?["variableAttribute"]?.arrayValue?.first)
            if case .maxLimit = row.conversion {
                #expect(attribute["value"] == nil)
                #expect(found.first?["variableCharacteristics"]?["maxLimit"] == .number(20))
            } else {
                #expect(attribute["value"]?.stringValue == sample(row).variable, "\(row.component).\(row.variable)")
            }
            #expect(attribute["mutability"]?.stringValue == (row.writable ? "ReadWrite" : "ReadOnly"))
            #expect(found.first?["variableCharacteristics"]?["dataType"]?.stringValue == row.dataType)
        }
        let vendor = report.filter { $0["component"]?["name"]?.stringValue == "VendorSpecific" }.compactMap { $0["variable"]?["name"]?.stringValue }
        #expect(vendor == ["SupportedFeatureProfiles"])  // the one key read (derived) rather than mapped
    }

    @Test func aKeyTheChargerMarksReadonlyIsReportedReadOnly() throws {
        let map = DeviceModelMap()
        let report = map.reportData(
            configuration: [ConfigurationEntry(key: "HeartbeatInterval", value: "60", readonly: true)], reportBase: "FullInventory")
        let heartbeat = try #require(report.first { $0["variable"]?["name"]?.stringValue == "HeartbeatInterval" })
        #expect(heartbeat["variableAttribute"]?.arrayValue?.first?["mutability"]?.stringValue == "ReadOnly")
        #expect(map.reportData(
            configuration: [ConfigurationEntry(key: "HeartbeatInterval", value: "60", readonly: true)],
            reportBase: "ConfigurationInventory").isEmpty)
    }

    @Test func keysCompareWithoutCase() {
        let map = DeviceModelMap()
        let request = item("OCPPCommCtrlr", "HeartbeatInterval")
        let result = map.getResult(
            for: request, configuration: [ConfigurationEntry(key: "heartbeatinterval", value: " 300 ", readonly: false)], unknownKeys: [])
        #expect(result["attributeValue"]?.stringValue == "300")
    }

    /// docs/ocpp201-device-model.md holds the table rendered from `standardTable`, verbatim.
    @Test func docsTableMatchesTheSwiftTable() throws {
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docs/ocpp201-device-model.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        #expect(text.contains(renderedTable()), "docs table out of date; expected:\n\(renderedTable())")
    }
}

@Suite struct DeviceModelStatusTests {
    let map = DeviceModelMap()

    @Test func unknownComponentAndVariable() {
        let component = answer(map.planGet(item("NoSuchCtrlr", "HeartbeatInterval")))
        #expect(component?.status == "UnknownComponent")
        #expect(component?["attributeValue"] == nil)  // B06.FR.06
        let variable = answer(map.planGet(item("OCPPCommCtrlr", "NoSuchVariable")))
        #expect(variable?.status == "UnknownVariable")
        // A standard variable this table does not map (no 1.6 key holds it).
        #expect(answer(map.planGet(item("SampledDataCtrlr", "TxStartedMeasurands")))?.status == "UnknownVariable")
        // An instance the variable does not have (B06.FR.14/15), or none where one is needed.
        #expect(answer(map.planGet(item("OCPPCommCtrlr", "HeartbeatInterval", instance: "X")))?.status == "UnknownVariable")
        #expect(answer(map.planGet(item("OCPPCommCtrlr", "MessageAttempts")))?.status == "UnknownVariable")
        // A controller addressed on an EVSE or with an instance is not one this station has.
        #expect(answer(map.planGet(item("OCPPCommCtrlr", "HeartbeatInterval", evse: (1, nil))))?.status == "UnknownComponent")
        #expect(answer(map.planGet(item("OCPPCommCtrlr", "HeartbeatInterval", componentInstance: "2")))?.status == "UnknownComponent")
        for result in [component, variable].compactMap({ $0 }) { expectValidGetResult(result) }

        let set = answer(map.planSet(item("NoSuchCtrlr", "X", value: "1")))
        #expect(set?.status == "UnknownComponent")
        #expect(answer(map.planSet(item("TxCtrlr", "X", value: "1")))?.status == "UnknownVariable")
        if let set { expectValidSetResult(set) }
    }

    @Test func emptyInstanceIsNoInstance() {
        #expect(map.planGet(item("OCPPCommCtrlr", "HeartbeatInterval", instance: "")) == .askCharger(key: "HeartbeatInterval"))
        let result = map.getResult(
            for: item("OCPPCommCtrlr", "HeartbeatInterval", instance: ""),
            configuration: [ConfigurationEntry(key: "HeartbeatInterval", value: "1", readonly: false)], unknownKeys: [])
        #expect(result["variable"]?["instance"]?.stringValue == "")  // echoed as sent (B06.FR.02)
    }

    @Test(arguments: ["Target", "MinSet", "MaxSet"])
    func otherAttributeTypesAreNotSupported(_ type: String) {
        let get = answer(map.planGet(item("OCPPCommCtrlr", "HeartbeatInterval", attributeType: type)))
        #expect(get?.status == "NotSupportedAttributeType")
        #expect(get?["attributeType"]?.stringValue == type)  // B06.FR.03
        #expect(get?["attributeValue"] == nil)  // B06.FR.08
        let set = answer(map.planSet(item("OCPPCommCtrlr", "HeartbeatInterval", attributeType: type, value: "60")))
        #expect(set?.status == "NotSupportedAttributeType")
        #expect(set?["attributeType"]?.stringValue == type)  // B05.FR.03
        if let get { expectValidGetResult(get) }
        if let set { expectValidSetResult(set) }
        // An explicit Actual is echoed too.
        #expect(map.setResult(for: item("OCPPCommCtrlr", "HeartbeatInterval", attributeType: "Actual", value: "60"),
                              changeConfigurationStatus: "Accepted")["attributeType"]?.stringValue == "Actual")
    }

    @Test(arguments: [
        ("Accepted", "Accepted"), ("Rejected", "Rejected"), ("RebootRequired", "RebootRequired"),
        ("NotSupported", "UnknownVariable"), ("SomethingElse", "Rejected"),
    ])
    func changeConfigurationStatuses(_ status16: String, _ status201: String) {
        let request = item("TxCtrlr", "StopTxOnInvalidId", value: "true")
        let result = map.setResult(for: request, changeConfigurationStatus: status16)
        #expect(result.status == status201)
        expectValidSetResult(result)
    }

    @Test func noAnswerFromTheChargerIsRejected() {
        let result = map.setResult(for: item("TxCtrlr", "StopTxOnInvalidId", value: "true"), changeConfigurationStatus: nil)
        #expect(result.status == "Rejected")
        #expect(result.reasonCode == "InternalError")
        expectValidSetResult(result)
    }

    @Test(arguments: [
        ("OCPPCommCtrlr", "HeartbeatInterval", "sixty", "InvalidValue"),
        ("OCPPCommCtrlr", "HeartbeatInterval", "0", "ValueTooLow"),  // part 2 §2.1.5: minLimit 1
        ("SampledDataCtrlr", "TxUpdatedInterval", "-5", "ValueTooLow"),
        ("TxCtrlr", "StopTxOnInvalidId", "yes", "InvalidValue"),
        ("SampledDataCtrlr", "TxUpdatedMeasurands", String(repeating: "Voltage,", count: 70), "TooLargeElement"),
    ])
    func badValuesAreRejectedWithoutAskingTheCharger(_ component: String, _ variable: String, _ value: String, _ reason: String) {
        let result = answer(map.planSet(item(component, variable, value: value)))
        #expect(result?.status == "Rejected")  // B05.FR.07/08
        #expect(result?.reasonCode == reason)
        if let result { expectValidSetResult(result) }
    }

    @Test func nullValueReadsAsEmpty() {
        let result = map.getResult(
            for: item("AlignedDataCtrlr", "Measurands"),
            configuration: [ConfigurationEntry(key: "MeterValuesAlignedData", value: nil, readonly: false)], unknownKeys: [])
        #expect(result.status == "Accepted")
        #expect(result["attributeValue"]?.stringValue == "")  // B06.FR.13
    }

    @Test func malformedItemStillGetsAValidAnswer() {
        let result = answer(map.planGet(["component": 5, "variable": ["name": "X"]]))
        #expect(result?.status == "UnknownComponent")
        if let result { expectValidGetResult(result) }
        let missingValue = answer(map.planSet(item("OCPPCommCtrlr", "HeartbeatInterval")))
        #expect(missingValue?.status == "Rejected")
    }
}

@Suite struct GatewayVariableTests {
    let map = DeviceModelMap(gatewayVariables: [
        GatewayVariable(component: "SecurityCtrlr", variable: "SecurityProfile", value: "3", dataType: "integer"),
        GatewayVariable(component: "SecurityCtrlr", variable: "OrganizationName", value: "ACME CPO", mutability: "ReadWrite"),
        GatewayVariable(component: "SecurityCtrlr", variable: "BasicAuthPassword", value: "s3cret-s3cret-s3cret", mutability: "WriteOnly"),
        GatewayVariable(component: "SecurityCtrlr", variable: "Identity", value: "CP-1"),
        GatewayVariable(component: "DeviceDataCtrlr", variable: "ItemsPerMessage", value: "20", variableInstance: "GetVariables",
                        dataType: "integer"),
        // The gateway may take over a standard variable: it is then never asked of the charger.
        GatewayVariable(component: "OCPPCommCtrlr", variable: "WebSocketPingInterval", value: "30", dataType: "integer"),
    ])

    @Test func answeredByTheGatewayNeverAskedOfTheCharger() {
        let profile = answer(map.planGet(item("SecurityCtrlr", "SecurityProfile")))
        #expect(profile?.status == "Accepted")
        #expect(profile?["attributeValue"]?.stringValue == "3")
        let items = answer(map.planGet(item("DeviceDataCtrlr", "ItemsPerMessage", instance: "GetVariables")))
        #expect(items?["attributeValue"]?.stringValue == "20")
        #expect(answer(map.planGet(item("DeviceDataCtrlr", "ItemsPerMessage")))?.status == "UnknownVariable")
        #expect(answer(map.planGet(item("OCPPCommCtrlr", "WebSocketPingInterval")))?["attributeValue"]?.stringValue == "30")
        // The rest of the component still maps to the charger.
        #expect(map.planGet(item("OCPPCommCtrlr", "HeartbeatInterval")) == .askCharger(key: "HeartbeatInterval"))
        // SecurityCtrlr belongs to the gateway whole.
        #expect(answer(map.planGet(item("SecurityCtrlr", "CertSigningRepeatTimes")))?.status == "UnknownVariable")
        for result in [profile, items].compactMap({ $0 }) { expectValidGetResult(result) }
    }

    @Test func writeOnlyIsNeverRead() {
        let result = answer(map.planGet(item("SecurityCtrlr", "BasicAuthPassword")))
        #expect(result?.status == "Rejected")  // B06.FR.09
        #expect(result?.reasonCode == "WriteOnly")
        #expect(result?["attributeValue"] == nil)
        let report = map.reportData(configuration: [], reportBase: "FullInventory")
        #expect(!report.map(\.jsonText).joined().contains("s3cret"))
        if let result { expectValidGetResult(result) }
    }

    @Test func writesAreRejected() {
        let readOnly = answer(map.planSet(item("SecurityCtrlr", "SecurityProfile", value: "1")))
        #expect(readOnly?.status == "Rejected")
        #expect(readOnly?.reasonCode == "ReadOnly")
        let writable = answer(map.planSet(item("SecurityCtrlr", "OrganizationName", value: "Other")))
        #expect(writable?.status == "Rejected")
        #expect(writable?.reasonCode == "UnsupportedRequest")
        if let writable { expectValidSetResult(writable) }
        #expect(map.gatewayVariable(for: item("SecurityCtrlr", "OrganizationName", value: "Other"))?.mutability == "ReadWrite")
        #expect(map.gatewayVariable(for: item("OCPPCommCtrlr", "HeartbeatInterval")) == nil)
        if let readOnly { expectValidSetResult(readOnly) }
    }

    @Test func reportedWithTheirMutability() throws {
        let report = map.reportData(configuration: [], reportBase: "FullInventory")
        let profile = try #require(report.first { $0["variable"]?["name"]?.stringValue == "SecurityProfile" })
        #expect(profile["variableAttribute"]?.arrayValue?.first?["mutability"]?.stringValue == "ReadOnly")
        #expect(profile["variableCharacteristics"]?["dataType"]?.stringValue == "integer")
        let configurable = map.reportData(configuration: [], reportBase: "ConfigurationInventory")
            .compactMap { $0["variable"]?["name"]?.stringValue }
        #expect(configurable == ["OrganizationName", "BasicAuthPassword"])
    }
}

@Suite struct VendorKeyTests {
    let map = DeviceModelMap(vendorComponent: "AcmeVendor")

    @Test func unmappedKeysAreReportedAndAddressable() throws {
        let configuration = fullConfiguration(extra: [
            ConfigurationEntry(key: "AcmeLedBrightness", value: "70", readonly: false),
            ConfigurationEntry(key: "AcmeSerialBaud", value: "9600", readonly: true),
        ])
        let report = map.reportData(configuration: configuration, reportBase: "FullInventory")
        let led = try #require(report.first { $0["variable"]?["name"]?.stringValue == "AcmeLedBrightness" })
        #expect(led["component"]?["name"]?.stringValue == "AcmeVendor")
        #expect(led["variableAttribute"]?.arrayValue?.first?["value"]?.stringValue == "70")
        #expect(led["variableAttribute"]?.arrayValue?.first?["mutability"]?.stringValue == "ReadWrite")
        let baud = try #require(report.first { $0["variable"]?["name"]?.stringValue == "AcmeSerialBaud" })
        #expect(baud["variableAttribute"]?.arrayValue?.first?["mutability"]?.stringValue == "ReadOnly")

        let get = item("AcmeVendor", "AcmeLedBrightness")
        #expect(map.planGet(get) == .askCharger(key: "AcmeLedBrightness"))
        #expect(map.getResult(for: get, configuration: configuration, unknownKeys: [])["attributeValue"]?.stringValue == "70")
        #expect(map.planSet(item("AcmeVendor", "AcmeLedBrightness", value: "20"))
            == .changeConfiguration(key: "AcmeLedBrightness", value: "20"))
        #expect(map.getResult(for: item("AcmeVendor", "Nope"), configuration: configuration, unknownKeys: ["Nope"]).status
            == "UnknownVariable")
    }

    @Test func mappedKeysAreOnlyReachableByTheirStandardName() {
        #expect(answer(map.planGet(item("AcmeVendor", "HeartbeatInterval")))?.status == "UnknownVariable")
        #expect(answer(map.planSet(item("AcmeVendor", "NumberOfConnectors", value: "9")))?.status == "UnknownVariable")
    }

    /// The Security Whitepaper keys belong to the gateway: whatever the charger lists (field firmware lists
    /// AuthorizationKey in clear), they are neither reported nor readable nor writable here.
    @Test func gatewayOwnedKeysNeverLeak() {
        let configuration = [
            ConfigurationEntry(key: "AuthorizationKey", value: "DEADBEEFDEADBEEF", readonly: false),
            ConfigurationEntry(key: "securityprofile", value: "0", readonly: false),
            ConfigurationEntry(key: "CpoName", value: "x", readonly: false),
        ]
        let report = map.reportData(configuration: configuration, reportBase: "FullInventory")
        #expect(!report.map(\.jsonText).joined().contains("DEADBEEF"))
        #expect(!report.contains { $0["component"]?["name"]?.stringValue == "AcmeVendor" })
        #expect(answer(map.planGet(item("AcmeVendor", "AuthorizationKey")))?.status == "UnknownVariable")
        #expect(answer(map.planSet(item("AcmeVendor", "AuthorizationKey", value: "00")))?.status == "UnknownVariable")
    }

    @Test func longValuesAreTruncatedAndLongKeysLeftOut() {
        let configuration = [
            ConfigurationEntry(key: "AcmeBlob", value: String(repeating: "é", count: 3000), readonly: true),
            ConfigurationEntry(key: String(repeating: "K", count: 51), value: "1", readonly: true),
        ]
        let report = map.reportData(configuration: configuration, reportBase: "FullInventory")
        let blob = report.first { $0["variable"]?["name"]?.stringValue == "AcmeBlob" }
        #expect(blob?["variableAttribute"]?.arrayValue?.first?["value"]?.stringValue?.unicodeScalars.count == 2500)
        #expect(!report.contains { $0["variable"]?["name"]?.stringValue?.hasPrefix("KKK") == true })
        let result = map.getResult(for: item("AcmeVendor", "AcmeBlob"), configuration: configuration, unknownKeys: [])
        #expect(result["attributeValue"]?.stringValue?.unicodeScalars.count == 2500)
        expectValidGetResult(result)
        let pages = DeviceModelMap.notifyReportPages(requestId: 1, generatedAt: "2026-01-01T00:00:00Z", reportData: report, perPage: 10)
        for page in pages { #expect(schemaProblem("NotifyReport", response: false, page) == nil) }
    }

    @Test func aKeyListedTwiceIsReportedOnce() {
        let report = map.reportData(configuration: [
            ConfigurationEntry(key: "AcmeX", value: "1", readonly: false),
            ConfigurationEntry(key: "acmex", value: "2", readonly: false),
        ], reportBase: "FullInventory")
        #expect(report.filter { $0["component"]?["name"]?.stringValue == "AcmeVendor" }.count == 1)
    }

    @Test func aValueTooLongForChangeConfigurationIsRejected() {
        let result = answer(map.planSet(item("AcmeVendor", "AcmeX", value: String(repeating: "a", count: 501))))
        #expect(result?.status == "Rejected")
        #expect(result?.reasonCode == "TooLargeElement")
    }
}

@Suite struct TopologyTests {
    let map = DeviceModelMap()
    let configuration = [ConfigurationEntry(key: "NumberOfConnectors", value: "2", readonly: true)]

    @Test func evsesAndConnectorsFromNumberOfConnectors() {
        let report = map.reportData(configuration: configuration, reportBase: "SummaryInventory")
        let evses = report.filter { $0["component"]?["name"]?.stringValue == "EVSE" && $0["variable"]?["name"]?.stringValue == "Available" }
            .compactMap { $0["component"]?["evse"]?["id"]?.intValue }
        #expect(evses == [1, 2])
        let connectors = report.filter { $0["component"]?["name"]?.stringValue == "Connector" && $0["variable"]?["name"]?.stringValue == "Available" }
        #expect(connectors.map { $0["component"]?["evse"] } == [["id": 1, "connectorId": 1], ["id": 2, "connectorId": 1]])
        #expect(report.contains { $0["component"]?["name"]?.stringValue == "ChargingStation" })
        #expect(!report.contains { $0["component"]?["name"]?.stringValue == "OCPPCommCtrlr" })
    }

    @Test func getVariablesOnTheTopology() {
        #expect(answer(map.planGet(item("ChargingStation", "Available")))?["attributeValue"]?.stringValue == "true")
        let evse2 = item("EVSE", "Available", evse: (2, nil))
        #expect(map.planGet(evse2) == .askCharger(key: "NumberOfConnectors"))
        #expect(map.getResult(for: evse2, configuration: configuration, unknownKeys: [])["attributeValue"]?.stringValue == "true")
        let evse3 = item("EVSE", "Available", evse: (3, nil))
        #expect(map.getResult(for: evse3, configuration: configuration, unknownKeys: []).status == "UnknownComponent")
        let connector = item("Connector", "ConnectorType", evse: (1, 1))
        let result = map.getResult(for: connector, configuration: configuration, unknownKeys: [])
        #expect(result["attributeValue"]?.stringValue == "Unknown")
        #expect(result["component"]?["evse"] == ["id": 1, "connectorId": 1])
        expectValidGetResult(result)
        #expect(answer(map.planGet(item("Connector", "Available", evse: (1, 2))))?.status == "UnknownComponent")
        #expect(answer(map.planGet(item("EVSE", "Available")))?.status == "UnknownComponent")
        #expect(answer(map.planSet(item("EVSE", "Available", evse: (1, nil), value: "false")))?.reasonCode == "ReadOnly")
    }

    @Test func aHugeNumberOfConnectorsIsCapped() {
        let report = map.reportData(
            configuration: [ConfigurationEntry(key: "NumberOfConnectors", value: "99999999", readonly: true)], reportBase: "SummaryInventory")
        #expect(report.filter { $0["component"]?["name"]?.stringValue == "EVSE" && $0["variable"]?["name"]?.stringValue == "Available" }.count
            == DeviceModelMap.maxEVSEs)
    }

    /// B07.FR.09: the summary holds the AvailabilityState of the ChargingStation and of each EVSE, from
    /// the connectors' last 1.6 StatusNotification.
    @Test func availabilityStateFromTheConnectorStatus() throws {
        let status = [0: "Available", 1: "Charging", 2: "Faulted"]
        let report = map.reportData(configuration: configuration, reportBase: "SummaryInventory", connectorStatus: status)
        let states = report.filter { $0["variable"]?["name"]?.stringValue == "AvailabilityState" }
        #expect(states.map { $0["component"]?["name"]?.stringValue } == ["ChargingStation", "EVSE", "EVSE"])
        #expect(states.map { $0["variableAttribute"]?.arrayValue?.first?["value"]?.stringValue } == ["Available", "Occupied", "Faulted"])
        #expect(states.first?["variableCharacteristics"]?["valuesList"]?.stringValue == "Available,Occupied,Reserved,Unavailable,Faulted")
        let pages = DeviceModelMap.notifyReportPages(requestId: 1, generatedAt: "2026-11-25T09:00:00Z", reportData: report, perPage: 100)
        #expect(schemaProblem("NotifyReport", response: false, pages[0]) == nil)

        // Without a status the variable is still reported (B07.FR.11), without a value.
        let unknown = map.reportData(configuration: configuration, reportBase: "SummaryInventory")
            .filter { $0["variable"]?["name"]?.stringValue == "AvailabilityState" }
        #expect(unknown.count == 3)
        #expect(unknown.allSatisfy { $0["variableAttribute"]?.arrayValue?.first?["value"] == nil })

        let station = answer(map.planGet(item("ChargingStation", "AvailabilityState"), connectorStatus: [0: "Unavailable"]))
        #expect(station?["attributeValue"]?.stringValue == "Unavailable")
        let evse = item("EVSE", "AvailabilityState", evse: (1, nil))
        #expect(map.planGet(evse, connectorStatus: status) == .askCharger(key: "NumberOfConnectors"))
        let result = map.getResult(for: evse, configuration: configuration, unknownKeys: [], connectorStatus: [1: "SuspendedEV"])
        #expect(result["attributeValue"]?.stringValue == "Occupied")
        #expect(map.getResult(for: evse, configuration: configuration, unknownKeys: [])["attributeValue"]?.stringValue == "")
        expectValidGetResult(result)
    }

    @Test(arguments: [
        ("Available", "Available"), ("Preparing", "Occupied"), ("Charging", "Occupied"), ("SuspendedEVSE", "Occupied"),
        ("SuspendedEV", "Occupied"), ("Finishing", "Occupied"), ("Reserved", "Reserved"), ("Unavailable", "Unavailable"),
        ("Faulted", "Faulted"),
    ])
    func everyChargePointStatusHasAnAvailabilityState(_ status16: String, _ state: String) {
        #expect(DeviceModelMap.availabilityState(of: status16) == state)
    }
}

@Suite struct ReportTests {
    let map = DeviceModelMap(gatewayVariables: [GatewayVariable(component: "SecurityCtrlr", variable: "SecurityProfile", value: "3")])

    @Test(arguments: ["FullInventory", "ConfigurationInventory", "SummaryInventory"])
    func everyPageValidates(_ base: String) {
        let report = map.reportData(configuration: fullConfiguration(extra: [ConfigurationEntry(key: "AcmeX", value: "1", readonly: false)]),
                                    reportBase: base)
        #expect(!report.isEmpty)
        let pages = DeviceModelMap.notifyReportPages(requestId: 42, generatedAt: "2026-11-25T09:00:00Z", reportData: report, perPage: 7)
        for page in pages {
            let problem = schemaProblem("NotifyReport", response: false, page)
            #expect(problem == nil, "\(problem ?? ""): \(page.jsonText)")
        }
    }

    @Test func configurationInventoryHoldsOnlyWhatCanBeSet() {
        let report = map.reportData(configuration: fullConfiguration(), reportBase: "ConfigurationInventory")
        #expect(report.allSatisfy { $0["variableAttribute"]?.arrayValue?.first?["mutability"]?.stringValue == "ReadWrite" })
        let writable = DeviceModelMap.standardTable.filter(\.writable).count
        #expect(report.count == writable)
    }

    @Test func unsupportedReportBaseGivesNothing() {
        #expect(map.reportData(configuration: fullConfiguration(), reportBase: "Everything").isEmpty)
    }

    @Test func pagingNumbersFromZeroAndContinuesUntilTheLast() {
        let data: [JSONValue] = (0..<5).map { ["n": .number($0)] }
        let pages = DeviceModelMap.notifyReportPages(requestId: 7, generatedAt: "2026-11-25T09:00:00Z", reportData: data, perPage: 2)
        #expect(pages.map { $0["seqNo"] } == [0, 1, 2])  // B07.FR.10
        #expect(pages.map { $0["tbc"] } == [true, true, false])
        #expect(pages.map { $0["requestId"] } == [7, 7, 7])  // B07.FR.04
        #expect(pages.flatMap { $0["reportData"]?.arrayValue ?? [] } == data)
        #expect(pages.map { $0["reportData"]?.arrayValue?.count } == [2, 2, 1])

        let single = DeviceModelMap.notifyReportPages(requestId: 7, generatedAt: "2026-11-25T09:00:00Z", reportData: data, perPage: 5)
        #expect(single.count == 1)
        #expect(single.first?["tbc"] == false)
        let zero = DeviceModelMap.notifyReportPages(requestId: 7, generatedAt: "2026-11-25T09:00:00Z", reportData: data, perPage: 0)
        #expect(zero.count == 5)
        let empty = DeviceModelMap.notifyReportPages(requestId: 7, generatedAt: "2026-11-25T09:00:00Z", reportData: [], perPage: 3)
        #expect(empty.count == 1)
        #expect(empty.first?["reportData"] == nil)
        #expect(schemaProblem("NotifyReport", response: false, empty[0]) == nil)
    }
}
