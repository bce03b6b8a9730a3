public import Logging
public import StageKit
import Foundation
import Metrics
import Synchronization
import Yams

/// One stage in service, with what it was built from (so a reload can keep it).
public struct LoadedStage: Sendable {
    public let id: String
    public let type: String
    /// The stage's config as canonical YAML: same id, type and fingerprint → same instance after reload.
    public let fingerprint: String
    public let instance: any Stage
    /// `ocpp_gateway_stage_duration_seconds{stage}`: sampled, one frame in `timingSampleInterval` per
    /// session is timed (two clock reads per stage on every frame cost more than the cheap stages themselves).
    let timer: Metrics.Timer
    /// Every how many frames of a session the stages' durations are recorded.
    static let timingSampleInterval: UInt32 = 16
    /// The identity of this instance: per-charger state is kept per slot, so two stages of one type
    /// never share it, and a reload that keeps the instance keeps its state.
    let slot: StageSlot

    init(id: String, type: String, fingerprint: String, instance: any Stage) {
        self.id = id
        self.type = type
        self.fingerprint = fingerprint
        self.instance = instance
        self.timer = Metrics.Timer(label: "ocpp_gateway_stage_duration_seconds", dimensions: [("stage", id)],
                                   preferredDisplayUnit: .seconds)
        self.slot = StageSlot()
    }

    /// Same instance (kept by a reload)?
    public func isSameInstance(as other: LoadedStage) -> Bool { slot === other.slot }

    /// What this instance has processed so far.
    public var tally: StageTally { slot.tally }
}

/// An identity object per built stage instance, with what the instance has seen (for the status
/// page): counted with relaxed atomics on the frame path, no lock and no lookup.
final class StageSlot: Sendable {
    private let forwarded = Atomic<Int>(0)
    private let modified = Atomic<Int>(0)
    private let dropped = Atomic<Int>(0)
    private let answered = Atomic<Int>(0)
    private let refused = Atomic<Int>(0)
    private let held = Atomic<Int>(0)

    func count(_ verdict: Verdict) {
        switch verdict.kind {
        case .forward: forwarded.add(1, ordering: .relaxed)
        case .forwardModified: modified.add(1, ordering: .relaxed)
        case .drop: dropped.add(1, ordering: .relaxed)
        case .answer: answered.add(1, ordering: .relaxed)
        case .answerError: refused.add(1, ordering: .relaxed)
        case .answerLater: held.add(1, ordering: .relaxed)
        }
    }

    /// Frames processed and verdicts by `Verdict.label` (zero counts left out).
    var tally: StageTally {
        let counts = [("forward", forwarded.load(ordering: .relaxed)), ("modify", modified.load(ordering: .relaxed)),
                      ("drop", dropped.load(ordering: .relaxed)), ("answer", answered.load(ordering: .relaxed)),
                      ("error", refused.load(ordering: .relaxed)), ("held", held.load(ordering: .relaxed))]
        var tally = StageTally()
        for (label, count) in counts where count > 0 {
            tally.verdicts[label] = count
            tally.frames += count
        }
        return tally
    }
}

/// What one stage instance saw since it was built (a reload that changes a stage starts it anew):
/// frames it processed, and its verdicts by label (forward, modify, drop, answer, error, held).
public struct StageTally: Sendable, Equatable, Codable {
    public var frames = 0
    public var verdicts: [String: Int] = [:]
    public init() {}
}

/// An immutable chain of stages. The router swaps whole pipelines, never edits one in place.
public final class Pipeline: Sendable {
    public let stages: [LoadedStage]
    public let file: String

    public init(stages: [LoadedStage], file: String) {
        self.stages = stages
        self.file = file
    }

    public static let empty = Pipeline(stages: [], file: "<empty>")
}

/// Reads a pipeline YAML file and builds its stages.
public struct PipelineLoader: Sendable {
    public let registry: StageRegistry
    public let southSettings: SouthSettings
    public let northSettings: NorthSettings
    public let stateDirectory: String
    public let logger: Logger
    public let publisher: (any MessagePublisher)?
    /// One store for every stage's per-charger state, kept across reloads.
    public let store: StageStore

