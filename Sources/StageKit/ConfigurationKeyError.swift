/// A stage's configuration is wrong at one key. Thrown from `Stage.init`, it is reported at that
/// key's `file:line:col` (not at the `config:` line), e.g.
/// `throw ConfigurationKeyError(key: "deviation", "must be greater than 0")` becomes
/// `site.yaml:12:18: error: stage 'compress' (compressor): 'deviation' must be greater than 0`.
///
/// `key` is the YAML name (snake_case); a nested key is written with dots (`tls.ca_file`).
/// Several problems can be thrown at once with `ConfigurationKeyError.Many`.
public struct ConfigurationKeyError: Error, Sendable, CustomStringConvertible {
    public var key: String
    public var message: String

    public init(key: String, _ message: String) {
        self.key = key
        self.message = message
    }

    public var description: String { "'\(key)' \(message)" }

    /// Every problem a stage found, reported together.
    public struct Many: Error, Sendable, CustomStringConvertible {
        public var errors: [ConfigurationKeyError]
        public init(_ errors: [ConfigurationKeyError]) { self.errors = errors }
        public var description: String { errors.map(\.description).joined(separator: "; ") }
    }
}

// MARK: Rules checked while a configuration is decoded

/// Receives the problems `Checked` values report while the gateway's configuration decoder runs;
/// it records each at the value's `file:line:col`, named by its key.
public protocol ConfigurationProblemReporter {
    func report(_ message: String)
}

extension CodingUserInfoKey {
    /// Where the gateway's configuration decoder puts its `ConfigurationProblemReporter`.
    public static let configurationProblemReporter = CodingUserInfoKey(rawValue: "ocpp-gateway.configurationProblemReporter")!
}

extension Decoder {
    /// Reports that the value being decoded breaks a rule ("must be greater than 0"). With the
    /// gateway's decoder the problem is noted at the value's position and decoding goes on, so every
    /// problem of a file is reported at once; elsewhere this throws a `DecodingError`.
    public func reportConfigurationProblem(_ message: String) throws {
        guard let reporter = userInfo[.configurationProblemReporter] as? any ConfigurationProblemReporter else {
            throw DecodingError.dataCorrupted(DecodingError.Context(codingPath: codingPath, debugDescription: message))
        }
        reporter.report(message)
    }
}

/// A rule a configuration value must follow, checked while decoding (see `Checked`).
public protocol ConfigurationRule {
    associatedtype Value: Decodable & Sendable
    /// What is wrong with `value` ("must be greater than 0"), or nil.
    static func problem(with value: Value) -> String?
}

/// A configuration value that must follow `Rule`: `Positive<Double>`, `NonNegative<Int>`, `FrameSize`.
/// A value that does not is reported at its position while decoding goes on, so `validate` lists
/// every problem of a file at once. Use it in a stage's `Configuration` for range checks.
public struct Checked<Rule: ConfigurationRule>: Decodable, Sendable {
    public var value: Rule.Value

    public init(_ value: Rule.Value) { self.value = value }

    public init(from decoder: any Decoder) throws {
        value = try Rule.Value(from: decoder)
        if let problem = Rule.problem(with: value) { try decoder.reportConfigurationProblem(problem) }
    }
}

public enum GreaterThanZero<Value: Decodable & Sendable & Comparable & Numeric>: ConfigurationRule {
    public static func problem(with value: Value) -> String? { value > .zero ? nil : "must be greater than 0, found \(value)" }
}

public enum ZeroOrMore<Value: Decodable & Sendable & Comparable & Numeric>: ConfigurationRule {
    public static func problem(with value: Value) -> String? { value >= .zero ? nil : "must be 0 or more, found \(value)" }
}

/// Frame size limits: at least 1 KiB.
public enum FrameSizeRule: ConfigurationRule {
    public static func problem(with value: Int) -> String? { value >= 1024 ? nil : "must be at least 1024, found \(value)" }
}

/// Outbound buffer limits: at least 4 KiB.
public enum OutboundBytesRule: ConfigurationRule {
    public static func problem(with value: Int) -> String? { value >= 4096 ? nil : "must be at least 4096, found \(value)" }
}

/// A number greater than 0 (timeouts, delays, queue lengths).
public typealias Positive<Value: Decodable & Sendable & Comparable & Numeric> = Checked<GreaterThanZero<Value>>
/// A number of 0 or more (0 usually turns a feature off).
public typealias NonNegative<Value: Decodable & Sendable & Comparable & Numeric> = Checked<ZeroOrMore<Value>>
/// A frame size limit in bytes.
public typealias FrameSize = Checked<FrameSizeRule>
/// An outbound buffer limit in bytes.
public typealias OutboundBytes = Checked<OutboundBytesRule>
