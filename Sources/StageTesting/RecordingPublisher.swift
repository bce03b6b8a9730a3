public import OCPP
public import StageKit
import Synchronization

/// A health-channel publisher for stage tests: keeps every message instead of sending it.
public final class RecordingPublisher: MessagePublisher, Sendable {
    public struct Message: Sendable {
        public var topic: String
        public var payload: [UInt8]
        public var retain: Bool
        /// The payload decoded as JSON (`.null` if it is not JSON).
        public var json: JSONValue { (try? JSONValue(parsing: payload)) ?? .null }
        public var text: String { String(decoding: payload, as: UTF8.self) }
    }

    public let topicRoot: String
    private let messages = Mutex<[Message]>([])

    public init(topicRoot: String = "test/gateway") { self.topicRoot = topicRoot }

    @discardableResult
    public func publish(topic: String, payload: [UInt8], retain: Bool) -> Bool {
        messages.withLock { $0.append(Message(topic: topic, payload: payload, retain: retain)) }
        return true
    }

    /// Messages published since the last call.
    public func take() -> [Message] {
        messages.withLock { all in
            defer { all = [] }
            return all
        }
    }
}
