public import Foundation
public import OCPP

/// What a legacy charger can execute, read with GetConfiguration or set per model in YAML.
public struct ChargerCapabilities: Sendable, Equatable {
    /// ChargingScheduleMaxPeriods.
    public var maxPeriods: Int
    /// ChargingScheduleAllowedChargingRateUnit.
    public var units: Set<RateUnit>
    /// ChargeProfileMaxStackLevel.
    public var maxStackLevel: Int
    /// The purpose the charger honours for gateway limits (quirk: some ignore ChargePointMaxProfile).
    public var purpose: ProfilePurpose
    /// Below this the charger ignores the limit (quirk: 6–7 A); the compiler sends 0 instead, which pauses.
    public var minimumAmps: Double
    /// The charger's own maximum; also what "no limit" becomes.
    public var maximumAmps: Double
    public var supply: ElectricalSupply

    public init(maxPeriods: Int = 1, units: Set<RateUnit> = [.amps], maxStackLevel: Int = 0, purpose: ProfilePurpose = .txDefault,
                minimumAmps: Double = 6, maximumAmps: Double = 32, supply: ElectricalSupply = ElectricalSupply()) {
        self.maxPeriods = maxPeriods
        self.units = units
        self.maxStackLevel = maxStackLevel
        self.purpose = purpose
        self.minimumAmps = minimumAmps
        self.maximumAmps = maximumAmps
        self.supply = supply
    }
}

/// A profile the charger can execute, and when the gateway must send the next one.
public struct CompiledProfile: Sendable, Equatable {
    /// The 1.6 `csChargingProfiles` object.
    public var profile: JSONValue
    /// The limits it carries, in amps per phase, from `startSchedule`.
    public var periods: [SchedulePeriod]
    /// When it runs out of periods: send the next compiled profile then. Nil: it holds indefinitely.
    public var resendAt: Date?
}

public enum ProfileCompiler {
    /// Turns the composite limits from `now` on into a profile within the charger's capabilities:
    /// amps (or watts if that is all it takes), clamped to its range, at a stack level and purpose it
    /// honours, with as many periods as it can hold; the rest follows at `resendAt`.
    public static func compile(_ segments: [LimitSegment], now: Date, capabilities: ChargerCapabilities, profileId: Int,
                               stackLevel: Int = 0) -> CompiledProfile {
        // Clamp first, then merge periods the clamping made equal.
        var clamped: [LimitSegment] = []
        for segment in segments where segment.end > now {
            var amps = min(segment.amps ?? capabilities.maximumAmps, capabilities.maximumAmps)
            if amps < capabilities.minimumAmps { amps = 0 }
            amps = (amps * 10).rounded(.down) / 10
            let start = max(segment.start, now)
            if let last = clamped.last, last.amps == amps, last.end >= start {
                clamped[clamped.count - 1].end = segment.end
            } else {
                clamped.append(LimitSegment(start: start, end: segment.end, amps: amps))
            }
        }
        if clamped.isEmpty { clamped = [LimitSegment(start: now, end: now.addingTimeInterval(86_400), amps: capabilities.maximumAmps)] }
        let kept = Array(clamped.prefix(max(1, capabilities.maxPeriods)))
        let resendAt = clamped.count > kept.count ? kept.last?.end : nil
        let useAmps = capabilities.units.contains(.amps)
        let supply = capabilities.supply
        let periods = kept.map { segment in
            SchedulePeriod(start: Int(segment.start.timeIntervalSince(now).rounded()), limit: segment.amps ?? capabilities.maximumAmps)
        }
        let schedulePeriods: [JSONValue] = periods.map { period in
            let limit = useAmps ? period.limit : period.limit * supply.voltage * Double(supply.phases)
            return ["startPeriod": .number(period.start), "limit": .number((limit * 10).rounded(.down) / 10)]
        }
        var schedule: JSONValue = [
            "startSchedule": .string(now.formatted(.iso8601)),
            "chargingRateUnit": .string(useAmps ? RateUnit.amps.rawValue : RateUnit.watts.rawValue),
            "chargingSchedulePeriod": .array(schedulePeriods),
        ]
        if let resendAt { schedule["duration"] = .number(Int(resendAt.timeIntervalSince(now).rounded())) }
        let profile: JSONValue = [
            "chargingProfileId": .number(profileId),
            "stackLevel": .number(min(stackLevel, capabilities.maxStackLevel)),
            "chargingProfilePurpose": .string(capabilities.purpose.rawValue),
            "chargingProfileKind": "Absolute",
            "chargingSchedule": schedule,
        ]
        return CompiledProfile(profile: profile, periods: periods, resendAt: resendAt)
    }
}
