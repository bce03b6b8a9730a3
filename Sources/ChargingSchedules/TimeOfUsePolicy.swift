public import Foundation

/// An operator's time-of-use policy: weekday and time-of-day windows in a time zone, each with a
/// limit. Windows are laid out in local time, so a 17:00–21:00 window stays 17:00–21:00 across a
/// daylight-saving change (and a 00:00–06:00 window is five or seven hours long that night).
public struct TimeOfUsePolicy: Sendable, Equatable {
    public struct Window: Sendable, Equatable {
        /// 1 = Sunday … 7 = Saturday (Calendar's numbering).
        public var weekdays: Set<Int>
        /// Minutes after local midnight; `end` may be 1440 (midnight) and is exclusive.
        public var start: Int
        public var end: Int
        /// Amps per phase.
        public var amps: Double

        public init(weekdays: Set<Int>, start: Int, end: Int, amps: Double) {
            self.weekdays = weekdays
            self.start = start
            self.end = end
            self.amps = amps
        }
    }

    public var timeZone: TimeZone
    public var windows: [Window]

    public init(timeZone: TimeZone, windows: [Window]) {
        self.timeZone = timeZone
        self.windows = windows
    }

    /// The policy's limits over [from, until); outside every window there is no limit.
    public func segments(from: Date, until: Date) -> [LimitSegment] {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        var result: [LimitSegment] = []
        var day = calendar.startOfDay(for: from)
        while day < until {
            let weekday = calendar.component(.weekday, from: day)
            for window in windows where window.weekdays.contains(weekday) {
                guard let start = localTime(window.start, on: day, calendar), let end = localTime(window.end, on: day, calendar) else { continue }
                let clippedStart = max(start, from), clippedEnd = min(end, until)
                if clippedStart < clippedEnd { result.append(LimitSegment(start: clippedStart, end: clippedEnd, amps: window.amps)) }
            }
            guard let next = calendar.date(byAdding: .day, value: 1, to: day) else { break }
            day = next
        }
        return result.sorted { $0.start < $1.start }
    }

    /// `minutes` after local midnight of `day`, resolving a wall time that a DST jump skips to the
    /// first moment after it.
    private func localTime(_ minutes: Int, on day: Date, _ calendar: Calendar) -> Date? {
        if minutes >= 1440 { return calendar.date(byAdding: .day, value: 1, to: day) }
        var components = calendar.dateComponents([.year, .month, .day], from: day)
        components.hour = minutes / 60
        components.minute = minutes % 60
        return calendar.date(from: components)
    }
}
