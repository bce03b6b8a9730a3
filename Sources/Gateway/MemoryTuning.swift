import Foundation
import NIOCore
import NIOSSL
import Synchronization
import Transport

/// How many event loops the gateway runs, and what glibc's allocator may do with them (docs/scaling.md, "Memory").
public enum EventLoopSizing {
    /// The CPUs this process may run on (its affinity, as `taskset`, `systemd`'s `CPUAffinity=` or a container's
    /// cpuset set it); nil where it cannot be read.
    public static func allowedCPUCount() -> Int? {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("Cpus_allowed_list:") })
        else { return nil }
        return cpuCount(allowedList: String(line.dropFirst("Cpus_allowed_list:".count)))
    }

    /// The CPUs in a list like `0-3,6` (the kernel's `Cpus_allowed_list`); nil if it does not parse.
    static func cpuCount(allowedList: String) -> Int? {
        var count = 0
        for range in allowedList.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: ",") {
            let bounds = range.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
            switch bounds.count {
            case 1: guard bounds[0] != nil else { return nil }; count += 1
            case 2:
                guard let low = bounds[0], let high = bounds[1], low <= high else { return nil }
                count += high - low + 1
            default: return nil
            }
        }
        return count > 0 ? count : nil
    }

    /// The default number of event loops: one per CPU the process may actually run on. SwiftNIO's
    /// `System.coreCount` honours cgroup quotas and cpusets but not the affinity mask, so a gateway pinned
    /// to one CPU used to start a loop per CPU of the machine, each with its own thread stack and malloc
    /// arena, all taking turns on that one CPU.
    public static func defaultThreads(allowedCPUs: Int?, coreCount: Int) -> Int {
        max(1, min(allowedCPUs ?? coreCount, coreCount))
    }

    /// `defaultThreads` for this process: its affinity and NIO's core count.
    public static func defaultThreads() -> Int {
        defaultThreads(allowedCPUs: allowedCPUCount(), coreCount: System.coreCount)
    }

    /// Caps glibc's malloc arenas at `arenas` (glibc starts up to 8 per CPU, one per thread that contends,
    /// and memory freed in one arena is never reused by another: with a loop per CPU and the concurrency
    /// pool's threads admitting chargers, a connect storm spreads each charger over several arenas). Left
    /// alone when the operator set `MALLOC_ARENA_MAX` or a `glibc.malloc.arena_max` tunable. Returns
    /// whether the limit was applied.
    @discardableResult
    public static func limitMallocArenas(to arenas: Int, environment: [String: String]? = nil) -> Bool {
        let environment = environment ?? ProcessInfo.processInfo.environment
        if environment["MALLOC_ARENA_MAX"] != nil || environment["GLIBC_TUNABLES"]?.contains("arena_max") == true { return false }
        // mallopt(3) is not in Swift's Glibc module (malloc.h); M_ARENA_MAX is -8 in glibc's malloc.h.
        typealias Mallopt = @convention(c) (Int32, Int32) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "mallopt") else { return false }
        let mallopt = unsafeBitCast(symbol, to: Mallopt.self)
        return mallopt(-8, Int32(clamping: max(1, arenas))) == 1
    }
}

/// When to give the heap's free pages back after a connect or disconnect storm (docs/scaling.md, "Memory").
///
/// glibc returns free memory to the kernel only from the top of the heap. A storm of TLS handshakes allocates
/// and frees a lot in between what the sessions keep, and those freed pages stay resident: in the runs where
/// the handshakes interleave badly, 5–9 MiB of 1,000 chargers' resident set (the high mode of the figure).
/// `malloc_trim(0)` releases them; it takes the allocator's lock while it walks the heap, so it runs once a
/// storm has settled, on a background queue. Driven by sessions starting and ending, not by a timer: an idle
/// gateway runs none of this (a periodic look woke it four times a second).
///
/// Once `churn` sessions have started or ended since the last trim, the gateway looks again after
/// `lookAfterMilliseconds`; when nothing started or ended in between, the storm has settled: trim.
public struct HeapShrinkPolicy: Sendable {
    /// Sessions started or ended since the last trim that call for the next one.
    public let churn: Int
    /// How long the sessions must hold still before the trim.
    public static let lookAfterMilliseconds: Int64 = 250
    private var changes = 0
    private var changesAtLastLook = 0
    public private(set) var lookPending = false

