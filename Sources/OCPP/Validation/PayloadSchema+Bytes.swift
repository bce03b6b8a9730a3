extension PayloadSchema {
    /// Checks a payload's JSON bytes (valid JSON: a parsed frame's payload) without decoding them: the same answer as
    /// `validate(JSONValue(parsing: bytes))`, the same first problem with the same code, path and reason.
    ///
    /// The frame path uses this (`Frame.payloadBytes`): building a `JSONValue` tree, a `Set` of keys per
    /// object and a path string per member cost the `ids` stage more than everything else it does per frame.
    /// Strings are compared as bytes when they hold no escape and no non-ASCII byte (where byte equality is
    /// `String` equality); anything else is decoded and compared as the tree validator does.
    public func validate(bytes: ArraySlice<UInt8>, checkFormats: Bool = true) -> PayloadProblem? {
        let outcome: ByteValidator.Failure?? = bytes.withUnsafeBufferPointer { buffer in
            var walker = ByteValidator(scanner: JSONScanner(buffer), checkFormats: checkFormats)
            do {
                return .some(try walker.validate(self, version: .v16))
            } catch {
                return .none
            }
        }
        // Not JSON at all (a frame's payload always is): judge it as `Frame.payload()` would read it.
        guard let outcome else { return validate(.object([]), checkFormats: checkFormats) }
        return outcome?.problem
    }
}

/// Walks a payload's bytes along a schema (`PayloadSchema.validate(bytes:)`).
private struct ByteValidator: ~Copyable {
    var scanner: JSONScanner
    let checkFormats: Bool

    init(scanner: consuming JSONScanner, checkFormats: Bool) {
        self.scanner = scanner
        self.checkFormats = checkFormats
    }

    /// A problem and where it is: the steps from it up to the payload, collected on the way back up (so a
    /// payload without problems builds no path at all).
    struct Failure {
        enum Step {
            case key(String)
            case index(Int)
        }
        var code: OCPPErrorCode
        var reason: String
        var steps: [Step] = []

        /// The tree validator's spelling: `a.b[2].c`.
        var problem: PayloadProblem {
            var text = ""
            for step in steps.reversed() {
                switch step {
                case .key(let name): text = text.isEmpty ? name : text + "." + name
                case .index(let index): text = "\(text)[\(index)]"
                }
            }
            return PayloadProblem(code: code, path: text, reason: reason)
        }

        func under(_ step: Step) -> Failure {
            var failure = self
            failure.steps.append(step)
            return failure
        }
    }

    func problem(_ code: OCPPErrorCode, _ reason: String) -> Failure {
        Failure(code: code, reason: reason)
    }

    /// A string token: where its raw bytes are, and whether they need decoding to be compared as text.
    struct Token {
        var start: Int
        var end: Int
        /// Escapes or bytes ≥ 0x80: compare the decoded `String`, not the bytes.
        var needsDecoding: Bool
    }

    /// The string at the scanner, moving past it. The payload is valid JSON (`Frame.parse` checked every
    /// escape and byte of it), so only the closing quote and escapes matter here, not validation again.
    mutating func stringToken() throws(JSONSyntaxError) -> Token {
        guard try scanner.peek() == UInt8(ascii: "\"") else { throw scanner.fail("expected a string") }
        let bytes = scanner.bytes
        let start = scanner.index + 1
        var index = start
        var plain = true
        while true {
            guard index < bytes.count else { throw scanner.fail("unterminated string") }
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") { break }
            if byte == UInt8(ascii: "\\") {
                plain = false
                index += 2
                continue
            }
            if byte >= 0x80 { plain = false }
            index += 1
        }
        scanner.index = index + 1
        return Token(start: start, end: index, needsDecoding: !plain)
    }

    /// The token's text, decoded as the tree parser decodes it.
    func text(_ token: Token) -> String {
        var copy = JSONScanner(scanner.bytes)
        copy.index = token.start - 1
        return (try? copy.parseString()) ?? ""
    }

    /// Whether the token is `name`. Byte equality is `String` equality here because every name and
    /// enumeration value of the generated schemas is ASCII (a test checks it).
    func matches(_ token: Token, _ name: String) -> Bool {
        if token.needsDecoding { return text(token) == name }
        let count = token.end - token.start
        let bytes = scanner.bytes
        let start = token.start
        return name.utf8.withContiguousStorageIfAvailable { utf8 in
            guard utf8.count == count else { return false }
            for index in 0..<count where utf8[index] != bytes[start + index] { return false }
            return true
        } ?? name.utf8.elementsEqual(UnsafeBufferPointer(rebasing: bytes[start..<token.end]))
    }

