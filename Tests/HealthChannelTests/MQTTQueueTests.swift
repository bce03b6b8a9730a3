import Foundation
import HealthChannel
import Logging
import Synchronization
import Testing

@Suite("MQTT publisher queue bound")
struct MQTTQueueTests {
    @Test func aReservationHoldsItsPlaceUntilCommittedOrCancelled() {
        var queue = MQTTQueueAccounting(limit: 3, tracksAcknowledgements: true)
        // Three publishers between their check and libmosquitto's answer: the fourth must not get in.
        let first = queue.reserve(), second = queue.reserve(), third = queue.reserve(), fourth = queue.reserve()
        #expect(first && second && third)
        #expect(!fourth, "the bound counts publishes under way, not only committed ids")
        #expect(queue.dropped == 1)
        queue.commit(mid: 1)
        queue.commit(mid: 2)
        queue.cancel()
        #expect(queue.occupied == 2 && queue.dropped == 2)
        let again = queue.reserve(), beyond = queue.reserve()
        #expect(again && !beyond)
        #expect(queue.peak == 3)
    }

    @Test func anAcknowledgementBeforeTheCommitLeavesNoStaleId() {
        var queue = MQTTQueueAccounting(limit: 2, tracksAcknowledgements: true)
        _ = queue.reserve()
        // libmosquitto's thread sees the PUBACK before the publishing thread records the id.
        let settled = queue.acknowledge(mid: 7)
        #expect(!settled)
        queue.commit(mid: 7)
        #expect(queue.occupied == 0, "the place is free again")
        #expect(queue.awaitingAcknowledgement == 0 && queue.acknowledged == 1)
        let one = queue.reserve(), two = queue.reserve()
        #expect(one && two, "the whole queue is usable")
    }

    @Test func strayAndQoS0AcknowledgementsChangeNothing() {
        var queue = MQTTQueueAccounting(limit: 2, tracksAcknowledgements: true)
        let stray = queue.acknowledge(mid: 9)
        #expect(!stray, "no reservation open: not ours")
        _ = queue.reserve()
        queue.commit(mid: 1)
        let other = queue.acknowledge(mid: 9)
        #expect(!other)
        #expect(queue.occupied == 1 && queue.acknowledged == 0)
        var qos0 = MQTTQueueAccounting(limit: 1, tracksAcknowledgements: false)
        for mid in 1...5 {
            let admitted = qos0.reserve()
            #expect(admitted)
            _ = qos0.acknowledge(mid: Int32(mid))
            qos0.commit(mid: Int32(mid))
        }
        #expect(qos0.occupied == 0, "QoS 0 takes no place after its publish")
    }

    @Test func concurrentPublishersAgainstARealBrokerNeverExceedTheBound() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/mosquitto") else {
            Issue.record("mosquitto is not installed (apt-get install mosquitto)")
            return
        }
        let broker = try Broker()
        defer { broker.stop() }
        let limit = 20
        let publisher = try MQTTPublisher(settings: MQTTSettings(host: "127.0.0.1", port: broker.port, clientId: "queue-test",
                                                                 topicPrefix: "test", qos: 1, queueLimit: limit),
                                          logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        try publisher.start()
        let deadline = ContinuousClock.now + .seconds(10)
        // Connected, and its "online" announcement (published right after the connection flag is set) acknowledged.
        while !publisher.statistics.connected || publisher.statistics.inFlight > 0 || publisher.statistics.acknowledged < 1,
              ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        try #require(publisher.statistics.connected)
        let before = publisher.statistics
        let publishers = 8, messages = 1_000
        let highest = HighWaterMark()
        await withTaskGroup(of: Void.self) { group in
            for n in 0..<publishers {
                group.addTask {
                    for m in 0..<messages {
                        publisher.publish(topic: "test/queue/\(n)", payload: Array("\(m)".utf8), retain: false)
                        let inFlight = publisher.statistics.inFlight
                        highest.record(inFlight)
                        if m % 50 == 0 { await Task.yield() }
                    }
                }
            }
        }
        while publisher.statistics.inFlight > 0, ContinuousClock.now < deadline + .seconds(10) {
            try await Task.sleep(for: .milliseconds(10))
        }
        let after = publisher.statistics
        #expect(highest.value <= limit)
        #expect(publisher.peakQueued <= limit)
        #expect(after.inFlight == 0, "every acknowledgement settled its message: no stale ids")
        #expect((after.acknowledged - before.acknowledged) + (after.dropped - before.dropped) == publishers * messages)
        #expect(after.dropped > before.dropped, "the bound was reached")
        await publisher.shutdown(timeout: .seconds(1))
    }
}

final class HighWaterMark: Sendable {
    private let highest = Mutex(0)
    func record(_ value: Int) { highest.withLock { $0 = max($0, value) } }
    var value: Int { highest.withLock { $0 } }
}

/// A throw-away mosquitto on a free port.
final class Broker {
    let port: Int
    let process = Process()

    init() throws {
        port = Self.freePort()
        let config = FileManager.default.temporaryDirectory.appendingPathComponent("mosquitto-\(UUID().uuidString).conf").path
        try "listener \(port) 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 100000\n"
            .write(toFile: config, atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/mosquitto")
        process.arguments = ["-c", config]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = ContinuousClock.now + .seconds(10)
        while !Self.accepts(port), ContinuousClock.now < deadline { usleep(20_000) }
    }

    private static func address(_ port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        return address
    }

    static func freePort() -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = address(0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(descriptor, $0, length) } }
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) } }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func accepts(_ port: Int) -> Bool {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = address(port)
        return withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        } == 0
    }

    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}
