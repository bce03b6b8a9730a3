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
