import Foundation
import OCPP
import Outbox

/// The outbox's disk cost (`ocpp-bench --outbox`): the write cost per queued message (one durable append,
/// WAL + synchronous=FULL, as the charger waits for it) and the replay throughput of 10,000 queued messages on
/// the outbox's side (read the oldest, rewrite the transaction id, remove it in its own durable commit).
/// No network: on a real link each replayed CALL also waits one CSMS round trip (one CALL in flight), so
/// the replay rate is about 1 / (replay cost per message + round trip).
enum OutboxBench {
    struct Result: Codable {
        var messages: Int
        var payloadBytes: Int
        var appendMicrosecondsMean: Double
        var appendMicrosecondsP50: Double
        var appendMicrosecondsP99: Double
        var appendsPerSecond: Double
        var replayMessagesPerSecond: Double
        var replayMicrosecondsPerMessage: Double
        var fileBytesPerMessage: Double
    }

    static func write(out: String, messages: Int = 10_000) throws {
        let folder = NSTemporaryDirectory() + "ocpp-bench-outbox-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let path = folder + "/outbox.sqlite"
        let database = try OutboxDatabase(path: path, limits: OutboxLimits(maxBytesPerCharger: 1 << 30, maxBytesTotal: 1 << 30))
        // A StartTransaction, then MeterValues of that transaction as a 1.6 charger sends them (4 measurands).
        let start = Array(#"{"connectorId":1,"idTag":"04A2B3C4","meterStart":12000,"timestamp":"2026-01-01T10:00:00Z"}"#.utf8)
        let local = try database.append(NewMessage(action: "StartTransaction", payload: start, kind: .transaction, connector: 1,
                                                   enqueuedAt: 0)).localTransactionId ?? 0
        var payloadBytes = start.count
        var durations: [Double] = []
        durations.reserveCapacity(messages)
        let clock = ContinuousClock()
        let began = clock.now
        for index in 1..<messages {
            let payload = Array("""
                {"connectorId":1,"transactionId":\(local),"meterValue":[{"timestamp":"2026-01-01T10:\(String(format: "%02d", (index / 60) % 60)):\(String(format: "%02d", index % 60))Z","sampledValue":[{"value":"\(12000 + index)","measurand":"Energy.Active.Import.Register","unit":"Wh","context":"Sample.Periodic","location":"Outlet"},{"value":"11040","measurand":"Power.Active.Import","unit":"W"},{"value":"16.02","measurand":"Current.Import","phase":"L1","unit":"A"},{"value":"231.4","measurand":"Voltage","phase":"L1-N","unit":"V"}]}]}
                """.utf8)
            payloadBytes += payload.count
            let before = clock.now
            _ = try database.append(NewMessage(action: "MeterValues", payload: payload, kind: .transaction, connector: 1,
                                               transactionId: local, enqueuedAt: Double(index)))
            durations.append(seconds(clock.now - before) * 1e6)
        }
        let appendTotal = seconds(clock.now - began)
        let fileBytes = ["", "-wal"].reduce(0) { sum, suffix in
            sum + ((try? FileManager.default.attributesOfItem(atPath: path + suffix)[.size] as? Int) ?? 0)
        }

        // Replay: oldest first, transaction id rewritten, removed in its own commit (the CSMS's answer is instant here).
        let replayStart = clock.now
        var replayed = 0
        while let row = try database.next() {
            var payload = try JSONValue(parsing: row.payload)
            if row.action == "MeterValues", case .object(var fields) = payload,
               let index = fields.firstIndex(where: { $0.key == "transactionId" }) {
                fields[index].value = .number(4242)
                payload = .object(fields)
            }
            _ = FrameEncoder.call(id: "bench-\(row.seq)", action: row.action, payload: payload)
            try database.delivered(seq: row.seq, mapping: row.action == "StartTransaction" ? TransactionMapping(localId: local, csmsId: 4242) : nil)
            replayed += 1
        }
        let replayTotal = seconds(clock.now - replayStart)
        durations.sort()
        let result = Result(
            messages: messages, payloadBytes: payloadBytes,
            appendMicrosecondsMean: durations.reduce(0, +) / Double(durations.count),
            appendMicrosecondsP50: durations[durations.count / 2], appendMicrosecondsP99: durations[durations.count * 99 / 100],
            appendsPerSecond: Double(messages - 1) / appendTotal,
            replayMessagesPerSecond: Double(replayed) / replayTotal, replayMicrosecondsPerMessage: replayTotal / Double(replayed) * 1e6,
            fileBytesPerMessage: Double(fileBytes) / Double(messages))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FileManager.default.createDirectory(atPath: (out as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try encoder.encode(result).write(to: URL(fileURLWithPath: out))
        print(String(format: "outbox: %d messages, append %.0f µs mean (p50 %.0f, p99 %.0f) = %.0f/s durable; replay %.0f messages/s (%.0f µs each, no network); %.0f bytes on disk per message",
                     messages, result.appendMicrosecondsMean, result.appendMicrosecondsP50, result.appendMicrosecondsP99,
                     result.appendsPerSecond, result.replayMessagesPerSecond, result.replayMicrosecondsPerMessage, result.fileBytesPerMessage))
    }

    private static func seconds(_ duration: Duration) -> Double {
        Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
    }
}