    func number(_ start: Int) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: scanner.bytes[start..<scanner.index]), as: UTF8.self)
    }

    mutating func validate(_ schema: PayloadSchema, version: OCPPVersion) throws(JSONSyntaxError) -> Failure? {
        switch schema {
        case .any:
            try scanner.skipValue()
            return nil
        case .versioned(let rules, let inner):
            return try validate(inner, version: rules)
        case .object(let properties, let required, let closed):
            guard try scanner.peek() == UInt8(ascii: "{") else { return problem(.typeConstraintViolation, "should be an object") }
            scanner.index += 1
            // Which properties were present: a bit each (every generated schema has fewer than 64), else a list.
            var seenBits: UInt64 = 0
            var seenList = properties.count > 64 ? [Bool](repeating: false, count: properties.count) : []
            var others: [String] = []
            if try scanner.peek() == UInt8(ascii: "}") {
                scanner.index += 1
            } else {
                while true {
                    let key = try stringToken()
                    try scanner.expect(UInt8(ascii: ":"))
                    if let index = properties.firstIndex(where: { matches(key, $0.0) }) {
                        guard !(seenList.isEmpty ? seenBits & (1 << index) != 0 : seenList[index]) else { return problem(.formatViolation(for: version), "'\(text(key))' appears twice") }
                        if seenList.isEmpty { seenBits |= 1 << index } else { seenList[index] = true }
                        if let found = try validate(properties[index].1, version: version) { return found.under(.key(properties[index].0)) }
                    } else {
                        let name = text(key)
                        guard !others.contains(name) else { return problem(.formatViolation(for: version), "'\(name)' appears twice") }
                        others.append(name)
                        if closed { return problem(.formatViolation(for: version), "'\(name)' is not a field of this message") }
                        try scanner.skipValue()
                    }
                    let next = try scanner.peek()
                    scanner.index += 1
                    if next == UInt8(ascii: "}") { break }
                    guard next == UInt8(ascii: ",") else { throw scanner.fail("expected ',' or '}'") }
                }
            }
            for name in required {
                let bits = seenBits, list = seenList
                let present = properties.indices.contains { (list.isEmpty ? bits & (1 << $0) != 0 : list[$0]) && properties[$0].0 == name }
                    || others.contains(name)
                if !present { return problem(.occurrenceConstraintViolation, "required field '\(name)' is missing") }
            }
            return nil
        case .array(let items, let minItems, let maxItems):
            guard try scanner.peek() == UInt8(ascii: "[") else { return problem(.typeConstraintViolation, "should be a list") }
            // Its length is checked before its items: count them first.
            let start = scanner.index
            var count = 0
            scanner.index += 1
            if try scanner.peek() != UInt8(ascii: "]") {
                while true {
                    try scanner.skipValue()
                    count += 1
                    let next = try scanner.peek()
                    scanner.index += 1
                    if next == UInt8(ascii: "]") { break }
                    guard next == UInt8(ascii: ",") else { throw scanner.fail("expected ',' or ']'") }
                }
            } else {
                scanner.index += 1
            }
            let end = scanner.index
            guard count >= minItems else {
                return problem(.occurrenceConstraintViolation, "needs at least \(minItems) item\(minItems == 1 ? "" : "s")")
            }
            if let maxItems, count > maxItems {
                return problem(.occurrenceConstraintViolation, "has \(count) items; at most \(maxItems) allowed")
            }
            scanner.index = start + 1
            for index in 0..<count {
                if index > 0 { try scanner.expect(UInt8(ascii: ",")) }
                if let found = try validate(items, version: version) { return found.under(.index(index)) }
            }
            scanner.index = end
            return nil
        case .string(let maxLength, let values, let format):
            guard try scanner.peek() == UInt8(ascii: "\"") else {
                try scanner.skipValue()
                return problem(.typeConstraintViolation, "should be a string")
            }
            let token = try stringToken()
            if let maxLength {
                let length: Int
                if token.needsDecoding {
                    length = text(token).unicodeScalars.count
                } else {
                    length = token.end - token.start
                }
                if length > maxLength { return problem(.typeConstraintViolation, "longer than \(maxLength) characters") }
            }
            if let values, !values.contains(where: { matches(token, $0) }) {
                let text = text(token)
                return problem(.propertyConstraintViolation, "'\(text.prefix(40))' is not one of \(values.prefix(8).joined(separator: ", "))\(values.count > 8 ? ", …" : "")")
            }
            if checkFormats, format == .dateTime {
                let valid = token.needsDecoding
                    ? PayloadSchema.isDateTime(text(token), calendar: version == .v201)
                    : PayloadSchema.isDateTime(UnsafeBufferPointer(rebasing: scanner.bytes[token.start..<token.end]), calendar: version == .v201)
                if !valid { return problem(.typeConstraintViolation, "'\(text(token).prefix(40))' is not an RFC 3339 date-time") }
            }
            return nil
        case .integer:
            guard let text = try numberText(), PayloadSchema.isInteger(text, version: version) else {
                return problem(.typeConstraintViolation, "should be an integer")
            }
            return nil
        case .number(let multipleOf):
            guard let text = try numberText(), let number = Double(text) else { return problem(.typeConstraintViolation, "should be a number") }
            if let multipleOf {
                let ratio = number / multipleOf
                if abs(ratio - ratio.rounded()) > 1e-9 * max(1, abs(ratio)) {
                    return problem(.propertyConstraintViolation, "should be a multiple of \(multipleOf)")
                }
            }
            return nil
        case .bounded(let inner, let minimum, let maximum):
            let start = scanner.index
            if let found = try validate(inner, version: version) { return found }
            let end = scanner.index
            scanner.index = start
            let text = try numberText()
            scanner.index = end
            guard let text, let number = Double(text) else { return nil }
            if let minimum, number < minimum { return problem(.propertyConstraintViolation, "less than the minimum \(PayloadSchema.bound(minimum))") }
            if let maximum, number > maximum { return problem(.propertyConstraintViolation, "more than the maximum \(PayloadSchema.bound(maximum))") }
            return nil
        case .boolean:
            let next = try scanner.peek()
            try scanner.skipValue()
            guard next == UInt8(ascii: "t") || next == UInt8(ascii: "f") else { return problem(.typeConstraintViolation, "should be true or false") }
            return nil
        }
    }

    /// The spelling of the number at the scanner (which moves past the value), nil for any other value.
    mutating func numberText() throws(JSONSyntaxError) -> String? {
        let first = try scanner.peek()
        let start = scanner.index
        try scanner.skipValue()
        switch first {
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return number(start)
        default: return nil
        }
    }
}
