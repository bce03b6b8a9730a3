import Foundation
import Logging
import NIOWebSocket
import NIOCore
import OCPP
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
    /// The CSMS link; nil while it is down in buffer mode.
    private(set) var north: WebSocketConnection?
    let eventLoop: any EventLoop
    var session: Session?
    var onEnded: ((_ closedSide: Side, _ reason: String) -> Void)?
    /// Opens a north link with given credentials on this loop (the runtime's TLS and URL rules).
    let connectNorth: (NorthCredentials) -> WebSocketConnectAttempt
    /// A re-link (or, in buffer mode, a reconnect) in its handshake, cancelled if the session ends first.
    private var pendingRelink: WebSocketConnectAttempt?
    /// Buffer mode (`north.offline_mode: buffer`): the charger stays when the CSMS link drops, and the link
    /// is re-opened in the background with these hooks (back-off, bookkeeping); nil in mirror mode.
    var buffer: BufferMode?
    /// The credentials of the current (or last) north link, for reconnecting.
    var credentials: NorthCredentials
    /// The security profile the charger's connection stands on (its listener and configuration).
    var southSecurityProfile = 0
    /// The last frame each way and the security events going north, for the status page (StatusCollection.swift).
    var activity = LinkActivity()

    struct BufferMode {
        /// The delay before the next attempt after a failure or a loss.
        var nextDelay: () -> Duration
        /// Told of every change of the north link (`up`), e.g. for the health channel.
        var linkChanged: (_ up: Bool, _ detail: String) -> Void
    }

    init(chargerId: String, south: WebSocketConnection, north: WebSocketConnection?, credentials: NorthCredentials,
         eventLoop: any EventLoop, connectNorth: @escaping (NorthCredentials) -> WebSocketConnectAttempt) {
        self.chargerId = chargerId
        self.south = south
        self.north = north
        self.credentials = credentials
        self.eventLoop = eventLoop
        self.connectNorth = connectNorth
    }

    /// Starts relaying; must run on `eventLoop`.
    func activate(_ session: Session) {
        self.session = session
        south.onClose = { [weak self] reason in self?.linkClosed(.charger, reason: reason) }
        session.start()
        let relay = Relay(link: self, session: session)
        south.onText = { bytes in relay.received(bytes, from: .charger) }
        if let north {
            attachNorth(north)
        } else {
            // Buffer mode, admitted while the CSMS was unreachable.
            session.northLinkDown()
            scheduleReconnect(after: buffer?.nextDelay() ?? .seconds(1))
        }
    }

    /// Buffer mode: tries the CSMS again after `delay`, until it answers or the charger leaves.
    private func scheduleReconnect(after delay: Duration) {
        eventLoop.assumeIsolated().scheduleTask(in: delay.timeAmount) { [weak self] in
            guard let self, self.session != nil, self.north == nil, self.pendingRelink == nil else { return }
            let attempt = self.connectNorth(self.credentials)
            self.pendingRelink = attempt
            attempt.futureResult.assumeIsolated().whenComplete { [weak self] result in
                guard let self else { return }
                if self.pendingRelink === attempt { self.pendingRelink = nil }
                guard let session = self.session, self.north == nil else {
                    if case .success(let link) = result { link.close(code: .normalClosure, reason: "no longer needed") }
                    return
                }
                switch result {
                case .success(let link):
                    self.north = link
                    self.attachNorth(link)
                    self.buffer?.linkChanged(true, "reconnected")
                    session.northLinkUp()
                case .failure(let error):
                    let delay = self.buffer?.nextDelay() ?? .seconds(5)
                    self.buffer?.linkChanged(false, "\(error)")
                    session.logger.info("CSMS still unreachable; the charger stays connected", metadata: [
                        "error": "\(LogSafe.escape("\(error)", limit: 200))", "next_attempt_in_s": "\(delay.components.seconds)",
                    ])
                    self.scheduleReconnect(after: delay)
                }
            }
        }
    }

    private func attachNorth(_ link: WebSocketConnection) {
        link.onClose = { [weak self] reason in self?.linkClosed(.csms, reason: reason) }
        let relay = Relay(link: self, session: session)
        link.onText = { bytes in relay.received(bytes, from: .csms) }
        coupleBackpressure()
    }

    /// What a connection's `onText` holds: the link and its session, weakly. Weak references captured by the
    /// closure itself were read with a run-time exclusivity check each on every frame; an object's weak
    /// properties that are only set at its making are not.
    private final class Relay {
        private weak var link: SessionLink?
        private weak var session: Session?

        init(link: SessionLink, session: Session?) {
            self.link = link
            self.session = session
        }

        func received(_ bytes: [UInt8], from side: Side) {
            link?.activity.received(bytes, from: side)
            session?.receive(bytes, from: side)
        }
    }

    // MARK: Backpressure

    /// Couples the two links' reading to each other's writability, starting from their current
    /// state (a re-link brings a fresh north link). Must run on `eventLoop`.
    func coupleBackpressure() {
        south.onWritabilityChanged = { [weak self] writable in self?.southWritabilityChanged(writable) }
        north?.onWritabilityChanged = { [weak self] writable in self?.northWritabilityChanged(writable) }
        southWritabilityChanged(south.isWritable)
        northWritabilityChanged(north?.isWritable ?? true)
    }

    /// The charger's queue is full (or drained): stop (or resume) reading from the CSMS.
    private func southWritabilityChanged(_ writable: Bool) {
        writable ? north?.resumeReading(.counterpart) : north?.pauseReading(.counterpart)
    }

    /// The CSMS's queue is full (or drained): stop (or resume) reading from the charger.
    private func northWritabilityChanged(_ writable: Bool) {
        writable ? south.resumeReading(.counterpart) : south.pauseReading(.counterpart)
    }

    private func linkClosed(_ side: Side, reason: String) {
        guard let session else { return }
        if side == .csms, let buffer {
            // Buffer mode: the charger stays; the outbox answers for the CSMS until the link is back.
            north = nil
            south.resumeReading(.counterpart)
            buffer.linkChanged(false, reason)
            session.northLinkDown()
            scheduleReconnect(after: buffer.nextDelay())
            return
        }
        self.session = nil
        session.logger.info("\(side == .charger ? "charger" : "CSMS") link closed; closing the \(side == .charger ? "CSMS" : "charger") link",
                            metadata: ["reason": "\(reason)"])
        session.end()
        pendingRelink?.cancel(reason: "the session ended")
        pendingRelink = nil
        if side == .charger {
            north?.close(code: .normalClosure, reason: "charger disconnected")
        } else {
            south.close(code: .goingAway, reason: "CSMS link lost")
        }
        onEnded?(side, reason)
        onEnded = nil
    }

    // MARK: SessionDriver

    func send(_ bytes: [UInt8], to side: Side) {
        side == .charger ? south.send(bytes) : north?.send(bytes)
        activity.sent(bytes, to: side)
        if side == .csms, north != nil { activity.securityEvents?.inspect(bytes, chargerId: chargerId) }
    }

    func closeSession(reason: String) {
        south.close(code: .goingAway, reason: reason)
        north?.close(code: .normalClosure, reason: reason)
    }

    /// Shutdown: closes both links with 1001 once no CALL is in flight or waiting either way, so an
    /// answer already on its way (a StartTransaction at the CSMS) reaches the charger; at `deadline` at the latest.
    func drain(until deadline: NIODeadline) {
        guard let session else { return }
        guard session.callsPending == 0 || NIODeadline.now() >= deadline else {
            eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(10)) { [weak self] in self?.drain(until: deadline) }
            return
        }
        south.close(code: .goingAway, reason: "gateway shutting down")
        north?.close(code: .goingAway, reason: "gateway shutting down")
    }

    func schedule(after delay: Duration, _ body: @escaping () -> Void) -> any ScheduledWork {
        let task = eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(delay.nanosecondsClamped)) { body() }
        return ScheduledTask(task: task)
    }

    var northPeerCertificate: [UInt8]? { north?.peerCertificateDER }

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
                self.credentials = credentials
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
        retired?.onClose = nil
        retired?.onText = nil
        retired?.onWritabilityChanged = nil
        north = replacement
        attachNorth(replacement)
        retired?.close(code: .normalClosure, reason: "replaced by a link with new credentials")
        if session?.isNorthUp == false { session?.northLinkUp() }
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
