public import Yams
import OCPP
import StageKit

/// Decodes a `Decodable` from a Yams node, strictly.
///
/// Unlike `YAMLDecoder`, every error points at a line and column, and keys nobody asked for
/// are reported with the list of valid ones (Vector-style), instead of being silently ignored.
/// YAML keys are snake_case; they fill camelCase properties (`rate_per_second` → `ratePerSecond`).
public struct NodeDecoder {
    public var file: String
    public init(file: String) { self.file = file }

    /// Decodes `type` from `node` (nil decodes from an empty mapping).
    /// - Parameter subject: prefixes messages, e.g. "stage 'ids' (rate_limit)".
    public func decode<T: Decodable>(_ type: T.Type, from node: Node?, at fallbackMark: Mark? = nil,
                                     subject: String? = nil) throws(ConfigurationError) -> T {
        let root = node ?? Node.mapping(Node.Mapping([], ScalarTyping.tag(.map), .any, fallbackMark))
        let prefix = subject.map { "\($0): " } ?? ""
        let recorder = KeyRecorder(probing: false)
        do {
            let value = try T(from: NodeBackedDecoder(node: root, codingPath: [], recorder: recorder))
            let problems = recorder.unknownKeyDiagnostics(file: file, prefix: prefix)
                + recorder.problemDiagnostics(file: file, prefix: prefix, fallback: fallbackMark)
            guard problems.isEmpty else { throw ConfigurationError(problems) }
            return value
        } catch let error as ConfigurationError {
            throw error
        } catch {
            // Decoding stopped at the first problem, so the keys after it were never asked for.
            // A second pass that stands in placeholders for missing or mistyped values learns every
            // valid key; only if it completes are unknown keys reported next to the error.
            // Values out of range were noted, not thrown: the probe, which reads every value, reports them all.
            let probe = KeyRecorder(probing: true)
            let completed = (try? T(from: NodeBackedDecoder(node: root, codingPath: [], recorder: probe))) != nil
            let unknown = completed ? probe.unknownKeyDiagnostics(file: file, prefix: prefix) : []
            let problems = (completed ? probe : recorder).problemDiagnostics(file: file, prefix: prefix, fallback: fallbackMark)
            let (mark, message) = (error as? NodeDecodingError).map { ($0.mark, $0.message) } ?? (root.mark, "\(error)")
            throw ConfigurationError(unknown + [Diagnostic(file: file, mark: mark ?? fallbackMark, message: prefix + message)] + problems)
        }
    }

    static func snakeCase(_ key: String) -> String {
        var out = ""
        for character in key {
            if character.isUppercase {
                if !out.isEmpty { out.append("_") }
                out.append(contentsOf: character.lowercased())
            } else {
                out.append(character)
            }
        }
        return out
    }
}

struct NodeDecodingError: Error {
    var mark: Mark?
    var message: String
}

/// Remembers, for every mapping decoded, which keys were asked for.
final class KeyRecorder {
    /// In a probing pass, missing or mistyped values are replaced by placeholders so that
    /// decoding reaches every key.
    let probing: Bool
    init(probing: Bool) { self.probing = probing }

    struct Entry {
        var mapping: Node.Mapping
        var requested: Set<String> = []
        var acceptsAnyKey = false
    }
    var entries: [Entry] = []

    /// Values that decoded but break a rule (`Checked`, `Decoder.reportConfigurationProblem`):
    /// noted with their position while decoding goes on, so every problem is reported at once.
    var problems: [(mark: Mark?, message: String)] = []

    func report(_ message: String, at mark: Mark?) {
        // A probing pass also decodes placeholders, which have no position: their "problems" are not the file's.
        if probing && mark == nil { return }
        problems.append((mark, message))
    }

    func problemDiagnostics(file: String, prefix: String, fallback: Mark?) -> [Diagnostic] {
        problems.map { Diagnostic(file: file, mark: $0.mark ?? fallback, message: prefix + $0.message) }
            .sorted { ($0.line, $0.column) < ($1.line, $1.column) }
    }

