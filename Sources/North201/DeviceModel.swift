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
    /// `ReadOnly`, `ReadWrite` or `WriteOnly` (2.0.1 MutabilityEnumType).
    public var mutability: String

    public init(component: String, variable: String, value: String, mutability: String = "ReadOnly") {
        self.component = component
        self.variable = variable
        self.value = value
        self.mutability = mutability
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
/// 1.6 configuration keys (see docs/ocpp201-device-model.md), the gateway's own variables, and
/// the charger's other keys under a vendor component.
public struct DeviceModelMap: Sendable {
    public var vendorComponent: String
    public var gatewayVariables: [GatewayVariable]

    public init(vendorComponent: String = "VendorSpecific", gatewayVariables: [GatewayVariable] = []) {
        self.vendorComponent = vendorComponent
        self.gatewayVariables = gatewayVariables
    }

    /// GetVariables: one GetVariableData item → the 1.6 key to ask the charger, or the final GetVariableResult.
    public func planGet(_ item: JSONValue) -> GetPlan {
        .answer(.object([]))
    }

    /// The GetVariableResult for `item` from the charger's GetConfiguration answer (`configurationKey`, `unknownKey`).
    public func getResult(for item: JSONValue, configuration: [ConfigurationEntry], unknownKeys: [String]) -> JSONValue {
        .object([])
    }

    /// SetVariables: one SetVariableData item → the ChangeConfiguration to send, or the final SetVariableResult.
    public func planSet(_ item: JSONValue) -> SetPlan {
        .answer(.object([]))
    }

    /// The SetVariableResult for `item` from the charger's ChangeConfiguration status; nil when the
    /// charger answered CALLERROR or did not answer in time.
    public func setResult(for item: JSONValue, changeConfigurationStatus: String?) -> JSONValue {
        .object([])
    }

    /// GetBaseReport: ReportDataType objects from the charger's full GetConfiguration answer and the
    /// gateway's variables. `reportBase`: ConfigurationInventory, FullInventory or SummaryInventory.
    public func reportData(configuration: [ConfigurationEntry], reportBase: String) -> [JSONValue] {
        []
    }

    /// NotifyReportRequest payloads: `perPage` report data each, seqNo from 0, tbc true on all but the last.
    public static func notifyReportPages(requestId: Int, generatedAt: String, reportData: [JSONValue], perPage: Int) -> [JSONValue] {
        []
    }
}
