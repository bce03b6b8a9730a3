public import Foundation
#if canImport(Glibc)
import Glibc
#endif
public import Logging
import Metrics
import OCPP
import Synchronization

/// A problem reading or writing state on disk. A corrupt or unreadable file is an error, never
/// "no state": a stage that read defaults instead could downgrade a charger's security or lift a limit.
public struct StateStoreError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let reason: String
    public init(path: String, reason: String) {
        self.path = path
        self.reason = reason
    }
    public var description: String { "\(path): \(reason)" }
}

/// Files written so that a crash leaves either the old or the new content, never half of one:
/// a temporary file with a unique name is created with its final mode (never wider, never
/// chmod'ed after), written, fsync'ed, renamed over the target, and the folder is fsync'ed.
public enum AtomicFile {
    private static let sequence = Atomic<Int>(0)

    public static func write(_ data: Data, to path: String, mode: mode_t = 0o600) throws(StateStoreError) {
        let folder = self.folder(of: path)
        let temporary = path + ".tmp-\(processId)-\(sequence.add(1, ordering: .relaxed).newValue)"
        // The folder is made only when it is missing (the first save of a charger), not looked at per save.
        var descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        if descriptor < 0, errno == ENOENT {
            try makeFolder(folder)
            descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        }
        guard descriptor >= 0 else { throw StateStoreError(path: temporary, reason: "cannot create: \(errnoText())") }
        var failure = writeAll(data, to: descriptor)
        // open() masks the mode with the umask (never wider); make it exact when the umask took a bit of it.
        if failure == nil, modeNeedsFixing(mode, umask: processUmask), fchmod(descriptor, mode) != 0 { failure = errnoText() }
        if failure == nil, fsync(descriptor) != 0 { failure = errnoText() }
        close(descriptor)
        if let failure {
            unlink(temporary)
            throw StateStoreError(path: path, reason: "cannot write: \(failure)")
        }
        guard rename(temporary, path) == 0 else {
            let reason = errnoText()
            unlink(temporary)
            throw StateStoreError(path: path, reason: "cannot replace: \(reason)")
        }
        syncFolder(folder)
    }

    /// Creates a new file with `mode` from the first byte on (for keys, captures): fails if it exists.
    public static func create(_ data: Data, at path: String, mode: mode_t = 0o600) throws(StateStoreError) {
        let folder = self.folder(of: path)
        try makeFolder(folder)
        let descriptor = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard descriptor >= 0 else { throw StateStoreError(path: path, reason: "cannot create: \(errnoText())") }
        var failure = writeAll(data, to: descriptor)
        if failure == nil, fsync(descriptor) != 0 { failure = errnoText() }
        close(descriptor)
        if let failure {
            unlink(path)
            throw StateStoreError(path: path, reason: "cannot write: \(failure)")
        }
        syncFolder(folder)
    }

    /// The file's bytes; nil when it does not exist; an error when it exists but cannot be read.
    public static func read(_ path: String) throws(StateStoreError) -> Data? {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else {
            if errno == ENOENT { return nil }
            throw StateStoreError(path: path, reason: "cannot read: \(errnoText())")
        }
        defer { close(descriptor) }
        var data = Data()
        var buffer = [UInt8](repeating: 0, count: 16_384)
        while true {
            let count = buffer.withUnsafeMutableBytes { Foundation.read(descriptor, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw StateStoreError(path: path, reason: "cannot read: \(errnoText())")
            }
            if count == 0 { return data }
            data.append(contentsOf: buffer[0..<count])
        }
    }

    /// The group and other permission bits of `path` (e.g. 0o044) when any is set; nil when the file is
    /// private to its owner or absent. A private key with such bits is never used.
    public static func exposedModeBits(_ path: String) -> mode_t? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        let exposed = info.st_mode & 0o077
        return exposed == 0 ? nil : exposed
    }

    /// Removes a file and syncs its folder; a missing file is not an error.
    public static func remove(_ path: String) throws(StateStoreError) {
        guard unlink(path) == 0 || errno == ENOENT else { throw StateStoreError(path: path, reason: "cannot remove: \(errnoText())") }
        syncFolder(folder(of: path))
    }

    /// The folder holding `path`: what comes before its last `/` ("/" for a file at the root, "." for a
    /// bare name), read from the bytes (NSString's `deletingLastPathComponent` cost ~25,000 instructions
    /// a save, most of it re-spelling the slashes of a path the store built itself).
    package static func folder(of path: String) -> String {
        let bytes = path.utf8
        guard var end = bytes.lastIndex(of: UInt8(ascii: "/")) else { return "." }
        // `a//b`: the folder is `a`, not `a/`.
        while end > bytes.startIndex, bytes[bytes.index(before: end)] == UInt8(ascii: "/") { end = bytes.index(before: end) }
        return end == bytes.startIndex ? "/" : String(path[..<end])
    }

