public import OCPP

/// One key of a 1.6 charger's configuration, as GetConfiguration.conf's `configurationKey` lists it.
public struct ConfigurationEntry: Sendable, Equatable {
    public var key: String
    public var value: String?
    public var readonly: Bool

    public init(key: String, value: String?, readonly: Bool) {
        self.key = key
        self.value = value
        self.readonly = readonly
    }
}

/// A variable the gateway owns and answers itself (SecurityCtrlr.SecurityProfile, …): never asked of the charger.
public struct GatewayVariable: Sendable, Equatable {
    public var component: String
    public var variable: String
    public var value: String
    /// `ReadOnly`, `ReadWrite` or `WriteOnly` (2.0.1 MutabilityEnumType). A WriteOnly value is never
    /// read out nor reported.
    public var mutability: String
    /// The variable's instance (`DeviceDataCtrlr.ItemsPerMessage` instance `GetVariables`), nil for none.
    public var variableInstance: String?
    /// 2.0.1 DataEnumType, for reports.
    public var dataType: String

    public init(
        component: String, variable: String, value: String, mutability: String = "ReadOnly",
        variableInstance: String? = nil, dataType: String = "string"
    ) {
        self.component = component
        self.variable = variable
        self.value = value
        self.mutability = mutability
        self.variableInstance = variableInstance
        self.dataType = dataType
    }
}

/// What to do with one GetVariableData item.
public enum GetPlan: Sendable, Equatable {
    /// Ask the charger GetConfiguration for this 1.6 key, then build the result with `getResult`.
    case askCharger(key: String)
    /// The final GetVariableResult.
    case answer(JSONValue)
}

/// What to do with one SetVariableData item.
public enum SetPlan: Sendable, Equatable {
    /// Send the charger ChangeConfiguration with this key and value, then build the result with `setResult`.
    case changeConfiguration(key: String, value: String)
    /// The final SetVariableResult.
    case answer(JSONValue)
}

/// The OCPP 2.0.1 device model of a 1.6J charger: standard components and variables mapped to
/// 1.6 configuration keys (`standardTable`, docs/ocpp201-device-model.md), the EVSE/Connector
/// topology from NumberOfConnectors, the gateway's own variables, and the charger's other keys
/// under a vendor component. Stateless: every answer is computed from its arguments.
public struct DeviceModelMap: Sendable {
    public var vendorComponent: String
    public var gatewayVariables: [GatewayVariable]

    public init(vendorComponent: String = "VendorSpecific", gatewayVariables: [GatewayVariable] = []) {
        self.vendorComponent = vendorComponent
        self.gatewayVariables = gatewayVariables
    }

    // MARK: GetVariables

    /// GetVariables: one GetVariableData item → the 1.6 key to ask the charger, or the final GetVariableResult.
    public func planGet(_ item: JSONValue) -> GetPlan {
        planGet(item, connectorStatus: [:])
    }

    /// `planGet(_:)`, with the last 1.6 StatusNotification status per connectorId (0: the charge point)
    /// for the AvailabilityState variables; without a status they read as "" (B06.FR.13).
    public func planGet(_ item: JSONValue, connectorStatus: [Int: String]) -> GetPlan {
        let request = DeviceModelItem(item)
        switch decide(request) {
        case .final(let status, let info):
            return .answer(request.getResult(status: status, value: nil, info: info))
        case .target(let target):
            switch target {
            case .gateway(let variable):
                if variable.mutability == "WriteOnly" {
                    return .answer(request.getResult(status: "Rejected", value: nil, info: ("WriteOnly", nil)))
                }
                return .answer(request.getResult(status: "Accepted", value: variable.value, info: nil))
            case .topology(let variable, evse: nil):
                let value = variable.value ?? Self.availabilityState(of: connectorStatus[0])
                return .answer(request.getResult(status: "Accepted", value: value, info: nil))
            case .topology:
                return .askCharger(key: Self.topologyKey)
            case .row(let row):
                return .askCharger(key: row.key)
            case .vendor(let key):
                return .askCharger(key: key)
            }
        }
    }

