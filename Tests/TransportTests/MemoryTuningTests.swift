import DevPKI
import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import OCPP
import Simulators
import Testing
@testable import Gateway
@testable import Transport

/// What one connected charger and the idle gateway hold (docs/scaling.md, "Memory").
@Suite("memory per charger")
struct MemoryTuningTests {
    /// The heap is trimmed once a storm has settled: after `churn` sessions started or ended, at the first look
    /// that finds none started or ended since the one before; a few chargers coming and going never trim.
    @Test func theHeapIsTrimmedOnceAStormSettles() {
        var policy = HeapShrinkPolicy(churn: 64)
        var schedules = 0
        for _ in 0..<63 where policy.sessionChanged() { schedules += 1 }
        #expect(schedules == 0 && !policy.lookPending)
        // The 64th schedules one look; more changes do not schedule another.
        for _ in 0..<500 where policy.sessionChanged() { schedules += 1 }
        #expect(schedules == 1 && policy.lookPending)
        var looks: [Bool] = []
        looks.append(policy.look())  // sessions still arrived since the look was scheduled
        for _ in 0..<437 { _ = policy.sessionChanged() }
        looks.append(policy.look())  // and since the last look
        looks.append(policy.look())  // held still: trim
        #expect(looks == [false, false, true])
        #expect(!policy.lookPending)
        // The count starts again: 63 more do not call for a trim, the 64th does.
        for _ in 0..<63 where policy.sessionChanged() { schedules += 1 }
        #expect(schedules == 1)
        let scheduled = policy.sessionChanged()
        #expect(scheduled)
        #expect(HeapShrinkPolicy.trimHeap())
    }

    /// The north URL's charger segment is encoded by hand exactly as Foundation's percent encoding with
    /// `urlPathAllowed` minus `/;?#` did (which built a `CharacterSet` bitmap per connect).
    @Test func northPathSegmentEncodesAsFoundationDid() {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/;?#")
        var ids = ["CP001", "", "a/b", "a b", "100%", "x;y?z#w", "é-ü", "日本", "🔌", "!$&'()*+,-.:=@_~", "a\u{0}b", "\"<>[]{}|^`"]
        // Every ASCII byte alone and after a letter, and a few multi-byte scalars.
        ids += (0..<128).flatMap { [String(UnicodeScalar(UInt8($0))), "A" + String(UnicodeScalar(UInt8($0)))] }
        ids += ["\u{80}", "\u{7FF}", "\u{800}", "\u{FFFD}", "\u{10000}", "\u{10FFFF}"]
        for id in ids {
            #expect(GatewayRuntime.pathSegment(id) == id.addingPercentEncoding(withAllowedCharacters: allowed), "\(id.unicodeScalars.map(\.value))")
        }
    }

    /// Every north TLS context shares the CA certificates of `north.ca_file`: one parse for all identities,
    /// not one copy of each CA certificate per charger.
    @Test func everyChargerIdentitySharesTheParsedTrustRoots() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ocpp-gw-roots-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let pki = try DevPKI(directory: folder, reuse: false)
        for id in ["CP1", "CP2"] { try pki.issueChargerCertificate(id) }
        let cache = TrustRootCache()
        func roots(_ id: String) throws -> [NIOSSLCertificate] {
            let tls = try GatewayRuntime.northTLSConfiguration(caFile: pki.caCertificate, certificateFile: pki.chargerCertificate(id),
                                                               keyFile: pki.chargerKey(id), trustRoots: cache)
            guard case .certificates(let certificates) = tls.trustRoots else { Issue.record("trust roots are not the CA file's certificates"); return [] }
            #expect(tls.certificateVerification == .fullVerification)
            return certificates
        }
        let first = try roots("CP1")
        let second = try roots("CP2")
        #expect(first.count == 1)
        #expect(first.count == second.count)
        #expect(zip(first, second).allSatisfy { $0 === $1 }, "the second identity reuses the first one's CA certificate objects")
        #expect(cache.parseCount == 1)
        #expect(first == (try NIOSSLCertificate.fromPEMFile(pki.caCertificate)), "the same certificates as a fresh parse")

