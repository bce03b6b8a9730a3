/// Who may originate a CALL of an action.
///
/// The names are 1.6's; in 2.0.1 the charge point is the Charging Station and the central system
/// the CSMS (a Local Controller sits on the station's side: it receives Publish/UnpublishFirmware
/// and sends PublishFirmwareStatusNotification).
public struct SenderSet: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let chargePoint = SenderSet(rawValue: 1)
    public static let centralSystem = SenderSet(rawValue: 2)
    public static let both: SenderSet = [.chargePoint, .centralSystem]
    /// 2.0.1 names.
    public static let chargingStation = chargePoint
    public static let csms = centralSystem

    /// Whether a CALL these senders may send may come from `direction` (the gateway may send any).
    public func allows(_ direction: Direction) -> Bool {
        switch direction {
        case .fromCharger: contains(.chargePoint)
        case .fromCSMS: contains(.centralSystem)
        case .fromGateway: true
        }
    }
}

/// What a message is for; the IDS and the MQTT tap classify by it.
public enum ActionClass: String, Sendable, CaseIterable {
    /// Authorization, transactions, metering: the value channel.
    case transaction
    /// Availability and status of the charger.
    case status
    /// Configuration, firmware, diagnostics, reset: operating the charger.
    case management
    /// Smart charging.
    case smartCharging = "smart_charging"
    /// Certificates, security events, logs (Security Whitepaper).
    case security
    /// Heartbeats and vendor data.
    case core
}

public struct ActionDescriptor: Sendable, Hashable {
    public let name: String
    public let sender: SenderSet
    public let actionClass: ActionClass
    /// True for the Security Whitepaper (edition 3) extensions to 1.6; false for every 2.0.1
    /// action (security is part of 2.0.1 itself).
    public let isSecurityExtension: Bool
}

/// The OCPP 1.6J actions (1.6 edition 2 §4–5) and the Security Whitepaper ones (edition 3 §5);
/// the OCPP 2.0.1 actions (edition 3, part 2 §1–2).
public enum MessageCatalogue {
    public static let ocpp16: [String: ActionDescriptor] = {
        var table: [String: ActionDescriptor] = [:]
        func add(_ name: String, _ sender: SenderSet, _ actionClass: ActionClass, security: Bool = false) {
            table[name] = ActionDescriptor(name: name, sender: sender, actionClass: actionClass, isSecurityExtension: security)
        }
        // Charge point → central system.
        add("Authorize", .chargePoint, .transaction)
        add("BootNotification", .chargePoint, .status)
        add("DiagnosticsStatusNotification", .chargePoint, .management)
        add("FirmwareStatusNotification", .chargePoint, .management)
        add("Heartbeat", .chargePoint, .core)
        add("MeterValues", .chargePoint, .transaction)
        add("StartTransaction", .chargePoint, .transaction)
        add("StatusNotification", .chargePoint, .status)
        add("StopTransaction", .chargePoint, .transaction)
        // Both ways.
        add("DataTransfer", .both, .core)
        // Central system → charge point.
        add("CancelReservation", .centralSystem, .transaction)
        add("ChangeAvailability", .centralSystem, .status)
        add("ChangeConfiguration", .centralSystem, .management)
        add("ClearCache", .centralSystem, .management)
        add("ClearChargingProfile", .centralSystem, .smartCharging)
        add("GetCompositeSchedule", .centralSystem, .smartCharging)
        add("GetConfiguration", .centralSystem, .management)
        add("GetDiagnostics", .centralSystem, .management)
        add("GetLocalListVersion", .centralSystem, .management)
        add("RemoteStartTransaction", .centralSystem, .transaction)
        add("RemoteStopTransaction", .centralSystem, .transaction)
        add("ReserveNow", .centralSystem, .transaction)
        add("Reset", .centralSystem, .management)
        add("SendLocalList", .centralSystem, .management)
        add("SetChargingProfile", .centralSystem, .smartCharging)
        add("TriggerMessage", .centralSystem, .management)
        add("UnlockConnector", .centralSystem, .management)
        add("UpdateFirmware", .centralSystem, .management)
        // Security Whitepaper edition 3.
        add("LogStatusNotification", .chargePoint, .security, security: true)
        add("SecurityEventNotification", .chargePoint, .security, security: true)
        add("SignCertificate", .chargePoint, .security, security: true)
        add("SignedFirmwareStatusNotification", .chargePoint, .security, security: true)
        add("CertificateSigned", .centralSystem, .security, security: true)
        add("DeleteCertificate", .centralSystem, .security, security: true)
        add("ExtendedTriggerMessage", .centralSystem, .security, security: true)
        add("GetInstalledCertificateIds", .centralSystem, .security, security: true)
        add("GetLog", .centralSystem, .security, security: true)
        add("InstallCertificate", .centralSystem, .security, security: true)
        add("SignedUpdateFirmware", .centralSystem, .security, security: true)
        return table
    }()

