import Foundation
@testable import OCPP
import Testing

/// The health channel reads every sample's timestamp, smart_charging every StartTransaction's. Making an ISO8601DateFormatter per sample cost
/// ~1,000,000 instructions a sample, 80 % of the full pipeline's cost on the benchmark's charger mix
/// (`ocpp-bench --profile 4000 --callgrind --pipeline full --load mix`); the common spellings are now read by hand, and must give exactly the formatter's value
/// (the compressor matches archived points to samples by time, with ==).
@Suite("OCPP dateTime")
struct InternetDateTimeTests {
    /// What the formatter says, the way the tap asked it before.
    static func formatter(_ text: String) -> Date? {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        if let date = formatter.date(from: text) { return date }
        formatter.formatOptions = [.withInternetDateTime]
        return formatter.date(from: text)
    }

    static let common = [
        "2026-11-25T12:13:32.123Z", "2026-11-25T12:13:32Z", "2026-11-25T12:13:32.000Z", "2026-11-25T12:13:32.999Z",
        "1970-01-01T00:00:00Z", "2024-02-29T23:59:59.001Z", "2000-02-29T00:00:00Z", "2100-03-01T00:00:00.500Z",
        "2026-11-25T12:13:32+01:00", "2026-11-25T00:30:00.250-05:30", "2026-12-31T23:59:59.999+14:00", "1600-01-01T00:00:00Z",
        "9999-12-31T23:59:59.999Z", "2026-06-15T08:00:00.007+00:00", "2026-06-15T08:00:00-00:00",
    ]

    @Test(arguments: common)
    func theCommonSpellingsAreReadWithoutAFormatterAsTheFormatterReadsThem(_ text: String) throws {
        let fast = try #require(InternetDateTime.seconds(text), "'\(text)' should not need a formatter")
        let expected = try #require(Self.formatter(text))
        #expect(fast == expected.timeIntervalSince1970, "'\(text)'")
        #expect(parseOCPPDate(text) == expected, "'\(text)'")
    }

    /// Everything else goes to the formatter, which reads it as before (or refuses it as before).
    @Test(arguments: [
        "2026-11-25T12:13:32.1Z", "2026-11-25T12:13:32.123456Z", "2026-11-25t12:13:32Z", "2026-11-25T12:13:32", "2026-11-25 12:13:32Z",
        "2026-02-29T12:00:00Z", "2026-13-01T00:00:00Z", "2026-11-31T00:00:00Z", "2026-11-25T24:00:00Z", "2026-11-25T12:60:00Z",
        "2026-11-25T12:13:60Z", "2026-11-25T12:13:32+0100", "2026-11-25T12:13:32+24:00", "1582-10-10T00:00:00Z", "+2026-11-25T12:13:32Z",
        "2026-11-25T12:13:32.12xZ", "2026-1-25T12:13:32Z", "", "not a date", "2026-11-25T12:13:32Z ", "２０２６-11-25T12:13:32Z",
    ])
    func otherSpellingsAreLeftToTheFormatter(_ text: String) {
        #expect(InternetDateTime.seconds(text) == nil, "'\(text)'")
        #expect(parseOCPPDate(text) == Self.formatter(text), "'\(text)'")
    }

    /// Every day of four years (one a leap year) at a few times and offsets: the calendar arithmetic.
    @Test func everyDayOfFourYearsMatchesTheFormatter() throws {
        let start = try #require(Self.formatter("2023-01-01T00:00:00Z")).timeIntervalSince1970
        let spelling = ISO8601DateFormatter()
        spelling.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for day in 0..<(4 * 366) {
            let date = Date(timeIntervalSince1970: start + Double(day) * 86_400 + Double(day % 86) * 1003.017)
            let text = spelling.string(from: date)
            let fast = try #require(InternetDateTime.seconds(text), "'\(text)'")
            #expect(fast == Self.formatter(text)?.timeIntervalSince1970, "'\(text)'")
        }
    }

    /// Writing: the formatter's spelling for whole milliseconds across four centuries, leap days and instants
    /// before 1970 (and before 1600, which the formatter writes in the Julian calendar); the string reads back
    /// to the same millisecond.
    @Test func writingGivesTheFormattersSpelling() throws {
        let spelling = ISO8601DateFormatter()
        spelling.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        var instants: [Double] = [0, -0.001, -1, 0.999, 951_782_400, 1_709_164_799.999, 1_795_618_254.763, -11_644_473_600.5,
                                  253_402_300_799.999, -62_135_596_800, 4_102_444_800.25]
        var seed: UInt64 = 0x9E37_79B9_7F4A_7C15
        for _ in 0..<2000 {
            seed = seed &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            instants.append(Double(Int64(bitPattern: seed >> 1) % 300_000_000_000_000 - 100_000_000_000_000) / 1000)
        }
        for instant in instants {
            let date = Date(timeIntervalSince1970: instant)
            let expected = spelling.string(from: date)
            #expect(formatOCPPDate(date) == expected, "\(instant)")
            if let fast = InternetDateTime.string(date) {
                #expect(InternetDateTime.seconds(fast) == instant, "\(instant)")
            }
        }
    }
}
