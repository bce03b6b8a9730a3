import Foundation
@testable import Router
import Testing
import Yams

/// The configuration is composed without Yams' regex resolver (ICU's regex engine stays out of the
/// process); `ScalarTyping` types the scalars by hand, and must type them exactly as that resolver did.
@Suite struct ScalarTypingTests {
    /// What Yams' default resolver (seven `NSRegularExpression`s) makes of `text`.
    private func yamsTag(_ text: String) -> Yams.Tag.Name {
        Resolver.default.resolveTag(of: Node.scalar(Node.Scalar(text, Yams.Tag(.implicit, .default, .default), .plain)))
    }

    static let samples: [String] = [
        // null
        "", "~", "null", "Null", "NULL", "nULL", "none",
        // bool (exact spellings only)
        "true", "True", "TRUE", "tRUE", "false", "False", "FALSE", "yes", "Yes", "YES", "yEs", "no", "No", "NO",
        "on", "On", "ON", "off", "Off", "OFF", "y", "n", "truex",
        // int
        "0", "-0", "+0", "1", "42", "-42", "+42", "1_000", "1__0", "_1", "1_", "0b101", "-0b1_0", "0b", "0b2",
        "0o17", "0o", "0o8", "017", "018", "0_7", "00", "09", "0x1F", "0xfF_0", "-0x1", "0x", "0xg", "0X1",
        "1:30", "1:30:59", "190:20:30", "1:60", "1:5", "1:05", "1:005", "1::3", "1:", ":30", "0:30", "-1:30",
        // float
        "1.0", "1.", "-1.5", "+1.5", "1.5e3", "1.5E-3", "1.5e+3", "1e3", "1e", "1.5e", "1_0.0_1", ".5", "._",
        ".", ".e1", ".5e1", ".5e+1", ".5e-1", "-.5", "+.5", ".inf", ".Inf", ".INF", "-.inf", "+.inf", ".iNf",
        ".nan", ".NaN", ".NAN", "-.nan", "1:30.5", "1:30:00.", "0:30.5", "-1:30.5", "1:30.5.5", "1.2.3", "1e3.0",
        // timestamps
        "2001-12-14", "2001-12-1", "2001-1-14", "2001-12-14t21:59:43.10-05:00", "2001-12-14T21:59:43Z",
        "2001-12-14 21:59:43.10 -5", "2001-12-14  21:59:43", "2001-12-14\t21:59:43", "2001-1-4 1:59:43",
        "2001-12-14 21:59:43 Z", "2001-12-14 21:59:43 ", "2001-12-14 21:59", "2001-12-14T21:59:43+05:3",
        "2001-12-14T21:59:43+005", "2001-12-14T21:59:43.", "2001-12-14T21:59:43.123456789+01:00", "20011-12-14",
        "2001-123-14", "2001-12-14x",
        // merge, value, strings
        "<<", "<", "=", "==", "abc", "wss://csms.example/ocpp", "CP001", "0.0.0.0:9000", "127.0.0.1", "-", "+",
        "1 2", "true ", "é", "１２",
    ]

    @Test func typesLikeYamsDefaultResolver() {
        for text in Self.samples {
            #expect(ScalarTyping.tagName(of: text) == yamsTag(text), "\(text)")
        }
    }

