/// The one rule for charge point ids, checked once at the door (the south upgrade) and relied on
/// everywhere after: in file names under `state_dir`, MQTT topics, north URLs and log lines.
///
/// OCPP 2.0.1 part 2 (`identifierString`) and part 4 §3.2 (the id is the last path segment):
/// 1 to 48 characters from `a-z A-Z 0-9 * - _ = : + | @ .`. The gateway also refuses `.` and `..`
/// (they are path segments, not names), so an id is always a safe single file name.
public enum ChargerIdentity {
    public static let maximumLength = 48
    /// The documented character set, for error messages and docs.
    public static let characterSet = "a-z A-Z 0-9 * - _ = : + | @ ."

    /// Why `id` is not a charge point id, or nil when it is one.
    public static func problem(with id: String) -> String? {
        let bytes = Array(id.utf8)
        if bytes.isEmpty { return "the charge point id is empty" }
        if bytes.count > maximumLength { return "the charge point id is longer than \(maximumLength) characters" }
        if id == "." || id == ".." { return "'.' and '..' are not charge point ids" }
        guard bytes.allSatisfy(isAllowed) else {
            return "the charge point id may only contain \(characterSet)"
        }
        return nil
    }

    public static func isValid(_ id: String) -> Bool { problem(with: id) == nil }

    @inline(__always)
    static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "*"), UInt8(ascii: "-"), UInt8(ascii: "_"), UInt8(ascii: "="), UInt8(ascii: ":"), UInt8(ascii: "+"),
             UInt8(ascii: "|"), UInt8(ascii: "@"), UInt8(ascii: "."):
            return true
        default:
            return false
        }
    }
}

/// Makes a string a peer sent safe to put in a log line: control characters, quotes and
/// backslashes are escaped (`\n`, `\u{1b}` …) so nobody can forge a line or a terminal sequence,
/// and long values are cut with their full length noted.
public enum LogSafe {
    public static func escape(_ text: some StringProtocol, limit: Int = 128) -> String {
        var out = ""
        var count = 0
        for scalar in text.unicodeScalars {
            if count == limit {
                out += "…(\(text.utf8.count) bytes)"
                return out
            }
            count += 1
            switch scalar {
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            default:
                if scalar.value < 0x20 || scalar.value == 0x7F || (0x80...0x9F).contains(scalar.value)
                    || scalar.value == 0x2028 || scalar.value == 0x2029 {
                    out += "\\u{\(String(scalar.value, radix: 16))}"
                } else {
                    out.unicodeScalars.append(scalar)
                }
            }
        }
        return out
    }
}