    func register(_ mapping: Node.Mapping) -> Int {
        entries.append(Entry(mapping: mapping))
        return entries.count - 1
    }

    func unknownKeyDiagnostics(file: String, prefix: String) -> [Diagnostic] {
        var diagnostics: [Diagnostic] = []
        for entry in entries where !entry.acceptsAnyKey {
            let valid = entry.requested.sorted()
            for (key, _) in entry.mapping {
                guard let name = key.string, !entry.requested.contains(name) else { continue }
                var message = "\(prefix)unknown config key '\(name)'"
                if let suggestion = closestMatch(to: name, in: valid) { message += " (did you mean '\(suggestion)'?)" }
                message += valid.isEmpty ? "; this section takes no keys" : "; valid keys: \(valid.joined(separator: ", "))"
                diagnostics.append(Diagnostic(file: file, mark: key.mark, message: message))
            }
        }
        return diagnostics
    }
}

private struct NodeBackedDecoder: Decoder {
    let node: Node
    let codingPath: [any CodingKey]
    let recorder: KeyRecorder
    /// Carries the node's position so that `Located` values can remember where they came from, and
    /// a way to report a value that breaks a rule without stopping (`reportConfigurationProblem`).
    var userInfo: [CodingUserInfoKey: Any] {
        var info: [CodingUserInfoKey: Any] = [
            .configurationProblemReporter: ProblemReporter(recorder: recorder, mark: node.mark, codingPath: codingPath),
        ]
        if let mark = node.mark { info[.yamlMark] = mark }
        return info
    }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .mapping(let mapping) = node else {
            throw NodeDecodingError(mark: node.mark, message: "\(describe(codingPath)) should be a mapping (key: value), found \(node.kindName(shown: false))")
        }
        let index = recorder.register(mapping)
        return KeyedDecodingContainer(KeyedNodeContainer<Key>(mapping: mapping, mark: node.mark, codingPath: codingPath,
                                                              recorder: recorder, entryIndex: index))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .sequence(let sequence) = node else {
            throw NodeDecodingError(mark: node.mark, message: "\(describe(codingPath)) should be a list, found \(node.kindName(shown: false))")
        }
        return UnkeyedNodeContainer(elements: Array(sequence), codingPath: codingPath, recorder: recorder)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        SingleNodeContainer(node: node, codingPath: codingPath, recorder: recorder)
    }
}

func describe(_ path: [any CodingKey]) -> String {
    guard let last = path.last else { return "the configuration" }
    if let index = last.intValue { return "item \(index + 1) of '\(path.dropLast().last.map(yamlName) ?? "list")'" }
    return "'\(yamlName(last))'"
}

/// A key as the file spells it: property names snake_cased, dictionary keys (charger ids) as written.
private func yamlName(_ key: any CodingKey) -> String {
    key is LiteralKey ? key.stringValue : NodeDecoder.snakeCase(key.stringValue)
}

/// A dictionary key taken from the file (a charger id): never renamed in messages.
private struct LiteralKey: CodingKey {
    let stringValue: String
    var intValue: Int? { nil }
    init(_ name: String) { stringValue = name }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

/// Words that mark a key whose value is a secret: its value never appears in a message.
private let secretWords = ["password", "secret", "token", "passphrase", "authorization_key", "private_key", "credential"]

/// True when a value at `path` may be a secret: under a secret-named key, or a charger entry
/// (`CP001: "<password>"` written where a mapping belongs).
func isSecret(_ path: [any CodingKey]) -> Bool {
    path.contains { key in
        let name = yamlName(key).lowercased()
        return key is LiteralKey || secretWords.contains { name.contains($0) }
    }
}

extension Node {
    /// What was found, for messages. A scalar's text is shown only when `shown`: where a mapping
    /// or a list belongs, a scalar is often a misplaced password, so it is never echoed there.
    func kindName(shown: Bool) -> String {
        switch self {
        case .scalar(let s):
            if s.string.isEmpty || s.string == "~" || s.string == "null" { return "nothing" }
            return shown ? "'\(LogSafe.escape(s.string))'" : "a single value (not shown)"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        case .alias: return "an alias"
        }
    }
}

private struct KeyedNodeContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let mapping: Node.Mapping
    let mark: Mark?
    let codingPath: [any CodingKey]
    let recorder: KeyRecorder
    let entryIndex: Int

