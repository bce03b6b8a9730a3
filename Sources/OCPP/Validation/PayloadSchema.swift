/// The shape of an OCPP payload, as the OCA JSON schemas define it (the subset they use:
/// objects, arrays, strings with length, enumeration and format, integers, numbers, booleans).
public indirect enum PayloadSchema: Sendable {
    case object([(String, PayloadSchema)], required: [String], closed: Bool)
    case array(PayloadSchema, minItems: Int)
    case string(maxLength: Int?, values: [String]?, format: StringFormat?)
    case integer
    case number(multipleOf: Double?)
    case boolean
    case any

    public enum StringFormat: Sendable {
        case dateTime
        /// Not checked: neither the specification nor common validators constrain it further.
        case uri
    }
}

/// Why a payload does not match its schema, with the CALLERROR code OCPP-J 1.6 §4.2.3 gives it.
public struct PayloadProblem: Error, Sendable, Equatable, CustomStringConvertible {
    public var code: OCPPErrorCode
    /// Where, e.g. `meterValue[0].sampledValue[1].measurand`; empty for the payload itself.
    public var path: String
    public var reason: String

    public var description: String { path.isEmpty ? reason : "\(path): \(reason)" }
}

extension PayloadSchema {
    /// The schema of a CALL (request) or a CALLRESULT (response) of an OCPP 1.6J action.
    public static func ocpp16(_ action: String, response: Bool) -> PayloadSchema? {
        ocpp16[action].map { response ? $0.response : $0.request }
    }

    /// Checks `value`; returns the first problem found, or nil.
    ///
    /// Codes: a field of the wrong JSON type, a string longer than its CiString type or a
    /// malformed dateTime → TypeConstraintViolation; a value outside its enumeration or not a
    /// multiple of its step → PropertyConstraintViolation; a missing required field or an empty
    /// list that must have items → OccurrenceConstraintViolation; a field the message does not
    /// have → FormationViolation.
    public func validate(_ value: JSONValue, checkFormats: Bool = true) -> PayloadProblem? {
        validate(value, path: "", checkFormats: checkFormats)
    }

    private func validate(_ value: JSONValue, path: String, checkFormats: Bool) -> PayloadProblem? {
        func problem(_ code: OCPPErrorCode, _ reason: String) -> PayloadProblem { PayloadProblem(code: code, path: path, reason: reason) }
        func child(_ name: String) -> String { path.isEmpty ? name : path + "." + name }

        switch self {
        case .any:
            return nil
        case .object(let properties, let required, let closed):
            guard case .object(let members) = value else { return problem(.typeConstraintViolation, "should be an object") }
            var seen = Set<String>()
            for (key, member) in members {
                guard seen.insert(key).inserted else { return problem(.formationViolation, "'\(key)' appears twice") }
                guard let schema = properties.first(where: { $0.0 == key })?.1 else {
                    if closed { return problem(.formationViolation, "'\(key)' is not a field of this message") }
                    continue
                }
                if let found = schema.validate(member, path: child(key), checkFormats: checkFormats) { return found }
            }
            for name in required where !seen.contains(name) {
                return problem(.occurrenceConstraintViolation, "required field '\(name)' is missing")
            }
            return nil
        case .array(let items, let minItems):
            guard case .array(let elements) = value else { return problem(.typeConstraintViolation, "should be a list") }
            guard elements.count >= minItems else {
                return problem(.occurrenceConstraintViolation, "needs at least \(minItems) item\(minItems == 1 ? "" : "s")")
            }
            for (index, element) in elements.enumerated() {
                if let found = items.validate(element, path: "\(path)[\(index)]", checkFormats: checkFormats) { return found }
            }
            return nil
        case .string(let maxLength, let values, let format):
            guard case .string(let text) = value else { return problem(.typeConstraintViolation, "should be a string") }
            if let maxLength, text.unicodeScalars.count > maxLength {
                return problem(.typeConstraintViolation, "longer than \(maxLength) characters")
            }
            if let values, !values.contains(text) {
                return problem(.propertyConstraintViolation, "'\(text.prefix(40))' is not one of \(values.prefix(8).joined(separator: ", "))\(values.count > 8 ? ", …" : "")")
            }
            if checkFormats, format == .dateTime, !Self.isDateTime(text) {
                return problem(.typeConstraintViolation, "'\(text.prefix(40))' is not an RFC 3339 date-time")
            }
            return nil
        case .integer:
            guard case .number(let text) = value, !text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" }) else {
                return problem(.typeConstraintViolation, "should be an integer")
            }
            return nil
        case .number(let multipleOf):
            guard case .number(let text) = value, let number = Double(text) else { return problem(.typeConstraintViolation, "should be a number") }
            if let multipleOf {
                let ratio = number / multipleOf
                if abs(ratio - ratio.rounded()) > 1e-9 * max(1, abs(ratio)) {
                    return problem(.propertyConstraintViolation, "should be a multiple of \(multipleOf)")
                }
            }
            return nil
        case .boolean:
            guard case .bool = value else { return problem(.typeConstraintViolation, "should be true or false") }
            return nil
        }
    }

    /// RFC 3339 `date-time`: `2026-11-25T10:00:00Z`, with optional fraction and a `Z` or `±hh:mm` offset.
    static func isDateTime(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        func digits(_ range: Range<Int>) -> Int? {
            guard range.upperBound <= bytes.count else { return nil }
            var value = 0
            for i in range {
                guard bytes[i] >= 0x30, bytes[i] <= 0x39 else { return nil }
                value = value * 10 + Int(bytes[i] - 0x30)
            }
            return value
        }
        guard bytes.count >= 20, let _ = digits(0..<4), bytes[4] == UInt8(ascii: "-"), let month = digits(5..<7),
              bytes[7] == UInt8(ascii: "-"), let day = digits(8..<10),
              bytes[10] == UInt8(ascii: "T") || bytes[10] == UInt8(ascii: "t"),
              let hour = digits(11..<13), bytes[13] == UInt8(ascii: ":"), let minute = digits(14..<16),
              bytes[16] == UInt8(ascii: ":"), let second = digits(17..<19),
              (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second <= 60
        else { return false }
        var index = 19
        if bytes[index] == UInt8(ascii: ".") {
            index += 1
            let start = index
            while index < bytes.count, bytes[index] >= 0x30, bytes[index] <= 0x39 { index += 1 }
            guard index > start else { return false }
        }
        guard index < bytes.count else { return false }
        switch bytes[index] {
        case UInt8(ascii: "Z"), UInt8(ascii: "z"):
            return index + 1 == bytes.count
        case UInt8(ascii: "+"), UInt8(ascii: "-"):
            guard index + 6 == bytes.count, let offsetHour = digits(index + 1..<index + 3), bytes[index + 3] == UInt8(ascii: ":"),
                  let offsetMinute = digits(index + 4..<index + 6)
            else { return false }
            return offsetHour < 24 && offsetMinute < 60
        default:
            return false
        }
    }
}
