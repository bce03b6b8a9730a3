/// Builds frames the gateway itself sends: local answers, CALLERRORs and its own CALLs.
public enum FrameEncoder {
    public static func call(id: String, action: String, payload: JSONValue) -> [UInt8] {
        var out: [UInt8] = Array("[2,".utf8)
        JSONValue.writeString(id, to: &out)
        out.append(UInt8(ascii: ","))
        JSONValue.writeString(action, to: &out)
        out.append(UInt8(ascii: ","))
        payload.write(to: &out)
        out.append(UInt8(ascii: "]"))
        return out
    }

    public static func callResult(id: String, payload: JSONValue) -> [UInt8] {
        var out: [UInt8] = Array("[3,".utf8)
        JSONValue.writeString(id, to: &out)
        out.append(UInt8(ascii: ","))
        payload.write(to: &out)
        out.append(UInt8(ascii: "]"))
        return out
    }

    public static func callError(id: String, code: String, description: String, details: JSONValue = .object([])) -> [UInt8] {
        var out: [UInt8] = Array("[4,".utf8)
        JSONValue.writeString(id, to: &out)
        out.append(UInt8(ascii: ","))
        JSONValue.writeString(code, to: &out)
        out.append(UInt8(ascii: ","))
        // OCPP-J limits the description to 255 characters.
        JSONValue.writeString(String(description.prefix(255)), to: &out)
        out.append(UInt8(ascii: ","))
        details.write(to: &out)
        out.append(UInt8(ascii: "]"))
        return out
    }

    /// The same frame with a new payload: header fields are kept as they were.
    public static func replacingPayload(of frame: Frame, with payload: JSONValue) -> [UInt8] {
        var out = Array(frame.bytes[..<frame.payloadRange.lowerBound])
        payload.write(to: &out)
        out.append(contentsOf: frame.bytes[frame.payloadRange.upperBound...])
        return out
    }
}

extension Frame {
    /// Builds a frame the gateway originates; parsing cannot fail on what the encoder wrote.
    public static func encoded(_ bytes: [UInt8]) -> Frame {
        do {
            return try Frame.parse(bytes)
        } catch {
            preconditionFailure("the frame encoder produced an invalid frame: \(error)")
        }
    }
}