    var allKeys: [Key] {
        recorder.entries[entryIndex].acceptsAnyKey = true
        return mapping.keys.compactMap { $0.string.flatMap { Key(stringValue: $0) } }
    }

    private func yamlName(_ key: Key) -> String {
        // Dictionary keys (charger ids) are taken literally; property names are snake_cased.
        recorder.entries[entryIndex].acceptsAnyKey ? key.stringValue : NodeDecoder.snakeCase(key.stringValue)
    }

    private func lookup(_ key: Key) -> Node? {
        let name = yamlName(key)
        recorder.entries[entryIndex].requested.insert(name)
        for (k, v) in mapping where k.string == name { return v }
        return nil
    }

    private func isNull(_ node: Node) -> Bool {
        if case .scalar(let s) = node { return node.null != nil && s.style == .plain }
        return false
    }

    func contains(_ key: Key) -> Bool { lookup(key) != nil }

    func decodeNil(forKey key: Key) throws -> Bool {
        guard let node = lookup(key) else { return true }
        return isNull(node)
    }

    /// The coding path of a value under `key`; a dictionary key (charger id) stays as written.
    private func path(_ key: Key) -> [any CodingKey] {
        codingPath + [recorder.entries[entryIndex].acceptsAnyKey ? LiteralKey(key.stringValue) : key]
    }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        guard let node = lookup(key) else {
            if recorder.probing, let placeholder = placeholder(T.self, path(key), recorder) { return placeholder }
            throw NodeDecodingError(mark: mark, message: "missing required key '\(yamlName(key))'")
        }
        return try decodeNode(T.self, node, path(key), recorder)
    }

    func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
        guard let node = lookup(key), !isNull(node) else { return nil }
        return try decodeNode(T.self, node, path(key), recorder)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try NodeBackedDecoder(node: lookup(key) ?? ScalarTyping.emptyMapping, codingPath: path(key), recorder: recorder).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try NodeBackedDecoder(node: lookup(key) ?? ScalarTyping.emptySequence, codingPath: path(key), recorder: recorder).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        NodeBackedDecoder(node: .mapping(mapping), codingPath: codingPath, recorder: recorder)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        NodeBackedDecoder(node: lookup(key) ?? ScalarTyping.emptyMapping, codingPath: path(key), recorder: recorder)
    }
}

private struct IndexKey: CodingKey {
    var intValue: Int?
    var stringValue: String { "\(intValue ?? 0)" }
    init(_ index: Int) { intValue = index }
    init?(stringValue: String) { nil }
    init?(intValue: Int) { self.intValue = intValue }
}

private struct UnkeyedNodeContainer: UnkeyedDecodingContainer {
    let elements: [Node]
    let codingPath: [any CodingKey]
    let recorder: KeyRecorder
    var currentIndex = 0
    var count: Int? { elements.count }
    var isAtEnd: Bool { currentIndex >= elements.count }

    init(elements: [Node], codingPath: [any CodingKey], recorder: KeyRecorder) {
        self.elements = elements
        self.codingPath = codingPath
        self.recorder = recorder
    }

    mutating func next() throws -> NodeBackedDecoder {
        guard !isAtEnd else { throw NodeDecodingError(mark: elements.last?.mark, message: "\(describe(codingPath)) has too few items") }
        defer { currentIndex += 1 }
        return NodeBackedDecoder(node: elements[currentIndex], codingPath: codingPath + [IndexKey(currentIndex)], recorder: recorder)
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, elements[currentIndex].null != nil else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let decoder = try next()
        return try decodeNode(T.self, decoder.node, decoder.codingPath, recorder)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        try next().container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer { try next().unkeyedContainer() }
    mutating func superDecoder() throws -> any Decoder { try next() }
}

private struct SingleNodeContainer: SingleValueDecodingContainer {
    let node: Node
    let codingPath: [any CodingKey]
    let recorder: KeyRecorder