    /// The GetVariableResult for `item` from the charger's GetConfiguration answer (`configurationKey`, `unknownKey`).
    public func getResult(for item: JSONValue, configuration: [ConfigurationEntry], unknownKeys: [String]) -> JSONValue {
        getResult(for: item, configuration: configuration, unknownKeys: unknownKeys, connectorStatus: [:])
    }

    /// `getResult(for:configuration:unknownKeys:)`, with the connectors' 1.6 statuses as for `planGet(_:connectorStatus:)`.
    public func getResult(
        for item: JSONValue, configuration: [ConfigurationEntry], unknownKeys: [String], connectorStatus: [Int: String]
    ) -> JSONValue {
        let request = DeviceModelItem(item)
        let plan = planGet(item, connectorStatus: connectorStatus)
        guard case .askCharger(let key) = plan else {
            if case .answer(let result) = plan { return result }
            return request.getResult(status: "Rejected", value: nil, info: ("InternalError", nil))
        }
        let lookup = ConfigurationLookup(configuration)
        let known = unknownKeys.contains(where: { $0.lowercased() == key.lowercased() }) ? nil : lookup[key]
        guard case .target(let target) = decide(request) else {
            return request.getResult(status: "Rejected", value: nil, info: ("InternalError", nil))
        }
        switch target {
        case .topology(let variable, evse: let evse?):
            // Without NumberOfConnectors the EVSE cannot be confirmed to exist.
            guard let known, let evses = Self.evseCount(known.value), evse.id <= evses else {
                return request.getResult(status: "UnknownComponent", value: nil, info: nil)
            }
            let value = variable.value ?? Self.availabilityState(of: connectorStatus[evse.id])
            return request.getResult(status: "Accepted", value: value, info: nil)
        case .row(let row):
            guard let known else { return request.getResult(status: "UnknownVariable", value: nil, info: nil) }
            return request.getResult(status: "Accepted", value: Self.fromCharger(row.conversion, known.value), info: nil)
        case .vendor:
            guard let known else { return request.getResult(status: "UnknownVariable", value: nil, info: nil) }
            return request.getResult(status: "Accepted", value: Self.truncated(known.value ?? "", to: 2500), info: nil)
        case .gateway, .topology:
            return request.getResult(status: "Rejected", value: nil, info: ("InternalError", nil))
        }
    }

    // MARK: SetVariables

    /// SetVariables: one SetVariableData item → the ChangeConfiguration to send, or the final SetVariableResult.
    public func planSet(_ item: JSONValue) -> SetPlan {
        let request = DeviceModelItem(item)
        switch decide(request) {
        case .final(let status, let info):
            return .answer(request.setResult(status: status, info: info))
        case .target(let target):
            guard let value = request.attributeValue else {
                return .answer(request.setResult(status: "Rejected", info: ("MissingParam", nil)))
            }
            switch target {
            case .gateway(let variable):
                // The gateway's variables change only through its configuration; a translator that can
                // apply a writable one asks `gatewayVariable(for:)` before `planSet`.
                if variable.mutability == "ReadOnly" { return .answer(request.setResult(status: "Rejected", info: ("ReadOnly", nil))) }
                return .answer(request.setResult(status: "Rejected", info: ("UnsupportedRequest", "set in the gateway's configuration")))
            case .topology:
                return .answer(request.setResult(status: "Rejected", info: ("ReadOnly", nil)))
            case .row(let row):
                guard row.writable else { return .answer(request.setResult(status: "Rejected", info: ("ReadOnly", nil))) }
                switch Self.toCharger(row.conversion, value) {
                case .success(let converted): return .changeConfiguration(key: row.key, value: converted)
                case .failure(let problem): return .answer(request.setResult(status: "Rejected", info: (problem.reasonCode, nil)))
                }
            case .vendor(let key):
                guard value.unicodeScalars.count <= Self.maxValueLength16 else {
                    return .answer(request.setResult(status: "Rejected", info: ("TooLargeElement", nil)))
                }
                return .changeConfiguration(key: key, value: value)
            }
        }
    }

