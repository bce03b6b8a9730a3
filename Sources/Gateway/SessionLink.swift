import Foundation
import Logging
import NIOWebSocket
import NIOCore
import Router
import StageKit
import Transport

/// Binds a router `Session` to its two WebSockets, on the charger's event loop.
/// Mirror mode: when either link closes, the other is closed too (OCPP 2.0.1 part 4 §6.3).
/// Backpressure: while one side's outbound queue is over its high-water mark, the gateway stops
/// reading from the other side (a charger's flood is not buffered for a slow CSMS, nor a CSMS's
/// for a charger that does not read); each connection also stops reading from its own peer then.
final class SessionLink: SessionDriver {
    let chargerId: String
    let south: WebSocketConnection
    private(set) var north: WebSocketConnection
    let eventLoop: any EventLoop
    var session: Session?
    var onEnded: ((_ closedSide: Side, _ reason: String) -> Void)?
    /// Opens a north link with given credentials on this loop (the runtime's TLS and URL rules).
    let connectNorth: (NorthCredentials) -> WebSocketConnectAttempt
    /// A re-link in its handshake, cancelled if the session ends first.
    private var pendingRelink: WebSocketConnectAttempt?

    init(chargerId: String, south: WebSocketConnection, north: WebSocketConnection, eventLoop: any EventLoop,
         connectNorth: @escaping (NorthCredentials) -> WebSocketConnectAttempt) {
        self.chargerId = chargerId
        self.south = south
        self.north = north
        self.eventLoop = eventLoop
        self.connectNorth = connectNorth
    }

    /// Starts relaying; must run on `eventLoop`.
    func activate(_ session: Session) {
        self.session = session
        south.onClose = { [weak self] reason in self?.linkClosed(.charger, reason: reason) }
        session.start()
        south.onText = { [weak session] bytes in session?.receive(bytes, from: .charger) }
        attachNorth(north)
    }

    private func attachNorth(_ link: WebSocketConnection) {
        link.onClose = { [weak self] reason in self?.linkClosed(.csms, reason: reason) }
        link.onText = { [weak session] bytes in session?.receive(bytes, from: .csms) }
        coupleBackpressure()
    }

    // MARK: Backpressure

    /// Couples the two links' reading to each other's writability, starting from their current
    /// state (a re-link brings a fresh north link). Must run on `eventLoop`.
    func coupleBackpressure() {
        south.onWritabilityChanged = { [weak self] writable in self?.southWritabilityChanged(writable) }
        north.onWritabilityChanged = { [weak self] writable in self?.northWritabilityChanged(writable) }
        southWritabilityChanged(south.isWritable)
        northWritabilityChanged(north.isWritable)
    }

    /// The charger's queue is full (or drained): stop (or resume) reading from the CSMS.
    private func southWritabilityChanged(_ writable: Bool) {
        writable ? north.resumeReading(.counterpart) : north.pauseReading(.counterpart)
    }

    /// The CSMS's queue is full (or drained): stop (or resume) reading from the charger.
    private func northWritabilityChanged(_ writable: Bool) {
        writable ? south.resumeReading(.counterpart) : south.pauseReading(.counterpart)
    }

    private func linkClosed(_ side: Side, reason: String) {
        guard let session else { return }
        self.session = nil
        session.logger.info("\(side == .charger ? "charger" : "CSMS") link closed; closing the \(side == .charger ? "CSMS" : "charger") link",
                            metadata: ["reason": "\(reason)"])
        session.end()
        pendingRelink?.cancel(reason: "the session ended")
        pendingRelink = nil
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

    var northPeerCertificate: [UInt8]? { north.peerCertificateDER }

    func execute(_ body: @escaping @Sendable () -> Void) {
        eventLoop.execute(body)
    }

    func relinkNorth(with credentials: NorthCredentials, isIdle: @escaping () -> Bool,
                     completion: @escaping (Result<Void, any Error>) -> Void) {
        let loop = eventLoop.assumeIsolated()
        let attempt = connectNorth(credentials)
        pendingRelink = attempt
        attempt.futureResult.assumeIsolated().whenComplete { [weak self] result in
            if self?.pendingRelink === attempt { self?.pendingRelink = nil }
            switch result {
            case .failure(let error):
                completion(.failure(error))
            case .success(let replacement):
                guard let self, self.session != nil else {
                    replacement.close(code: .normalClosure, reason: "session ended during the re-link")
                    completion(.failure(SessionEndedError()))
                    return
                }
                self.swapNorth(to: replacement, isIdle: isIdle, deadline: .now() + .seconds(30), loop: loop, completion: completion)
            }
        }
    }

    /// Moves the session to `replacement` once no CALL is in flight either way, so no answer
    /// can arrive on the link being retired.
    private func swapNorth(to replacement: WebSocketConnection, isIdle: @escaping () -> Bool, deadline: NIODeadline,
                           loop: NIOIsolatedEventLoop, completion: @escaping (Result<Void, any Error>) -> Void) {
        guard session != nil else {
            replacement.close(code: .normalClosure, reason: "session ended during the re-link")
            completion(.failure(SessionEndedError()))
            return
        }
        guard isIdle() else {
            guard NIODeadline.now() < deadline else {
                replacement.close(code: .normalClosure, reason: "the session never became idle")
                completion(.failure(RelinkError("no moment without a CALL in flight within 30 s")))
                return
            }
            loop.scheduleTask(in: .milliseconds(10)) { [weak self] in
                self?.swapNorth(to: replacement, isIdle: isIdle, deadline: deadline, loop: loop, completion: completion)
            }
            return
        }
        let retired = north
        retired.onClose = nil
        retired.onText = nil
        retired.onWritabilityChanged = nil
        north = replacement
        attachNorth(replacement)
        retired.close(code: .normalClosure, reason: "replaced by a link with new credentials")
        session?.logger.info("north link replaced")
        completion(.success(()))
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

struct RelinkError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
