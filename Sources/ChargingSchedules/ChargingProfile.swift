public import Foundation
public import OCPP

/// The units a charging schedule limits (1.6 ChargingRateUnitType).
public enum RateUnit: String, Sendable, Equatable, Codable {
    case amps = "A"
    case watts = "W"
}

/// 1.6 ChargingProfilePurposeType; 2.0.1's ChargingStationMaxProfile maps to `chargePointMax`.
public enum ProfilePurpose: String, Sendable, Equatable, CaseIterable {
    case chargePointMax = "ChargePointMaxProfile"
    case txDefault = "TxDefaultProfile"
    case tx = "TxProfile"
}

public enum ProfileKind: Sendable, Equatable {
    case absolute
    case recurring(Recurrency)
    case relative

    public enum Recurrency: String, Sendable, Equatable {
        case daily = "Daily"
        case weekly = "Weekly"

        var period: TimeInterval { self == .daily ? 86_400 : 7 * 86_400 }
    }
}

public struct SchedulePeriod: Sendable, Equatable {
    /// Seconds from the start of the schedule.
    public var start: Int
    public var limit: Double
    /// Phases the limit is for (1.6 default: 3).
    public var numberPhases: Int?

    public init(start: Int, limit: Double, numberPhases: Int? = nil) {
        self.start = start
        self.limit = limit
        self.numberPhases = numberPhases
    }
}

public struct ChargingSchedule: Sendable, Equatable {
    public var unit: RateUnit
    public var periods: [SchedulePeriod]
    /// Seconds the schedule lasts; nil = until the next schedule or forever.
    public var duration: Int?
    public var startSchedule: Date?
    public var minChargingRate: Double?

    public init(unit: RateUnit, periods: [SchedulePeriod], duration: Int? = nil, startSchedule: Date? = nil, minChargingRate: Double? = nil) {
        self.unit = unit
        self.periods = periods.sorted { $0.start < $1.start }
        self.duration = duration
        self.startSchedule = startSchedule
        self.minChargingRate = minChargingRate
    }
}

/// An OCPP charging profile, whatever its source (a 1.6 SetChargingProfile, a 2.0.1 profile, a TOU policy).
public struct ChargingProfile: Sendable, Equatable {
    public var id: Int
    public var stackLevel: Int
    public var purpose: ProfilePurpose
    public var kind: ProfileKind
    public var validFrom: Date?
    public var validTo: Date?
    public var transactionId: Int?
    public var schedule: ChargingSchedule

    public init(id: Int, stackLevel: Int, purpose: ProfilePurpose, kind: ProfileKind, validFrom: Date? = nil, validTo: Date? = nil,
                transactionId: Int? = nil, schedule: ChargingSchedule) {
        self.id = id
        self.stackLevel = stackLevel
        self.purpose = purpose
        self.kind = kind
        self.validFrom = validFrom
        self.validTo = validTo
        self.transactionId = transactionId
        self.schedule = schedule
    }
}

/// Why a profile could not be read.
public struct ProfileError: Error, Sendable, Equatable, CustomStringConvertible {
    public var description: String
    public init(_ description: String) { self.description = description }
}

extension ChargingProfile {
    /// Reads a 1.6 `csChargingProfiles` object (1.6 §7.8).
    public init(ocpp16 json: JSONValue) throws(ProfileError) {
        guard let id = json["chargingProfileId"]?.intValue, let stackLevel = json["stackLevel"]?.intValue,
              let purpose = json["chargingProfilePurpose"]?.stringValue.flatMap(ProfilePurpose.init(rawValue:)),
              let kindName = json["chargingProfileKind"]?.stringValue, let schedule = json["chargingSchedule"]
        else { throw ProfileError("a charging profile needs chargingProfileId, stackLevel, chargingProfilePurpose, chargingProfileKind and chargingSchedule") }
        let kind: ProfileKind
        switch kindName {
        case "Absolute": kind = .absolute
        case "Relative": kind = .relative
        case "Recurring":
            guard let recurrency = json["recurrencyKind"]?.stringValue.flatMap(ProfileKind.Recurrency.init(rawValue:)) else {
                throw ProfileError("a Recurring profile needs recurrencyKind Daily or Weekly")
            }
            kind = .recurring(recurrency)
        default: throw ProfileError("unknown chargingProfileKind '\(kindName)'")
        }
        guard let unit = schedule["chargingRateUnit"]?.stringValue.flatMap(RateUnit.init(rawValue:)),
              let periods = schedule["chargingSchedulePeriod"]?.arrayValue, !periods.isEmpty
        else { throw ProfileError("a charging schedule needs chargingRateUnit and at least one chargingSchedulePeriod") }
        self.init(
            id: id, stackLevel: stackLevel, purpose: purpose, kind: kind,
            validFrom: json["validFrom"]?.stringValue.flatMap(parseDate), validTo: json["validTo"]?.stringValue.flatMap(parseDate),
            transactionId: json["transactionId"]?.intValue,
            schedule: ChargingSchedule(
                unit: unit,
                periods: try periods.map { period throws(ProfileError) in
                    guard let start = period["startPeriod"]?.intValue, let limit = period["limit"]?.doubleValue else {
                        throw ProfileError("each chargingSchedulePeriod needs startPeriod and limit")
                    }
                    return SchedulePeriod(start: start, limit: limit, numberPhases: period["numberPhases"]?.intValue)
                },
                duration: schedule["duration"]?.intValue,
                startSchedule: schedule["startSchedule"]?.stringValue.flatMap(parseDate),
                minChargingRate: schedule["minChargingRate"]?.doubleValue))
    }
}

/// Reads an OCPP `dateTime` (`parseOCPPDate`, in the OCPP module).
public func parseDate(_ text: String) -> Date? { parseOCPPDate(text) }

extension ChargingProfile {
    /// Reads an OCPP 2.0.1 `ChargingProfileType` (part 2 §2.10). Of up to three schedules (ISO 15118
    /// offers), the first is used; ChargingStationMaxProfile and ChargingStationExternalConstraints
    /// both cap the station, as ChargePointMaxProfile does in 1.6.
    public init(ocpp201 json: JSONValue) throws(ProfileError) {
        guard let id = json["id"]?.intValue, let stackLevel = json["stackLevel"]?.intValue,
              let purposeName = json["chargingProfilePurpose"]?.stringValue, json["chargingProfileKind"]?.stringValue != nil,
              let schedule = json["chargingSchedule"]?.arrayValue?.first
        else { throw ProfileError("a 2.0.1 charging profile needs id, stackLevel, chargingProfilePurpose, chargingProfileKind and chargingSchedule") }
        let purpose: ProfilePurpose
        switch purposeName {
        case "ChargingStationMaxProfile", "ChargingStationExternalConstraints": purpose = .chargePointMax
        case "TxDefaultProfile": purpose = .txDefault
        case "TxProfile": purpose = .tx
        default: throw ProfileError("unknown chargingProfilePurpose '\(purposeName)'")
        }
        // The 1.6 reader knows the rest of the shape; 2.0.1 renames only the id and wraps the schedule in a list.
        var legacy = json
        legacy["chargingProfileId"] = .number(id)
        legacy["chargingProfilePurpose"] = .string(ProfilePurpose.txDefault.rawValue)
        legacy["chargingSchedule"] = schedule
        legacy["transactionId"] = json["transactionId"]?.stringValue.flatMap(Int.init).map { .number($0) }
        try self.init(ocpp16: legacy)
        self.stackLevel = stackLevel
        self.purpose = purpose
    }
}
