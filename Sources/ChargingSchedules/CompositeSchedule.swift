public import Foundation

/// The supply a charger sits on, for converting between watts and amps per phase:
/// I = P / (U × phases), P = I × U × phases.
public struct ElectricalSupply: Sendable, Equatable {
    public var voltage: Double
    public var phases: Int

    public init(voltage: Double = 230, phases: Int = 3) {
        self.voltage = voltage
        self.phases = phases
    }

    /// A period's limit as a `Limit`, converted once from its own unit. A period without
    /// `numberPhases` is for 3 phases (1.6 §7.13); a charger wired for fewer cannot use more.
    public func limit(_ value: Double, unit: RateUnit, phases periodPhases: Int?) -> Limit {
        let phases = max(1, min(periodPhases ?? 3, self.phases))
        switch unit {
        case .amps: return Limit(amps: value, phases: phases)
        case .watts: return Limit(amps: value / (voltage * Double(phases)), phases: phases, watts: value)
        }
    }

    func amps(_ limit: Double, unit: RateUnit, phases periodPhases: Int?) -> Double {
        self.limit(limit, unit: unit, phases: periodPhases).amps
    }
}

/// A limit as its source set it: amps per phase on a number of phases, and the exact watts when
/// the source was in watts (so W → W never goes through amps and loses nothing).
public struct Limit: Sendable, Equatable, Codable {
    /// Amps per phase, unrounded.
    public var amps: Double
    /// The phases the limit is for.
    public var phases: Int
    /// The source's own value when it was given in watts.
    public var sourceWatts: Double?

    public init(amps: Double, phases: Int = 3, watts: Double? = nil) {
        self.amps = amps
        self.phases = phases
        self.sourceWatts = watts
    }

    /// The power this limit allows on `voltage`: the source's watts, or I × U × phases.
    public func watts(voltage: Double) -> Double { sourceWatts ?? amps * voltage * Double(phases) }

    /// What satisfies both limits: the lower current on the fewer phases. When one limit is lower
    /// or equal in both, it is taken whole (its exact watts kept); otherwise the result is in amps.
    public static func lower(_ a: Limit, _ b: Limit) -> Limit {
        if a.amps <= b.amps, a.phases <= b.phases { return a }
        if b.amps <= a.amps, b.phases <= a.phases { return b }
        return Limit(amps: min(a.amps, b.amps), phases: min(a.phases, b.phases))
    }

    /// A share of this limit (a cap divided among connectors).
    public func divided(by count: Int) -> Limit {
        guard count > 1 else { return self }
        return Limit(amps: amps / Double(count), phases: phases, watts: sourceWatts.map { $0 / Double(count) })
    }

    /// Rounds down to 0.1, tolerating the last bits of floating-point noise (690 × 10.666… is 7360).
    public static func roundedDown(_ value: Double) -> Double {
        ((value * 10) + 1e-6).rounded(.down) / 10
    }
}

/// A stretch of time with one limit; a nil limit means no limit.
public struct LimitSegment: Sendable, Equatable {
    public var start: Date
    public var end: Date
    public var limit: Limit?
    /// Amps per phase, unrounded; nil means no limit.
    public var amps: Double? { limit?.amps }

    public init(start: Date, end: Date, limit: Limit?) {
        self.start = start
        self.end = end
        self.limit = limit
    }

    /// A limit in amps per phase on `phases` phases.
    public init(start: Date, end: Date, amps: Double?, phases: Int = 3) {
        self.init(start: start, end: end, limit: amps.map { Limit(amps: $0, phases: phases) })
    }
}

/// The transaction a TxProfile or a Relative profile refers to.
public struct TransactionContext: Sendable, Equatable {
    public var id: Int
    public var start: Date
    public init(id: Int, start: Date) {
        self.id = id
        self.start = start
    }
}

