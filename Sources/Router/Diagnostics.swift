import Foundation
public import Yams

/// One problem in a configuration file, printed the way compilers do: `file:line:col: error: message`.
public struct Diagnostic: Error, Sendable, Equatable, CustomStringConvertible {
    public var file: String
    public var line: Int
    public var column: Int
    public var message: String

    public init(file: String, line: Int, column: Int, message: String) {
        self.file = file
        self.line = line
        self.column = column
        self.message = message
    }

    public init(file: String, mark: Mark?, message: String) {
        self.init(file: file, line: mark?.line ?? 1, column: mark?.column ?? 1, message: message)
    }

    public var description: String { "\(file):\(line):\(column): error: \(message)" }
}

/// Every problem found in one pass over a configuration, so an operator fixes them all at once.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [Diagnostic]
    public init(_ diagnostics: [Diagnostic]) { self.diagnostics = diagnostics }
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

extension Diagnostic {
    /// Maps a Yams parse error to a diagnostic at its position. Never quotes the file's text: the
    /// offending line may hold a password (Yams' own descriptions print the whole line).
    static func from(yamlError error: any Error, file: String, text: String = "") -> Diagnostic {
        if let error = error as? YamlError {
            switch error {
            case let .reader(problem, offset, value, _):
                let (line, column) = offset.map { position(ofUTF8Offset: $0, in: text) } ?? (1, 1)
                let character = Unicode.Scalar(UInt32(bitPattern: value)).map { String(format: "U+%04X", $0.value) } ?? "\(value)"
                return Diagnostic(file: file, line: line, column: column, message: "invalid YAML: \(problem) (\(character))")
            case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _),
                let .composer(context, problem, mark, _):
                let prefix = context.map { "\($0.text) " } ?? ""
                return Diagnostic(file: file, mark: mark, message: "invalid YAML: \(prefix)\(problem)")
            case let .duplicatedKeysInMapping(duplicates, context):
                return Diagnostic(file: file, mark: context.mark,
                                  message: "duplicate key\(duplicates.count > 1 ? "s" : "") \(duplicates.map { "'\($0)'" }.joined(separator: ", "))")
            default:
                // The remaining cases (memory, encoding, emitter) carry no text of the file.
                return Diagnostic(file: file, line: 1, column: 1, message: "invalid YAML: \(error)")
            }
        }
        return Diagnostic(file: file, line: 1, column: 1, message: "invalid YAML (\(type(of: error)))")
    }

    /// Line and column (1-based) of a byte offset into `text`.
    static func position(ofUTF8Offset offset: Int, in text: String) -> (line: Int, column: Int) {
        var line = 1
        var column = 1
        for byte in text.utf8.prefix(offset) {
            if byte == UInt8(ascii: "\n") {
                line += 1
                column = 1
            } else if byte & 0xC0 != 0x80 {
                column += 1
            }
        }
        return (line, column)
    }
}

/// Reads a YAML file into nodes that remember their line and column; an unreadable file or a
/// syntax error becomes a diagnostic.
func composeYAML(file: String) throws(ConfigurationError) -> Node? {
    let text: String
    do {
        text = try String(contentsOfFile: file, encoding: .utf8)
    } catch {
        throw ConfigurationError([Diagnostic(file: file, line: 1, column: 1, message: "cannot read the file: \(error.localizedDescription)")])
    }
    return try composeYAML(text, file: file)
}

/// YAML text (from `file`, which names it in diagnostics) into nodes: the one way configuration is read,
/// by the gateway and by `StageTester`, so a stage is tested with the typing it gets in service.
package func composeYAML(_ text: String, file: String) throws(ConfigurationError) -> Node? {
    do {
        // No regex resolver: scalars are typed by hand (`ScalarTyping`, NodeDecoder.swift), which keeps ICU's
        // regex engine out of the process (docs/scaling.md, "Idle").
        return try Yams.compose(yaml: text, .basic).map(ScalarTyping.typed)
    } catch {
        throw ConfigurationError([Diagnostic.from(yamlError: error, file: file, text: text)])
    }
}

/// Suggests the closest known name for a misspelt one.
func closestMatch(to word: String, in candidates: some Sequence<String>) -> String? {
    func distance(_ a: [Character], _ b: [Character]) -> Int {
        var previous = Array(0...b.count)
        for (i, ca) in a.enumerated() {
            var current = [i + 1]
            for (j, cb) in b.enumerated() {
                current.append(min(previous[j + 1] + 1, current[j] + 1, previous[j] + (ca == cb ? 0 : 1)))
            }
            previous = current
        }
        return previous[b.count]
    }
    let target = Array(word.lowercased())
    let scored = candidates.map { ($0, distance(target, Array($0.lowercased()))) }
    guard let best = scored.min(by: { $0.1 < $1.1 }), best.1 <= max(2, word.count / 3) else { return nil }
    return best.0
}