    /// The SetVariableResult for `item` from the charger's ChangeConfiguration status; nil when the
    /// charger answered CALLERROR or did not answer in time.
    ///
    /// 1.6 Accepted, Rejected and RebootRequired keep their names; NotSupported ("the configuration
    /// key is not supported", 1.6 §7.22) is the 2.0.1 UnknownVariable (B05.FR.05: a variable unknown
    /// for the component); no answer is Rejected (B05.FR.09: "not able to set it").
    public func setResult(for item: JSONValue, changeConfigurationStatus: String?) -> JSONValue {
        let request = DeviceModelItem(item)
        if case .answer(let result) = planSet(item) { return result }
        switch changeConfigurationStatus {
        case "Accepted": return request.setResult(status: "Accepted", info: nil)
        case "RebootRequired": return request.setResult(status: "RebootRequired", info: nil)
        case "Rejected": return request.setResult(status: "Rejected", info: nil)
        case "NotSupported": return request.setResult(status: "UnknownVariable", info: nil)
        case nil: return request.setResult(status: "Rejected", info: ("InternalError", "no answer from the charger"))
        default: return request.setResult(status: "Rejected", info: ("InternalError", nil))
        }
    }

    /// The gateway variable `item` (a GetVariableData or SetVariableData) addresses, if any: for a
    /// translator that applies writes to the gateway's own writable variables itself.
    public func gatewayVariable(for item: JSONValue) -> GatewayVariable? {
        if case .target(.gateway(let variable)) = decide(DeviceModelItem(item)) { return variable }
        return nil
    }

    // MARK: GetBaseReport

    /// GetBaseReport: ReportDataType objects from the charger's full GetConfiguration answer and the
    /// gateway's variables. `reportBase`: ConfigurationInventory (what the operator can set),
    /// FullInventory (everything), SummaryInventory (the ChargingStation/EVSE/Connector topology);
    /// any other value gives no data (answer GetBaseReport NotSupported, B07.FR.02).
    public func reportData(configuration: [ConfigurationEntry], reportBase: String) -> [JSONValue] {
        reportData(configuration: configuration, reportBase: reportBase, connectorStatus: [:])
    }

    /// `reportData(configuration:reportBase:)`, with the last 1.6 StatusNotification status per connectorId
    /// (0: the charge point) for the AvailabilityState of the ChargingStation and each EVSE (B07.FR.09);
    /// without one the variable is reported without a value.
    public func reportData(configuration: [ConfigurationEntry], reportBase: String, connectorStatus: [Int: String]) -> [JSONValue] {
        guard Self.supportedReportBases.contains(reportBase) else { return [] }
        let lookup = ConfigurationLookup(configuration)
        var entries: [ReportEntry] = []

        // Topology first: it is all a SummaryInventory holds.
        let evses = Self.evseCount(lookup[Self.topologyKey]?.value) ?? 0
        for variable in Self.topologyVariables where variable.component == "ChargingStation" {
            entries.append(.topology(variable, evse: nil, value: variable.value ?? Self.availabilityState(of: connectorStatus[0])))
        }
        if evses > 0 {
            for id in 1...evses {
                for variable in Self.topologyVariables where variable.component == "EVSE" {
                    entries.append(.topology(variable, evse: (id, nil), value: variable.value ?? Self.availabilityState(of: connectorStatus[id])))
                }
                for variable in Self.topologyVariables where variable.component == "Connector" {
                    entries.append(.topology(variable, evse: (id, 1), value: variable.value))
                }
            }
        }
        if reportBase == "SummaryInventory" { return entries.map(\.json) }

        for variable in gatewayVariables { entries.append(.gateway(variable)) }
        for row in Self.standardTable {
            guard let entry = lookup[row.key] else { continue }
            entries.append(.row(row, entry))
        }
        for entry in lookup.ordered where isVendorKey(entry.key) {
            entries.append(.vendor(entry, component: vendorComponent))
        }
        if reportBase == "ConfigurationInventory" { entries.removeAll { !$0.settable } }
        return entries.map(\.json)
    }

    /// NotifyReportRequest payloads: `perPage` report data each (at least 1), seqNo from 0, tbc true on
    /// all but the last. No report data gives one page without `reportData`.
    public static func notifyReportPages(requestId: Int, generatedAt: String, reportData: [JSONValue], perPage: Int) -> [JSONValue] {
        let size = max(1, perPage)
        let chunks: [ArraySlice<JSONValue>] = reportData.isEmpty
            ? [[]]
            : stride(from: 0, to: reportData.count, by: size).map { reportData[$0..<min($0 + size, reportData.count)] }
        return chunks.enumerated().map { index, chunk in
            var page: [(key: String, value: JSONValue)] = [
                ("requestId", .number(requestId)),
                ("generatedAt", .string(generatedAt)),
            ]
            if !chunk.isEmpty { page.append(("reportData", .array(Array(chunk)))) }
            page.append(("tbc", .bool(index < chunks.count - 1)))
            page.append(("seqNo", .number(index)))
            return .object(page)
        }
    }
}