    public init(registry: StageRegistry, southSettings: SouthSettings, northSettings: NorthSettings, stateDirectory: String,
                logger: Logger, publisher: (any MessagePublisher)? = nil, store: StageStore? = nil) {
        self.store = store ?? StageStore(stateDirectory: stateDirectory, logger: logger)
        self.registry = registry
        self.southSettings = southSettings
        self.northSettings = northSettings
        self.stateDirectory = stateDirectory
        self.logger = logger
        self.publisher = publisher
    }

    /// A stage as declared in the file, before it is built.
    struct Declaration {
        var id: String
        var type: String
        var config: Node?
        var mark: Mark?
        var fingerprint: String
    }

    /// Checks a pipeline file without building anything that would touch the outside world… except
    /// stage initialisers, which validate their configuration. Every problem is collected.
    public func load(file: String, reusing previous: Pipeline? = nil) throws(ConfigurationError) -> Pipeline {
        var (declarations, diagnostics) = try declarations(in: file)
        var stages: [LoadedStage] = []
        for declaration in declarations {
            if let old = previous?.stages.first(where: {
                $0.id == declaration.id && $0.type == declaration.type && $0.fingerprint == declaration.fingerprint
            }) {
                stages.append(old)
                continue
            }
            guard let entry = registry.entries[declaration.type] else { continue }
            let subject = "stage '\(declaration.id)' (\(declaration.type))"
            var stageLogger = logger
            stageLogger[metadataKey: "stage"] = "\(declaration.id)"
            let context = StageSetupContext(stageId: declaration.id, logger: stageLogger, stateDirectory: stateDirectory,
                                            south: southSettings, north: northSettings, publisher: publisher, store: store)
            do {
                let instance = try entry.build(declaration.config, declaration.mark, NodeDecoder(file: file), subject, context)
                stages.append(LoadedStage(id: declaration.id, type: declaration.type, fingerprint: declaration.fingerprint,
                                          instance: instance))
            } catch let error as ConfigurationError {
                diagnostics += error.diagnostics
            } catch let error as ConfigurationKeyError {
                diagnostics.append(Diagnostic(file: file, mark: Self.mark(of: error.key, in: declaration.config) ?? declaration.config?.mark ?? declaration.mark,
                                              message: "\(subject): \(error)"))
            } catch let error as ConfigurationKeyError.Many {
                for problem in error.errors {
                    diagnostics.append(Diagnostic(file: file, mark: Self.mark(of: problem.key, in: declaration.config) ?? declaration.config?.mark ?? declaration.mark,
                                                  message: "\(subject): \(problem)"))
                }
            } catch {
                diagnostics.append(Diagnostic(file: file, mark: declaration.config?.mark ?? declaration.mark, message: "\(subject): \(error)"))
            }
        }
        guard diagnostics.isEmpty else { throw ConfigurationError(diagnostics) }
        return Pipeline(stages: stages, file: file)
    }

    /// Where a stage's config key (`a.b` for nested ones) is written: its value, else the key itself.
    static func mark(of key: String, in config: Node?) -> Mark? {
        var node = config
        var keyNode: Node?
        for part in key.split(separator: ".") {
            guard case .mapping(let mapping)? = node, let entry = mapping.first(where: { $0.key.string == String(part) }) else {
                return keyNode?.mark
            }
            keyNode = entry.key
            node = entry.value
        }
        return node?.mark ?? keyNode?.mark
    }

