import ChargingSchedules
import Foundation
import OCPP
import Testing

/// A small seeded generator (SplitMix64), so a failure is reproducible from its seed.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// The limit sent to the charger never exceeds what every source in force allows, in amps and in watts.
@Suite("limits sent never exceed the sources (property)")
struct LimitPropertyTests {
    /// One source's limit at `time`, evaluated on its own (1.6 §3.13), independently of `CompositeSchedule`.
    static func sourceLimit(_ profile: ChargingProfile, at time: Date, transaction: TransactionContext?,
                            supply: ElectricalSupply) -> (amps: Double, watts: Double)? {
        if let from = profile.validFrom, time < from { return nil }
        if let to = profile.validTo, time >= to { return nil }
        if profile.purpose == .tx {
            guard let transaction else { return nil }
            if let id = profile.transactionId, id != transaction.id { return nil }
        }
        var start: Date
        switch profile.kind {
        case .absolute:
            guard let anchor = profile.schedule.startSchedule ?? profile.validFrom else { return nil }
            start = anchor
        case .relative:
            guard let transaction else { return nil }
            start = transaction.start
        case .recurring(let recurrency):
            guard let anchor = profile.schedule.startSchedule ?? profile.validFrom else { return nil }
            let length: Double = recurrency == .daily ? 86_400 : 604_800
            start = anchor
            while start.addingTimeInterval(length) <= time { start = start.addingTimeInterval(length) }
            while start > time { start = start.addingTimeInterval(-length) }
        }
        let offset = time.timeIntervalSince(start)
        guard offset >= 0 else { return nil }
        if let duration = profile.schedule.duration, offset >= Double(duration) { return nil }
        guard let period = profile.schedule.periods.filter({ Double($0.start) <= offset }).max(by: { $0.start < $1.start }) else { return nil }
        let phases = Double(min(period.numberPhases ?? 3, supply.phases))
        switch profile.schedule.unit {
        case .amps: return (period.limit, period.limit * supply.voltage * phases)
        case .watts: return (period.limit / (supply.voltage * phases), period.limit)
        }
    }

    /// The composite of every source at `time`: per purpose the highest stack level in force; a TxProfile
    /// over the TxDefaultProfile; the ChargePointMaxProfile and each constraint cap it. Nil: nothing limits.
    static func allowed(at time: Date, profiles: [ChargingProfile], constraints: [[LimitSegment]], transaction: TransactionContext?,
                        supply: ElectricalSupply) -> (amps: Double, watts: Double)? {
        func winner(_ purpose: ProfilePurpose) -> (amps: Double, watts: Double)? {
            for profile in profiles.filter({ $0.purpose == purpose }).sorted(by: { $0.stackLevel > $1.stackLevel }) {
                if let limit = sourceLimit(profile, at: time, transaction: transaction, supply: supply) { return limit }
            }
            return nil
        }
        var limits = [winner(.tx) ?? winner(.txDefault), winner(.chargePointMax)].compactMap { $0 }
        for segments in constraints {
            if let segment = segments.first(where: { $0.start <= time && time < $0.end }), let limit = segment.limit {
                limits.append((limit.amps, limit.watts(voltage: supply.voltage)))
            }
        }
        guard !limits.isEmpty else { return nil }
        return (limits.map(\.amps).min()!, limits.map(\.watts).min()!)
    }

    static func randomProfile(_ id: Int, _ random: inout SeededGenerator, start: Date) -> ChargingProfile {
        let purpose = ProfilePurpose.allCases.randomElement(using: &random)!
        let kinds: [ProfileKind] = [.absolute, .recurring(.daily), .recurring(.weekly), .relative]
        let kind = kinds.randomElement(using: &random)!
        let unit: RateUnit = Bool.random(using: &random) ? .amps : .watts
        let count = Int.random(in: 1...4, using: &random)
        var starts = Set([0])
        while starts.count < count { starts.insert(Int.random(in: 1...48, using: &random) * 900) }
        let periods = starts.sorted().map { offset in
            SchedulePeriod(start: offset, limit: unit == .amps ? Double(Int.random(in: 0...400, using: &random)) / 10
                                                            : Double(Int.random(in: 0...25_000, using: &random)),
                           numberPhases: [nil, 1, 2, 3].randomElement(using: &random)!)
        }
        let anchor = start.addingTimeInterval(Double(Int.random(in: -96...96, using: &random)) * 900)
        return ChargingProfile(
            id: id, stackLevel: Int.random(in: 0...3, using: &random), purpose: purpose, kind: kind,
            validFrom: Bool.random(using: &random) ? anchor.addingTimeInterval(Double(Int.random(in: 0...48, using: &random)) * 600) : nil,
            validTo: Bool.random(using: &random) ? start.addingTimeInterval(Double(Int.random(in: 1...200, using: &random)) * 900) : nil,
            transactionId: purpose == .tx && Bool.random(using: &random) ? Int.random(in: 1...2, using: &random) : nil,
            schedule: ChargingSchedule(unit: unit, periods: periods,
                                       duration: Bool.random(using: &random) ? Int.random(in: 1...96, using: &random) * 900 : nil,
                                       startSchedule: kind == .relative ? nil : anchor))
    }