    /// Strings made of the characters the rules care about, a fixed pseudo-random sequence (no newlines:
    /// ICU's `$` also matches before a final line break, which a plain scalar never ends with).
    @Test func typesGeneratedScalarsLikeYamsDefaultResolver() {
        let alphabet = Array("0123456789_-+.:eExXbBoOaAfFiInNtTzZ \t<=~")
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        func next() -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int(truncatingIfNeeded: state >> 33)
        }
        var mismatches: [String] = []
        for _ in 0..<20_000 {
            let text = String((0..<(1 + next() % 10)).map { _ in alphabet[next() % alphabet.count] })
            if ScalarTyping.tagName(of: text) != yamsTag(text) { mismatches.append(text) }
        }
        // Timestamp-shaped strings: the generator above rarely makes them.
        let parts = ["2001", "-", "12", "1", "-", "14", "T", " ", "\t", "21", ":", "59", ":", "43", ".", "10", "Z", "+", "-", "05", ":", "00"]
        for _ in 0..<20_000 {
            var text = ""
            for part in parts where next() % 8 != 0 { text += part }
            if ScalarTyping.tagName(of: text) != yamsTag(text) { mismatches.append(text) }
        }
        #expect(mismatches.isEmpty, "\(mismatches.prefix(20))")
    }

    /// Composed configuration carries its scalars' types already: nothing asks a resolver later (with
    /// Yams' default composition every plain scalar is still untagged here and resolved by regex on demand).
    @Test func composedScalarsAreTypedWithoutAResolver() throws {
        let file = try temporaryFile("gateway.yaml", """
            enabled: true
            port: 9000
            ratio: 0.5
            nothing: ~
            name: CP001
            quoted: "true"
            tagged: !!str 12
            list: [1, off]
            """)
        guard case .mapping(let mapping)? = try composeYAML(file: file) else { Issue.record("not a mapping"); return }
        var tags: [String: String] = [:]
        for (key, value) in mapping {
            switch value {
            case .scalar(let scalar): tags[key.string ?? ""] = scalar.tag.description
            case .sequence(let sequence): tags[key.string ?? ""] = sequence.map { $0.scalar?.tag.description ?? "" }.joined(separator: ",")
            default: break
            }
        }
        #expect(tags == [
            "enabled": Yams.Tag.Name.bool.rawValue, "port": Yams.Tag.Name.int.rawValue, "ratio": Yams.Tag.Name.float.rawValue,
            "nothing": Yams.Tag.Name.null.rawValue, "name": Yams.Tag.Name.str.rawValue,
            "quoted": Yams.Tag.Name.str.rawValue, // quotes make a string (Yams tags it while composing)
            "tagged": Yams.Tag.Name.str.rawValue,
            "list": [Yams.Tag.Name.int.rawValue, Yams.Tag.Name.bool.rawValue].joined(separator: ","),
        ])
    }

    struct Settings: Decodable, Equatable {
        var enabled: Bool
        var port: Int
        var ratio: Double
        var whole: Double
        var nothing: Int?
        var name: String
        var list: [Bool]
    }

    /// The pipeline serializes each stage's config (its fingerprint) before decoding it, which resolves every
    /// tag: the values must still decode as before (a scalar resolved to `str` is no longer a `Bool` to Yams).
    @Test func decodesAfterSerializing() throws {
        let file = try temporaryFile("stage.yaml", """
            enabled: yes
            port: 0x10
            ratio: 1.5e1
            whole: 3
            nothing: null
            name: "0.0.0.0"
            list: [true, Off, on]
            """)
        let node = try composeYAML(file: file)
        _ = try node.map { try Yams.serialize(node: $0) }
        let settings = try NodeDecoder(file: file).decode(Settings.self, from: node)
        #expect(settings == Settings(enabled: true, port: 16, ratio: 15, whole: 3, nothing: nil, name: "0.0.0.0", list: [true, false, true]))
    }

    /// Quoted numbers and bools stay strings and `tRUE` is not a bool, as with Yams' default resolver.
    @Test func refusesWhatTheDefaultResolverRefused() throws {
        for (yaml, message) in [("port: \"8080\"", "a whole number"), ("enabled: tRUE", "true or false"), ("ratio: \"1.5\"", "a number"), ("enabled: \"true\"", "true or false")] {
            let file = try temporaryFile("bad.yaml", yaml)
            struct One: Decodable { var port: Int?; var enabled: Bool?; var ratio: Double? }
            #expect {
                _ = try NodeDecoder(file: file).decode(One.self, from: try composeYAML(file: file))
            } throws: { error in
                "\(error)".contains(message)
            }
        }
    }
}
