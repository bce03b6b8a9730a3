import Foundation
@testable import MQTTTapStage
import OCPP
import StageKit
import Testing

/// A health message is written as bytes after the session's opening (`{"v":1,"gateway":…,"charger":…`):
/// it must be exactly what merging the body into the envelope object and serializing it gave.
@Suite("mqtt_tap message spelling")
struct MessageSpellingTests {
    /// How every message was made before: the envelope object, the body's members set into it one by one.
    static func merged(root: String, charger: String, _ body: JSONValue) -> [UInt8] {
        var message: JSONValue = ["v": 1, "gateway": .string(root), "charger": .string(charger)]
        for (key, value) in body.objectValue ?? [] { message[key] = value }
        return message.serialized()
    }

    static let bodies: [JSONValue] = [
        [:],
        ["connector": 1, "status": "Available", "errorCode": "NoError", "timestamp": "2026-11-25T14:00:00Z"],
        ["action": "Authorize", "payload": ["idTag": "hmac-sha256:00", "nested": ["a\"b": [1, 2.5, nil, true]]]],
        ["measurand": "Voltage", "value": "230.1", "phase": "L1-N", "compression": ["algorithm": "sdt", "deviation": 1.15]],
        // Repeats: a body member named like the envelope's, and a key twice (the later value in the earlier place).
        ["charger": "spoofed", "value": 1],
        .object([("a", 1), ("b", 2), ("a", 3)]),
        ["v": 2],
        // Not an object: the envelope alone.
        "text",
    ]

    @Test(arguments: ["CP001", "CP+1/#\u{0}", "ünï\"cödé\\"])
    func aMessageIsTheEnvelopeWithTheBodysMembers(_ charger: String) {
        let heading = MQTTTapStage.Heading(root: "ocpp/gw-1", charger: charger)
        #expect(heading.topic == "ocpp/gw-1/" + Topics.level(charger) + "/")
        for body in Self.bodies {
            let bytes = MQTTTapStage.message(heading, body)
            #expect(bytes == Self.merged(root: "ocpp/gw-1", charger: charger, body), "\(body.jsonText)")
            #expect((try? JSONValue(parsing: bytes)) != nil)
        }
    }

    /// The tap keeps the last three samples of a series, found by time; an older one is gone.
    @Test func aSeriesMemoryKeepsTheLastThreeReadings() {
        let memory = MQTTTapStage.SeriesMemory()
        for second in 1...5 {
            memory.remember(series: "Voltage/L1-N", .init(time: Double(second), value: Double(second), scale: 1,
                                                           message: ["value": .string("\(second)"), "timestamp": .string("t\(second)")]))
        }
        memory.remember(series: "Temperature", .init(time: 1, value: 20, scale: 1, message: ["value": "20", "timestamp": "t1"]))
        for second in 3...5 {
            #expect(memory.point(series: "Voltage/L1-N", Double(second), Double(second), nil)["timestamp"] == .string("t\(second)"))
        }
        // Second 2 is no longer kept: the point is spelled from the newest reading, at its own time.
        let forgotten = memory.point(series: "Voltage/L1-N", 2, 2, nil)
        #expect(forgotten["value"] == "2")
        #expect(forgotten["timestamp"]?.stringValue != "t2")
        #expect(memory.point(series: "Temperature", 1, 20, nil)["timestamp"] == "t1")
        #expect(memory.readings(series: "Voltage/L1-N").map(\.time) == [3, 4, 5])
        #expect(memory.readings(series: "Temperature").map(\.time) == [1])
        // Around the ring a few times: always the last three, oldest first; a repeated time finds the newest.
        var all: [(time: Double, value: Double)] = (1...5).map { (Double($0), Double($0)) }
        for second in 6...20 {
            memory.remember(series: "Voltage/L1-N", .init(time: Double(second / 2), value: Double(second), scale: 1,
                                                           message: ["value": .string("\(second)"), "timestamp": "t"]))
            all.append((Double(second / 2), Double(second)))
            #expect(memory.readings(series: "Voltage/L1-N").map(\.time) == all.suffix(3).map(\.time))
            #expect(memory.readings(series: "Voltage/L1-N").map(\.value) == all.suffix(3).map(\.value))
            #expect(memory.point(series: "Voltage/L1-N", Double(second / 2), Double(second), nil)["value"] == .string("\(second)"))
        }
    }
}
