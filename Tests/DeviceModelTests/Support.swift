import North201
import OCPP
import Testing

/// A GetVariableData / SetVariableData item.
func item(
    _ component: String, _ variable: String, instance: String? = nil, componentInstance: String? = nil,
    evse: (id: Int, connectorId: Int?)? = nil, attributeType: String? = nil, value: String? = nil
) -> JSONValue {
    var componentObject: [(key: String, value: JSONValue)] = [("name", .string(component))]
    if let componentInstance { componentObject.append(("instance", .string(componentInstance))) }
    if let evse {
        var evseObject: [(key: String, value: JSONValue)] = [("id", .number(evse.id))]
        if let connectorId = evse.connectorId { evseObject.append(("connectorId", .number(connectorId))) }
        componentObject.append(("evse", .object(evseObject)))
    }
    var variableObject: [(key: String, value: JSONValue)] = [("name", .string(variable))]
    if let instance { variableObject.append(("instance", .string(instance))) }
    var object: [(key: String, value: JSONValue)] = []
    if let attributeType { object.append(("attributeType", .string(attributeType))) }
    if let value { object.append(("attributeValue", .string(value))) }
    object.append(("component", .object(componentObject)))
    object.append(("variable", .object(variableObject)))
    return .object(object)
}

func item(_ row: DeviceModelRow, value: String? = nil) -> JSONValue {
    item(row.component, row.variable, instance: row.variableInstance, value: value)
}

/// The schema problem of a 2.0.1 payload, nil when it validates.
func schemaProblem(_ action: String, response: Bool, _ payload: JSONValue) -> String? {
    guard let schema = PayloadSchema.schema(for: action, version: .v201, response: response) else {
        return "no schema for \(action)"
    }
    return schema.validate(payload)?.description
}

/// Checks one GetVariableResult inside a GetVariablesResponse.
func expectValidGetResult(_ result: JSONValue, sourceLocation: SourceLocation = #_sourceLocation) {
    let problem = schemaProblem("GetVariables", response: true, ["getVariableResult": [result]])
    #expect(problem == nil, "\(problem ?? ""): \(result.jsonText)", sourceLocation: sourceLocation)
}

/// Checks one SetVariableResult inside a SetVariablesResponse.
func expectValidSetResult(_ result: JSONValue, sourceLocation: SourceLocation = #_sourceLocation) {
    let problem = schemaProblem("SetVariables", response: true, ["setVariableResult": [result]])
    #expect(problem == nil, "\(problem ?? ""): \(result.jsonText)", sourceLocation: sourceLocation)
}

func answer(_ plan: GetPlan) -> JSONValue? {
    if case .answer(let result) = plan { return result }
    return nil
}

func answer(_ plan: SetPlan) -> JSONValue? {
    if case .answer(let result) = plan { return result }
    return nil
}

extension JSONValue {
    var status: String? { self["attributeStatus"]?.stringValue }
    var reasonCode: String? { self["attributeStatusInfo"]?["reasonCode"]?.stringValue }
}

/// A 1.6 value for a row's key and the 2.0.1 value it must read as.
func sample(_ row: DeviceModelRow) -> (charger: String, variable: String) {
    switch row.conversion {
    case .integer: ("60", "60")
    case .boolean: ("True", "true")
    case .memberList: ("Energy.Active.Import.Register, Power.Active.Import", "Energy.Active.Import.Register,Power.Active.Import")
    case .rateUnit: ("Current, Power", "A,W")
    case .featureProfile: ("Core,LocalAuthListManagement,Reservation,SmartCharging", "true")
    case .maxLimit: ("20", "")
    }
}

/// A 2.0.1 value to write to a row and the 1.6 value it must become.
func writeSample(_ row: DeviceModelRow) -> (variable: String, charger: String)? {
    switch row.conversion {
    case .integer: ("300", "300")
    case .boolean: ("TRUE", "true")
    case .memberList: ("Energy.Active.Import.Register, SoC", "Energy.Active.Import.Register,SoC")
    case .rateUnit, .featureProfile, .maxLimit: nil
    }
}

/// A charger configuration holding every key of the table with its sample value.
func fullConfiguration(extra: [ConfigurationEntry] = []) -> [ConfigurationEntry] {
    var seen = Set<String>()
    var entries: [ConfigurationEntry] = []
    for row in DeviceModelMap.standardTable where seen.insert(row.key).inserted {
        entries.append(ConfigurationEntry(key: row.key, value: sample(row).charger, readonly: !row.writable))
    }
    entries.append(ConfigurationEntry(key: "NumberOfConnectors", value: "2", readonly: true))
    return entries + extra
}

/// The rendered table of docs/ocpp201-device-model.md.
func renderedTable() -> String {
    var lines = [
        "| 2.0.1 component | variable | instance | 1.6 key | dataType | unit | mutability | conversion |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in DeviceModelMap.standardTable {
        let conversion: String
        switch row.conversion {
        case .integer(let minLimit): conversion = "integer, at least \(minLimit)"
        case .boolean: conversion = "boolean, lower case"
        case .memberList: conversion = "CSL ↔ MemberList"
        case .rateUnit: conversion = "Current/Power ↔ A/W"
        case .featureProfile(let profile): conversion = "true when SupportedFeatureProfiles lists \(profile)"
        case .maxLimit: conversion = "the key is the variable's maxLimit; actual value not known"
        }
        let cells = [
            row.component, row.variable, row.variableInstance ?? "", row.key, row.dataType, row.unit ?? "",
            row.writable ? "ReadWrite (ReadOnly if the key is)" : "ReadOnly", conversion,
        ]
        lines.append("| " + cells.joined(separator: " | ") + " |")
    }
    return lines.joined(separator: "\n")
}