    func decodeNil() -> Bool { node.null != nil }

    private func scalar<T>(_ what: String, _ convert: (Node) -> T?) throws -> T {
        if case .scalar = node, let value = convert(node) { return value }
        let found = node.kindName(shown: !isSecret(codingPath))
        throw NodeDecodingError(mark: node.mark, message: "\(describe(codingPath)) should be \(what), found \(found)")
    }

    func decode(_ type: Bool.Type) throws -> Bool { try scalar("true or false") { $0.bool } }
    func decode(_ type: String.Type) throws -> String {
        try scalar("a string") { node in
            if case .scalar(let s) = node { return s.string }
            return nil
        }
    }
    func decode(_ type: Double.Type) throws -> Double { try scalar("a number") { $0.float ?? $0.int.map(Double.init) } }
    func decode(_ type: Float.Type) throws -> Float { Float(try decode(Double.self)) }
    func decode(_ type: Int.Type) throws -> Int { try scalar("a whole number") { $0.int } }
    func decode(_ type: Int8.Type) throws -> Int8 { try integer() }
    func decode(_ type: Int16.Type) throws -> Int16 { try integer() }
    func decode(_ type: Int32.Type) throws -> Int32 { try integer() }
    func decode(_ type: Int64.Type) throws -> Int64 { try integer() }
    func decode(_ type: UInt.Type) throws -> UInt { try integer() }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try integer() }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try integer() }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try integer() }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try integer() }

    private func integer<T: FixedWidthInteger>() throws -> T {
        let value = try decode(Int.self)
        guard let exact = T(exactly: value) else {
            throw NodeDecodingError(mark: node.mark, message: "\(describe(codingPath)) is out of range (\(T.min)…\(T.max))")
        }
        return exact
    }

    func decode<T: Decodable>(_ type: T.Type) throws -> T { try decodeNode(T.self, node, codingPath, recorder) }
}

/// A stand-in value for a probing pass: whatever decodes from a zero, an empty string, false,
/// an empty mapping or an empty list.
private func placeholder<T: Decodable>(_ type: T.Type, _ codingPath: [any CodingKey], _ recorder: KeyRecorder) -> T? {
    let candidates: [Node] = [ScalarTyping.plain("0"), ScalarTyping.plain(""), ScalarTyping.plain("false"), ScalarTyping.emptyMapping, ScalarTyping.emptySequence]
    for candidate in candidates {
        if let value = try? T(from: NodeBackedDecoder(node: candidate, codingPath: codingPath, recorder: recorder)) { return value }
    }
    return nil
}

/// Decodes one node; a `DecodingError` thrown by a custom type (an enum with a bad raw value)
/// gets the node's position.
private func decodeNode<T: Decodable>(_ type: T.Type, _ node: Node, _ codingPath: [any CodingKey], _ recorder: KeyRecorder) throws -> T {
    do {
        return try T(from: NodeBackedDecoder(node: node, codingPath: codingPath, recorder: recorder))
    } catch where recorder.probing {
        if let value = placeholder(T.self, codingPath, recorder) { return value }
        throw error
    } catch let error as DecodingError {
        var explanation: String
        switch error {
        case .dataCorrupted(let context), .typeMismatch(_, let context), .valueNotFound(_, let context), .keyNotFound(_, let context):
            explanation = context.debugDescription
        @unknown default:
            explanation = "\(error)"
        }
        // A custom type's explanation may quote the value (`Cannot initialize Mode from invalid String value x`).
        if isSecret(codingPath) { explanation = "not a valid value (not shown)" }
        throw NodeDecodingError(mark: node.mark, message: "\(describe(codingPath)): \(explanation)")
    }
}

