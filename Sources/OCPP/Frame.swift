/// The three OCPP-J message types (OCPP-J 1.6 §4.1.3).
public enum MessageType: Int, Sendable, CustomStringConvertible {
    case call = 2
    case callResult = 3
    case callError = 4

    public var description: String {
        switch self {
        case .call: "CALL"
        case .callResult: "CALLRESULT"
        case .callError: "CALLERROR"
        }
    }
}

/// One OCPP-J frame: its bytes exactly as received, and the header fields read from them.
///
/// The payload is validated as JSON but not decoded; `payload()` decodes it when a stage asks.
/// An unchanged frame is forwarded from `bytes`, so nothing a charger signed is ever re-serialized.
public struct Frame: Sendable {
    public let bytes: [UInt8]
    public let messageType: MessageType
    public let messageId: String
    /// The action of a CALL; nil for results and errors.
    public let action: String?
    /// The error code and description of a CALLERROR.
    public let errorCode: String?
    public let errorDescription: String?
    /// Where the payload (CALL, CALLRESULT) or the error details (CALLERROR) sit in `bytes`.
    public let payloadRange: Range<Int>

    init(bytes: [UInt8], messageType: MessageType, messageId: String, action: String?, errorCode: String?,
         errorDescription: String?, payloadRange: Range<Int>) {
        self.bytes = bytes
        self.messageType = messageType
        self.messageId = messageId
        self.action = action
        self.errorCode = errorCode
        self.errorDescription = errorDescription
        self.payloadRange = payloadRange
    }

    /// The payload's raw JSON bytes.
    public var payloadBytes: ArraySlice<UInt8> { bytes[payloadRange] }

    /// Decodes the payload (for a CALLERROR: the error details).
    public func payload() -> JSONValue {
        // The parser validated these bytes already, so decoding cannot fail.
        (try? JSONValue(parsing: payloadBytes)) ?? .object([])
    }

    public var text: String { String(decoding: bytes, as: UTF8.self) }

    /// The largest message id OCPP-J allows (1.6 §4.1.4, 2.0.1 part 4 §4.2.1).
    public static let maximumMessageIdLength = 36