// MARK: - Resolution

/// What a component/variable of a request names.
enum DeviceModelTarget {
    case gateway(GatewayVariable)
    case row(DeviceModelRow)
    /// `evse` nil: the ChargingStation; else an EVSE (`connectorId` nil) or its Connector.
    case topology(TopologyVariable, evse: (id: Int, connectorId: Int?)?)
    case vendor(key: String)
}

enum DeviceModelDecision {
    case target(DeviceModelTarget)
    /// A final status with an optional StatusInfo (reasonCode, additionalInfo).
    case final(String, (String, String?)?)
}

extension DeviceModelMap {
    /// The 1.6 ChangeConfiguration value is a CiString500.
    static let maxValueLength16 = 500

    /// 1.6 keys that are reachable by their standard name (or make the topology), hence not under the vendor component.
    static let mappedKeys: Set<String> = {
        var keys = Set(standardTable.compactMap { row -> String? in
            if case .featureProfile = row.conversion { return nil }
            return row.key.lowercased()
        })
        keys.insert(topologyKey.lowercased())
        return keys
    }()

    static let attributeTypes: Set<String> = ["Actual", "Target", "MinSet", "MaxSet"]

    func isVendorKey(_ key: String) -> Bool {
        let lower = key.lowercased()
        return !key.isEmpty && key.unicodeScalars.count <= 50
            && !Self.mappedKeys.contains(lower) && !Self.gatewayOwnedKeys.contains(lower)
    }

    func decide(_ request: DeviceModelItem) -> DeviceModelDecision {
        let name = request.componentName
        let plain = request.componentInstance == nil && !request.hasEVSE

        if plain, let variable = gatewayVariables.first(where: {
            $0.component == name && $0.variable == request.variableName && nonEmpty($0.variableInstance) == request.variableInstance
        }) {
            return attributeCheck(request, .gateway(variable))
        }
        if Self.gatewayOwnedComponents.contains(name) {
            return .final(plain ? "UnknownVariable" : "UnknownComponent", nil)
        }
        if let target = topology(request) { return target }
        let rows = Self.standardTable.filter { $0.component == name }
        if !rows.isEmpty {
            guard plain else { return .final("UnknownComponent", nil) }
            guard let row = rows.first(where: { $0.variable == request.variableName && $0.variableInstance == request.variableInstance })
            else { return .final("UnknownVariable", nil) }
            return attributeCheck(request, .row(row))
        }
        if name == vendorComponent {
            guard plain else { return .final("UnknownComponent", nil) }
            guard request.variableInstance == nil, isVendorKey(request.variableName) else { return .final("UnknownVariable", nil) }
            return attributeCheck(request, .vendor(key: request.variableName))
        }
        if plain, gatewayVariables.contains(where: { $0.component == name }) { return .final("UnknownVariable", nil) }
        return .final("UnknownComponent", nil)
    }

    private func topology(_ request: DeviceModelItem) -> DeviceModelDecision? {
        let name = request.componentName
        guard ["ChargingStation", "EVSE", "Connector"].contains(name) else { return nil }
        let evse: (id: Int, connectorId: Int?)?
        switch name {
        case "ChargingStation":
            guard request.componentInstance == nil, !request.hasEVSE else { return .final("UnknownComponent", nil) }
            evse = nil
        case "EVSE":
            guard request.componentInstance == nil, let id = request.evseId, id >= 1, id <= Self.maxEVSEs,
                  request.connectorId == nil else { return .final("UnknownComponent", nil) }
            evse = (id, nil)
        default:
            guard request.componentInstance == nil, let id = request.evseId, id >= 1, id <= Self.maxEVSEs,
                  request.connectorId == 1 else { return .final("UnknownComponent", nil) }
            evse = (id, 1)
        }
        guard request.variableInstance == nil,
              let variable = Self.topologyVariables.first(where: { $0.component == name && $0.variable == request.variableName })
        else { return .final("UnknownVariable", nil) }
        return attributeCheck(request, .topology(variable, evse: evse))
    }

