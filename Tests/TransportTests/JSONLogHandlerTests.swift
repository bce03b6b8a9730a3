import Foundation
import Gateway
import Logging
import Synchronization
import Testing

/// `--log-format json`: every record is one line holding one JSON object, whatever a peer put in it.
@Suite struct JSONLogHandlerTests {
    final class Lines: Sendable {
        let records = Mutex<[String]>([])
        var all: [String] { records.withLock { $0 } }
    }

    func logger(_ lines: Lines, label: String = "ocpp-gateway") -> Logger {
        let output = JSONLogOutput { record in lines.records.withLock { $0.append(record) } }
        var logger = Logger(label: label) { label in JSONLogHandler(label: label, output: output) }
        logger.logLevel = .debug
        return logger
    }

    /// The one object of a record, after checking that it is exactly one line.
    func object(_ record: String) throws -> [String: Any] {
        #expect(record.hasSuffix("\n"))
        #expect(record.dropLast().allSatisfy { $0 != "\n" && $0 != "\r" }, "no line break inside a record")
        let parsed = try JSONSerialization.jsonObject(with: Data(record.utf8))
        return try #require(parsed as? [String: Any])
    }

    @Test func aRecordHasTimeLevelMessageLoggerAndMetadataAsFields() throws {
        let lines = Lines()
        logger(lines).info("admin endpoint up", metadata: ["url": "http://127.0.0.1:9100/metrics", "port": "\(9100)"])
        let record = try object(try #require(lines.all.first))
        #expect(record["level"] as? String == "info")
        #expect(record["msg"] as? String == "admin endpoint up")
        #expect(record["logger"] as? String == "ocpp-gateway")
        #expect(record["url"] as? String == "http://127.0.0.1:9100/metrics")
        #expect(record["port"] as? String == "9100")
        let ts = try #require(record["ts"] as? String)
        #expect(ts.hasSuffix("Z"))
        #expect((try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(ts)) != nil, "RFC 3339 with milliseconds: \(ts)")
    }

    @Test func controlCharactersAnywhereAreEscapedAndSurviveTheRoundTrip() throws {
        let hostile = "CP001\n{\"level\":\"critical\",\"msg\":\"forged\"}\r\u{0}\u{1B}[31m\t\u{7F}\u{2028}\u{2029}\\\"é🔌"
        let lines = Lines()
        logger(lines, label: "south\n\(hostile)").warning("\(hostile)", metadata: [
            "charger": "\(hostile)",
            "key\n\u{1}": "value",
            "nested": ["list": [.string(hostile), "plain"], "map": ["inner\u{7}": .string(hostile)]],
        ])
        #expect(lines.all.count == 1)
        let raw = try #require(lines.all.first)
        // No raw control character or line separator in the record except its final newline.
        let offending = raw.unicodeScalars.dropLast().filter { $0.value < 0x20 || $0.value == 0x7F || $0 == "\u{2028}" || $0 == "\u{2029}" }
        #expect(offending.isEmpty, "unescaped: \(offending.map(\.value))")
        let record = try object(raw)
        #expect(record["msg"] as? String == hostile)
        #expect(record["charger"] as? String == hostile)
        #expect(record["logger"] as? String == "south\n\(hostile)")
        #expect(record["key\n\u{1}"] as? String == "value")
        let nested = try #require(record["nested"] as? [String: Any])
        #expect(nested["list"] as? [String] == [hostile, "plain"])
        #expect((nested["map"] as? [String: String])?["inner\u{7}"] == hostile)
        #expect(record["level"] as? String == "warning", "the forged level stays inside the message")
    }

    @Test func metadataCannotOverwriteTheRecordsOwnFields() throws {
        let lines = Lines()
        logger(lines).error("real message", metadata: ["msg": "fake", "level": "trace", "ts": "yesterday"])
        let record = try object(try #require(lines.all.first))
        #expect(record["msg"] as? String == "real message")
        #expect(record["level"] as? String == "error")
        #expect(record["metadata.msg"] as? String == "fake")
        #expect(record["metadata.level"] as? String == "trace")
        #expect(record["metadata.ts"] as? String == "yesterday")
    }

    @Test func handlerMetadataIsMergedAndExplicitMetadataWins() throws {
        let lines = Lines()
        var logger = logger(lines)
        logger[metadataKey: "charger"] = "CP001"
        logger[metadataKey: "stage"] = "firewall"
        logger.debug("frame", metadata: ["stage": "identity"])
        let record = try object(try #require(lines.all.first))
        #expect(record["charger"] as? String == "CP001")
        #expect(record["stage"] as? String == "identity")
        #expect(record["level"] as? String == "debug")
    }

    /// Records larger than the pipe itself, from eight threads at once, into a pipe (what journald or a
    /// log shipper reads): every line read back is one whole record. Plain threads, not tasks: the
    /// cooperative pool has one thread per core, and a blocked reader would leave the writers none.
    @Test func concurrentLoggersOnAPipeNeverShareOrSplitALine() throws {
        var fds: [Int32] = [0, 0]
        #expect(pipe(&fds) == 0)
        let (readEnd, writeEnd) = (fds[0], fds[1])
        let received = Mutex(Data())
        let done = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let count = read(readEnd, &buffer, buffer.count)
                if count <= 0 { break }
                received.withLock { $0.append(contentsOf: buffer[0..<count]) }
            }
            done.signal()
        }
        let output = JSONLogOutput(fileDescriptor: writeEnd)
        let logger = Logger(label: "load") { label in JSONLogHandler(label: label, output: output) }
        let payload = String(repeating: "x", count: 100_000)  // more than a pipe holds (64 KiB)
        let writers = DispatchGroup()
        for thread in 0..<8 {
            writers.enter()
            Thread.detachNewThread {
                for n in 0..<10 { logger.info("frame", metadata: ["thread": "\(thread)", "n": "\(n)", "payload": "\(payload)"]) }
                writers.leave()
            }
        }
        writers.wait()
        close(writeEnd)
        done.wait()
        close(readEnd)
        let text = String(decoding: received.withLock { $0 }, as: UTF8.self)
        let records = text.split(separator: "\n", omittingEmptySubsequences: false).dropLast()
        #expect(records.count == 80)
        var seen = Set<String>()
        for raw in records {
            let record = try object(String(raw) + "\n")
            #expect(record["payload"] as? String == payload)
            seen.insert("\(record["thread"] ?? "")/\(record["n"] ?? "")")
        }
        #expect(seen.count == 80)
    }
}