/// Composite schedule arithmetic (OCPP 1.6 §3.13.2–3.13.4): per purpose the highest stack level
/// with a period in force wins; a TxProfile overrides the TxDefaultProfile; the ChargePointMaxProfile
/// and any extra constraint (site limit, time-of-use policy) cap the result.
public enum CompositeSchedule {
    /// The limit in force at every moment of [from, until), as segments of equal limit.
    /// - Parameter constraints: further caps, e.g. from a TOU policy or a share of a site limit.
    public static func compute(profiles: [ChargingProfile], from: Date, until: Date, transaction: TransactionContext?,
                               supply: ElectricalSupply, constraints: [[LimitSegment]] = []) -> [LimitSegment] {
        guard from < until else { return [] }
        var boundaries: Set<Date> = [from]
        for profile in profiles {
            for date in changeTimes(of: profile, from: from, until: until, transaction: transaction) where date > from && date < until {
                boundaries.insert(date)
            }
        }
        for segments in constraints {
            for segment in segments {
                if segment.start > from, segment.start < until { boundaries.insert(segment.start) }
                if segment.end > from, segment.end < until { boundaries.insert(segment.end) }
            }
        }
        let points = boundaries.sorted()
        var result: [LimitSegment] = []
        for (index, start) in points.enumerated() {
            let end = index + 1 < points.count ? points[index + 1] : until
            var limit = effectiveLimit(at: start, profiles: profiles, transaction: transaction, supply: supply)
            for segments in constraints {
                if let cap = segments.first(where: { $0.start <= start && start < $0.end })?.limit {
                    limit = limit.map { Limit.lower($0, cap) } ?? cap
                }
            }
            if let last = result.last, last.limit == limit {
                result[result.count - 1].end = end
            } else {
                result.append(LimitSegment(start: start, end: end, limit: limit))
            }
        }
        return result
    }

    /// The limit in amps per phase at `time`, or nil when no profile limits it.
    public static func limit(at time: Date, profiles: [ChargingProfile], transaction: TransactionContext?, supply: ElectricalSupply) -> Double? {
        effectiveLimit(at: time, profiles: profiles, transaction: transaction, supply: supply)?.amps
    }

    /// The limit at `time` as its winning source set it, or nil when no profile limits it.
    public static func effectiveLimit(at time: Date, profiles: [ChargingProfile], transaction: TransactionContext?,
                                      supply: ElectricalSupply) -> Limit? {
        func winner(_ purpose: ProfilePurpose) -> Limit? {
            profiles.filter { $0.purpose == purpose }
                .sorted { $0.stackLevel > $1.stackLevel }
                .lazy.compactMap { limit(of: $0, at: time, transaction: transaction, supply: supply) }
                .first
        }
        let transactionLimit = winner(.tx) ?? winner(.txDefault)
        let stationLimit = winner(.chargePointMax)
        switch (transactionLimit, stationLimit) {
        case let (.some(a), .some(b)): return Limit.lower(a, b)
        case let (.some(a), nil): return a
        case let (nil, .some(b)): return b
        case (nil, nil): return nil
        }
    }

    /// The limit one profile sets at `time`, in amps per phase; nil when it is not in force.
    static func limit(of profile: ChargingProfile, at time: Date, transaction: TransactionContext?, supply: ElectricalSupply) -> Limit? {
        if let validFrom = profile.validFrom, time < validFrom { return nil }
        if let validTo = profile.validTo, time >= validTo { return nil }
        if profile.purpose == .tx {
            guard let transaction else { return nil }
            if let id = profile.transactionId, id != transaction.id { return nil }
        }
        guard let start = scheduleStart(of: profile, at: time, transaction: transaction) else { return nil }
        let offset = time.timeIntervalSince(start)
        guard offset >= 0 else { return nil }
        if let duration = profile.schedule.duration, offset >= Double(duration) { return nil }
        guard let period = profile.schedule.periods.last(where: { Double($0.start) <= offset }) else { return nil }
        return supply.limit(period.limit, unit: profile.schedule.unit, phases: period.numberPhases)
    }

    /// When the schedule in force at `time` started.
    static func scheduleStart(of profile: ChargingProfile, at time: Date, transaction: TransactionContext?) -> Date? {
        switch profile.kind {
        case .absolute:
            return profile.schedule.startSchedule ?? profile.validFrom
        case .relative:
            return transaction?.start
        case .recurring(let recurrency):
            guard let base = profile.schedule.startSchedule ?? profile.validFrom else { return nil }
            let cycles = (time.timeIntervalSince(base) / recurrency.period).rounded(.down)
            return base.addingTimeInterval(cycles * recurrency.period)
        }
    }

    /// Moments in [from, until] at which a profile's limit can change.
    static func changeTimes(of profile: ChargingProfile, from: Date, until: Date, transaction: TransactionContext?) -> [Date] {
        var times = [profile.validFrom, profile.validTo].compactMap { $0 }
        var starts: [Date] = []
        switch profile.kind {
        case .absolute, .relative:
            if let start = scheduleStart(of: profile, at: from, transaction: transaction) { starts = [start] }
        case .recurring(let recurrency):
            if var start = scheduleStart(of: profile, at: from, transaction: transaction) {
                while start < until {
                    starts.append(start)
                    start = start.addingTimeInterval(recurrency.period)
                }
            }
        }
        for start in starts {
            times += profile.schedule.periods.map { start.addingTimeInterval(Double($0.start)) }
            if let duration = profile.schedule.duration { times.append(start.addingTimeInterval(Double(duration))) }
        }
        return times
    }
}
