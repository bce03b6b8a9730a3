/// One row of the device-model table: a standard OCPP 2.0.1 component/variable and the OCPP 1.6
/// configuration key (1.6 §9) that holds it on a legacy charger.
///
/// Names are the ones of OCPP 2.0.1 part 2 "Referenced Components and Variables" and the
/// appendices' component/variable list (`dm_components_vars.csv`); `Tests/Interop/test_device_model.py`
/// checks every one against the `ocpp` package's enumerations of those names.
public struct DeviceModelRow: Sendable, Equatable {
    /// How the value travels between the 1.6 key and the 2.0.1 variable.
    public enum Conversion: Sendable, Equatable {
        /// A whole number, both ways; a write below `minLimit` (or not a number) is Rejected.
        case integer(minLimit: Int)
        /// `true`/`false`; 1.6 chargers that answer `True`/`FALSE` are reported lower case.
        case boolean
        /// A 1.6 CSL ↔ a 2.0.1 MemberList: the same comma-separated items, blanks around items removed.
        case memberList
        /// 1.6 `ChargingScheduleAllowedChargingRateUnit` (`Current`, `Power`) ↔ 2.0.1 RateUnit (`A`, `W`).
        case rateUnit
        /// Read-only, derived: `true` when the 1.6 key (a CSL, `SupportedFeatureProfiles`) lists this profile.
        case featureProfile(String)
        /// The 1.6 key is the maximum of the 2.0.1 variable (its `variableCharacteristics.maxLimit`);
        /// the variable's actual value (a current count) is not known to a 1.6 charger.
        case maxLimit
    }

    public var component: String
    public var variable: String
    public var variableInstance: String?
    /// The 1.6 configuration key.
    public var key: String
    /// 2.0.1 DataEnumType of the variable.
    public var dataType: String
    public var unit: String?
    public var valuesList: String?
    public var conversion: Conversion
    /// False where OCPP 2.0.1 defines the variable ReadOnly; a writable one is still ReadOnly when the
    /// charger reports its 1.6 key `readonly`.
    public var writable: Bool

    public init(
        _ component: String, _ variable: String, instance: String? = nil, key: String, dataType: String,
        unit: String? = nil, valuesList: String? = nil, conversion: Conversion, writable: Bool
    ) {
        self.component = component
        self.variable = variable
        self.variableInstance = instance
        self.key = key
        self.dataType = dataType
        self.unit = unit
        self.valuesList = valuesList
        self.conversion = conversion
        self.writable = writable
    }
}