    /// The process id, read once (it names temporary files; one system call per save before).
    private static let processId = getpid()

    /// The process's umask, read once from `/proc/self/status` (reading it with `umask(2)` means setting
    /// it, which races with other threads creating files); nil when it cannot be read, and then every
    /// file's mode is set with `fchmod` as before. The gateway never changes its umask after it started.
    package static let processUmask: mode_t? = {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        return umask(fromStatus: status)
    }()

    /// The `Umask:` line of a `/proc/<pid>/status` text (Linux 4.7 and later), octal.
    package static func umask(fromStatus status: String) -> mode_t? {
        for line in status.split(separator: "\n") where line.hasPrefix("Umask:") {
            return mode_t(line.dropFirst("Umask:".count).trimmingCharacters(in: .whitespaces), radix: 8)
        }
        return nil
    }

    /// Whether a file `open`ed with `mode` under `umask` lacks bits of `mode` (an unknown umask: yes).
    package static func modeNeedsFixing(_ mode: mode_t, umask: mode_t?) -> Bool {
        guard let umask else { return true }
        return mode & umask != 0
    }

    static func makeFolder(_ folder: String) throws(StateStoreError) {
        do {
            try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        } catch {
            throw StateStoreError(path: folder, reason: "cannot create the folder: \(error.localizedDescription)")
        }
    }

    private static func writeAll(_ data: Data, to descriptor: Int32) -> String? {
        data.withUnsafeBytes { buffer -> String? in
            var offset = 0
            while offset < buffer.count {
                let written = Foundation.write(descriptor, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    return errnoText()
                }
                offset += written
            }
            return nil
        }
    }

    private static func syncFolder(_ folder: String) {
        let descriptor = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else { return }
        fsync(descriptor)
        close(descriptor)
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) }
}

/// Per-charger state on disk, the one way every stage keeps what must survive a reconnect, a
/// reload, a restart or `kill -9`: `<state_dir>/chargers/<charger id>/<name>`.
///
/// - Writes never run on an event loop: `save` hands the bytes to one serial writer and returns.
///   Writes to the same file are applied in order; when several are waiting, only the newest is
///   written (each write is complete, so the file always holds one whole version).
/// - Reads see the newest `save`, even before it reached the disk.
/// - A file that exists but cannot be read or decoded is an error (`StateStoreError`), logged and
///   counted (`ocpp_gateway_state_errors_total`); it is never read as "no state".
public final class StageStore: Sendable {
    public let root: String
    private let logger: Logger
    private let queue = DispatchQueue(label: "ocpp-gateway.state-store")
    /// Saves not yet on disk, newest per file, with a generation so the writer knows whether a newer one came.
    private let pending = PendingWrites()
    private let generations = Atomic<Int>(0)
    private let errors = Counter(label: "ocpp_gateway_state_errors_total")

    /// `stateDirectory` is the gateway's `state_dir`.
    public init(stateDirectory: String, logger: Logger) {
        root = stateDirectory + "/chargers"
        self.logger = logger
    }

    /// The file for `name` of a charger. Charger ids are checked at the door (`ChargerIdentity`);
    /// an id or name that could leave the folder is refused here too.
    public func path(charger: String, name: String) throws(StateStoreError) -> String {
        if let problem = ChargerIdentity.problem(with: charger) {
            throw StateStoreError(path: root, reason: "refusing state for an invalid charger id: \(problem)")
        }
        guard Self.isSafeName(name) else {
            throw StateStoreError(path: root, reason: "invalid state file name '\(LogSafe.escape(name))'")
        }
        return root + "/" + charger + "/" + name
    }

    /// Whether `name` is one or more `/`-separated parts, none empty, `.` or `..` (read on the bytes:
    /// splitting the name cost ~8,000 instructions a save).
    package static func isSafeName(_ name: String) -> Bool {
        var partLength = 0
        var dots = 0
        for byte in name.utf8 {
            if byte == UInt8(ascii: "/") {
                guard partLength > 0, dots != partLength || partLength > 2 else { return false }
                partLength = 0
                dots = 0
            } else {
                partLength += 1
                if byte == UInt8(ascii: ".") { dots += 1 }
            }
        }
        return partLength > 0 && (dots != partLength || partLength > 2)
    }

    /// Writes `data` off the event loop. `completion` runs on the writer's thread.
    public func save(_ data: Data, charger: String, name: String,
                     completion: (@Sendable (Result<Void, StateStoreError>) -> Void)? = nil) {
        enqueue(data, charger: charger, name: name, completion: completion)
    }

