/// CALLERROR codes (OCPP-J 1.6 §4.2.3; 2.0.1 part 4 §4.3).
public struct OCPPErrorCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }
    public var description: String { rawValue }

    public static let notImplemented = Self(rawValue: "NotImplemented")
    public static let notSupported = Self(rawValue: "NotSupported")
    public static let internalError = Self(rawValue: "InternalError")
    public static let protocolError = Self(rawValue: "ProtocolError")
    public static let securityError = Self(rawValue: "SecurityError")
    /// 1.6 spelling; 2.0.1 calls it `FormatViolation`; use `formatViolation(for:)`.
    public static let formationViolation = Self(rawValue: "FormationViolation")
    public static let propertyConstraintViolation = Self(rawValue: "PropertyConstraintViolation")
    public static let occurrenceConstraintViolation = Self(rawValue: "OccurrenceConstraintViolation")
    public static let typeConstraintViolation = Self(rawValue: "TypeConstraintViolation")
    public static let genericError = Self(rawValue: "GenericError")
    public static let messageTypeNotSupported = Self(rawValue: "MessageTypeNotSupported")
    public static let rpcFrameworkError = Self(rawValue: "RpcFrameworkError")

    /// The version-correct spelling of "payload is not well formed".
    public static func formatViolation(for version: OCPPVersion) -> Self {
        version == .v16 ? .formationViolation : Self(rawValue: "FormatViolation")
    }
}

public enum OCPPVersion: String, Sendable, CaseIterable {
    case v16 = "ocpp1.6"
    case v201 = "ocpp2.0.1"

    /// The WebSocket subprotocol name.
    public var subprotocol: String { rawValue }
}
