import Foundation
import Logging
import NIOWebSocket
import NIOCore
import Router
import StageKit
import Transport

/// Binds a router `Session` to its two WebSockets, on the charger's event loop.
/// Mirror mode: when either link closes, the other is closed too (OCPP 2.0.1 part 4 §6.3).
final class SessionLink: SessionDriver {
    let chargerId: String
    let south: WebSocketConnection
    let north: WebSocketConnection
    let eventLoop: any EventLoop
    var session: Session?
    var onEnded: ((_ closedSide: Side, _ reason: String) -> Void)?

    init(chargerId: String, south: WebSocketConnection, north: WebSocketConnection, eventLoop: any EventLoop) {
        self.chargerId = chargerId
        self.south = south
        self.north = north
        self.eventLoop = eventLoop
    }

    /// Starts relaying; must run on `eventLoop`.
    func activate(_ session: Session) {
        self.session = session
        south.onClose = { [weak self] reason in self?.linkClosed(.charger, reason: reason) }
        north.onClose = { [weak self] reason in self?.linkClosed(.csms, reason: reason) }
        session.start()
        south.onText = { [weak session] bytes in session?.receive(bytes, from: .charger) }
        north.onText = { [weak session] bytes in session?.receive(bytes, from: .csms) }
    }

    private func linkClosed(_ side: Side, reason: String) {
        guard let session else { return }
        self.session = nil
        session.logger.info("\(side == .charger ? "charger" : "CSMS") link closed; closing the \(side == .charger ? "CSMS" : "charger") link",
                            metadata: ["reason": "\(reason)"])
        session.end()
        if side == .charger {
            north.close(code: .normalClosure, reason: "charger disconnected")
        } else {
            south.close(code: .goingAway, reason: "CSMS link lost")
        }
        onEnded?(side, reason)
        onEnded = nil
    }

    // MARK: SessionDriver

    func send(_ bytes: [UInt8], to side: Side) {
        side == .charger ? south.send(bytes) : north.send(bytes)
    }

    func closeSession(reason: String) {
        south.close(code: .goingAway, reason: reason)
        north.close(code: .normalClosure, reason: reason)
    }

    func schedule(after delay: Duration, _ body: @escaping () -> Void) -> any ScheduledWork {
        let task = eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(delay.nanosecondsClamped)) { body() }
        return ScheduledTask(task: task)
    }

    var now: Duration { .nanoseconds(Int64(clamping: NIODeadline.now().uptimeNanoseconds)) }
    var wallTime: Double { Date().timeIntervalSince1970 }
}

private struct ScheduledTask: ScheduledWork {
    let task: Scheduled<Void>
    func cancel() { task.cancel() }
}

extension Duration {
    var nanosecondsClamped: Int64 {
        let (seconds, attoseconds) = components
        return seconds.multipliedReportingOverflow(by: 1_000_000_000).overflow
            ? .max : seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }

    var timeAmount: TimeAmount { .nanoseconds(nanosecondsClamped) }
}