    /// Encodes `value` as JSON (sorted keys) and writes it off the event loop.
    public func save<Value: Encodable>(_ value: Value, charger: String, name: String,
                                       completion: (@Sendable (Result<Void, StateStoreError>) -> Void)? = nil) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        do {
            enqueue(try encoder.encode(value), charger: charger, name: name, completion: completion)
        } catch {
            let failure = StateStoreError(path: name, reason: "cannot encode: \(error)")
            report(failure)
            completion?(.failure(failure))
        }
    }

    /// Removes the file off the event loop (ordered with the writes to it).
    public func remove(charger: String, name: String, completion: (@Sendable (Result<Void, StateStoreError>) -> Void)? = nil) {
        enqueue(nil, charger: charger, name: name, completion: completion)
    }

    /// The newest bytes saved for `name`; nil if there are none.
    public func load(charger: String, name: String) throws(StateStoreError) -> Data? {
        let path = try path(charger: charger, name: name)
        if let waiting = pending.withLock({ $0[path] }) { return waiting.data }
        do {
            return try AtomicFile.read(path)
        } catch {
            report(error)
            throw error
        }
    }

    /// The newest value saved for `name`, decoded; nil if there is none; an error if it is corrupt.
    public func load<Value: Decodable>(_ type: Value.Type, charger: String, name: String) throws(StateStoreError) -> Value? {
        guard let data = try load(charger: charger, name: name) else { return nil }
        do {
            return try JSONDecoder().decode(type, from: data)
        } catch {
            let failure = StateStoreError(path: (try? path(charger: charger, name: name)) ?? name, reason: "corrupt: \(error)")
            report(failure)
            throw failure
        }
    }

    /// Returns once every write handed over before the call is on disk (shutdown, tests).
    public func flush() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async { continuation.resume() }
        }
    }

    /// Blocking variant of `flush` for synchronous callers that are not on an event loop.
    public func flushSynchronously() {
        queue.sync {}
    }

    private func enqueue(_ data: Data?, charger: String, name: String,
                         completion: (@Sendable (Result<Void, StateStoreError>) -> Void)?) {
        let path: String
        do {
            path = try self.path(charger: charger, name: name)
        } catch {
            report(error)
            completion?(.failure(error))
            return
        }
        // Coalesce: every save schedules a job, and the first job to run writes the newest bytes;
        // jobs that find nothing waiting were served by an earlier one.
        // The entry stays readable until it is on disk, so `load` never sees an older version.
        let generation = generations.add(1, ordering: .relaxed).newValue
        pending.withLock { $0[path] = (data, generation) }
        queue.async { [self] in
            var result: Result<Void, StateStoreError> = .success(())
            if let newest = pending.withLock({ $0[path] }) {
                do throws(StateStoreError) {
                    if let bytes = newest.data { try AtomicFile.write(bytes, to: path) } else { try AtomicFile.remove(path) }
                    pending.withLock { waiting in
                        if waiting[path]?.generation == newest.generation { waiting[path] = nil }
                    }
                } catch {
                    // Stays pending: reads keep seeing it, and the next save of this file tries again
                    // (and reports its own outcome instead of a success it did not have).
                    report(error)
                    result = .failure(error)
                }
            }
            completion?(result)
        }
    }

    private func report(_ error: StateStoreError) {
        errors.increment()
        logger.error("state store", metadata: ["error": "\(error)"])
    }
}

/// Saves not yet on disk, behind a pthread mutex (`NSLock`): ThreadSanitizer sees its ordering (it cannot
/// see the futex inside `Synchronization.Mutex` on Linux, and reported this store's hand-over as a race).
private final class PendingWrites: @unchecked Sendable {
    private let lock = NSLock()
    private var writes: [String: (data: Data?, generation: Int)] = [:]

    func withLock<T>(_ body: (inout [String: (data: Data?, generation: Int)]) -> T) -> T {
        lock.lock()
        defer { lock.unlock() }
        return body(&writes)
    }
}

/// What the gateway remembers of a charger's last BootNotification answer (`chargers/<id>/boot.json`,
/// through `StageStore`): a charger that reconnects without booting again was accepted before, so the
/// gateway's own CALLs may flow at once, and the outbox answers an offline boot with the last interval.
public struct BootRecord: Codable, Sendable, Equatable {
    /// The file's name in the charger's folder.
    public static let name = "boot.json"
    public var accepted: Bool
    /// The heartbeat interval the CSMS gave, in seconds.
    public var interval: Int?
    /// When the answer came (seconds since 1970).
    public var answeredAt: Double

    public init(accepted: Bool, interval: Int?, answeredAt: Double) {
        self.accepted = accepted
        self.interval = interval
        self.answeredAt = answeredAt
    }
}
