import Logging
import OCPP
import Router
import StageKit
import Testing

/// The CALL timeouts run on one timer per session that is left armed while CALLs keep flowing, not on a
/// timer scheduled and cancelled per CALL (which cost ~5,000 instructions a round trip on the event loop).
@Suite struct CallTimeoutSweepTests {
    /// A driver with a fake clock that counts what the session schedules and cancels.
    final class CountingDriver: SessionDriver {
        final class Timer: ScheduledWork {
            let deadline: Duration
            var body: (() -> Void)?
            var cancelled = false
            init(deadline: Duration, body: @escaping () -> Void) {
                self.deadline = deadline
                self.body = body
            }
            func cancel() {
                cancelled = true
                body = nil
            }
        }
        var now: Duration = .zero
        var wallTime: Double = 1_767_225_600
        var northPeerCertificate: [UInt8]? { nil }
        var scheduled = 0
        var timers: [Timer] = []
        var sent: [Side: [Frame]] = [:]

        func send(_ bytes: [UInt8], to side: Side) { sent[side, default: []].append(try! Frame.parse(bytes)) }
        func closeSession(reason: String) {}
        func schedule(after delay: Duration, _ body: @escaping () -> Void) -> any ScheduledWork {
            scheduled += 1
            let timer = Timer(deadline: now + delay, body: body)
            timers.append(timer)
            return timer
        }
        func execute(_ body: @escaping @Sendable () -> Void) { body() }
        func relinkNorth(with credentials: NorthCredentials, isIdle: @escaping () -> Bool,
                         completion: @escaping (Result<Void, any Error>) -> Void) {}

        var armed: Int { timers.count { !$0.cancelled && $0.body != nil } }

        /// Moves the clock, firing due timers in deadline order.
        func advance(by duration: Duration) {
            let end = now + duration
            while let index = timers.indices.filter({ !timers[$0].cancelled && timers[$0].deadline <= end })
                .min(by: { timers[$0].deadline < timers[$1].deadline })
            {
                let timer = timers.remove(at: index)
                now = timer.deadline
                timer.body?()
            }
            now = end
        }

        func take(_ side: Side) -> [Frame] { defer { sent[side] = [] }; return sent[side] ?? [] }
    }

    func session(_ driver: CountingDriver, limits: SessionLimits = SessionLimits()) -> Session {
        let session = Session(chargerId: "CP001", pipelines: PipelineHolder(Pipeline(stages: [], file: "<test>")), limits: limits,
                              metrics: RouterMetrics(), driver: driver,
                              logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }), bootAccepted: true)
        session.start()
        return session
    }

    @Test func roundTripsDoNotScheduleATimerEach() {
        let driver = CountingDriver()
        let session = session(driver)
        for index in 0..<1000 {
            session.receive(Array(#"[2,"c\#(index)","Heartbeat",{}]"#.utf8), from: .charger)
            driver.advance(by: .milliseconds(10))
            session.receive(Array(#"[3,"c\#(index)",{"currentTime":"2026-01-01T00:00:00Z"}]"#.utf8), from: .csms)
            session.receive(Array(#"[2,"s\#(index)","GetConfiguration",{}]"#.utf8), from: .csms)
            driver.advance(by: .milliseconds(10))
            session.receive(Array(#"[3,"s\#(index)",{}]"#.utf8), from: .charger)
        }
        #expect(driver.take(.charger).count == 2000)
        #expect(driver.take(.csms).count == 2000)
        // 2,000 CALLs over 20 s: the sweep was armed once (deadline 30 s after the first CALL), not 2,000 times.
        #expect(driver.scheduled <= 2, "scheduled \(driver.scheduled) timers for 2,000 CALLs")
        #expect(driver.armed <= 1)
    }

    @Test func theSweepTimesOutEachCallAtItsOwnDeadline() {
        let driver = CountingDriver()
        let session = session(driver, limits: SessionLimits(chargerCallTimeout: .seconds(5), csmsCallTimeout: .seconds(8)))
        // An answered CALL leaves the sweep armed for its deadline (t = 5 s) …
        session.receive(Array(#"[2,"a","Reset",{"type":"Soft"}]"#.utf8), from: .csms)
        driver.advance(by: .seconds(1))
        session.receive(Array(#"[3,"a",{"status":"Accepted"}]"#.utf8), from: .charger)
        // … and the next CALL (sent at t = 2 s) times out at t = 7 s, not when the sweep first fires.
        driver.advance(by: .seconds(1))
        session.receive(Array(#"[2,"b","Reset",{"type":"Soft"}]"#.utf8), from: .csms)
        _ = driver.take(.csms)
        driver.advance(by: .milliseconds(4_999))
        #expect(driver.take(.csms).isEmpty, "b is not overdue at t = 6.999 s")
        driver.advance(by: .milliseconds(1))
        #expect(driver.take(.csms).map(\.messageId) == ["b"], "b times out at t = 7 s")
        // A CALL towards the CSMS with a longer timeout, sent while one towards the charger is in flight.
        session.receive(Array(#"[2,"c","Reset",{"type":"Soft"}]"#.utf8), from: .csms)
        session.receive(Array(#"[2,"h","Heartbeat",{}]"#.utf8), from: .charger)
        driver.advance(by: .seconds(5))
        #expect(driver.take(.csms).map(\.messageId) == ["h", "c"], "h went north, then c timed out at t = 12 s")
        #expect(driver.take(.charger).map(\.messageId) == ["a", "b", "c"])
        driver.advance(by: .seconds(3))
        #expect(driver.take(.charger).map(\.messageId) == ["h"], "h timed out at t = 15 s")
        #expect(driver.armed == 0, "nothing in flight, nothing armed")
        session.end()
    }

    @Test func endingTheSessionCancelsTheSweep() {
        let driver = CountingDriver()
        let session = session(driver)
        session.receive(Array(#"[2,"a","Heartbeat",{}]"#.utf8), from: .charger)
        #expect(driver.armed == 1)
        session.end()
        #expect(driver.armed == 0)
    }
}