    /// Only the Actual attribute exists on a mapped variable (B06.FR.08, B05.FR.06).
    private func attributeCheck(_ request: DeviceModelItem, _ target: DeviceModelTarget) -> DeviceModelDecision {
        request.attributeType == "Actual" ? .target(target) : .final("NotSupportedAttributeType", nil)
    }

    /// NumberOfConnectors as a count of EVSEs, at most `maxEVSEs`; nil when absent or not a number.
    static func evseCount(_ value: String?) -> Int? {
        guard let value, let count = Int(value.trimmingBlanks) else { return nil }
        return min(max(0, count), maxEVSEs)
    }

    // MARK: Value conversions

    struct ConversionProblem: Error { var reasonCode: String }

    /// A 1.6 value as the 2.0.1 variable's Actual value (at most 2500 characters, the schema's limit).
    static func fromCharger(_ conversion: DeviceModelRow.Conversion, _ value: String?) -> String {
        let raw = value ?? ""
        let converted: String
        switch conversion {
        case .integer: converted = raw.trimmingBlanks
        case .boolean:
            let lower = raw.trimmingBlanks.lowercased()
            converted = lower == "true" || lower == "false" ? lower : raw
        case .memberList: converted = listItems(raw).joined(separator: ",")
        case .rateUnit:
            converted = listItems(raw).map { $0 == "Current" ? "A" : $0 == "Power" ? "W" : $0 }.joined(separator: ",")
        case .featureProfile(let profile):
            converted = listItems(raw).contains(where: { $0.lowercased() == profile.lowercased() }) ? "true" : "false"
        case .maxLimit:
            converted = ""  // the current count: a 1.6 charger does not tell (B06.FR.13: empty string)
        }
        return truncated(converted, to: 2500)
    }

    /// A 2.0.1 attributeValue as the 1.6 ChangeConfiguration value, or why it is Rejected (B05.FR.07/08).
    static func toCharger(_ conversion: DeviceModelRow.Conversion, _ value: String) -> Result<String, ConversionProblem> {
        let converted: String
        switch conversion {
        case .integer(let minLimit):
            guard let number = Int(value.trimmingBlanks) else { return .failure(ConversionProblem(reasonCode: "InvalidValue")) }
            guard number >= minLimit else { return .failure(ConversionProblem(reasonCode: "ValueTooLow")) }
            converted = String(number)
        case .boolean:
            let lower = value.trimmingBlanks.lowercased()
            guard lower == "true" || lower == "false" else { return .failure(ConversionProblem(reasonCode: "InvalidValue")) }
            converted = lower
        case .memberList:
            converted = listItems(value).joined(separator: ",")
        case .rateUnit:
            let items = listItems(value)
            guard items.allSatisfy({ $0 == "A" || $0 == "W" }) else { return .failure(ConversionProblem(reasonCode: "InvalidValue")) }
            converted = items.map { $0 == "A" ? "Current" : "Power" }.joined(separator: ",")
        case .featureProfile, .maxLimit:
            return .failure(ConversionProblem(reasonCode: "ReadOnly"))
        }
        guard converted.unicodeScalars.count <= maxValueLength16 else { return .failure(ConversionProblem(reasonCode: "TooLargeElement")) }
        return .success(converted)
    }

    static func listItems(_ csl: String) -> [String] {
        csl.split(separator: ",").map { String($0).trimmingBlanks }.filter { !$0.isEmpty }
    }

    /// At most `limit` Unicode scalars (JSON Schema's maxLength counts code points).
    static func truncated(_ text: String, to limit: Int) -> String {
        text.unicodeScalars.count <= limit ? text : String(String.UnicodeScalarView(text.unicodeScalars.prefix(limit)))
    }
}

func nonEmpty(_ text: String?) -> String? {
    guard let text, !text.isEmpty else { return nil }
    return text
}

extension String {
    var trimmingBlanks: String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars.removeLast() }
        return String(scalars)
    }
}

// MARK: - Requests

