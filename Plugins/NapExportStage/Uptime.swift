import Foundation

/// One status an EVSE entered at `t` (seconds since 1970).
public struct HistoryEntry: Codable, Sendable, Equatable {
    public var t: Double
    public var s: OCPIStatus
    public init(t: Double, s: OCPIStatus) {
        self.t = t
        self.s = s
    }
}

/// A configured window in which outages do not count against uptime (23 CFR 680.116(b)(3)).
public struct Exemption: Codable, Sendable, Equatable {
    public var from: Double
    public var to: Double
    /// nil: every EVSE.
    public var evseIds: [String]?
    public var reason: String

    public init(from: Double, to: Double, evseIds: [String]?, reason: String) {
        self.from = from
        self.to = to
        self.evseIds = evseIds
        self.reason = reason
    }

    func applies(to evseId: String) -> Bool { evseIds?.contains(evseId) ?? true }
}

/// One EVSE's status history for one month. Bounded: consecutive equal statuses are one entry, and
/// at most `limit` entries are kept; past it further changes are not recorded and `truncated` says so
/// (the month's figures for that EVSE are then marked incomplete).
public struct EVSEHistory: Codable, Sendable, Equatable {
    public var chargerId: String
    public var changes: [HistoryEntry]
    public var truncated: Bool

    public init(chargerId: String, changes: [HistoryEntry] = [], truncated: Bool = false) {
        self.chargerId = chargerId
        self.changes = changes
        self.truncated = truncated
    }

    /// Records a status; returns false when the entry was not kept (same status, or the bound).
    @discardableResult
    mutating func record(_ entry: HistoryEntry, limit: Int) -> Bool {
        if let last = changes.last {
            if last.s == entry.s { return false }
            if entry.t < last.t { return false }
        }
        guard changes.count < limit else {
            truncated = true
            return false
        }
        changes.append(entry)
        return true
    }
}

/// A charger's status history for one month (`chargers/<id>/nap_export/<stage>/history-YYYY-MM.json`).
public struct MonthHistory: Codable, Sendable, Equatable {
    public var month: String
    /// Keyed by EVSE id.
    public var evses: [String: EVSEHistory]
    /// The exemptions configured when it was last written that overlap the month.
    public var exemptions: [Exemption]

    public init(month: String, evses: [String: EVSEHistory] = [:], exemptions: [Exemption] = []) {
        self.month = month
        self.evses = evses
        self.exemptions = exemptions
    }

    public static func fileName(stageId: String, month: String) -> String { "nap_export/\(stageId)/history-\(month).json" }
}

/// Availability arithmetic (NEVI, 23 CFR 680.116(b)):
/// `uptime = (T − (T_outage − T_excluded)) / T × 100`, where T is the observed time, T_outage the
/// time the port was not up and T_excluded the outage inside exemption windows.
public struct UptimeFigures: Sendable, Equatable {
    /// Observed seconds (from the first recorded status, or the window start, to the window end).
    public var total: Double = 0
    public var up: Double = 0
    /// Seconds not up, exempt or not.
    public var outage: Double = 0
    /// Seconds of outage inside exemption windows.
    public var excluded: Double = 0
    /// Seconds in UNKNOWN (part of `outage`).
    public var unknown: Double = 0

    public init() {}

    /// The percentage, or nil when nothing was observed.
    public var percent: Double? { total > 0 ? (total - (outage - excluded)) / total * 100 : nil }

    /// Figures for `entries` (sorted by time) over `[from, to)`. Time before the first entry is not observed.
    public static func compute(entries: [HistoryEntry], from: Double, to: Double, exemptions: [(from: Double, to: Double)]) -> UptimeFigures {
        var figures = UptimeFigures()
        guard to > from else { return figures }
        for (index, entry) in entries.enumerated() {
            let start = max(entry.t, from)
            let end = min(index + 1 < entries.count ? entries[index + 1].t : to, to)
            guard end > start else { continue }
            let span = end - start
            figures.total += span
            if entry.s.isUp {
                figures.up += span
            } else {
                figures.outage += span
                if entry.s == .unknown { figures.unknown += span }
                figures.excluded += overlap(start, end, exemptions)
            }
        }
        return figures
    }

