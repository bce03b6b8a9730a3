@testable import OCPP
import Testing

/// JSON strings are written run by run (plain bytes appended whole); the bytes must be exactly what the
/// byte-by-byte writer gave, and read back to the same string.
@Suite("JSON string writing")
struct JSONStringWritingTests {
    /// The writer before: one byte at a time.
    static func byteByByte(_ s: String) -> [UInt8] {
        var out: [UInt8] = [UInt8(ascii: "\"")]
        let hex = Array("0123456789abcdef".utf8)
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += Array("\\\"".utf8)
            case UInt8(ascii: "\\"): out += Array("\\\\".utf8)
            case 0x0A: out += Array("\\n".utf8)
            case 0x0D: out += Array("\\r".utf8)
            case 0x09: out += Array("\\t".utf8)
            case 0..<0x20: out += Array("\\u00".utf8) + [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]]
            default: out.append(byte)
            }
        }
        return out + [UInt8(ascii: "\"")]
    }

    static let samples: [String] = {
        var samples = ["", "a", "\"", "\\", "\"a\"", "plain text with spaces", "\u{0}", "\u{1F}x\u{7F}", "tab\there\nnew\rline",
                       "ünïcödé ✓ 🚗⚡️", "ends with quote\"", "\\\\\\", "a\u{1}b\u{2}c", String(repeating: "x", count: 300) + "\"",
                       "{\"idTag\":\"04A2B3C4\"}"]
        var seed: UInt32 = 7
        let alphabet = Array("ab\"\\\n\t\u{1}é🚗 ".unicodeScalars)
        for length in 0..<60 {
            var text = String.UnicodeScalarView()
            for _ in 0..<length {
                seed = seed &* 1_664_525 &+ 1_013_904_223
                text.append(alphabet[Int(seed >> 16) % alphabet.count])
            }
            samples.append(String(text))
        }
        return samples
    }()

    @Test func runsAreWrittenAsTheByteByByteWriterWroteThem() throws {
        for sample in Self.samples {
            var out: [UInt8] = []
            JSONValue.writeString(sample, to: &out)
            #expect(out == Self.byteByByte(sample), "\(sample.debugDescription)")
            #expect(try JSONValue(parsing: out) == .string(sample), "\(sample.debugDescription)")
        }
    }

    /// A string that is a slice of a bigger one (not native, not starting at offset 0) is written the same.
    @Test func aSubstringsCopyIsWrittenTheSame() {
        let whole = "prefix \"quoted\" suffix"
        let part = String(whole.dropFirst(7).dropLast(7))
        var out: [UInt8] = []
        JSONValue.writeString(part, to: &out)
        #expect(out == Self.byteByByte(part))
    }
}
