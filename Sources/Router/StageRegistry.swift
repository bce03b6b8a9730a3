public import StageKit
import Yams

/// The stage types the gateway knows, by name. Built in `main` and passed down; there is no
/// global registry, so tests build exactly the registry they need.
public struct StageRegistry: Sendable {
    public struct Entry: Sendable {
        public let type: String
        public let summary: String
        /// Decodes the `config:` node and builds the stage.
        let build: @Sendable (_ config: Node?, _ mark: Mark?, _ decoder: NodeDecoder, _ subject: String,
                              _ context: StageSetupContext) throws -> any Stage
    }

    public private(set) var entries: [String: Entry] = [:]

    public init() {}

    /// Registers a stage type; the one line a stage author adds.
    public mutating func register<S: Stage>(_ stage: S.Type) {
        precondition(entries[S.type] == nil, "stage type '\(S.type)' is registered twice")
        entries[S.type] = Entry(type: S.type, summary: S.summary) { config, mark, decoder, subject, context in
            let configuration = try decoder.decode(S.Configuration.self, from: config, at: mark, subject: subject)
            return try S(configuration: configuration, context: context)
        }
    }

    /// Stage types in name order, for `ocpp-gateway stages` and error messages.
    public var types: [String] { entries.keys.sorted() }
}
