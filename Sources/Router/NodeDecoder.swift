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
        let root = node ?? Node.mapping(Node.Mapping([], .implicit, .any, fallbackMark))
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
        try NodeBackedDecoder(node: lookup(key) ?? .mapping(Node.Mapping([])), codingPath: path(key), recorder: recorder).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try NodeBackedDecoder(node: lookup(key) ?? .sequence([]), codingPath: path(key), recorder: recorder).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        NodeBackedDecoder(node: .mapping(mapping), codingPath: codingPath, recorder: recorder)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        NodeBackedDecoder(node: lookup(key) ?? .mapping(Node.Mapping([])), codingPath: path(key), recorder: recorder)
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
    let candidates: [Node] = ["0", "", "false", .mapping(Node.Mapping([])), .sequence(Node.Sequence([]))]
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
