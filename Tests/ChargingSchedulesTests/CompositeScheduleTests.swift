import ChargingSchedules
import Foundation
import OCPP
import Testing

let t0 = Date(timeIntervalSince1970: 1_795_000_000)  // 2026-11-18, a Wednesday
let supply = ElectricalSupply(voltage: 230, phases: 3)

func amps(_ id: Int, level: Int, _ purpose: ProfilePurpose, kind: ProfileKind = .absolute, start: Date? = t0,
          duration: Int? = nil, _ periods: [(Int, Double)], unit: RateUnit = .amps, transactionId: Int? = nil) -> ChargingProfile {
    ChargingProfile(id: id, stackLevel: level, purpose: purpose, kind: kind, transactionId: transactionId,
                    schedule: ChargingSchedule(unit: unit, periods: periods.map { SchedulePeriod(start: $0.0, limit: $0.1) },
                                               duration: duration, startSchedule: start))
}

func limits(_ segments: [LimitSegment]) -> [String] {
    segments.map { "\(Int($0.start.timeIntervalSince(t0)))-\(Int($0.end.timeIntervalSince(t0))):\($0.amps.map { String(format: "%.1f", $0) } ?? "none")" }
}

@Suite("composite schedule")
struct CompositeScheduleTests {
    @Test func theHighestStackLevelInForceWinsAndFallsBackWhenItsDurationEnds() {
        let base = amps(1, level: 0, .txDefault, [(0, 16)])
        let boost = amps(2, level: 1, .txDefault, duration: 3600, [(0, 10), (1800, 12)])
        let segments = CompositeSchedule.compute(profiles: [base, boost], from: t0, until: t0 + 7200, transaction: nil, supply: supply)
        #expect(limits(segments) == ["0-1800:10.0", "1800-3600:12.0", "3600-7200:16.0"])
    }

    @Test func aTxProfileOverridesTheDefaultAndTheStationMaximumCapsBoth() {
        let station = amps(1, level: 0, .chargePointMax, [(0, 20)])
        let fallback = amps(2, level: 5, .txDefault, [(0, 32)])
        let transactionProfile = amps(3, level: 0, .tx, [(0, 8), (600, 25)], transactionId: 42)
        let without = CompositeSchedule.compute(profiles: [station, fallback, transactionProfile], from: t0, until: t0 + 1200,
                                                transaction: nil, supply: supply)
        #expect(limits(without) == ["0-1200:20.0"], "no transaction: the TxProfile is not in force")
        let with = CompositeSchedule.compute(profiles: [station, fallback, transactionProfile], from: t0, until: t0 + 1200,
                                             transaction: TransactionContext(id: 42, start: t0), supply: supply)
        #expect(limits(with) == ["0-600:8.0", "600-1200:20.0"])
        let otherTransaction = CompositeSchedule.compute(profiles: [fallback, transactionProfile], from: t0, until: t0 + 60,
                                                         transaction: TransactionContext(id: 7, start: t0), supply: supply)
        #expect(limits(otherTransaction) == ["0-60:32.0"])
    }

    @Test func wattsBecomeAmpsPerPhase() {
        let threePhase = amps(1, level: 0, .txDefault, [(0, 11_000)], unit: .watts)
        #expect(abs((CompositeSchedule.limit(at: t0, profiles: [threePhase], transaction: nil, supply: supply) ?? 0) - 15.942) < 0.001)
        var onePhase = threePhase
        onePhase.schedule.periods = [SchedulePeriod(start: 0, limit: 3_680, numberPhases: 1)]
        #expect(abs((CompositeSchedule.limit(at: t0, profiles: [onePhase], transaction: nil, supply: supply) ?? 0) - 16) < 0.001)
    }

