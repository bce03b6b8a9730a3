import OCPP
import Testing

/// `PayloadSchema.validate(bytes:)` (the frame path: no decoding) must judge every payload exactly as the
/// tree validator does on the decoded payload: same problem or none, same code, path and reason.
@Suite("Payload validation on bytes")
struct ByteValidationTests {
    /// Deterministic, so a failure can be replayed.
    struct SplitMix: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// A payload for `schema`, mostly valid, with the mistakes peers make (and attackers try) mixed in.
    static func instance(_ schema: PayloadSchema, _ rng: inout SplitMix, depth: Int = 0) -> JSONValue {
        func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }
        if depth > 0, chance(0.03) { return wrongType(schema, &rng) }
        switch schema {
        case .any:
            return chance(0.5) ? ["k": "v", "n": 1] : .array([.null, .bool(true)])
        case .versioned(_, let inner):
            return instance(inner, &rng, depth: depth)
        case .object(let properties, let required, _):
            var members: [(key: String, value: JSONValue)] = []
            for (name, child) in properties where required.contains(name) ? !chance(0.03) : chance(0.5) {
                members.append((name, instance(child, &rng, depth: depth + 1)))
            }
            if chance(0.04) { members.append((["extra", "customData", "é", "K", "K"].randomElement(using: &rng)!, "x")) }
            if chance(0.04), let member = members.randomElement(using: &rng) { members.append(member) }
            if chance(0.2) { members.shuffle(using: &rng) }
            return .object(members)
        case .array(let items, let minItems, let maxItems):
            var count = Int.random(in: minItems...(min(maxItems ?? (minItems + 3), minItems + 3)), using: &rng)
            if chance(0.04) { count = max(0, minItems - 1) }
            if chance(0.04), let maxItems { count = maxItems + 1 }
            return .array((0..<count).map { _ in instance(items, &rng, depth: depth + 1) })
        case .string(let maxLength, let values, let format):
            if let values {
                return chance(0.95) ? .string(values.randomElement(using: &rng)!) : .string(["Bogus", "accepted", "Accepted ", "É"].randomElement(using: &rng)!)
            }
            if format == .dateTime {
                return .string([
                    "2026-01-01T00:00:00Z", "2026-11-25T10:00:00.123+01:00", "2026-02-29T00:00:00Z", "2024-02-29T23:59:60Z",
                    "2026-01-01T00:00:00", "2026-13-01T00:00:00Z", "0000-01-01T00:00:00Z", "2026-01-01t00:00:00z", "yesterday",
                ].randomElement(using: &rng)!)
            }
            let limit = maxLength ?? 30
            var length = Int.random(in: 0...min(limit, 30), using: &rng)
            if chance(0.05) { length = limit + 1 }
            let alphabet: [String] = ["a", "Z", "0", " ", "\"", "\\", "/", "é", "K", "€", "😀", "\u{0301}", "\n", "\t"]
            return .string((0..<length).map { _ in chance(0.85) ? "x" : alphabet.randomElement(using: &rng)! }.joined())
        case .integer:
            return .number(["0", "42", "-7", "2.0", "1e2", "1.5", "-0", "123456789012"].randomElement(using: &rng)!)
        case .number:
            return .number(["0", "1.5", "230.0", "-3.25", "1e-3", "7", "0.1", "2E+2"].randomElement(using: &rng)!)
        case .bounded(let inner, let minimum, let maximum):
            if chance(0.5) { return instance(inner, &rng, depth: depth) }
            let around = [minimum, maximum].compactMap { $0 }.randomElement(using: &rng) ?? 0
            return .number([around - 1, around, around + 1, around + 0.5].randomElement(using: &rng)!)
        case .boolean:
            return .bool(chance(0.5))
        }
    }

    static func wrongType(_ schema: PayloadSchema, _ rng: inout SplitMix) -> JSONValue {
        [.null, .bool(false), .number("1"), .string("s"), .array([]), .object([]), .object([("a", 1)])].randomElement(using: &rng)!
    }

    /// JSON text for `value` with random whitespace and escapes (`\u0041` for `A`, `\/`), as peers may write it.
    static func text(_ value: JSONValue, _ rng: inout SplitMix) -> String {
        func chance(_ p: Double) -> Bool { Double.random(in: 0..<1, using: &rng) < p }
        func space() -> String { chance(0.1) ? [" ", "\n", "\t ", "\r\n"].randomElement(using: &rng)! : "" }
        func string(_ text: String) -> String {
            let escapeSome = chance(0.1)
            var out = "\""
            for scalar in text.unicodeScalars {
                switch scalar {
                case "\"": out += "\\\""
                case "\\": out += "\\\\"
                case "\n": out += "\\n"
                case "\t": out += "\\t"
                case "/": out += chance(0.5) ? "\\/" : "/"
                default:
                    if escapeSome, chance(0.3), scalar.value < 0x10000 {
                        let hex = String(scalar.value, radix: 16)
                        out += "\\u" + String(repeating: "0", count: 4 - hex.count) + (chance(0.5) ? hex : hex.uppercased())
                    } else {
                        out.unicodeScalars.append(scalar)
                    }
                }
            }
            return out + "\""
        }
        switch value {
        case .null: return "null"
        case .bool(let b): return b ? "true" : "false"
        case .number(let n): return n
        case .string(let s): return string(s)
        case .array(let elements): return "[" + space() + elements.map { text($0, &rng) }.joined(separator: "," + space()) + "]"
        case .object(let members):
            return "{" + space() + members.map { string($0.key) + space() + ":" + space() + text($0.value, &rng) }.joined(separator: "," + space()) + "}"
        }
    }

    @Test func bytesAndTreeAgreeOnEveryActionOfBothVersions() throws {
        var rng = SplitMix(state: 0x5EED)
        var checked = 0, problems = 0
        var codes = Set<String>()
        let catalogues: [[String: (request: PayloadSchema, response: PayloadSchema)]] = [PayloadSchema.ocpp16, PayloadSchema.ocpp201]
        for catalogue in catalogues {
            for action in catalogue.keys.sorted() {
                for schema in [catalogue[action]!.request, catalogue[action]!.response] {
                    for _ in 0..<120 {
                        let text = Self.text(Self.instance(schema, &rng), &rng)
                        let bytes = Array(text.utf8)
                        let tree = try JSONValue(parsing: bytes)
                        for checkFormats in [true, false] {
                            let expected = schema.validate(tree, checkFormats: checkFormats)
                            let found = schema.validate(bytes: bytes[...], checkFormats: checkFormats)
                            #expect(found == expected, "\(action): \(text)")
                            checked += 1
                            if let expected {
                                problems += 1
                                codes.insert(expected.code.rawValue)
                            }
                        }
                    }
                }
            }
        }
        // The samples reach both outcomes and every kind of problem, or the comparison proves little.
        #expect(checked > 40_000)
        #expect(problems > checked / 10 && problems < checked * 9 / 10, "\(problems) problems in \(checked)")
        #expect(codes.isSuperset(of: ["TypeConstraintViolation", "PropertyConstraintViolation", "OccurrenceConstraintViolation",
                                      "FormationViolation", "FormatViolation"]), "\(codes)")
    }

    @Test func aPayloadInsideAFrameIsValidatedInPlace() throws {
        let frame = try Frame.parse(Array(#"[2,"1","Authorize",{"idTag":"04A2B3C4D5E6F7AABBCCDDEEFF00112233"}]"#.utf8))
        let schema = try #require(PayloadSchema.ocpp16("Authorize", response: false))
        let problem = schema.validate(bytes: frame.payloadBytes)
        #expect(problem == schema.validate(frame.payload()))
        #expect(problem?.path == "idTag")
        #expect(problem?.code == .typeConstraintViolation)
    }

    /// `validate(bytes:)` compares names and enumeration values as bytes, which is `String` equality only
    /// for ASCII: every name and value of the generated schemas must be ASCII.
    @Test func schemaNamesAndValuesAreASCII() {
        func check(_ schema: PayloadSchema) -> Bool {
            switch schema {
            case .object(let properties, let required, _):
                return (properties.map(\.0) + required).allSatisfy { $0.utf8.allSatisfy { $0 < 0x80 } } && properties.allSatisfy { check($0.1) }
            case .array(let items, _, _): return check(items)
            case .string(_, let values, _): return (values ?? []).allSatisfy { $0.utf8.allSatisfy { $0 < 0x80 } }
            case .bounded(let inner, _, _), .versioned(_, let inner): return check(inner)
            case .integer, .number, .boolean, .any: return true
            }
        }
        for (action, schemas) in PayloadSchema.ocpp16.merging(PayloadSchema.ocpp201, uniquingKeysWith: { a, _ in a }) {
            #expect(check(schemas.request) && check(schemas.response), "\(action)")
        }
        for (action, schemas) in PayloadSchema.ocpp201 {
            #expect(check(schemas.request) && check(schemas.response), "\(action)")
        }
    }
}

/// The message type's usual one-digit spelling is read directly; every other spelling as before.
@Suite("Frame message type")
struct FrameMessageTypeTests {
    @Test func spellingsOfTheMessageType() throws {
        #expect(try Frame.parse(Array(#"[2,"a","Heartbeat",{}]"#.utf8)).messageType == .call)
        #expect(try Frame.parse(Array(#"[ 3 ,"a",{}]"#.utf8)).messageType == .callResult)
        #expect(try Frame.parse(Array(#"[2.0,"a","Heartbeat",{}]"#.utf8)).messageType == .call, "an integral number, as the JSON reader reads it")
        #expect(throws: FrameError.self) { try Frame.parse(Array(#"[21,"a","Heartbeat",{}]"#.utf8)) }
        do {
            _ = try Frame.parse(Array(#"[2e1,"a","Heartbeat",{}]"#.utf8))
            Issue.record("2e1 is message type 20")
        } catch {
            #expect(error.kind == .unknownMessageType)
            #expect(error.detail == "unknown message type 20")
        }
        do {
            _ = try Frame.parse(Array(#"["2","a","Heartbeat",{}]"#.utf8))
            Issue.record("a string is no message type")
        } catch {
            #expect(error.detail == "the message type must be a number")
        }
    }
}

/// Strings are scanned 8 bytes at a time while no byte needs a closer look.
@Suite("String scanning")
struct StringScanTests {
    @Test func stringsOfEveryLengthAndContent() throws {
        // Each special as written in JSON, and the text it stands for.
        let specials: [(json: String, text: String)] = [("\\\"", "\""), ("\\\\", "\\"), ("\\u00e9", "é"), ("é", "é"), ("€", "€"),
                                                        ("😀", "😀"), ("\\n", "\n")]
        for length in 0...40 {
            for special in [nil] + specials {
                for position in Set([0, length / 2, length]) {
                    var json = String(repeating: "x", count: length), text = json
                    if let special {
                        json.insert(contentsOf: special.json, at: json.index(json.startIndex, offsetBy: position))
                        text.insert(contentsOf: special.text, at: text.index(text.startIndex, offsetBy: position))
                    }
                    let frame = try Frame.parse(Array(#"[2,"1","DataTransfer",{"vendorId":"\#(json)"}]"#.utf8))
                    #expect(frame.payload()["vendorId"] == .string(text), "\(json)")
                }
            }
        }
        // A control character or a quote inside a word is still found.
        for length in 0...20 {
            let raw = Array(#"[2,"1","DataTransfer",{"vendorId":""#.utf8) + Array(repeating: UInt8(ascii: "x"), count: length) + [0x01]
                + Array(#"xxxxxxxxx"}]"#.utf8)
            #expect(throws: FrameError.self) { try Frame.parse(raw) }
        }
        let cut = Array(#"[2,"1","DataTransfer",{"vendorId":"xxxxxxxxxxxxxxxxxxxxxxx"#.utf8)
        #expect(throws: FrameError.self) { try Frame.parse(cut) }
    }
}