/// A GetVariableData or SetVariableData item, read leniently: anything missing or of the wrong type
/// reads as absent (the translator validates requests against the schema before they get here).
struct DeviceModelItem {
    var componentName: String
    var componentInstance: String?
    var hasEVSE: Bool
    var evseId: Int?
    var connectorId: Int?
    var variableName: String
    var variableInstance: String?
    /// Actual when the request has none (B06.FR.11, B05.FR.12).
    var attributeType: String
    var attributeValue: String?
    /// The request's component and variable, rebuilt without customData (B06.FR.02, B05.FR.02).
    var component: JSONValue
    var variable: JSONValue

    init(_ item: JSONValue) {
        let component = item["component"] ?? .object([])
        let variable = item["variable"] ?? .object([])
        componentName = component["name"]?.stringValue ?? ""
        componentInstance = nonEmpty(component["instance"]?.stringValue)
        let evse = component["evse"]
        hasEVSE = evse != nil
        evseId = evse?["id"]?.intValue
        connectorId = evse?["connectorId"]?.intValue
        variableName = variable["name"]?.stringValue ?? ""
        variableInstance = nonEmpty(variable["instance"]?.stringValue)
        attributeType = item["attributeType"]?.stringValue ?? "Actual"
        attributeValue = item["attributeValue"]?.stringValue

        var rebuiltComponent: [(key: String, value: JSONValue)] = []
        if let id = evseId {
            var evseObject: [(key: String, value: JSONValue)] = [("id", .number(id))]
            if let connectorId { evseObject.append(("connectorId", .number(connectorId))) }
            rebuiltComponent.append(("evse", .object(evseObject)))
        }
        rebuiltComponent.append(("name", .string(DeviceModelMap.truncated(componentName, to: 50))))
        if let instance = component["instance"]?.stringValue {
            rebuiltComponent.append(("instance", .string(DeviceModelMap.truncated(instance, to: 50))))
        }
        self.component = .object(rebuiltComponent)
        var rebuiltVariable: [(key: String, value: JSONValue)] = [("name", .string(DeviceModelMap.truncated(variableName, to: 50)))]
        if let instance = variable["instance"]?.stringValue {
            rebuiltVariable.append(("instance", .string(DeviceModelMap.truncated(instance, to: 50))))
        }
        self.variable = .object(rebuiltVariable)
    }

    /// The attributeType to echo: the request's, or Actual when it had none; omitted when not an AttributeEnumType.
    private var echoedAttributeType: JSONValue? {
        DeviceModelMap.attributeTypes.contains(attributeType) ? .string(attributeType) : nil
    }

    private static func statusInfo(_ info: (String, String?)?) -> JSONValue? {
        guard let (reasonCode, additional) = info else { return nil }
        var object: [(key: String, value: JSONValue)] = [("reasonCode", .string(reasonCode))]
        if let additional { object.append(("additionalInfo", .string(DeviceModelMap.truncated(additional, to: 512)))) }
        return .object(object)
    }

    /// A GetVariableResult; `value` only with Accepted (B06.FR.06–08 omit it otherwise).
    func getResult(status: String, value: String?, info: (String, String?)?) -> JSONValue {
        var object: [(key: String, value: JSONValue)] = []
        if let info = Self.statusInfo(info) { object.append(("attributeStatusInfo", info)) }
        object.append(("attributeStatus", .string(status)))
        if let type = echoedAttributeType { object.append(("attributeType", type)) }
        if status == "Accepted" { object.append(("attributeValue", .string(DeviceModelMap.truncated(value ?? "", to: 2500)))) }
        object.append(("component", component))
        object.append(("variable", variable))
        return .object(object)
    }

    /// A SetVariableResult.
    func setResult(status: String, info: (String, String?)?) -> JSONValue {
        var object: [(key: String, value: JSONValue)] = []
        if let type = echoedAttributeType { object.append(("attributeType", type)) }
        object.append(("attributeStatus", .string(status)))
        if let info = Self.statusInfo(info) { object.append(("attributeStatusInfo", info)) }
        object.append(("component", component))
        object.append(("variable", variable))
        return .object(object)
    }
}

/// The charger's configuration by key, compared without case (1.6 keys are CiStrings); the first
/// entry of a key the charger lists twice wins.
struct ConfigurationLookup {
    var ordered: [ConfigurationEntry] = []
    private var byKey: [String: Int] = [:]