extension DeviceModelMap {
    /// The standard components and variables a 1.6 charger's configuration keys map to: the single
    /// source of the table in docs/ocpp201-device-model.md (a test checks the two agree).
    public static let standardTable: [DeviceModelRow] = [
        // OCPPCommCtrlr (part 2 §2.1; WebSocketPingInterval: part 4)
        DeviceModelRow("OCPPCommCtrlr", "HeartbeatInterval", key: "HeartbeatInterval", dataType: "integer", unit: "s",
                       conversion: .integer(minLimit: 1), writable: true),
        DeviceModelRow("OCPPCommCtrlr", "WebSocketPingInterval", key: "WebSocketPingInterval", dataType: "integer", unit: "s",
                       conversion: .integer(minLimit: 0), writable: true),
        DeviceModelRow("OCPPCommCtrlr", "ResetRetries", key: "ResetRetries", dataType: "integer",
                       conversion: .integer(minLimit: 0), writable: true),
        DeviceModelRow("OCPPCommCtrlr", "MessageAttempts", instance: "TransactionEvent", key: "TransactionMessageAttempts",
                       dataType: "integer", conversion: .integer(minLimit: 0), writable: true),
        DeviceModelRow("OCPPCommCtrlr", "MessageAttemptInterval", instance: "TransactionEvent",
                       key: "TransactionMessageRetryInterval", dataType: "integer", unit: "s",
                       conversion: .integer(minLimit: 0), writable: true),
        DeviceModelRow("OCPPCommCtrlr", "MinimumStatusDuration", key: "MinimumStatusDuration", dataType: "integer", unit: "s",
                       conversion: .integer(minLimit: 0), writable: true),
        DeviceModelRow("OCPPCommCtrlr", "UnlockOnEVSideDisconnect", key: "UnlockConnectorOnEVSideDisconnect",
                       dataType: "boolean", conversion: .boolean, writable: true),

        // SampledDataCtrlr (part 2 §2.7)
        DeviceModelRow("SampledDataCtrlr", "TxUpdatedInterval", key: "MeterValueSampleInterval", dataType: "integer", unit: "s",
                       conversion: .integer(minLimit: 0), writable: true),
        DeviceModelRow("SampledDataCtrlr", "TxUpdatedMeasurands", key: "MeterValuesSampledData", dataType: "MemberList",
                       conversion: .memberList, writable: true),
        DeviceModelRow("SampledDataCtrlr", "TxEndedMeasurands", key: "StopTxnSampledData", dataType: "MemberList",
                       conversion: .memberList, writable: true),

        // AlignedDataCtrlr (part 2 §2.7)
        DeviceModelRow("AlignedDataCtrlr", "Interval", key: "ClockAlignedDataInterval", dataType: "integer", unit: "s",
                       conversion: .integer(minLimit: 0), writable: true),
        DeviceModelRow("AlignedDataCtrlr", "Measurands", key: "MeterValuesAlignedData", dataType: "MemberList",
                       conversion: .memberList, writable: true),
        DeviceModelRow("AlignedDataCtrlr", "TxEndedMeasurands", key: "StopTxnAlignedData", dataType: "MemberList",
                       conversion: .memberList, writable: true),

        // AuthCtrlr (part 2 §2.3)
        DeviceModelRow("AuthCtrlr", "LocalAuthorizeOffline", key: "LocalAuthorizeOffline", dataType: "boolean",
                       conversion: .boolean, writable: true),
        DeviceModelRow("AuthCtrlr", "LocalPreAuthorize", key: "LocalPreAuthorize", dataType: "boolean",
                       conversion: .boolean, writable: true),
        DeviceModelRow("AuthCtrlr", "AuthorizeRemoteStart", key: "AuthorizeRemoteTxRequests", dataType: "boolean",
                       conversion: .boolean, writable: true),
        DeviceModelRow("AuthCtrlr", "OfflineTxForUnknownIdEnabled", key: "AllowOfflineTxForUnknownId", dataType: "boolean",
                       conversion: .boolean, writable: true),

        // AuthCacheCtrlr (part 2 §2.4)
        DeviceModelRow("AuthCacheCtrlr", "Enabled", key: "AuthorizationCacheEnabled", dataType: "boolean",
                       conversion: .boolean, writable: true),

        // LocalAuthListCtrlr (part 2 §2.5)
        DeviceModelRow("LocalAuthListCtrlr", "Enabled", key: "LocalAuthListEnabled", dataType: "boolean",
                       conversion: .boolean, writable: true),
        DeviceModelRow("LocalAuthListCtrlr", "Entries", key: "LocalAuthListMaxLength", dataType: "integer",
                       conversion: .maxLimit, writable: false),
        DeviceModelRow("LocalAuthListCtrlr", "ItemsPerMessage", key: "SendLocalListMaxLength", dataType: "integer",
                       conversion: .integer(minLimit: 0), writable: false),
        DeviceModelRow("LocalAuthListCtrlr", "Available", key: "SupportedFeatureProfiles", dataType: "boolean",
                       conversion: .featureProfile("LocalAuthListManagement"), writable: false),

        // TxCtrlr (part 2 §2.6)
        DeviceModelRow("TxCtrlr", "EVConnectionTimeOut", key: "ConnectionTimeOut", dataType: "integer", unit: "s",
                       conversion: .integer(minLimit: 0), writable: true),
        DeviceModelRow("TxCtrlr", "StopTxOnEVSideDisconnect", key: "StopTransactionOnEVSideDisconnect", dataType: "boolean",
                       conversion: .boolean, writable: true),
        DeviceModelRow("TxCtrlr", "StopTxOnInvalidId", key: "StopTransactionOnInvalidId", dataType: "boolean",
                       conversion: .boolean, writable: true),
        DeviceModelRow("TxCtrlr", "MaxEnergyOnInvalidId", key: "MaxEnergyOnInvalidId", dataType: "integer", unit: "Wh",
                       conversion: .integer(minLimit: 0), writable: true),

        // SmartChargingCtrlr (part 2 §2.9)
        DeviceModelRow("SmartChargingCtrlr", "ProfileStackLevel", key: "ChargeProfileMaxStackLevel", dataType: "integer",
                       conversion: .integer(minLimit: 0), writable: false),
        DeviceModelRow("SmartChargingCtrlr", "RateUnit", key: "ChargingScheduleAllowedChargingRateUnit", dataType: "MemberList",
                       valuesList: "A,W", conversion: .rateUnit, writable: false),
        DeviceModelRow("SmartChargingCtrlr", "PeriodsPerSchedule", key: "ChargingScheduleMaxPeriods", dataType: "integer",
                       conversion: .integer(minLimit: 0), writable: false),
        DeviceModelRow("SmartChargingCtrlr", "Phases3to1", key: "ConnectorSwitch3to1PhaseSupported", dataType: "boolean",
                       conversion: .boolean, writable: false),
        DeviceModelRow("SmartChargingCtrlr", "Entries", instance: "ChargingProfiles", key: "MaxChargingProfilesInstalled",
                       dataType: "integer", conversion: .maxLimit, writable: false),
        DeviceModelRow("SmartChargingCtrlr", "Available", key: "SupportedFeatureProfiles", dataType: "boolean",
                       conversion: .featureProfile("SmartCharging"), writable: false),

        // ReservationCtrlr (part 2 §2.8)
        DeviceModelRow("ReservationCtrlr", "NonEvseSpecific", key: "ReserveConnectorZeroSupported", dataType: "boolean",
                       conversion: .boolean, writable: false),
        DeviceModelRow("ReservationCtrlr", "Available", key: "SupportedFeatureProfiles", dataType: "boolean",
                       conversion: .featureProfile("Reservation"), writable: false),
    ]