    /// Seconds of `[start, end)` covered by the union of `windows`.
    static func overlap(_ start: Double, _ end: Double, _ windows: [(from: Double, to: Double)]) -> Double {
        let clipped = windows.map { (max($0.from, start), min($0.to, end)) }.filter { $0.1 > $0.0 }.sorted { $0.0 < $1.0 }
        var covered = 0.0
        var reach = start
        for (from, to) in clipped where to > reach {
            covered += to - max(from, reach)
            reach = to
        }
        return covered
    }
}

/// Months as `YYYY-MM` in UTC.
public enum Month {
    static var utc: Calendar {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return calendar
    }

    public static func key(_ time: Double) -> String {
        let parts = utc.dateComponents([.year, .month], from: Date(timeIntervalSince1970: time))
        return String(format: "%04d-%02d", parts.year ?? 1970, parts.month ?? 1)
    }

    /// The month's first and next month's first second; nil for a malformed key.
    public static func bounds(_ key: String) -> (start: Double, end: Double)? {
        let parts = key.split(separator: "-")
        guard parts.count == 2, parts[0].count == 4, parts[1].count == 2, let year = Int(parts[0]), let month = Int(parts[1]),
              (1...12).contains(month), let start = utc.date(from: DateComponents(year: year, month: month, day: 1)),
              let end = utc.date(byAdding: .month, value: 1, to: start) else { return nil }
        return (start.timeIntervalSince1970, end.timeIntervalSince1970)
    }

    public static func previous(_ key: String) -> String {
        guard let bounds = bounds(key) else { return key }
        return Month.key(bounds.start - 1)
    }
}

/// `ocpp-gateway report uptime`: the month's figures per EVSE, as CSV.
public enum UptimeReport {
    public static let header = "evse_id,charger_id,month,observed_minutes,up_minutes,outage_minutes,excluded_minutes,unknown_minutes,uptime_percent,complete"

    /// Reads every `nap_export` history of `month` under `<state_dir>/chargers` and returns the CSV
    /// (a header and one row per EVSE, sorted by EVSE id). `now` ends the current month early.
    public static func csv(stateDirectory: String, month: String, now: Double) throws -> String {
        guard let bounds = Month.bounds(month) else { throw ReportError("'\(month)' is not a month like 2026-11") }
        let end = min(bounds.end, now)
        var rows: [(String, String)] = []
        let chargers = stateDirectory + "/chargers"
        let manager = FileManager.default
        for charger in ((try? manager.contentsOfDirectory(atPath: chargers)) ?? []).sorted() {
            let stages = chargers + "/" + charger + "/nap_export"
            for stage in ((try? manager.contentsOfDirectory(atPath: stages)) ?? []).sorted() {
                let path = stages + "/" + stage + "/history-\(month).json"
                guard let data = manager.contents(atPath: path) else { continue }
                let history: MonthHistory
                do {
                    history = try JSONDecoder().decode(MonthHistory.self, from: data)
                } catch {
                    throw ReportError("\(path): corrupt: \(error)")
                }
                for (evseId, evse) in history.evses {
                    let windows = history.exemptions.filter { $0.applies(to: evseId) }.map { (from: $0.from, to: $0.to) }
                    let figures = UptimeFigures.compute(entries: evse.changes, from: bounds.start, to: end, exemptions: windows)
                    let percent = figures.percent.map { String(format: "%.3f", $0) } ?? ""
                    let fields = [evseId, evse.chargerId, month, minutes(figures.total), minutes(figures.up), minutes(figures.outage),
                                  minutes(figures.excluded), minutes(figures.unknown), percent, evse.truncated ? "false" : "true"]
                    rows.append((evseId, fields.map(csvField).joined(separator: ",")))
                }
            }
        }
        return ([header] + rows.sorted { $0.0 < $1.0 }.map(\.1)).joined(separator: "\n") + "\n"
    }

    static func minutes(_ seconds: Double) -> String { String(format: "%.1f", seconds / 60) }

    static func csvField(_ text: String) -> String {
        text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" }) ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
    }
}

public struct ReportError: Error, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}
