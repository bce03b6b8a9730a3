import Foundation
import North201
import OCPP
import Testing

/// The payloads `Tests/Interop/test_device_model.py` validates with the `ocpp` package's own JSON
/// schemas (an implementation independent of `PayloadSchema`). This test keeps the file current:
/// it fails when the model's output changed; `DEVICE_MODEL_WRITE_FIXTURE=1` rewrites it.
@Suite struct PayloadFixtureTests {
    static let fixture = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("payloads.json")

    static func payloads() -> [(name: String, values: [JSONValue])] {
        let gateway = [
            GatewayVariable(component: "SecurityCtrlr", variable: "SecurityProfile", value: "3", dataType: "integer"),
            GatewayVariable(component: "SecurityCtrlr", variable: "OrganizationName", value: "ACME CPO", mutability: "ReadWrite"),
            GatewayVariable(component: "SecurityCtrlr", variable: "BasicAuthPassword", value: "never-shown-0123", mutability: "WriteOnly"),
            GatewayVariable(component: "DeviceDataCtrlr", variable: "ItemsPerMessage", value: "20", variableInstance: "GetVariables",
                            dataType: "integer"),
        ]
        let map = DeviceModelMap(gatewayVariables: gateway)
        let configuration = fullConfiguration(extra: [
            ConfigurationEntry(key: "AcmeLedBrightness", value: "70", readonly: false),
            ConfigurationEntry(key: "AcmeBlob", value: String(repeating: "x", count: 2600), readonly: true),
            ConfigurationEntry(key: "AuthorizationKey", value: "DEADBEEF", readonly: false),
        ])
        let status = [0: "Available", 1: "Charging"]
        var gets: [JSONValue] = []
        var sets: [JSONValue] = []
        for row in DeviceModelMap.standardTable {
            gets.append(map.getResult(for: item(row), configuration: configuration, unknownKeys: []))
            gets.append(map.getResult(for: item(row), configuration: [], unknownKeys: [row.key]))
            let value = writeSample(row)?.variable ?? "1"
            for status in ["Accepted", "Rejected", "RebootRequired", "NotSupported", nil] as [String?] {
                sets.append(map.setResult(for: item(row, value: value), changeConfigurationStatus: status))
            }
        }
        let odd: [JSONValue] = [
            item("NoSuchCtrlr", "X"), item("OCPPCommCtrlr", "X"), item("OCPPCommCtrlr", "HeartbeatInterval", attributeType: "Target"),
            item("SecurityCtrlr", "SecurityProfile"), item("SecurityCtrlr", "BasicAuthPassword"),
            item("DeviceDataCtrlr", "ItemsPerMessage", instance: "GetVariables"), item("ChargingStation", "Available"),
            item("EVSE", "Available", evse: (2, nil)), item("EVSE", "Available", evse: (9, nil)), item("Connector", "ConnectorType", evse: (1, 1)),
            item("EVSE", "AvailabilityState", evse: (1, nil)), item("ChargingStation", "AvailabilityState"),
            item("VendorSpecific", "AcmeLedBrightness"), item("VendorSpecific", "AcmeBlob"), item("VendorSpecific", "AuthorizationKey"),
        ]
        for request in odd {
            gets.append(map.getResult(for: request, configuration: configuration, unknownKeys: [], connectorStatus: status))
            sets.append(map.setResult(for: item(request, value: "5"), changeConfigurationStatus: "Accepted"))
        }
        sets += [
            answer(map.planSet(item("OCPPCommCtrlr", "HeartbeatInterval", value: "0"))),
            answer(map.planSet(item("TxCtrlr", "StopTxOnInvalidId", value: "maybe"))),
        ].compactMap { $0 }

        var reports: [JSONValue] = []
        for base in ["FullInventory", "ConfigurationInventory", "SummaryInventory"] {
            let data = map.reportData(configuration: configuration, reportBase: base, connectorStatus: status)
            reports += DeviceModelMap.notifyReportPages(requestId: 3, generatedAt: "2026-11-25T09:00:00Z", reportData: data, perPage: 10)
        }
        reports += DeviceModelMap.notifyReportPages(requestId: 4, generatedAt: "2026-11-25T09:00:00Z", reportData: [], perPage: 10)

        let table: [JSONValue] = DeviceModelMap.standardTable.map { row in
            ["component": .string(row.component), "variable": .string(row.variable),
             "instance": row.variableInstance.map { .string($0) } ?? .null, "key": .string(row.key)]
        }
        return [
            ("GetVariablesResponse", [["getVariableResult": .array(gets)]]),
            ("SetVariablesResponse", [["setVariableResult": .array(sets)]]),
            ("NotifyReportRequest", reports),
            ("table", table),
        ]
    }

    /// One JSON document, one payload a line.
    static func render() -> String {
        let sections = payloads().map { section in
            "\"\(section.name)\": [\n" + section.values.map(\.jsonText).joined(separator: ",\n") + "\n]"
        }
        return "{\n" + sections.joined(separator: ",\n") + "\n}\n"
    }

    @Test func everyPayloadValidates() {
        for section in Self.payloads() where section.name != "table" {
            let action = section.name.replacingOccurrences(of: "Response", with: "").replacingOccurrences(of: "Request", with: "")
            for payload in section.values {
                let problem = schemaProblem(action, response: section.name.hasSuffix("Response"), payload)
                #expect(problem == nil, "\(section.name): \(problem ?? "")")
            }
        }
    }

    @Test func fixtureIsCurrent() throws {
        let text = Self.render()
        if ProcessInfo.processInfo.environment["DEVICE_MODEL_WRITE_FIXTURE"] == "1" {
            try text.write(to: Self.fixture, atomically: true, encoding: .utf8)
        }
        let stored = try String(contentsOf: Self.fixture, encoding: .utf8)
        #expect(stored == text, "Tests/DeviceModelTests/payloads.json is stale: rerun with DEVICE_MODEL_WRITE_FIXTURE=1")
    }
}

/// The same item with an attributeValue.
func item(_ request: JSONValue, value: String) -> JSONValue {
    var copy = request
    copy["attributeValue"] = .string(value)
    return copy
}