extension CodingUserInfoKey {
    static let yamlMark = CodingUserInfoKey(rawValue: "ocpp-gateway.yamlMark")!
}

/// Notes a rule broken by the value being decoded (`Checked`, `Decoder.reportConfigurationProblem`
/// in StageKit), at the value's position, named by its key.
private struct ProblemReporter: ConfigurationProblemReporter {
    let recorder: KeyRecorder
    let mark: Mark?
    let codingPath: [any CodingKey]

    func report(_ message: String) {
        recorder.report("\(describe(codingPath)) \(message)", at: mark)
    }
}

/// A configuration value that remembers its line and column, for checks made after decoding
/// ("the CA file does not exist") to point at the right place.
public struct Located<Value: Decodable & Sendable>: Decodable, Sendable {
    public var value: Value
    public var mark: Mark?

    public init(_ value: Value, mark: Mark? = nil) {
        self.value = value
        self.mark = mark
    }

    public init(from decoder: any Decoder) throws {
        value = try Value(from: decoder)
        mark = decoder.userInfo[.yamlMark] as? Mark
    }
}

extension Located: Equatable where Value: Equatable {
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.value == rhs.value }
}

/// YAML 1.1's implicit types for the configuration's scalars, found without regular expressions.
///
/// Yams' default `Resolver` types a plain scalar by running up to seven `NSRegularExpression`s over it:
/// ICU's regex engine, ≈ 2.7 MiB of code and data resident for the life of the process, only to tell
/// `true` and `3` from `abc` while the configuration loads. The configuration is composed with
/// `Resolver.basic` (no rules) instead, and `typed(_:)` gives every scalar that carries no tag of its own
/// the tag the default resolver would have given it, by hand and in the same order (bool, int, float,
/// merge, null, timestamp, value, else str): `Node.bool`, `.int`, `.float`, `.null` then read it as before.
/// Tests compare `tagName(of:)` with Yams' default resolver.
enum ScalarTyping {
    /// A tag that never consults a resolver (its name is already known).
    static func tag(_ name: Tag.Name) -> Tag { Tag(name, .basic, .default) }

    /// A plain scalar typed as the default resolver would type it (placeholders, empty containers).
    static func plain(_ text: String) -> Node { .scalar(Node.Scalar(text, tag(tagName(of: text)), .plain)) }
    static var emptyMapping: Node { Node.mapping(Node.Mapping([], tag(.map), .any, nil)) }
    static var emptySequence: Node { Node.sequence(Node.Sequence([], tag(.seq), .any, nil)) }

    /// `node` with every untagged scalar typed (keys too, unless composing already resolved them to `str`).
    static func typed(_ node: Node) -> Node {
        switch node {
        case .scalar(var scalar):
            guard scalar.tag.description == Tag.Name.implicit.rawValue else { return node }
            scalar.tag = tag(tagName(of: scalar.string))
            return .scalar(scalar)
        case .mapping(let mapping):
            return .mapping(Node.Mapping(mapping.map { (typed($0.key), typed($0.value)) }, mapping.tag, mapping.style, mapping.mark))
        case .sequence(let sequence):
            return .sequence(Node.Sequence(sequence.map(typed), sequence.tag, sequence.style, sequence.mark))
        case .alias:
            return node
        }
    }

    /// The tag Yams' `Resolver.default` gives `text` (its rules: `Resolver.Rule.bool`, `.int`, `.float`,
    /// `.merge`, `.null`, `.timestamp`, `.value`).
    static func tagName(of text: String) -> Tag.Name {
        let bytes = Array(text.utf8)
        if isBool(text) { return .bool }
        if isInt(bytes[...]) { return .int }
        if isFloat(bytes[...]) { return .float }
        if text == "<<" { return .merge }
        if isNull(text) { return .null }
        if isTimestamp(bytes[...]) { return .timestamp }
        if text == "=" { return .value }
        return .str
    }

