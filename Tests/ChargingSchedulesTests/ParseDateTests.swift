@testable import ChargingSchedules
@testable import OCPP
import Foundation
import Testing

/// `parseDate` reads every StartTransaction's timestamp (smart_charging) and every profile's dates:
/// it made an ISO8601DateFormatter per call (~930,000 instructions, `ocpp-bench --profile 4000 --callgrind
/// --pipeline full --load mix`); the common spellings are now read by hand and must give the formatter's value.
@Suite("parseDate")
struct ParseDateTests {
    static func formatter(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }

    @Test(arguments: [
        "2026-11-25T12:13:32.123Z", "2026-11-25T12:13:32Z", "2024-02-29T23:59:59.001Z", "2026-11-25T00:30:00.250-05:30",
        "2026-12-31T23:59:59.999+14:00", "1600-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z",
        // Left to the formatter: read as before, or refused as before.
        "2026-11-25T12:13:32.1Z", "2026-11-25T12:13:32.123456Z", "2026-02-29T12:00:00Z", "2026-11-25T24:00:00Z",
        "2026-11-25T12:13:32+0100", "1582-10-10T00:00:00Z", "2026-11-25T12:13:32", "", "not a date",
    ])
    func readsWhatTheFormatterReads(_ text: String) {
        #expect(parseDate(text) == Self.formatter(text), "'\(text)'")
    }

    @Test(arguments: ["2026-11-25T12:13:32.123Z", "2026-11-25T12:13:32Z", "2026-11-25T00:30:00.250-05:30"])
    func theCommonSpellingsNeedNoFormatter(_ text: String) {
        #expect(InternetDateTime.seconds(text) == Self.formatter(text)?.timeIntervalSince1970, "'\(text)'")
    }

    @Test func everyDayOfFourYearsMatchesTheFormatter() throws {
        let start = try #require(Self.formatter("2023-01-01T00:00:00Z")).timeIntervalSince1970
        let spelling = ISO8601DateFormatter()
        spelling.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for day in 0..<(4 * 366) {
            let text = spelling.string(from: Date(timeIntervalSince1970: start + Double(day) * 86_400 + Double(day % 86) * 1003.017))
            #expect(parseDate(text) == Self.formatter(text), "'\(text)'")
        }
    }
}
