import Foundation
@testable import MQTTTapStage
import StageKit
import Testing

/// Topic levels are escaped by `Topics.level` (peer-chosen names never address other levels). It skips the
/// walk over Characters when no byte needs it, and must produce exactly what the walk produces.
@Suite("mqtt_tap topics")
struct TopicTests {
    static let names = [
        "Voltage/L1-N", "Energy.Active.Import.Register", "Current.Import/L1", "Temperature", "", "/", "//", "a//b", "a/",
        "+", "#", "a+b/c#d", "x\u{0}y", "Vol+tage/L1", "ünïcödé/ph", "/\u{301}", "a/\u{301}b", "+\u{301}", "#\u{301}/L1",
        "\u{0}\u{301}", "e\u{301}/L1", "👩‍👩‍👧/L2", "CHARGER-01", "CP/01", "CP+01", "CP#01",
    ]

    /// The escaping by Characters, as `Topics.level` always did it.
    static func walked(_ text: some StringProtocol) -> String {
        String(text.map { "+#/\u{0}".contains($0) ? "_" : $0 })
    }

    @Test(arguments: names)
    func telemetryTopicsAreTheEscapedLevels(_ series: String) {
        let reference = "telemetry/" + series.split(separator: "/", omittingEmptySubsequences: false).map { Self.walked($0) }.joined(separator: "/")
        #expect(Array(MQTTTapStage.telemetryTopic(series).utf8) == Array(reference.utf8), "\(series.debugDescription)")
    }

    @Test(arguments: names)
    func aChargerIdLevelIsEscapedAsTheWalkEscapesIt(_ id: String) {
        #expect(Array(Topics.level(id).utf8) == Array(Self.walked(id).utf8), "\(id.debugDescription)")
    }
}