    private static let bools: Set<String> = [
        "yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF",
    ]
    static func isBool(_ text: String) -> Bool { bools.contains(text) }
    static func isNull(_ text: String) -> Bool { text.isEmpty || text == "~" || text == "null" || text == "Null" || text == "NULL" }

    private static func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }
    private static let underscore = UInt8(ascii: "_")

    /// Drops one leading `-` or `+`.
    private static func unsigned(_ s: ArraySlice<UInt8>) -> ArraySlice<UInt8> {
        if let first = s.first, first == UInt8(ascii: "-") || first == UInt8(ascii: "+") { return s.dropFirst() }
        return s
    }

    /// `s` is non-empty and every byte passes `allowed`.
    private static func all(_ s: ArraySlice<UInt8>, _ allowed: (UInt8) -> Bool) -> Bool { !s.isEmpty && s.allSatisfy(allowed) }

    /// `(?::[0-5]?[0-9])+` over all of `s` (sexagesimal groups: `:` then one digit, or two with the first 0–5).
    private static func isSexagesimalTail(_ s: ArraySlice<UInt8>) -> Bool {
        guard s.first == UInt8(ascii: ":") else { return false }
        for group in s.dropFirst().split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false) {
            guard all(group, isDigit), group.count == 1 || (group.count == 2 && group.first! <= UInt8(ascii: "5")) else { return false }
        }
        return true
    }

    /// `[1-9][0-9_]*` then `s[end...]`: the index after the run of digits and underscores.
    private static func endOfDigits(_ s: ArraySlice<UInt8>, from start: Int) -> Int {
        var i = start
        while i < s.endIndex, isDigit(s[i]) || s[i] == underscore { i += 1 }
        return i
    }

    /// `Resolver.Rule.int`: `[-+]?` then `0b[0-1_]+`, `0o?[0-7_]+`, `0|[1-9][0-9_]*`, `0x[0-9a-fA-F_]+`, or
    /// `[1-9][0-9_]*(?::[0-5]?[0-9])+`.
    static func isInt(_ signed: ArraySlice<UInt8>) -> Bool {
        let s = unsigned(signed)
        guard let first = s.first else { return false }
        if first == UInt8(ascii: "0") {
            let rest = s.dropFirst()
            if rest.isEmpty { return true }
            let octal = { (b: UInt8) in (b >= UInt8(ascii: "0") && b <= UInt8(ascii: "7")) || b == underscore }
            switch rest.first! {
            case UInt8(ascii: "b"): return all(rest.dropFirst()) { $0 == UInt8(ascii: "0") || $0 == UInt8(ascii: "1") || $0 == underscore }
            case UInt8(ascii: "x"): return all(rest.dropFirst()) { isDigit($0) || $0 == underscore || (($0 | 0x20) >= UInt8(ascii: "a") && ($0 | 0x20) <= UInt8(ascii: "f")) }
            case UInt8(ascii: "o"): return all(rest.dropFirst(), octal)
            default: return all(rest, octal)
            }
        }
        guard first >= UInt8(ascii: "1"), first <= UInt8(ascii: "9") else { return false }
        let end = endOfDigits(s, from: s.startIndex + 1)
        return end == s.endIndex || isSexagesimalTail(s[end...])
    }

    /// `Resolver.Rule.float`: `[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?`, `\.[0-9_]+(?:[eE][-+][0-9]+)?`,
    /// `[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*`, `[-+]?\.(?:inf|Inf|INF)`, `\.(?:nan|NaN|NAN)`.
    static func isFloat(_ signed: ArraySlice<UInt8>) -> Bool {
        let text = String(decoding: signed, as: UTF8.self)
        if text == ".nan" || text == ".NaN" || text == ".NAN" { return true }
        let s = unsigned(signed)
        let unsignedText = String(decoding: s, as: UTF8.self)
        if unsignedText == ".inf" || unsignedText == ".Inf" || unsignedText == ".INF" { return true }
        guard let first = s.first else { return false }
        let dot = UInt8(ascii: ".")
        /// `[eE]` then a sign (required or optional) then `[0-9]+`, all of `e`.
        func isExponent(_ e: ArraySlice<UInt8>, signRequired: Bool) -> Bool {
            guard let mark = e.first, mark == UInt8(ascii: "e") || mark == UInt8(ascii: "E") else { return false }
            let afterMark = e.dropFirst()
            let digits = unsigned(afterMark)
            if signRequired, digits.count == afterMark.count { return false }
            return all(digits, isDigit)
        }
        if first == dot {
            // `\.[0-9_]+(?:[eE][-+][0-9]+)?`: no sign before the dot.
            guard s.count == signed.count else { return false }
            let end = endOfDigits(s, from: s.startIndex + 1)
            guard end > s.startIndex + 1 else { return false }
            return end == s.endIndex || isExponent(s[end...], signRequired: true)
        }
        guard isDigit(first) else { return false }
        var end = endOfDigits(s, from: s.startIndex + 1)
        if end < s.endIndex, s[end] == UInt8(ascii: ":") {
            // Sexagesimal: the groups, then a dot and the fraction.
            guard let fraction = s[end...].firstIndex(of: dot), isSexagesimalTail(s[end..<fraction]) else { return false }
            return endOfDigits(s, from: fraction + 1) == s.endIndex
        }
        if end < s.endIndex, s[end] == dot { end = endOfDigits(s, from: end + 1) }
        return end == s.endIndex || isExponent(s[end...], signRequired: false)
    }

    /// `Resolver.Rule.timestamp`: `YYYY-MM-DD`, or `YYYY-M?M-D?D` then `T`, `t` or blanks, `H?H:MM:SS`, an
    /// optional fraction `\.[0-9]*` and an optional zone (`[ \t]*` then `Z` or `[-+]H?H(:MM)?`).
    static func isTimestamp(_ s: ArraySlice<UInt8>) -> Bool {
        var i = s.startIndex
        /// Between `min` and `max` digits at `i`, consumed.
        func digits(_ min: Int, _ max: Int) -> Bool {
            var n = 0
            while n < max, i < s.endIndex, isDigit(s[i]) { i += 1; n += 1 }
            return n >= min
        }
        func byte(_ b: UInt8) -> Bool {
            guard i < s.endIndex, s[i] == b else { return false }
            i += 1
            return true
        }
        func isBlank(_ b: UInt8) -> Bool { b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") }
        // The date: four digits, then one or two, then one or two (`YYYY-MM-DD` alone needs exactly two each).
        guard digits(4, 4), byte(UInt8(ascii: "-")) else { return false }
        let monthStart = i
        guard digits(1, 2), byte(UInt8(ascii: "-")) else { return false }
        let monthDigits = i - 1 - monthStart
        let dayStart = i
        guard digits(1, 2) else { return false }
        if i == s.endIndex { return monthDigits == 2 && i - dayStart == 2 }
        // The time.
        if s[i] == UInt8(ascii: "T") || s[i] == UInt8(ascii: "t") {
            i += 1
        } else {
            guard isBlank(s[i]) else { return false }
            while i < s.endIndex, isBlank(s[i]) { i += 1 }
        }
        guard digits(1, 2), byte(UInt8(ascii: ":")), digits(2, 2), byte(UInt8(ascii: ":")), digits(2, 2) else { return false }
        if byte(UInt8(ascii: ".")) { _ = digits(0, Int.max) }
        if i == s.endIndex { return true }
        // The zone.
        while i < s.endIndex, isBlank(s[i]) { i += 1 }
        if byte(UInt8(ascii: "Z")) { return i == s.endIndex }
        guard byte(UInt8(ascii: "-")) || byte(UInt8(ascii: "+")), digits(1, 2) else { return false }
        if byte(UInt8(ascii: ":")) { guard digits(2, 2) else { return false } }
        return i == s.endIndex
    }
}
