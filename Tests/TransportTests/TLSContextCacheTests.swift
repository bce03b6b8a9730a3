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

/// North TLS contexts are built once per client identity and reused while its files are unchanged.
@Suite("TLS context cache")
struct TLSContextCacheTests {
    /// A CA and `count` charger identities in a fresh folder.
    private static func pki(_ count: Int) throws -> (DevPKI, [String]) {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("ocpp-gw-tlscache-\(UUID().uuidString)").path
        let pki = try DevPKI(directory: folder, reuse: false)
        let ids = (1...count).map { "CP\($0)" }
        for id in ids { try pki.issueChargerCertificate(id) }
        return (pki, ids)
    }

    private static func context(_ cache: TLSContextCache, _ pki: DevPKI, _ id: String) throws -> NIOSSLContext {
        let (ca, certificate, key) = (pki.caCertificate, pki.chargerCertificate(id), pki.chargerKey(id))
        return try cache.context(caFile: ca, certificateFile: certificate, keyFile: key) {
            try NorthTLS.clientConfiguration(caFile: ca, certificateFile: certificate, keyFile: key)
        }
    }

    @Test func theSameIdentityGetsTheSameContext() throws {
        let (pki, ids) = try Self.pki(1)
        defer { try? FileManager.default.removeItem(atPath: pki.directory) }
        let cache = TLSContextCache(capacity: 4)
        let first = try Self.context(cache, pki, ids[0])
        let second = try Self.context(cache, pki, ids[0])
        #expect(first === second)
        #expect(cache.builds == 1)
        // What every WebSocket link over TLS uses: the short close_notify wait.
        #expect(first.configuration.shutdownTimeout == TLSConfiguration.closeNotifyWait)
    }

    @Test func aRenewedKeyOrANewCAFileBuildsANewContext() throws {
        let (pki, ids) = try Self.pki(1)
        defer { try? FileManager.default.removeItem(atPath: pki.directory) }
        let cache = TLSContextCache(capacity: 4)
        let old = try Self.context(cache, pki, ids[0])
        let oldKey = try String(contentsOfFile: pki.chargerKey(ids[0]), encoding: .utf8)
        try pki.issueChargerCertificate(ids[0])  // a new key and certificate, written as renewal writes them
        #expect(try String(contentsOfFile: pki.chargerKey(ids[0]), encoding: .utf8) != oldKey)
        let renewed = try Self.context(cache, pki, ids[0])
        #expect(renewed !== old)
        #expect(cache.builds == 2)
        #expect(cache.count == 1, "the renewed identity replaces its old context")
        #expect(try Self.context(cache, pki, ids[0]) === renewed)

        // The CA file rewritten (same content, a new file in its place): its context is built again.
        let caText = try String(contentsOfFile: pki.caCertificate, encoding: .utf8)
        try FileManager.default.removeItem(atPath: pki.caCertificate)
        try caText.write(toFile: pki.caCertificate, atomically: true, encoding: .utf8)
        #expect(try Self.context(cache, pki, ids[0]) !== renewed)
        #expect(cache.builds == 3)
    }

    @Test func theCacheIsBoundedAndDropsTheLeastRecentlyUsed() throws {
        let (pki, ids) = try Self.pki(4)
        defer { try? FileManager.default.removeItem(atPath: pki.directory) }
        let cache = TLSContextCache(capacity: 2)
        let first = try Self.context(cache, pki, ids[0])
        _ = try Self.context(cache, pki, ids[1])
        #expect(try Self.context(cache, pki, ids[0]) === first)  // CP1 used again: CP2 is now the oldest
        _ = try Self.context(cache, pki, ids[2])
        #expect(cache.count == 2)
        #expect(cache.builds == 3)
        #expect(try Self.context(cache, pki, ids[0]) === first, "the recently used one stays")
        #expect(cache.builds == 3)
        _ = try Self.context(cache, pki, ids[1])  // evicted: built again
        #expect(cache.builds == 4)
        for id in ids { _ = try Self.context(cache, pki, id) }
        #expect(cache.count == 2)
    }

    @Test func aFileThatCannotBeReadIsNotCachedAsGood() throws {
        let (pki, ids) = try Self.pki(1)
        defer { try? FileManager.default.removeItem(atPath: pki.directory) }
        let cache = TLSContextCache(capacity: 2)
        try FileManager.default.removeItem(atPath: pki.chargerKey(ids[0]))
        #expect(throws: (any Error).self) { try Self.context(cache, pki, ids[0]) }
        #expect(cache.count == 0)
    }

    /// The gateway's north connects go through the cache: the second connect of a charger reuses the
    /// context its first one built.
    @Test func aReconnectingChargerReusesItsNorthContext() async throws {
        let rig = try await Rig(chargers: ["CP001"])
        let charger = rig.charger("CP001")
        func held() -> [NIOSSLContext] {
            GatewayRuntime.northTLSContexts.entries.filter { $0.certificateFile?.hasPrefix(rig.folder) == true }.map(\.context)
        }
        let first = try await charger.connect(on: rig.group.next())
        _ = try await first.call("Heartbeat", [:]).get()
        let afterFirst = held()
        #expect(afterFirst.count == 1, "the first connect built and kept this charger's context")
        first.close()
        #expect(await RawSocket.eventually { rig.gateway.connectedChargers.isEmpty })
        let second = try await charger.connect(on: rig.group.next())
        _ = try await second.call("Heartbeat", [:]).get()
        let afterSecond = held()
        #expect(afterSecond.count == 1)
        #expect(afterSecond.first === afterFirst.first)
        second.close()
        await rig.stop()
    }
}