    /// Parses and validates one frame: JSON syntax, message type, arity and field types.
    public static func parse(_ bytes: [UInt8]) throws(FrameError) -> Frame {
        try bytes.withUnsafeBufferPointer { buffer throws(FrameError) in
            var scanner = JSONScanner(buffer)
            var messageId: String?
            func syntax(_ error: JSONSyntaxError) -> FrameError {
                FrameError(kind: .invalidJSON, messageId: messageId, detail: error.description)
            }
            func structure(_ detail: String) -> FrameError {
                FrameError(kind: .invalidStructure, messageId: messageId, detail: detail)
            }
            /// A frame cut short may still be valid JSON, an array with too few elements: say so rather than "bad JSON".
            func wrongArity() -> FrameError? {
                guard let value = try? JSONValue(parsing: bytes), case .array(let elements) = value else { return nil }
                return structure("a frame of \(elements.count) element\(elements.count == 1 ? "" : "s") is not a CALL, CALLRESULT or CALLERROR")
            }
            do {
                guard try scanner.peek() == UInt8(ascii: "[") else { throw structure("a frame must be a JSON array") }
                scanner.index += 1
                // The usual spelling, one digit, read as it is; anything else (`2.0`, `1e0`, a string) as a JSON value.
                let typeNumber: Int
                let first = try scanner.peek()
                if (UInt8(ascii: "2")...UInt8(ascii: "4")).contains(first), scanner.index + 1 < buffer.count,
                   !Self.continuesNumber(buffer[scanner.index + 1]) {
                    typeNumber = Int(first - UInt8(ascii: "0"))
                    scanner.index += 1
                } else {
                    guard let number = try scanner.parseValue().intValue else { throw structure("the message type must be a number") }
                    typeNumber = number
                }
                guard let type = MessageType(rawValue: typeNumber) else {
                    throw FrameError(kind: .unknownMessageType, messageId: nil, detail: "unknown message type \(typeNumber)")
                }
                try scanner.expect(UInt8(ascii: ","))
                guard try scanner.peek() == UInt8(ascii: "\"") else { throw structure("the message id must be a string") }
                let id = try scanner.parseString()
                guard id.utf8.count <= maximumMessageIdLength else {
                    throw structure("the message id is longer than \(maximumMessageIdLength) characters")
                }
                guard !id.isEmpty else { throw structure("the message id is empty") }
                messageId = id

                func nextString(_ name: String) throws(FrameError) -> String {
                    do {
                        try scanner.expect(UInt8(ascii: ","))
                        guard try scanner.peek() == UInt8(ascii: "\"") else { throw structure("the \(name) must be a string") }
                        return try scanner.parseString()
                    } catch let error as JSONSyntaxError {
                        throw syntax(error)
                    } catch {
                        throw error as! FrameError
                    }
                }
                func payload(_ name: String) throws(FrameError) -> Range<Int> {
                    do {
                        try scanner.expect(UInt8(ascii: ","))
                        guard try scanner.peek() == UInt8(ascii: "{") else { throw structure("the \(name) must be a JSON object") }
                        let start = scanner.index
                        try scanner.skipValue()
                        return start..<scanner.index
                    } catch let error as JSONSyntaxError {
                        throw syntax(error)
                    } catch {
                        throw error as! FrameError
                    }
                }

                var action: String?
                var errorCode: String?
                var errorDescription: String?
                let range: Range<Int>
                switch type {
                case .call:
                    let name = try nextString("action")
                    guard !name.isEmpty else { throw structure("the action is empty") }
                    action = name
                    range = try payload("payload")
                case .callResult:
                    range = try payload("payload")
                case .callError:
                    errorCode = try nextString("error code")
                    errorDescription = try nextString("error description")
                    range = try payload("error details")
                }
                guard try scanner.peek() == UInt8(ascii: "]") else {
                    throw structure("a \(type) has \(type.arity) elements; found more")
                }
                scanner.index += 1
                try scanner.expectEnd()
                return Frame(bytes: bytes, messageType: type, messageId: id, action: action, errorCode: errorCode,
                             errorDescription: errorDescription, payloadRange: range)
            } catch let error as FrameError {
                throw error.kind == .invalidJSON ? wrongArity() ?? error : error
            } catch let error as JSONSyntaxError {
                throw wrongArity() ?? syntax(error)
            } catch {
                throw FrameError(kind: .invalidStructure, messageId: messageId, detail: "\(error)")
            }
        }
    }
}

extension Frame {
    /// Whether `byte` may go on a JSON number (a digit, a fraction, an exponent).
    static func continuesNumber(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "e"), UInt8(ascii: "E"), UInt8(ascii: "+"), UInt8(ascii: "-"): true
        default: false
        }
    }
}

extension MessageType {
    /// How many elements the frame array has.
    public var arity: Int {
        switch self {
        case .call: 4
        case .callResult: 3
        case .callError: 5
        }
    }
}

/// Why bytes are not a valid OCPP-J frame; carries the message id when it could be read,
/// so the CALLERROR can name the message it answers.
public struct FrameError: Error, Sendable, Equatable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        case invalidJSON
        case invalidStructure
        case unknownMessageType
    }
    public var kind: Kind
    public var messageId: String?
    public var detail: String
    public var description: String { detail }

    /// The code OCPP wants in the CALLERROR sent back for this problem.
    ///
    /// 1.6 (OCPP-J §4.2.3): an unknown message type is a ProtocolError, anything else a FormationViolation.
    /// 2.0.1 (part 4 §4.3, §4.4): an unknown message type is MessageTypeNotSupported; a frame that is
    /// not a CALL/CALLRESULT/CALLERROR array, or whose JSON breaks before its message id could be read,
    /// is an RpcFrameworkError ("not a valid RPC request, e.g. the MessageId could not be read");
    /// broken JSON after the message id is a FormatViolation ("payload syntactically incorrect").
    public func errorCode(for version: OCPPVersion) -> OCPPErrorCode {
        switch (kind, version) {
        case (.unknownMessageType, .v16): .protocolError
        case (_, .v16): .formationViolation
        case (.unknownMessageType, .v201): .messageTypeNotSupported
        case (.invalidStructure, .v201): .rpcFrameworkError
        case (.invalidJSON, .v201): messageId == nil ? .rpcFrameworkError : .formatViolation
        }
    }
}
