import OCPP

/// OCPI 2.2.1 EVSE status (mod_locations.asciidoc §1.4.22 `Status` enum).
public enum OCPIStatus: String, Codable, Sendable, CaseIterable {
    case available = "AVAILABLE"
    case blocked = "BLOCKED"
    case charging = "CHARGING"
    case inoperative = "INOPERATIVE"
    case outOfOrder = "OUTOFORDER"
    case planned = "PLANNED"
    case removed = "REMOVED"
    case reserved = "RESERVED"
    case unknown = "UNKNOWN"

    /// NEVI (23 CFR 680.116(b)): a port is up when it can charge or is charging. UNKNOWN is counted as
    /// down: the gateway cannot show that the port could charge.
    var isUp: Bool {
        switch self {
        case .available, .charging, .reserved, .blocked: true
        case .inoperative, .outOfOrder, .planned, .removed, .unknown: false
        }
    }

    /// DATEX II v3 `RefillPointStatusEnum` (energyInfrastructure namespace).
    var datex: String {
        switch self {
        case .available: "available"
        case .blocked: "blocked"
        case .charging: "charging"
        case .inoperative: "inoperative"
        case .outOfOrder: "outOfOrder"
        case .planned: "plannedForCommissioning"
        case .removed: "removed"
        case .reserved: "reserved"
        case .unknown: "unknown"
        }
    }

    /// When several connectors of one EVSE report (OCPP 2.0.1), the EVSE shows the most useful one:
    /// in use beats reserved beats free beats switched off beats broken.
    var precedence: Int {
        switch self {
        case .charging: 6
        case .blocked: 5
        case .reserved: 4
        case .available: 3
        case .inoperative: 2
        case .outOfOrder: 1
        case .planned, .removed, .unknown: 0
        }
    }
}

/// What a StatusNotification or TransactionEvent says about one EVSE.
enum StatusMapping {
    /// OCPP 1.6 `ChargePointStatus` (StatusNotification.req, §7.7) → OCPI.
    static func v16(_ status: String) -> OCPIStatus? {
        switch status {
        case "Available": .available
        // Preparing (plugged in or authorised), charging, suspended and finishing: the EVSE is in use.
        case "Preparing", "Charging", "SuspendedEV", "SuspendedEVSE", "Finishing": .charging
        case "Reserved": .reserved
        case "Unavailable": .inoperative
        case "Faulted": .outOfOrder
        default: nil
        }
    }

    /// OCPP 2.0.1 `ConnectorStatusEnumType` (StatusNotificationRequest) → OCPI.
    static func v201(_ status: String) -> OCPIStatus? {
        switch status {
        case "Available": .available
        case "Occupied": .charging
        case "Reserved": .reserved
        case "Unavailable": .inoperative
        case "Faulted": .outOfOrder
        default: nil
        }
    }

    /// OCPP 2.0.1 `ChargingStateEnumType` (TransactionEventRequest.transactionInfo.chargingState) → OCPI:
    /// an EV connected, charging or suspended occupies the EVSE; `Idle` says nothing (the StatusNotification that follows does).
    static func v201ChargingState(_ state: String) -> OCPIStatus? {
        switch state {
        case "Charging", "EVConnected", "SuspendedEV", "SuspendedEVSE": .charging
        default: nil
        }
    }
}
