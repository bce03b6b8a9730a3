public import Logging
import Synchronization

/// A log handler that keeps every line, so a stage test can assert what was (and what was not)
/// logged: that a key or a password never appears, or that a flood is throttled.
///
/// ```swift
/// let logs = LogCapture()
/// let tester = try StageTester(MyStage.self, logger: Logger(label: "test", factory: { _ in logs }))
/// #expect(!logs.text.contains("PRIVATE KEY"))
/// ```
public final class LogCapture: LogHandler, @unchecked Sendable {
    private let storage = Mutex<[LogEvent]>([])
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level = .trace

    public init() {}

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        storage.withLock { $0.append(event) }
    }

    /// Each line as "message key=value …", metadata included.
    public var lines: [String] {
        storage.withLock { events in
            events.map { event in
                let all = metadata.merging(event.metadata ?? [:]) { $1 }
                return ([String(describing: event.message)] + all.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" })
                    .joined(separator: " ")
            }
        }
    }

    /// Everything logged, as one string.
    public var text: String { lines.joined(separator: "\n") }
}