    /// Parses the file's structure: `version`, `stages`, each stage's `id`, `type`, `enabled`, `config`.
    /// Returns the stages that can be built and the problems found, so that `load` can report
    /// structural and configuration mistakes together. Throws only when the file cannot be read at all.
    func declarations(in file: String) throws(ConfigurationError) -> ([Declaration], [Diagnostic]) {
        let root = try composeYAML(file: file)
        var diagnostics: [Diagnostic] = []
        func fail(_ node: Node?, _ message: String) { diagnostics.append(Diagnostic(file: file, mark: node?.mark, message: message)) }

        guard let root, case .mapping(let top) = root else {
            throw ConfigurationError([Diagnostic(file: file, mark: root?.mark,
                                                 message: "a pipeline is a mapping with 'version: 1' and a 'stages' list")])
        }
        let topKeys = ["stages", "version"]
        var stagesNode: Node?
        var versionNode: Node?
        for (key, value) in top {
            switch key.string {
            case "stages": stagesNode = value
            case "version": versionNode = value
            default: fail(key, "unknown key '\(key.string ?? "?")'; valid keys: \(topKeys.joined(separator: ", "))")
            }
        }
        if let versionNode {
            if versionNode.int != 1 { fail(versionNode, "unsupported pipeline version '\(versionNode.string ?? "?")'; this gateway reads version 1") }
        } else {
            fail(root, "missing 'version: 1'")
        }
        var declarations: [Declaration] = []
        var seen: [String: Mark?] = [:]
        if let stagesNode {
            guard case .sequence(let list) = stagesNode else {
                fail(stagesNode, "'stages' should be a list of stages (each starting with '- id:')")
                return ([], diagnostics)
            }
            let stageKeys = ["config", "enabled", "id", "type"]
            for item in list {
                guard case .mapping(let fields) = item else {
                    fail(item, "a stage should be a mapping with 'id' and 'type'")
                    continue
                }
                var id: String?
                var type: String?
                var typeNode: Node?
                var enabled = true
                var config: Node?
                for (key, value) in fields {
                    switch key.string {
                    case "id":
                        if let text = value.scalar?.string, !text.isEmpty { id = text } else { fail(value, "'id' should be a non-empty name") }
                    case "type":
                        typeNode = value
                        if let text = value.scalar?.string { type = text } else { fail(value, "'type' should be a stage type name") }
                    case "enabled":
                        if let flag = value.bool { enabled = flag } else { fail(value, "'enabled' should be true or false") }
                    case "config":
                        if case .mapping = value { config = value } else if value.null == nil { fail(value, "'config' should be a mapping") }
                    default:
                        let name = key.string ?? "?"
                        let hint = closestMatch(to: name, in: stageKeys).map { " (did you mean '\($0)'?)" } ?? ""
                        fail(key, "unknown key '\(name)' in a stage\(hint); valid keys: \(stageKeys.joined(separator: ", "))")
                    }
                }
                guard let type else {
                    if typeNode == nil { fail(item, "stage \(id.map { "'\($0)' " } ?? "")is missing 'type'") }
                    continue
                }
                let stageId = id ?? type
                if let earlier = seen[stageId] {
                    fail(item, "duplicate stage id '\(stageId)' (first used at line \(earlier?.line ?? 0)); ids must be unique")
                    continue
                }
                seen[stageId] = item.mark
                if registry.entries[type] == nil {
                    let hint = closestMatch(to: type, in: registry.types).map { " (did you mean '\($0)'?)" } ?? ""
                    fail(typeNode, "unknown stage type '\(type)'\(hint); registered: \(registry.types.joined(separator: ", "))")
                    continue
                }
                guard enabled else { continue }
                let fingerprint = (try? config.map { try Yams.serialize(node: $0) }) ?? ""
                declarations.append(Declaration(id: stageId, type: type, config: config, mark: item.mark, fingerprint: fingerprint))
            }
        } else {
            fail(root, "missing 'stages' (a list; it may be empty: 'stages: []')")
        }
        return (declarations, diagnostics)
    }
}

/// The pipeline in service. Sessions read it at the start of every frame, so a swap takes
/// effect between frames and never in the middle of one.
public final class PipelineHolder: Sendable {
    private let current: Mutex<Pipeline>

    public init(_ pipeline: Pipeline) { current = Mutex(pipeline) }

    public var pipeline: Pipeline { current.withLock { $0 } }

    /// Puts `new` in service and returns the one it replaced.
    @discardableResult
    public func swap(to new: Pipeline) -> Pipeline {
        current.withLock { old in
            let previous = old
            old = new
            return previous
        }
    }
}
