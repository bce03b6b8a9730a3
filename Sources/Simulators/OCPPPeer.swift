public import NIOCore
public import OCPP
public import Transport
public import Foundation
import NIOWebSocket

/// One end of an OCPP-J link for the simulators: sends CALLs and awaits their answers, and
/// answers the other side's CALLs with a handler. Lives on its connection's event loop.
public final class OCPPPeer: @unchecked Sendable {
    public enum CallError: Error, CustomStringConvertible {
        case callError(code: String, description: String)
        case closed
        case timedOut(String)
        public var description: String {
            switch self {
            case .callError(let code, let description): "CALLERROR \(code): \(description)"
            case .closed: "connection closed"
            case .timedOut(let action): "no answer to \(action)"
            }
        }
    }

    public let connection: WebSocketConnection
    public let name: String
    /// Answers an incoming CALL: a payload for a CALLRESULT, or an error for a CALLERROR.
    public var onCall: ((_ action: String, _ payload: JSONValue) -> Result<JSONValue, CallError>)?
    /// Sees every frame in and out, for printing the flow.
    public var onTrace: ((_ outgoing: Bool, _ frame: String) -> Void)?
    public var onClose: ((String) -> Void)?
    private var waiting: [String: (action: String, promise: EventLoopPromise<JSONValue>)] = [:]
    private var counter = 0

    public init(connection: WebSocketConnection, name: String) {
        self.connection = connection
        self.name = name
        connection.onClose = { [weak self] reason in
            guard let self else { return }
            for (_, entry) in waiting { entry.promise.fail(CallError.closed) }
            waiting = [:]
            let onClose = onClose
            // Closures that captured this peer would otherwise keep it (and its connection) alive.
            self.onClose = nil
            onCall = nil
            onTrace = nil
            onClose?(reason)
        }
        connection.onText = { [weak self] bytes in self?.receive(bytes) }
    }

    public var eventLoop: any EventLoop { connection.channel.eventLoop }

    /// Sends a CALL; the future completes with the CALLRESULT payload.
    public func call(_ action: String, _ payload: JSONValue, timeout: TimeAmount = .seconds(30)) -> EventLoopFuture<JSONValue> {
        let promise = eventLoop.makePromise(of: JSONValue.self)
        eventLoop.execute { [self] in
            counter += 1
            let id = "\(name)-\(counter)"
            waiting[id] = (action, promise)
            send(FrameEncoder.call(id: id, action: action, payload: payload))
            let expiry = eventLoop.scheduleTask(in: timeout) { [weak self] in
                if let entry = self?.waiting.removeValue(forKey: id) { entry.promise.fail(CallError.timedOut(action)) }
            }
            promise.futureResult.whenComplete { _ in expiry.cancel() }
        }
        return promise.futureResult
    }

    public func sendRaw(_ text: String) {
        eventLoop.execute { [self] in send(Array(text.utf8)) }
    }

    public func close() {
        eventLoop.execute { [self] in connection.close(code: .normalClosure, reason: "done") }
    }

    private func send(_ bytes: [UInt8]) {
        onTrace?(true, String(decoding: bytes, as: UTF8.self))
        connection.send(bytes)
    }

    private func receive(_ bytes: [UInt8]) {
        onTrace?(false, String(decoding: bytes, as: UTF8.self))
        guard let frame = try? Frame.parse(bytes) else { return }
        switch frame.messageType {
        case .call:
            let answer = onCall?(frame.action ?? "", frame.payload())
                ?? .failure(.callError(code: "NotImplemented", description: "not simulated"))
            switch answer {
            case .success(let payload): send(FrameEncoder.callResult(id: frame.messageId, payload: payload))
            case .failure(.callError(let code, let description)):
                send(FrameEncoder.callError(id: frame.messageId, code: code, description: description))
            case .failure: send(FrameEncoder.callError(id: frame.messageId, code: "InternalError", description: "simulator"))
            }
        case .callResult:
            waiting.removeValue(forKey: frame.messageId)?.promise.succeed(frame.payload())
        case .callError:
            waiting.removeValue(forKey: frame.messageId)?.promise.fail(
                CallError.callError(code: frame.errorCode ?? "", description: frame.errorDescription ?? ""))
        }
    }
}

/// ISO 8601 UTC with milliseconds, as OCPP wants its dateTime.
public func ocppTimestamp(_ date: Date = Date()) -> String {
    formatOCPPDate(date)
}
