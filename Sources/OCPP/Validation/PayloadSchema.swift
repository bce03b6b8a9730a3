/// The shape of an OCPP payload, as the OCA JSON schemas define it (the subset they use:
/// objects, arrays, strings with length, enumeration and format, integers and numbers with
/// bounds or steps, booleans).
///
/// The 1.6 schemas are JSON Schema draft 4, the 2.0.1 ones draft 6; the few rules that differ
/// (what counts as an integer, the spelling of FormatViolation, how strict a date-time is) are
/// chosen by the `versioned` node at the root of every 2.0.1 schema. A tree without one follows 1.6.
public indirect enum PayloadSchema: Sendable {
    case object([(String, PayloadSchema)], required: [String], closed: Bool)
    case array(PayloadSchema, minItems: Int, maxItems: Int? = nil)
    case string(maxLength: Int?, values: [String]?, format: StringFormat?)
    case integer
    case number(multipleOf: Double?)
    /// A number (`.integer` or `.number`) within inclusive bounds: JSON Schema `minimum`/`maximum`.
    case bounded(PayloadSchema, minimum: Double?, maximum: Double?)
    case boolean
    case any
    /// The subtree follows the rules of `version`'s schemas (see the type's documentation).
    case versioned(OCPPVersion, PayloadSchema)

    public enum StringFormat: Sendable {
        case dateTime
        /// Not checked: neither the specification nor common validators constrain it further.
        case uri
    }
}

/// Why a payload does not match its schema, with the CALLERROR code OCPP-J 1.6 §4.2.3
/// (2.0.1 part 4 §4.3 for a 2.0.1 schema) gives it.
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

    /// The schema of a CALL (request) or a CALLRESULT (response) of an OCPP 2.0.1 action.
    public static func ocpp201(_ action: String, response: Bool) -> PayloadSchema? {
        ocpp201[action].map { response ? $0.response : $0.request }
    }

    /// The schema of an action of `version`, nil for an action that version does not have.
    public static func schema(for action: String, version: OCPPVersion, response: Bool) -> PayloadSchema? {
        switch version {
        case .v16: ocpp16(action, response: response)
        case .v201: ocpp201(action, response: response)
        }
    }

    /// Checks `value`; returns the first problem found, or nil.
    ///
    /// Codes: a field of the wrong JSON type, a string longer than its CiString type or a
    /// malformed dateTime → TypeConstraintViolation; a value outside its enumeration, below its
    /// minimum, above its maximum or not a multiple of its step → PropertyConstraintViolation; a
    /// missing required field or a list with too few or too many items → OccurrenceConstraintViolation;
    /// a field the message does not have or a field given twice → FormationViolation (1.6) or
    /// FormatViolation (2.0.1).
    ///
    /// Where the drafts differ, a 2.0.1 schema follows draft 6 and the `rfc3339-validator` that
    /// `jsonschema` uses: a number with an integral value (`2.0`, `1e2`) is an integer, and a
    /// date-time needs a real calendar day (no 30 February, no year 0) and no leap second.
    public func validate(_ value: JSONValue, checkFormats: Bool = true) -> PayloadProblem? {
        validate(value, path: "", checkFormats: checkFormats, version: .v16)
    }

    private func validate(_ value: JSONValue, path: String, checkFormats: Bool, version: OCPPVersion) -> PayloadProblem? {
        func problem(_ code: OCPPErrorCode, _ reason: String) -> PayloadProblem { PayloadProblem(code: code, path: path, reason: reason) }
        func child(_ name: String) -> String { path.isEmpty ? name : path + "." + name }

        switch self {
        case .any:
            return nil
        case .versioned(let rules, let schema):
            return schema.validate(value, path: path, checkFormats: checkFormats, version: rules)
        case .object(let properties, let required, let closed):
            guard case .object(let members) = value else { return problem(.typeConstraintViolation, "should be an object") }
            var seen = Set<String>()
            for (key, member) in members {
                guard seen.insert(key).inserted else { return problem(.formatViolation(for: version), "'\(key)' appears twice") }
                guard let schema = properties.first(where: { $0.0 == key })?.1 else {
                    if closed { return problem(.formatViolation(for: version), "'\(key)' is not a field of this message") }
                    continue
                }
                if let found = schema.validate(member, path: child(key), checkFormats: checkFormats, version: version) { return found }
            }
            for name in required where !seen.contains(name) {
                return problem(.occurrenceConstraintViolation, "required field '\(name)' is missing")
            }
            return nil
        case .array(let items, let minItems, let maxItems):
            guard case .array(let elements) = value else { return problem(.typeConstraintViolation, "should be a list") }
            guard elements.count >= minItems else {
                return problem(.occurrenceConstraintViolation, "needs at least \(minItems) item\(minItems == 1 ? "" : "s")")
            }
            if let maxItems, elements.count > maxItems {
                return problem(.occurrenceConstraintViolation, "has \(elements.count) items; at most \(maxItems) allowed")
            }
            for (index, element) in elements.enumerated() {
                if let found = items.validate(element, path: "\(path)[\(index)]", checkFormats: checkFormats, version: version) { return found }
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
            if checkFormats, format == .dateTime, !Self.isDateTime(text, calendar: version == .v201) {
                return problem(.typeConstraintViolation, "'\(text.prefix(40))' is not an RFC 3339 date-time")
            }
            return nil
        case .integer:
            guard case .number(let text) = value, Self.isInteger(text, version: version) else {
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
        case .bounded(let schema, let minimum, let maximum):
            if let found = schema.validate(value, path: path, checkFormats: checkFormats, version: version) { return found }
            guard case .number(let text) = value, let number = Double(text) else { return nil }
            if let minimum, number < minimum { return problem(.propertyConstraintViolation, "less than the minimum \(Self.bound(minimum))") }
            if let maximum, number > maximum { return problem(.propertyConstraintViolation, "more than the maximum \(Self.bound(maximum))") }
            return nil
        case .boolean:
            guard case .bool = value else { return problem(.typeConstraintViolation, "should be true or false") }
            return nil
        }
    }

    /// Draft 4 (1.6): an integer is written without fraction or exponent. Draft 6 (2.0.1): any
    /// number whose value is integral (`2.0`, `1e2`), as `jsonschema` reads it (an IEEE double).
    static func isInteger(_ text: String, version: OCPPVersion) -> Bool {
        let plain = !text.contains(where: { $0 == "." || $0 == "e" || $0 == "E" })
        guard !plain, version == .v201 else { return plain }
        guard let number = Double(text), number.isFinite else { return false }
        return number.rounded(.towardZero) == number
    }

    static func bound(_ value: Double) -> String {
        value.rounded() == value && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }

    /// RFC 3339 `date-time`: `2026-11-25T10:00:00Z`, with optional fraction and a `Z` or `±hh:mm` offset.
    ///
    /// `calendar` (2.0.1) also wants a day that exists in its month, a year after 0 and no leap
    /// second, as the `rfc3339-validator` behind `jsonschema` does; without it (1.6, unchanged) any
    /// day 01–31 and second 60 pass.
    static func isDateTime(_ text: String, calendar: Bool = false) -> Bool {
        var text = text
        return text.withUTF8 { isDateTime($0, calendar: calendar) }
    }

    static func isDateTime(_ bytes: UnsafeBufferPointer<UInt8>, calendar: Bool = false) -> Bool {
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
        if calendar {
            guard let year = digits(0..<4), year > 0, second < 60, day <= Self.daysIn(month: month, year: year) else { return false }
        }
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

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }
}
