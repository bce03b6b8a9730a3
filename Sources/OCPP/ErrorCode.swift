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
    /// 2.0.1 spelling of 1.6's `FormationViolation`; use `formatViolation(for:)`.
    public static let formatViolation = Self(rawValue: "FormatViolation")
    public static let propertyConstraintViolation = Self(rawValue: "PropertyConstraintViolation")
    public static let occurrenceConstraintViolation = Self(rawValue: "OccurrenceConstraintViolation")
    public static let typeConstraintViolation = Self(rawValue: "TypeConstraintViolation")
    public static let genericError = Self(rawValue: "GenericError")
    /// 2.0.1 only.
    public static let messageTypeNotSupported = Self(rawValue: "MessageTypeNotSupported")
    /// 2.0.1 only.
    public static let rpcFrameworkError = Self(rawValue: "RpcFrameworkError")

    /// The version-correct spelling of "payload is not well formed".
    public static func formatViolation(for version: OCPPVersion) -> Self {
        version == .v16 ? .formationViolation : .formatViolation
    }

    /// Every code a CALLERROR of `version` may carry: OCPP-J 1.6 §4.2.3 table 7 (10 codes),
    /// 2.0.1 part 4 §4.3 table 8 (12 codes).
    public static func codes(for version: OCPPVersion) -> [OCPPErrorCode] {
        switch version {
        case .v16:
            [.notImplemented, .notSupported, .internalError, .protocolError, .securityError, .formationViolation,
             .propertyConstraintViolation, .occurrenceConstraintViolation, .typeConstraintViolation, .genericError]
        case .v201:
            [.formatViolation, .genericError, .internalError, .messageTypeNotSupported, .notImplemented, .notSupported,
             .occurrenceConstraintViolation, .propertyConstraintViolation, .protocolError, .rpcFrameworkError,
             .securityError, .typeConstraintViolation]
        }
    }

    /// Whether a CALLERROR of `version` may carry this code.
    public func isValid(in version: OCPPVersion) -> Bool {
        Self.codes(for: version).contains(self)
    }

    /// This code as `version` spells it, for a CALLERROR relayed from one version to the other:
    /// FormationViolation ⇄ FormatViolation; 2.0.1's RpcFrameworkError and MessageTypeNotSupported
    /// (a frame that is not a valid RPC message) are 1.6's ProtocolError; any code `version` does
    /// not know (a peer's invention) becomes GenericError.
    public func spelled(for version: OCPPVersion) -> OCPPErrorCode {
        switch (self, version) {
        case (.formationViolation, .v201): return .formatViolation
        case (.formatViolation, .v16): return .formationViolation
        case (.rpcFrameworkError, .v16), (.messageTypeNotSupported, .v16): return .protocolError
        default: return isValid(in: version) ? self : .genericError
        }
    }
}

public enum OCPPVersion: String, Sendable, CaseIterable {
    case v16 = "ocpp1.6"
    case v201 = "ocpp2.0.1"

    /// The WebSocket subprotocol name.
    public var subprotocol: String { rawValue }

    /// The version a WebSocket subprotocol name stands for (`ocpp1.6`, `ocpp2.0.1`), nil for others.
    public init?(subprotocol: String) {
        self.init(rawValue: subprotocol)
    }
}
