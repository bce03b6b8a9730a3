public import Foundation

/// Reads an OCPP `dateTime` (RFC 3339, with or without fractional seconds): the common spellings by hand
/// (`InternetDateTime`), the others as `ISO8601DateFormatter` reads them. The one date reader of the
/// gateway: making an `ISO8601DateFormatter` per call cost ~1,000,000 instructions, more than the rest of
/// the full pipeline's work on a MeterValues sample (`ocpp-bench --profile 4000 --callgrind --load mix`).
public func parseOCPPDate(_ text: String) -> Date? {
    if let date = InternetDateTime.date(text) { return date }
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let date = formatter.date(from: text) { return date }
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.date(from: text)
}

/// An OCPP `dateTime` in UTC with milliseconds (`2026-11-25T12:13:32.123Z`), written by hand: the spelling
/// `ISO8601DateFormatter` with `.withInternetDateTime, .withFractionalSeconds` gives, without making one
/// per call. Load generators and development peers stamp every message with it; the formatter was a third
/// of `ocpp-bench`'s own time in the full pipeline's saturation run. To the nearest millisecond; years
/// 1600–9999 by hand (the Gregorian calendar; the formatter switches to the Julian one before 1582), others
/// by the formatter.
public func formatOCPPDate(_ date: Date) -> String {
    InternetDateTime.string(date) ?? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }()
}

/// OCPP's dateTime read without a formatter in the common spellings: `YYYY-MM-DDTHH:MM:SS`, with no
/// fraction or exactly three digits of one, then `Z` or `±HH:MM`. Everything else (other fractions,
/// years before 1600, out-of-range fields, other spellings) gives nil and is left to
/// `ISO8601DateFormatter`, so what was read before is read the same. The value is the one the formatter
/// gives (whole milliseconds since 1970 / 1000).
enum InternetDateTime {
    static func date(_ text: String) -> Date? {
        seconds(text).map { Date(timeIntervalSince1970: $0) }
    }

    static func seconds(_ text: String) -> Double? {
        var text = text
        return text.withUTF8 { bytes -> Double? in
            let count = bytes.count
            guard count >= 20, bytes[4] == 0x2D, bytes[7] == 0x2D, bytes[10] == 0x54, bytes[13] == 0x3A, bytes[16] == 0x3A else { return nil }
            func number(_ start: Int, _ length: Int) -> Int? {
                var value = 0
                for index in start..<(start + length) {
                    let digit = Int(bytes[index]) &- 0x30
                    guard digit >= 0, digit <= 9 else { return nil }
                    value = value * 10 + digit
                }
                return value
            }
            guard let year = number(0, 4), let month = number(5, 2), let day = number(8, 2), let hour = number(11, 2),
                  let minute = number(14, 2), let second = number(17, 2),
                  year >= 1600, (1...12).contains(month), day >= 1, day <= daysIn(month, of: year), hour < 24, minute < 60, second < 60
            else { return nil }
            var index = 19
            var milliseconds = 0
            if bytes[index] == 0x2E {
                guard count >= 24, let fraction = number(20, 3) else { return nil }
                milliseconds = fraction
                index = 23
            }
            var offset = 0
            if count == index + 1, bytes[index] == 0x5A {
                offset = 0
            } else if count == index + 6, bytes[index] == 0x2B || bytes[index] == 0x2D, bytes[index + 3] == 0x3A,
                      let hours = number(index + 1, 2), let minutes = number(index + 4, 2), hours < 24, minutes < 60 {
                offset = (hours * 60 + minutes) * 60 * (bytes[index] == 0x2D ? -1 : 1)
            } else {
                return nil
            }
            let seconds = daysSince1970(year: year, month: month, day: day) * 86_400 + hour * 3600 + minute * 60 + second - offset
            return Double(seconds * 1000 + milliseconds) / 1000
        }
    }

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` to the nearest millisecond; nil outside years 1600–9999.
    static func string(_ date: Date) -> String? {
        let interval = date.timeIntervalSince1970
        guard interval.isFinite, abs(interval) < 300_000_000_000 else { return nil }
        let totalMilliseconds = Int((interval * 1000).rounded())
        let milliseconds = totalMilliseconds - (totalMilliseconds >= 0 ? totalMilliseconds / 1000 : (totalMilliseconds - 999) / 1000) * 1000
        let totalSeconds = (totalMilliseconds - milliseconds) / 1000
        let days = totalSeconds >= 0 ? totalSeconds / 86_400 : (totalSeconds - 86_399) / 86_400
        let secondOfDay = totalSeconds - days * 86_400
        let (year, month, day) = civil(daysSince1970: days)
        guard (1600...9999).contains(year) else { return nil }
        return String(unsafeUninitializedCapacity: 24) { buffer in
            func put(_ value: Int, _ digits: Int, at start: Int) {
                var value = value
                for index in stride(from: start + digits - 1, through: start, by: -1) {
                    buffer[index] = UInt8(0x30 + value % 10)
                    value /= 10
                }
            }
            put(year, 4, at: 0); buffer[4] = 0x2D; put(month, 2, at: 5); buffer[7] = 0x2D; put(day, 2, at: 8)
            buffer[10] = 0x54; put(secondOfDay / 3600, 2, at: 11); buffer[13] = 0x3A; put(secondOfDay / 60 % 60, 2, at: 14)
            buffer[16] = 0x3A; put(secondOfDay % 60, 2, at: 17); buffer[19] = 0x2E; put(milliseconds, 3, at: 20); buffer[23] = 0x5A
            return 24
        }
    }

    /// The date of a day counted from 1970-01-01 (H. Hinnant's civil_from_days).
    private static func civil(daysSince1970 days: Int) -> (year: Int, month: Int, day: Int) {
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let shifted = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * shifted + 2) / 5 + 1
        let month = shifted < 10 ? shifted + 3 : shifted - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    private static func daysIn(_ month: Int, of year: Int) -> Int {
        switch month {
        case 2: (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    /// Days from 1970-01-01 in the proleptic Gregorian calendar (H. Hinnant's days_from_civil).
    private static func daysSince1970(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