        // A new CA file in its place is read again.
        let text = try String(contentsOfFile: pki.caCertificate, encoding: .utf8)
        try FileManager.default.removeItem(atPath: pki.caCertificate)
        try text.write(toFile: pki.caCertificate, atomically: true, encoding: .utf8)
        let reread = try roots("CP1")
        #expect(cache.parseCount == 2)
        #expect(!zip(first, reread).allSatisfy { $0 === $1 })
    }

    /// Two chargers connected through the gateway: their north TLS contexts (one per client identity) hold
    /// the same CA certificate objects, parsed once.
    @Test func theGatewaysNorthContextsShareTheirTrustRoots() async throws {
        let rig = try await Rig(chargers: ["CP001", "CP002"])
        var links: [OCPPPeer] = []
        for id in ["CP001", "CP002"] {
            let link = try await rig.charger(id).connect(on: rig.group.next())
            _ = try await link.call("Heartbeat", [:]).get()
            links.append(link)
        }
        let held = GatewayRuntime.northTLSContexts.entries.filter { $0.certificateFile?.hasPrefix(rig.folder) == true }.map(\.context)
        #expect(held.count == 2)
        let roots: [[NIOSSLCertificate]] = held.map { context in
            if case .certificates(let certificates) = context.configuration.trustRoots { return certificates }
            return []
        }
        #expect(roots.count == 2 && roots.allSatisfy { $0.count == 1 })
        if roots.count == 2, roots.allSatisfy({ $0.count == 1 }) {
            #expect(roots[0][0] === roots[1][0], "one parsed CA certificate for every identity")
        }
        for link in links { link.close() }
        await rig.stop()
    }

    /// Both sides of a charger's link start reading with 1 KiB: each channel keeps its receive buffer
    /// between reads, so the first size is what an idle charger holds (it was 4 KiB, twice per charger).
    @Test func aNewLinkReadsIntoASmallBufferFirst() async throws {
        let server = try await TestServer()
        defer { Task { await server.stop() } }
        let client = try await WebSocketClient.connect(
            WebSocketClientOptions(url: URL(string: "ws://127.0.0.1:\(server.port)/ocpp/CP1")!), on: MultiThreadedEventLoopGroup.singleton.next()).get()
        defer { client.channel.close(promise: nil) }
        let allocator = try await client.channel.getOption(.recvAllocator).get()
        let first = allocator.buffer(allocator: ByteBufferAllocator()).capacity
        #expect(first <= 1024)
        for _ in 0..<50 where server.connections.withLock({ $0.isEmpty }) { try await Task.sleep(for: .milliseconds(10)) }
        let south = try #require(server.connections.withLock { $0.first })
        let southAllocator = try await south.channel.getOption(.recvAllocator).get()
        #expect(southAllocator.buffer(allocator: ByteBufferAllocator()).capacity <= 1024)
    }

    @Test func oneEventLoopPerCPUTheProcessMayUse() {
        #expect(EventLoopSizing.defaultThreads(allowedCPUs: 1, coreCount: 2) == 1, "pinned to one CPU: one loop, not one per CPU of the machine")
        #expect(EventLoopSizing.defaultThreads(allowedCPUs: 4, coreCount: 2) == 2, "a cgroup quota of 2 CPUs still caps it")
        #expect(EventLoopSizing.defaultThreads(allowedCPUs: nil, coreCount: 3) == 3)
        #expect(EventLoopSizing.defaultThreads(allowedCPUs: 0, coreCount: 0) == 1)
        #expect(EventLoopSizing.cpuCount(allowedList: "0\n") == 1)
        #expect(EventLoopSizing.cpuCount(allowedList: "0-3,6") == 5)
        #expect(EventLoopSizing.cpuCount(allowedList: "1,3-4") == 3)
        #expect(EventLoopSizing.cpuCount(allowedList: "x") == nil)
        #expect(EventLoopSizing.cpuCount(allowedList: "3-1") == nil)
        #expect((EventLoopSizing.allowedCPUCount() ?? 0) >= 1)
    }

    @Test func theOperatorsArenaLimitWins() {
        #expect(!EventLoopSizing.limitMallocArenas(to: 1, environment: ["MALLOC_ARENA_MAX": "4"]))
        #expect(!EventLoopSizing.limitMallocArenas(to: 1, environment: ["GLIBC_TUNABLES": "glibc.malloc.arena_max=4"]))
    }
}
