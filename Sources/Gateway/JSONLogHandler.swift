#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
public import Logging
import Synchronization

/// `--log-format json`: one JSON object per line, for journald, Loki, Vector or Fluent Bit.
///
/// ```
/// {"ts":"2026-11-25T09:18:17.046Z","level":"info","msg":"admin endpoint up","logger":"ocpp-gateway","source":"ocpp_gateway","url":"http://127.0.0.1:9100/metrics"}
/// ```
///
/// `ts` (UTC, milliseconds), `level`, `msg`, `logger` (the logger's label), `source` (the module) and,
/// when one was passed, `error`; then every metadata key as a field of its own (a key that would
/// overwrite one of those is written as `metadata.<key>`). Strings are escaped as RFC 8259 asks, and
/// more: every control character (U+0000–U+001F, U+007F) and the line separators U+2028 / U+2029
/// become `\uXXXX` escapes, so nothing a peer sends can break a record over two lines or forge one.
/// Each record is written with a single `write(2)` under a lock: lines of concurrent loggers never interleave.
public struct JSONLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let output: JSONLogOutput

    /// A handler that writes to `output` (standard error unless a test gives its own).
    public init(label: String, output: JSONLogOutput = .standardError, metadataProvider: Logger.MetadataProvider? = nil) {
        self.label = label
        self.output = output
        self.metadataProvider = metadataProvider
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let explicit = event.metadata { merged.merge(explicit) { $1 } }
        output.write(Self.record(time: Date(), level: event.level, message: event.message.description, label: label,
                                 source: event.source, error: event.error.map { "\($0)" }, metadata: merged))
    }

    static let reserved: Set<String> = ["ts", "level", "msg", "logger", "source", "error"]
    private static let timeFormat = Date.ISO8601FormatStyle(includingFractionalSeconds: true)

    /// One record, `\n`-terminated. Metadata keys in sorted order, so equal events give equal lines.
    static func record(time: Date, level: Logger.Level, message: String, label: String, source: String, error: String?,
                       metadata: Logger.Metadata) -> String {
        var line = "{\"ts\":"
        appendString(time.formatted(timeFormat), to: &line)
        line += ",\"level\":"
        appendString(level.rawValue, to: &line)
        line += ",\"msg\":"
        appendString(message, to: &line)
        line += ",\"logger\":"
        appendString(label, to: &line)
        line += ",\"source\":"
        appendString(source, to: &line)
        if let error {
            line += ",\"error\":"
            appendString(error, to: &line)
        }
        for key in metadata.keys.sorted() {
            line += ","
            appendString(reserved.contains(key) ? "metadata." + key : key, to: &line)
            line += ":"
            appendValue(metadata[key]!, to: &line)
        }
        line += "}\n"
        return line
    }

    private static func appendValue(_ value: Logger.Metadata.Value, to line: inout String) {
        switch value {
        case .string(let string):
            appendString(string, to: &line)
        case .stringConvertible(let convertible):
            appendString(convertible.description, to: &line)
        case .array(let values):
            line += "["
            for (index, element) in values.enumerated() {
                if index > 0 { line += "," }
                appendValue(element, to: &line)
            }
            line += "]"
        case .dictionary(let dictionary):
            line += "{"
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { line += "," }
                appendString(key, to: &line)
                line += ":"
                appendValue(dictionary[key]!, to: &line)
            }
            line += "}"
        }
    }

    private static let hexDigits = Array("0123456789abcdef")

    /// A JSON string literal: `"`, `\` and every control or line-separating character escaped.
    static func appendString(_ string: String, to line: inout String) {
        line.unicodeScalars.append("\"")
        for scalar in string.unicodeScalars {
            switch scalar {
            case "\"": line += "\\\""
            case "\\": line += "\\\\"
            case "\n": line += "\\n"
            case "\r": line += "\\r"
            case "\t": line += "\\t"
            case "\u{08}": line += "\\b"
            case "\u{0C}": line += "\\f"
            case "\u{00}"..."\u{1F}", "\u{7F}", "\u{2028}", "\u{2029}":
                let value = Int(scalar.value)
                line += "\\u"
                for shift in [12, 8, 4, 0] { line.append(hexDigits[(value >> shift) & 0xF]) }
            default:
                line.unicodeScalars.append(scalar)
            }
        }
        line.unicodeScalars.append("\"")
    }
}

/// Where JSON records go: a file descriptor (standard error for the gateway), or a closure in tests.
public final class JSONLogOutput: Sendable {
    private let lock = Mutex<Void>(())
    private let sink: @Sendable (String) -> Void

    public static let standardError = JSONLogOutput(fileDescriptor: 2)

    public init(fileDescriptor: Int32) {
        sink = { record in writeAll(fileDescriptor, Array(record.utf8)) }
    }

    /// Every record is handed to `sink` whole, one at a time.
    public init(sink: @escaping @Sendable (String) -> Void) {
        self.sink = sink
    }

    func write(_ record: String) {
        lock.withLock { _ in sink(record) }
    }
}

/// `write(2)` until every byte is out; a closed or broken descriptor loses the record, never the gateway.
private func writeAll(_ fileDescriptor: Int32, _ bytes: [UInt8]) {
    bytes.withUnsafeBytes { buffer in
        var offset = 0
        while offset < buffer.count {
            let written = write(fileDescriptor, buffer.baseAddress! + offset, buffer.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                return
            }
            offset += written
        }
    }
}