    /// The 1.6 key the EVSE/Connector topology is built from: 1.6 connector n is EVSE n with one
    /// Connector (connectorId 1).
    public static let topologyKey = "NumberOfConnectors"

    /// Topology variables (part 2 §2.13), all ReadOnly.
    static let topologyVariables: [TopologyVariable] = [
        TopologyVariable(component: "ChargingStation", variable: "Available", value: "true", dataType: "boolean"),
        TopologyVariable(component: "ChargingStation", variable: "AvailabilityState", value: nil, dataType: "OptionList",
                         valuesList: availabilityStates),
        TopologyVariable(component: "EVSE", variable: "Available", value: "true", dataType: "boolean"),
        TopologyVariable(component: "EVSE", variable: "AvailabilityState", value: nil, dataType: "OptionList",
                         valuesList: availabilityStates),
        TopologyVariable(component: "Connector", variable: "Available", value: "true", dataType: "boolean"),
        // ConnectorEnumType "Unknown": a 1.6 charger does not report its connector type.
        TopologyVariable(component: "Connector", variable: "ConnectorType", value: "Unknown", dataType: "string"),
    ]

    /// Part 2 §2.13.2.
    static let availabilityStates = "Available,Occupied,Reserved,Unavailable,Faulted"

    /// The 2.0.1 AvailabilityState of a 1.6 ChargePointStatus (1.6 §7.7), nil for none or an unknown one.
    public static func availabilityState(of status16: String?) -> String? {
        switch status16 {
        case "Available": "Available"
        case "Preparing", "Charging", "SuspendedEVSE", "SuspendedEV", "Finishing": "Occupied"
        case "Reserved": "Reserved"
        case "Unavailable": "Unavailable"
        case "Faulted": "Faulted"
        default: nil
        }
    }

    /// More EVSEs than this are not reported, whatever NumberOfConnectors says (a peer's number
    /// must not size a report without bound).
    public static let maxEVSEs = 128

    /// 1.6 keys of the Security Whitepaper the gateway owns (docs/certificates.md): never asked of
    /// the charger, never reported or addressable under the vendor component, whatever the charger lists.
    /// In 2.0.1 their place is SecurityCtrlr, answered from the gateway's variables.
    public static let gatewayOwnedKeys: Set<String> = [
        "authorizationkey", "securityprofile", "cponame", "certificatesignedmaxchainsize",
        "certificatestoremaxlength", "additionalrootcertificatecheck",
    ]

    /// Components the gateway owns whole: a variable of theirs that is not among the gateway
    /// variables is UnknownVariable, never asked of the charger.
    public static let gatewayOwnedComponents: Set<String> = ["SecurityCtrlr"]

    /// The report bases GetBaseReport supports (B07.FR.12: at least the first two).
    public static let supportedReportBases: Set<String> = ["ConfigurationInventory", "FullInventory", "SummaryInventory"]
}

/// A ChargingStation/EVSE/Connector variable; `value` nil: the AvailabilityState, from the connector's 1.6 status.
struct TopologyVariable: Sendable {
    var component: String
    var variable: String
    var value: String?
    var dataType: String
    var valuesList: String? = nil
}