    public init(churn: Int = 64) { self.churn = max(1, churn) }

    /// A session started or ended. True when a look should be scheduled now (`lookAfterMilliseconds` from now).
    public mutating func sessionChanged() -> Bool {
        changes += 1
        guard changes >= churn, !lookPending else { return false }
        lookPending = true
        changesAtLastLook = changes
        return true
    }

    /// The scheduled look: true to trim now; false to look again later (sessions are still coming and going).
    public mutating func look() -> Bool {
        if changes == changesAtLastLook {
            changes = 0
            lookPending = false
            return true
        }
        changesAtLastLook = changes
        return false
    }

    /// `malloc_trim(0)`: every arena's free pages back to the kernel. False where the C library has none.
    @discardableResult
    public static func trimHeap() -> Bool {
        // malloc_trim(3) is in malloc.h, not in Swift's Glibc module.
        typealias MallocTrim = @convention(c) (Int) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return false }
        _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
        return true
    }
}

extension GatewayRuntime {
    /// A session started or ended on `loop`: counts toward the next heap trim (`HeapShrinkPolicy`).
    func noteSessionChurn(on loop: any EventLoop) {
        guard heapShrink.withLock({ $0.sessionChanged() }) else { return }
        scheduleHeapLook(on: loop)
    }

    private func scheduleHeapLook(on loop: any EventLoop) {
        loop.scheduleTask(in: .milliseconds(HeapShrinkPolicy.lookAfterMilliseconds)) { [self] in
            if heapShrink.withLock({ $0.look() }) {
                DispatchQueue.global(qos: .background).async { HeapShrinkPolicy.trimHeap() }
            } else {
                scheduleHeapLook(on: loop)
            }
        }
    }
}

/// The CSMS's trust roots (`north.ca_file`), parsed once and shared by every charger's TLS context: each
/// context used to parse the file again and keep its own copy of every CA certificate (≈ 3.5 KiB per
/// charger identity with one CA). Re-read when the file changes (device, inode, size, modification time).
final class TrustRootCache: Sendable {
    private struct Entry {
        var stamp: FileStamp?
        var certificates: [NIOSSLCertificate]
    }

    /// One entry per CA file path: a gateway has one `north.ca_file`.
    private let entries = Mutex<[String: Entry]>([:])

    /// Parses done so far (misses), for tests.
    private let parses = Mutex(0)
    var parseCount: Int { parses.withLock { $0 } }

    /// What is held for `caFile` (tests).
    func certificatesIfCached(caFile: String) -> [NIOSSLCertificate]? { entries.withLock { $0[caFile]?.certificates } }

    /// The certificates in `caFile`, the same objects for as long as the file is unchanged.
    func certificates(caFile: String) throws -> [NIOSSLCertificate] {
        let stamp = FileStamp(caFile)
        if let entry = entries.withLock({ $0[caFile] }), stamp != nil, entry.stamp == stamp { return entry.certificates }
        let certificates = try NIOSSLCertificate.fromPEMFile(caFile)
        parses.withLock { $0 += 1 }
        entries.withLock { $0[caFile] = Entry(stamp: stamp, certificates: certificates) }
        return certificates
    }
}

extension GatewayRuntime {
    /// The CA certificates every north TLS context of this process shares.
    static let northTrustRoots = TrustRootCache()

    /// A charger identity's north TLS configuration: `NorthTLS.clientConfiguration`, with the trust roots
    /// from the shared cache instead of a fresh parse of `north.ca_file`.
    static func northTLSConfiguration(caFile: String?, certificateFile: String?, keyFile: String?,
                                      trustRoots: TrustRootCache = northTrustRoots) throws -> TLSConfiguration {
        var tls = try NorthTLS.clientConfiguration(caFile: nil, certificateFile: certificateFile, keyFile: keyFile)
        if let caFile { tls.trustRoots = .certificates(try trustRoots.certificates(caFile: caFile)) }
        return tls
    }
}
