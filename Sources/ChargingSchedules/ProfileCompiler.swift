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
    /// NumberOfConnectors: a cap for the whole charger is divided equally among them.
    public var connectors: Int

    public init(maxPeriods: Int = 1, units: Set<RateUnit> = [.amps], maxStackLevel: Int = 0, purpose: ProfilePurpose = .txDefault,
                minimumAmps: Double = 6, maximumAmps: Double = 32, supply: ElectricalSupply = ElectricalSupply(), connectors: Int = 1) {
        self.connectors = connectors
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
    /// What the charger is limited to over `segments` from `now` on: no limit becomes its maximum,
    /// limits are clamped to its maximum, and a limit below its minimum becomes 0 (pause).
    /// Nothing is rounded here.
    public static func enforced(_ segments: [LimitSegment], now: Date, capabilities: ChargerCapabilities) -> [LimitSegment] {
        var result: [LimitSegment] = []
        for segment in segments where segment.end > now {
            var limit = segment.limit ?? Limit(amps: capabilities.maximumAmps, phases: capabilities.supply.phases)
            if limit.amps > capabilities.maximumAmps { limit = Limit(amps: capabilities.maximumAmps, phases: limit.phases) }
            if limit.amps + 1e-9 < capabilities.minimumAmps { limit = Limit(amps: 0, phases: limit.phases) }
            let start = max(segment.start, now)
            if let last = result.last, last.limit == limit, last.end >= start {
                result[result.count - 1].end = segment.end
            } else {
                result.append(LimitSegment(start: start, end: segment.end, limit: limit))
            }
        }
        return result
    }

    /// A limit as the charger is sent it in `unit`: converted once from its source, rounded down to 0.1 at the end.
    public static func value(of limit: Limit, in unit: RateUnit, supply: ElectricalSupply) -> Double {
        Limit.roundedDown(unit == .amps ? limit.amps : limit.watts(voltage: supply.voltage))
    }

    /// The unit a charger is sent: amps if it takes them, else watts.
    public static func unit(for capabilities: ChargerCapabilities) -> RateUnit {
        capabilities.units.contains(.amps) || capabilities.units.isEmpty ? .amps : .watts
    }

    /// Turns the composite limits from `now` on into a profile within the charger's capabilities:
    /// amps (or watts if that is all it takes), clamped to its range, at a stack level and purpose it
    /// honours, with as many periods as it can hold; the rest follows at `resendAt`.
    public static func compile(_ segments: [LimitSegment], now: Date, capabilities: ChargerCapabilities, profileId: Int,
                               stackLevel: Int = 0) -> CompiledProfile {
        let unit = unit(for: capabilities)
        let supply = capabilities.supply
        // Clamp first, then merge periods that are sent as the same value.
        var clamped: [(segment: LimitSegment, value: Double, phases: Int)] = []
        for segment in enforced(segments, now: now, capabilities: capabilities) {
            let limit = segment.limit ?? Limit(amps: capabilities.maximumAmps, phases: supply.phases)
            let value = value(of: limit, in: unit, supply: supply)
            if let last = clamped.last, last.value == value, last.phases == limit.phases, last.segment.end >= segment.start {
                clamped[clamped.count - 1].segment.end = segment.end
            } else {
                clamped.append((segment, value, limit.phases))
            }
        }
        if clamped.isEmpty {
            let limit = Limit(amps: capabilities.maximumAmps, phases: supply.phases)
            clamped = [(LimitSegment(start: now, end: now.addingTimeInterval(86_400), limit: limit), value(of: limit, in: unit, supply: supply),
                        limit.phases)]
        }
        let kept = Array(clamped.prefix(max(1, capabilities.maxPeriods)))
        let resendAt = clamped.count > kept.count ? kept.last?.segment.end : nil
        let periods = kept.map { entry in
            SchedulePeriod(start: Int(entry.segment.start.timeIntervalSince(now).rounded()),
                           limit: Limit.roundedDown(entry.segment.limit?.amps ?? capabilities.maximumAmps),
                           numberPhases: entry.phases == 3 ? nil : entry.phases)
        }
        let schedulePeriods: [JSONValue] = zip(periods, kept).map { period, entry in
            var json: JSONValue = ["startPeriod": .number(period.start), "limit": .number(entry.value)]
            // 1.6: a period without numberPhases is for 3 phases.
            if entry.phases != 3 { json["numberPhases"] = .number(entry.phases) }
            return json
        }
        var schedule: JSONValue = [
            "startSchedule": .string(now.formatted(.iso8601)),
            "chargingRateUnit": .string(unit.rawValue),
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
