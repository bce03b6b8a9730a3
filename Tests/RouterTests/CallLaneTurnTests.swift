import StageKit
import Testing
@testable import Router

/// The session's pump takes a lane's turn in one access (`takeTurn(clock:)`) and reads the clock only when the
/// lane has a CALL it could send.
@Suite struct CallLaneTurnTests {
    static func call(_ id: String) -> CallLane.Call {
        CallLane.Call(id: id, action: "Heartbeat", bytes: Array(#"[2,"\#(id)","Heartbeat",{}]"#.utf8), origin: .relayed)
    }

    @Test func theClockIsReadOnlyWhenACallCanGo() {
        var lane = CallLane(timeout: .seconds(30), limit: 4)
        var reads = 0
        let clock = { () -> Duration in
            reads += 1
            return .seconds(100)
        }
        // Nothing waiting: no clock read.
        if case .wait = lane.takeTurn(clock: clock).turn {} else { Issue.record("an empty lane waits") }
        #expect(reads == 0)

        let queuedA = lane.enqueue(Self.call("a"))
        #expect(queuedA)
        let queuedB = lane.enqueue(Self.call("b"))
        #expect(queuedB)
        let (turn, now) = lane.takeTurn(clock: clock)
        #expect(reads == 1)
        #expect(now == .seconds(100))
        guard case .send(let sent, let deadline) = turn else {
            Issue.record("the first CALL goes")
            return
        }
        #expect(sent.id == "a")
        #expect(deadline == .seconds(130))

        // One in flight: the next waits without a clock read.
        if case .wait = lane.takeTurn(clock: clock).turn {} else { Issue.record("one CALL in flight at a time") }
        #expect(reads == 1)

        let completed = lane.complete(id: "a")
        #expect(completed?.id == "a")
        if case .send(let next, _) = lane.takeTurn(clock: clock).turn { #expect(next.id == "b") } else { Issue.record("the next CALL goes") }
        #expect(reads == 2)
    }

    @Test func pacingStillHoldsTheNextCall() {
        var lane = CallLane(timeout: .seconds(30), limit: 4)
        lane.minimumInterval = .seconds(5)
        let queuedA = lane.enqueue(Self.call("a"))
        #expect(queuedA)
        let queuedB = lane.enqueue(Self.call("b"))
        #expect(queuedB)
        _ = lane.takeTurn(clock: { .seconds(10) })
        _ = lane.complete(id: "a")
        guard case .pacedUntil(let until) = lane.takeTurn(clock: { .seconds(12) }).turn else {
            Issue.record("the second CALL waits for the interval")
            return
        }
        #expect(until == .seconds(15))
    }
}