    @Test func recurringAndRelativeProfilesFollowTheirAnchors() {
        let daily = amps(1, level: 0, .txDefault, kind: .recurring(.daily), start: t0 - 86_400 * 3, [(0, 16), (8 * 3600, 32)])
        let day = CompositeSchedule.compute(profiles: [daily], from: t0 + 3600, until: t0 + 86_400 + 3600, transaction: nil, supply: supply)
        #expect(limits(day) == ["3600-28800:16.0", "28800-86400:32.0", "86400-90000:16.0"])
        let relative = amps(2, level: 0, .tx, kind: .relative, start: nil, [(0, 6), (900, 16)])
        let started = CompositeSchedule.compute(profiles: [relative], from: t0, until: t0 + 3600,
                                                transaction: TransactionContext(id: 1, start: t0 - 600), supply: supply)
        #expect(limits(started) == ["0-300:6.0", "300-3600:16.0"], "15 minutes after the transaction began")
    }

    @Test func validityBoundsAreHonoured() {
        var profile = amps(1, level: 3, .txDefault, [(0, 10)])
        profile.validFrom = t0 + 600
        profile.validTo = t0 + 1200
        let base = amps(2, level: 0, .txDefault, [(0, 16)])
        let segments = CompositeSchedule.compute(profiles: [profile, base], from: t0, until: t0 + 1800, transaction: nil, supply: supply)
        #expect(limits(segments) == ["0-600:16.0", "600-1200:10.0", "1200-1800:16.0"])
    }

    @Test func aTimeOfUsePolicyKeepsLocalTimeAcrossDaylightSavingChanges() throws {
        let berlin = try #require(TimeZone(identifier: "Europe/Berlin"))
        let night = TimeOfUsePolicy(timeZone: berlin, windows: [.init(weekdays: Set(1...7), start: 0, end: 360, amps: 32)])
        let evening = TimeOfUsePolicy(timeZone: berlin, windows: [.init(weekdays: [1], start: 17 * 60, end: 21 * 60, amps: 10)])
        func utc(_ text: String) -> Date { ISO8601DateFormatter().date(from: text)! }
        // 2026-03-29: clocks go from 02:00 to 03:00; the night window is five hours long.
        let spring = night.segments(from: utc("2026-03-28T23:00:00Z"), until: utc("2026-03-29T12:00:00Z"))
        #expect(spring.map { $0.end.timeIntervalSince($0.start) } == [5 * 3600])
        // 2026-10-25: clocks go from 03:00 back to 02:00; seven hours.
        let autumn = night.segments(from: utc("2026-10-24T22:00:00Z"), until: utc("2026-10-25T12:00:00Z"))
        #expect(autumn.map { $0.end.timeIntervalSince($0.start) } == [7 * 3600])
        // Sunday 17:00 local is 15:00Z in summer and 16:00Z in winter.
        #expect(evening.segments(from: utc("2026-10-18T00:00:00Z"), until: utc("2026-10-19T00:00:00Z")).first?.start == utc("2026-10-18T15:00:00Z"))
        #expect(evening.segments(from: utc("2026-10-25T00:00:00Z"), until: utc("2026-10-26T00:00:00Z")).first?.start == utc("2026-10-25T16:00:00Z"))
        // As a constraint it caps a profile.
        let profile = amps(1, level: 0, .txDefault, start: utc("2026-10-25T00:00:00Z"), [(0, 16)])
        let capped = CompositeSchedule.compute(profiles: [profile], from: utc("2026-10-25T15:00:00Z"), until: utc("2026-10-25T21:00:00Z"),
                                               transaction: nil, supply: supply,
                                               constraints: [evening.segments(from: utc("2026-10-25T00:00:00Z"), until: utc("2026-10-26T00:00:00Z"))])
        #expect(capped.map(\.amps) == [16, 10, 16])
    }