    init(_ entries: [ConfigurationEntry]) {
        for entry in entries where byKey[entry.key.lowercased()] == nil {
            byKey[entry.key.lowercased()] = ordered.count
            ordered.append(entry)
        }
    }

    subscript(key: String) -> ConfigurationEntry? { byKey[key.lowercased()].map { ordered[$0] } }
}

// MARK: - Reports

enum ReportEntry {
    case gateway(GatewayVariable)
    case row(DeviceModelRow, ConfigurationEntry)
    case topology(TopologyVariable, evse: (id: Int, connectorId: Int?)?, value: String?)
    case vendor(ConfigurationEntry, component: String)

    var mutability: String {
        switch self {
        case .gateway(let variable): variable.mutability
        case .row(let row, let entry): row.writable && !entry.readonly ? "ReadWrite" : "ReadOnly"
        case .topology: "ReadOnly"
        case .vendor(let entry, _): entry.readonly ? "ReadOnly" : "ReadWrite"
        }
    }

    /// Can be set by the operator (B07.FR.07, ConfigurationInventory).
    var settable: Bool { mutability != "ReadOnly" }

    var json: JSONValue {
        var component: [(key: String, value: JSONValue)] = []
        var variable: [(key: String, value: JSONValue)] = []
        var value: String?
        var characteristics: [(key: String, value: JSONValue)] = []
        switch self {
        case .gateway(let gateway):
            component = [("name", .string(gateway.component))]
            variable = [("name", .string(gateway.variable))]
            if let instance = nonEmpty(gateway.variableInstance) { variable.append(("instance", .string(instance))) }
            value = gateway.mutability == "WriteOnly" ? nil : gateway.value
            characteristics = [("dataType", .string(gateway.dataType))]
        case .row(let row, let entry):
            component = [("name", .string(row.component))]
            variable = [("name", .string(row.variable))]
            if let instance = row.variableInstance { variable.append(("instance", .string(instance))) }
            if let unit = row.unit { characteristics.append(("unit", .string(unit))) }
            characteristics.append(("dataType", .string(row.dataType)))
            switch row.conversion {
            case .integer(let minLimit):
                characteristics.append(("minLimit", .number(minLimit)))
                value = DeviceModelMap.fromCharger(row.conversion, entry.value)
            case .maxLimit:
                if let maxLimit = entry.value.flatMap({ Int($0.trimmingBlanks) }) { characteristics.append(("maxLimit", .number(maxLimit))) }
                value = nil  // B07.FR.11: the attribute is reported even with no value
            default:
                value = DeviceModelMap.fromCharger(row.conversion, entry.value)
            }
            if let valuesList = row.valuesList { characteristics.append(("valuesList", .string(valuesList))) }
        case .topology(let topology, let evse, let topologyValue):
            if let evse {
                var evseObject: [(key: String, value: JSONValue)] = [("id", .number(evse.id))]
                if let connectorId = evse.connectorId { evseObject.append(("connectorId", .number(connectorId))) }
                component.append(("evse", .object(evseObject)))
            }
            component.append(("name", .string(topology.component)))
            variable = [("name", .string(topology.variable))]
            value = topologyValue
            characteristics = [("dataType", .string(topology.dataType))]
            if let valuesList = topology.valuesList { characteristics.append(("valuesList", .string(valuesList))) }
        case .vendor(let entry, let vendorComponent):
            component = [("name", .string(vendorComponent))]
            variable = [("name", .string(entry.key))]
            value = entry.value ?? ""
            characteristics = [("dataType", .string("string"))]
        }
        characteristics.append(("supportsMonitoring", .bool(false)))
        var attribute: [(key: String, value: JSONValue)] = [("type", .string("Actual"))]
        if let value { attribute.append(("value", .string(DeviceModelMap.truncated(value, to: 2500)))) }
        attribute.append(("mutability", .string(mutability)))
        if settable { attribute.append(("persistent", .bool(true))) }
        return .object([
            ("component", .object(component)),
            ("variable", .object(variable)),
            ("variableAttribute", .array([.object(attribute)])),
            ("variableCharacteristics", .object(characteristics)),
        ])
    }
}
