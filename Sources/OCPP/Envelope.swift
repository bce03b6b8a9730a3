/// Which way a frame travels through the gateway.
public enum Direction: String, Sendable, CustomStringConvertible {
    /// From the legacy charger, heading north to the CSMS.
    case fromCharger = "from_charger"
    /// From the CSMS, heading south to the charger.
    case fromCSMS = "from_csms"
    /// Originated by a stage of the gateway.
    case fromGateway = "from_gateway"

    public var description: String { rawValue }
}

/// A frame in context: who it is for, which way it travels and what it is about.
///
/// `action` is set for results and errors too: the router finds it in its correlation table.
public struct Envelope: Sendable {
    public let chargerId: String
    public let direction: Direction
    public let frame: Frame
    public let action: String?
    public let version: OCPPVersion
    /// Monotonic time of arrival, in the session's clock.
    public let receivedAt: Duration

    public init(chargerId: String, direction: Direction, frame: Frame, action: String?, version: OCPPVersion = .v16,
                receivedAt: Duration = .zero) {
        self.chargerId = chargerId
        self.direction = direction
        self.frame = frame
        self.action = action
        self.version = version
        self.receivedAt = receivedAt
    }

    public var messageType: MessageType { frame.messageType }
    public var messageId: String { frame.messageId }
    public var isCall: Bool { frame.messageType == .call }

    /// Decodes the payload on demand; frames nobody looks into are never decoded.
    public func payload() -> JSONValue { frame.payload() }
}