    @Test func readsA16ProfileFromJSON() throws {
        let json = try JSONValue(parsing: #"""
            {"chargingProfileId":7,"stackLevel":2,"chargingProfilePurpose":"TxDefaultProfile","chargingProfileKind":"Recurring",
             "recurrencyKind":"Daily","validTo":"2027-01-01T00:00:00Z",
             "chargingSchedule":{"startSchedule":"2026-11-18T00:00:00Z","chargingRateUnit":"W","duration":86400,
             "chargingSchedulePeriod":[{"startPeriod":0,"limit":7400.0,"numberPhases":1},{"startPeriod":3600,"limit":11000}]}}
            """#)
        let profile = try ChargingProfile(ocpp16: json)
        #expect(profile.id == 7 && profile.stackLevel == 2 && profile.kind == .recurring(.daily))
        #expect(profile.schedule.unit == .watts && profile.schedule.periods.count == 2 && profile.schedule.periods[0].numberPhases == 1)
        #expect(throws: ProfileError.self) { try ChargingProfile(ocpp16: ["chargingProfileId": 1]) }
    }
}

@Suite("profile compiler")
struct ProfileCompilerTests {
    /// 48 half-hour periods in watts, as a CSMS sends for a day-ahead price curve.
    static let dayAhead: ChargingProfile = {
        let watts: [Double] = [11_000, 7_360, 2_760, 22_080]
        let periods: [(Int, Double)] = (0..<48).map { index in (index * 1800, watts[index % 4]) }
        return amps(1, level: 0, .txDefault, periods, unit: .watts)
    }()

    @Test func aOnePeriodAmpsOnlyChargerGetsTheCurrentPeriodAndTheNextAtItsBoundary() {
        let capabilities = ChargerCapabilities(maxPeriods: 1, units: [.amps], maxStackLevel: 0)
        let segments = CompositeSchedule.compute(profiles: [Self.dayAhead], from: t0, until: t0 + 86_400, transaction: nil, supply: supply)
        let first = ProfileCompiler.compile(segments, now: t0, capabilities: capabilities, profileId: 900)
        #expect(first.periods == [SchedulePeriod(start: 0, limit: 15.9)])
        #expect(first.resendAt == t0 + 1800)
        #expect(first.profile["chargingSchedule"]?["chargingRateUnit"] == "A")
        #expect(first.profile["stackLevel"] == 0 && first.profile["chargingProfilePurpose"] == "TxDefaultProfile")
        #expect(first.profile["chargingSchedule"]?["duration"] == 1800)
        #expect(PayloadSchema.ocpp16("SetChargingProfile", response: false)?
            .validate(["connectorId": 0, "csChargingProfiles": first.profile]) == nil, "a valid 1.6 payload")
        let second = ProfileCompiler.compile(segments, now: t0 + 1800, capabilities: capabilities, profileId: 900)
        #expect(second.periods == [SchedulePeriod(start: 0, limit: 10.6)])
        let third = ProfileCompiler.compile(segments, now: t0 + 3600, capabilities: capabilities, profileId: 900)
        #expect(third.periods == [SchedulePeriod(start: 0, limit: 0)], "4 A is below the charger's 6 A minimum: pause instead")
        let fourth = ProfileCompiler.compile(segments, now: t0 + 5400, capabilities: capabilities, profileId: 900)
        #expect(fourth.periods == [SchedulePeriod(start: 0, limit: 32)], "32 A is the charger's maximum")
    }

    @Test func aChargerWithMorePeriodsGetsMoreAtOnce() {
        let capabilities = ChargerCapabilities(maxPeriods: 3, units: [.amps, .watts], maxStackLevel: 8, purpose: .chargePointMax)
        let segments = CompositeSchedule.compute(profiles: [Self.dayAhead], from: t0 + 900, until: t0 + 86_400, transaction: nil, supply: supply)
        let compiled = ProfileCompiler.compile(segments, now: t0 + 900, capabilities: capabilities, profileId: 1, stackLevel: 3)
        #expect(compiled.periods.map(\.start) == [0, 900, 2700])
        #expect(compiled.resendAt == t0 + 5400)
        #expect(compiled.profile["stackLevel"] == 3 && compiled.profile["chargingProfilePurpose"] == "ChargePointMaxProfile")
    }

    @Test func wattOnlyChargersGetWatts() {
        let capabilities = ChargerCapabilities(units: [.watts])
        let compiled = ProfileCompiler.compile([LimitSegment(start: t0, end: t0 + 60, amps: 16)], now: t0, capabilities: capabilities, profileId: 2)
        #expect(compiled.profile["chargingSchedule"]?["chargingRateUnit"] == "W")
        #expect(compiled.profile["chargingSchedule"]?["chargingSchedulePeriod"]?.arrayValue?.first?["limit"]?.doubleValue == 11_040)
    }
}