    /// The OCPP 2.0.1 actions (the 64 of the OCA 2.0.1 schemas), with the sender part 2 §1 gives
    /// each request ("…Request PDU sent by the Charging Station to the CSMS", or "Used by the CSMS
    /// to…"; DataTransfer either way). The classes follow the 1.6 table where an
    /// action has a 1.6 namesake or predecessor (TransactionEvent is transaction like Start/StopTransaction,
    /// GetLog and LogStatusNotification security), so `ids` rate limits and `mqtt_tap` routes mean the same.
    public static let ocpp201: [String: ActionDescriptor] = {
        var table: [String: ActionDescriptor] = [:]
        func add(_ name: String, _ sender: SenderSet, _ actionClass: ActionClass) {
            table[name] = ActionDescriptor(name: name, sender: sender, actionClass: actionClass, isSecurityExtension: false)
        }
        // Charging Station → CSMS.
        add("Authorize", .chargingStation, .transaction)
        add("BootNotification", .chargingStation, .status)
        add("ClearedChargingLimit", .chargingStation, .smartCharging)
        add("FirmwareStatusNotification", .chargingStation, .management)
        add("Get15118EVCertificate", .chargingStation, .security)
        add("GetCertificateStatus", .chargingStation, .security)
        add("Heartbeat", .chargingStation, .core)
        add("LogStatusNotification", .chargingStation, .security)
        add("MeterValues", .chargingStation, .transaction)
        add("NotifyChargingLimit", .chargingStation, .smartCharging)
        add("NotifyCustomerInformation", .chargingStation, .management)
        add("NotifyDisplayMessages", .chargingStation, .management)
        add("NotifyEVChargingNeeds", .chargingStation, .smartCharging)
        add("NotifyEVChargingSchedule", .chargingStation, .smartCharging)
        add("NotifyEvent", .chargingStation, .status)
        add("NotifyMonitoringReport", .chargingStation, .management)
        add("NotifyReport", .chargingStation, .management)
        add("PublishFirmwareStatusNotification", .chargingStation, .management)
        add("ReportChargingProfiles", .chargingStation, .smartCharging)
        add("ReservationStatusUpdate", .chargingStation, .transaction)
        add("SecurityEventNotification", .chargingStation, .security)
        add("SignCertificate", .chargingStation, .security)
        add("StatusNotification", .chargingStation, .status)
        add("TransactionEvent", .chargingStation, .transaction)
        // Both ways.
        add("DataTransfer", .both, .core)
        // CSMS → Charging Station.
        add("CancelReservation", .csms, .transaction)
        add("CertificateSigned", .csms, .security)
        add("ChangeAvailability", .csms, .status)
        add("ClearCache", .csms, .management)
        add("ClearChargingProfile", .csms, .smartCharging)
        add("ClearDisplayMessage", .csms, .management)
        add("ClearVariableMonitoring", .csms, .management)
        add("CostUpdated", .csms, .transaction)
        add("CustomerInformation", .csms, .management)
        add("DeleteCertificate", .csms, .security)
        add("GetBaseReport", .csms, .management)
        add("GetChargingProfiles", .csms, .smartCharging)
        add("GetCompositeSchedule", .csms, .smartCharging)
        add("GetDisplayMessages", .csms, .management)
        add("GetInstalledCertificateIds", .csms, .security)
        add("GetLocalListVersion", .csms, .management)
        add("GetLog", .csms, .security)
        add("GetMonitoringReport", .csms, .management)
        add("GetReport", .csms, .management)
        add("GetTransactionStatus", .csms, .transaction)
        add("GetVariables", .csms, .management)
        add("InstallCertificate", .csms, .security)
        add("PublishFirmware", .csms, .management)
        add("RequestStartTransaction", .csms, .transaction)
        add("RequestStopTransaction", .csms, .transaction)
        add("ReserveNow", .csms, .transaction)
        add("Reset", .csms, .management)
        add("SendLocalList", .csms, .management)
        add("SetChargingProfile", .csms, .smartCharging)
        add("SetDisplayMessage", .csms, .management)
        add("SetMonitoringBase", .csms, .management)
        add("SetMonitoringLevel", .csms, .management)
        add("SetNetworkProfile", .csms, .management)
        add("SetVariableMonitoring", .csms, .management)
        add("SetVariables", .csms, .management)
        add("TriggerMessage", .csms, .management)
        add("UnlockConnector", .csms, .management)
        add("UnpublishFirmware", .csms, .management)
        add("UpdateFirmware", .csms, .management)
        return table
    }()

    /// The actions of `version`.
    public static func actions(version: OCPPVersion) -> [String: ActionDescriptor] {
        switch version {
        case .v16: ocpp16
        case .v201: ocpp201
        }
    }

    public static func descriptor(for action: String, version: OCPPVersion = .v16) -> ActionDescriptor? {
        actions(version: version)[action]
    }

    /// Whether `direction` may carry a CALL of `action`; unknown actions are not allowed from anyone.
    public static func isAllowed(_ action: String, from direction: Direction, version: OCPPVersion = .v16) -> Bool {
        descriptor(for: action, version: version)?.sender.allows(direction) ?? false
    }
}
