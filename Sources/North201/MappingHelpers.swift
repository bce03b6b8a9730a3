import OCPP

/// Small helpers for building and reading payloads.
extension JSONValue {
    /// An object from members, leaving out the nil ones (optional fields the source did not have).
    static func members(_ pairs: [(String, JSONValue?)]) -> JSONValue {
        .object(pairs.compactMap { key, value in value.map { (key, $0) } })
    }
}

enum Map {
    /// `value` when it is one of `allowed`, else `fallback`.
    static func enumValue(_ value: String?, _ allowed: Set<String>, fallback: String) -> String {
        guard let value, allowed.contains(value) else { return fallback }
        return value
    }

    /// A string truncated to `limit` characters (CiString limits of the target schema).
    static func clip(_ value: JSONValue?, _ limit: Int) -> JSONValue? {
        guard let text = value?.stringValue else { return nil }
        return .string(String(text.prefix(limit)))
    }

    /// Epoch seconds as an RFC 3339 UTC time, whole seconds (`2026-01-01T00:00:00Z`).
    static func timestamp(_ seconds: Double) -> String {
        let total = Int(seconds.rounded(.down))
        let days = total >= 0 ? total / 86_400 : (total - 86_399) / 86_400
        let secondOfDay = total - days * 86_400
        // Civil from days (Howard Hinnant's algorithm).
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        var year = yoe + era * 400
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        if month <= 2 { year += 1 }
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        var yearText = String(year)
        while yearText.count < 4 { yearText = "0" + yearText }
        return "\(yearText)-\(two(month))-\(two(day))T\(two(secondOfDay / 3600)):\(two(secondOfDay % 3600 / 60)):\(two(secondOfDay % 60))Z"
    }
}