    @Test(arguments: [1, 2, 3, 4, 5, 6, 7, 8] as [UInt64])
    func theLimitSentAtEachBoundaryNeverExceedsTheCompositeOfEverySource(seed: UInt64) {
        var random = SeededGenerator(seed: seed)
        for round in 0..<40 {
            let t0 = Date(timeIntervalSince1970: 1_795_000_000 + Double(Int.random(in: 0...1000, using: &random)) * 60)
            let supply = ElectricalSupply(voltage: [230, 120].randomElement(using: &random)!, phases: [1, 3].randomElement(using: &random)!)
            let profiles = (0..<Int.random(in: 1...6, using: &random)).map { Self.randomProfile($0, &random, start: t0) }
            let transaction: TransactionContext? = Bool.random(using: &random)
                ? TransactionContext(id: Int.random(in: 1...2, using: &random), start: t0.addingTimeInterval(-Double(Int.random(in: 0...7200, using: &random))))
                : nil
            let horizon = t0.addingTimeInterval(2 * 86_400)
            var constraints: [[LimitSegment]] = []
            if Bool.random(using: &random) {  // a time-of-use window in amps
                let from = t0.addingTimeInterval(Double(Int.random(in: 0...96, using: &random)) * 900)
                constraints.append([LimitSegment(start: from, end: from.addingTimeInterval(Double(Int.random(in: 1...32, using: &random)) * 900),
                                                 amps: Double(Int.random(in: 0...320, using: &random)) / 10, phases: supply.phases)])
            }
            if Bool.random(using: &random) {  // a share of a site limit, divided among connectors
                let share = Limit(amps: Double(Int.random(in: 10...640, using: &random)) / 10, phases: supply.phases)
                constraints.append([LimitSegment(start: t0, end: horizon, limit: share.divided(by: Int.random(in: 1...3, using: &random)))])
            }
            for units in [[RateUnit.amps], [.watts]] {
                let capabilities = ChargerCapabilities(maxPeriods: Int.random(in: 1...4, using: &random), units: Set(units),
                                                       minimumAmps: 6, maximumAmps: 32, supply: supply)
                var now = t0
                var boundaries = 0
                while now < horizon, boundaries < 60 {
                    boundaries += 1
                    let segments = CompositeSchedule.compute(profiles: profiles, from: now, until: horizon, transaction: transaction,
                                                             supply: supply, constraints: constraints)
                    let compiled = ProfileCompiler.compile(segments, now: now, capabilities: capabilities, profileId: 1)
                    let sent = compiled.profile["chargingSchedule"]?["chargingSchedulePeriod"]?.arrayValue ?? []
                    for (index, period) in sent.enumerated() {
                        guard let offset = period["startPeriod"]?.intValue, let value = period["limit"]?.doubleValue else { continue }
                        let from = now.addingTimeInterval(Double(offset))
                        let until = index + 1 < sent.count ? now.addingTimeInterval(Double(sent[index + 1]["startPeriod"]?.intValue ?? 0))
                            : (compiled.resendAt ?? min(horizon, from.addingTimeInterval(86_400)))
                        for time in [from, from.addingTimeInterval(max(0, until.timeIntervalSince(from) / 2)), until.addingTimeInterval(-1)]
                            where time >= from && time < until
                        {
                            guard let allowed = Self.allowed(at: time, profiles: profiles, constraints: constraints, transaction: transaction,
                                                             supply: supply)
                            else { continue }
                            let bound = units == [.amps] ? allowed.amps : allowed.watts
                            #expect(value <= bound + 1e-6,
                                    "seed \(seed) round \(round) unit \(units[0]) at +\(Int(time.timeIntervalSince(t0)))s: sent \(value), sources allow \(bound)")
                        }
                    }
                    guard let next = compiled.resendAt, next > now else { break }
                    now = next
                }
            }
        }
    }
}
