/// One reading of a measurand: seconds (from the meter value's timestamp) and a value.
public struct Sample: Sendable, Equatable {
    public var time: Double
    public var value: Double
    public init(time: Double, value: Double) {
        self.time = time
        self.value = value
    }
}

/// Report-by-exception: a value is reported when it moved more than `band` from the last reported
/// one, or when `maxTime` has passed since. A consumer holding the last reported value is never more
/// than `band` off (with `minTime` 0).
public struct DeadbandCompressor: Sendable {
    public let band: Double
    public let minTime: Double
    public let maxTime: Double
    private var lastReported: Sample?
    private var lastSeen: Sample?

    public init(band: Double, minTime: Double = 0, maxTime: Double = .infinity) {
        self.band = band
        self.minTime = minTime
        self.maxTime = maxTime
    }

    /// The samples to report because of `sample` (none or one). Out-of-order and duplicate samples are ignored.
    public mutating func add(_ sample: Sample) -> [Sample] {
        if let seen = lastSeen, sample.time <= seen.time { return [] }
        lastSeen = sample
        guard let reported = lastReported else {
            lastReported = sample
            return [sample]
        }
        let elapsed = sample.time - reported.time
        guard elapsed >= minTime, abs(sample.value - reported.value) > band || elapsed >= maxTime else { return [] }
        lastReported = sample
        return [sample]
    }

    /// The last sample, if it was not reported: a series always ends on its true last value.
    public mutating func flush() -> [Sample] {
        guard let seen = lastSeen, seen != lastReported else { return [] }
        lastReported = seen
        return [seen]
    }
}

/// Swinging Door Trending (Bristol 1987): from the last archived point, the doors are the slopes
/// that keep a straight line within ±`compDev` of every sample since; when they cross, the previous
/// sample is archived and the doors start again from it. The archived value is placed on a slope
/// both doors allow, so linear interpolation between archived points stays within `compDev` of every
/// original sample, a guarantee archiving the raw previous value does not give; it moves the archived
/// value by at most `compDev`. `compMinTime` suppresses archiving, `compMaxTime` forces it.
public struct SwingingDoorCompressor: Sendable {
    public let compDev: Double
    public let compMinTime: Double
    public let compMaxTime: Double
    private var archived: Sample?
    private var previous: Sample?
    /// The doors: the highest lower bound and the lowest upper bound on the slope from `archived`.
    private var lowerDoor = -Double.infinity
    private var upperDoor = Double.infinity
    /// The sample before `previous` and the doors before `previous` narrowed them, for `flush`.
    private var penultimate: Sample?
    private var priorDoors = (lower: -Double.infinity, upper: Double.infinity)

    public init(compDev: Double, compMinTime: Double = 0, compMaxTime: Double = .infinity) {
        self.compDev = compDev
        self.compMinTime = compMinTime
        self.compMaxTime = compMaxTime
    }

    /// The points to archive because of `sample`. Out-of-order and duplicate samples are ignored.
    public mutating func add(_ sample: Sample) -> [Sample] {
        if let previous, sample.time <= previous.time { return [] }
        guard let start = archived else {
            archived = sample
            previous = sample
            return [sample]
        }
        let dt = sample.time - start.time
        let lower = (sample.value - compDev - start.value) / dt
        let upper = (sample.value + compDev - start.value) / dt
        let crossed = max(lowerDoor, lower) > min(upperDoor, upper)
        let tooLong = dt > compMaxTime
        if (crossed || tooLong), let previous, previous != start, previous.time - start.time >= compMinTime {
            let point = archive(previous)
            priorDoors = (-.infinity, .infinity)
            penultimate = point
            openDoors(towards: sample)
            self.previous = sample
            return [point]
        }
        priorDoors = (lowerDoor, upperDoor)
        penultimate = previous
        lowerDoor = max(lowerDoor, lower)
        upperDoor = min(upperDoor, upper)
        previous = sample
        return []
    }

    /// Closes the series on its true last value.
    public mutating func flush() -> [Sample] {
        guard let start = archived, let last = previous, last != start else { return [] }
        let slope = (last.value - start.value) / (last.time - start.time)
        if slope >= lowerDoor - 1e-12, slope <= upperDoor + 1e-12 {
            archived = last
            resetDoors()
            return [last]
        }
        // The true last value is outside the doors: archive the sample before it on a slope the
        // earlier samples allow, then the last one exactly (no sample lies between those two).
        guard let before = penultimate, before != start else {
            archived = last
            resetDoors()
            return [last]
        }
        (lowerDoor, upperDoor) = priorDoors
        let placed = archive(before)
        archived = last
        resetDoors()
        return [placed, last]
    }

    /// Archives `point` on a slope within the doors, and restarts from it.
    private mutating func archive(_ point: Sample) -> Sample {
        let start = archived!
        let dt = point.time - start.time
        let slope = min(max((point.value - start.value) / dt, lowerDoor), upperDoor)
        let value = start.value + slope * dt
        // A sample the doors allow (to rounding) is archived as it is, bit for bit: recomputing it
        // from the slope adds float noise (3.44 becoming 3.4400000000000004).
        let placed = abs(value - point.value) <= compDev * 1e-9 ? point : Sample(time: point.time, value: value)
        archived = placed
        resetDoors()
        return placed
    }

    private mutating func openDoors(towards sample: Sample) {
        let start = archived!
        let dt = sample.time - start.time
        lowerDoor = (sample.value - compDev - start.value) / dt
        upperDoor = (sample.value + compDev - start.value) / dt
    }

    private mutating func resetDoors() {
        lowerDoor = -.infinity
        upperDoor = .infinity
    }
}

/// Linear interpolation of archived points at `time` (for checking and for consumers).
public func interpolate(_ points: [Sample], at time: Double) -> Double? {
    guard let first = points.first, time >= first.time else { return nil }
    for (a, b) in zip(points, points.dropFirst()) where time <= b.time {
        return a.value + (b.value - a.value) * (time - a.time) / (b.time - a.time)
    }
    return points.last?.time == time ? points.last?.value : nil
}
