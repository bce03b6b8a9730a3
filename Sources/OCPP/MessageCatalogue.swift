/// Who may originate a CALL of an action.
public struct SenderSet: OptionSet, Sendable, Hashable {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    public static let chargePoint = SenderSet(rawValue: 1)
    public static let centralSystem = SenderSet(rawValue: 2)
    public static let both: SenderSet = [.chargePoint, .centralSystem]
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
    /// True for the Security Whitepaper (edition 3) extensions to 1.6.
    public let isSecurityExtension: Bool
}

/// The OCPP 1.6J actions (1.6 edition 2 §4–5) and the Security Whitepaper ones (edition 3 §5).
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

    public static func descriptor(for action: String, version: OCPPVersion = .v16) -> ActionDescriptor? {
        switch version {
        case .v16: ocpp16[action]
        case .v201: nil
        }
    }

    /// Whether `direction` may carry a CALL of `action`; unknown actions are not allowed from anyone.
    public static func isAllowed(_ action: String, from direction: Direction, version: OCPPVersion = .v16) -> Bool {
        guard let descriptor = descriptor(for: action, version: version) else { return false }
        switch direction {
        case .fromCharger: return descriptor.sender.contains(.chargePoint)
        case .fromCSMS: return descriptor.sender.contains(.centralSystem)
        case .fromGateway: return true
        }
    }
}
