import Foundation
@testable import Gateway
import NIOCore
import NIOPosix
import Router
import StageKit
import Synchronization
import Testing

/// The admin listener's status page: access rules, escaping, capture path checks, the security-event
/// ring, routing, and the listener itself over loopback (docs/operations.md).
@Suite("status page")
struct StatusPageTests {
    static let hash = "pbkdf2-sha256$1000$c2FsdHNhbHRzYWx0c2FsdA==$" + Data(repeating: 7, count: 32).base64EncodedString()

    static func address(_ ip: String) throws -> SocketAddress { try SocketAddress(ipAddress: ip, port: 40_000) }

    // MARK: Access

    @Test func loopbackClientsNeedNoCredentials() throws {
        let access = AdminAccess(credentials: AdminCredentials(token: "0123456789abcdef0123"))
        for ip in ["127.0.0.1", "127.3.4.5", "::1"] {
            #expect(access.decide(path: "/", remote: try Self.address(ip), authorization: nil) == .allow, "\(ip)")
            #expect(access.decide(path: "/api/status", remote: try Self.address(ip), authorization: nil) == .allow)
        }
    }

    @Test func withoutCredentialsConfiguredOthersGetOnlyTheProbes() throws {
        let access = AdminAccess(credentials: AdminCredentials())
        let remote = try Self.address("192.0.2.10")
        for path in ["/", "/api/status", "/api/chargers/CP001", "/captures/CP001/x.jsonl"] {
            guard case .deny(403, _) = access.decide(path: path, remote: remote, authorization: nil) else {
                Issue.record("\(path) was not refused")
                continue
            }
        }
        // Even with a header: nothing to check it against.
        guard case .deny(403, _) = access.decide(path: "/", remote: remote, authorization: "Bearer anything-at-all-here") else {
            Issue.record("a token was accepted with none configured")
            return
        }
        for path in ["/healthz", "/readyz", "/metrics"] {
            #expect(access.decide(path: path, remote: remote, authorization: nil) == .allow, "\(path)")
        }
        // A client that only claims to be local is not.
        #expect(access.decide(path: "/", remote: try Self.address("::ffff:192.0.2.10"), authorization: nil) != .allow)
        #expect(access.decide(path: "/", remote: nil, authorization: nil) != .allow)
    }

    @Test func aTokenOpensThePageToOtherClients() throws {
        let token = "0123456789abcdef0123"
        let access = AdminAccess(credentials: AdminCredentials(token: token))
        let remote = try Self.address("192.0.2.10")
        #expect(access.decide(path: "/", remote: remote, authorization: nil) == .deny(status: 401, reason: "credentials required"))
        #expect(access.decide(path: "/", remote: remote, authorization: "Bearer " + token) == .allow)
        #expect(access.decide(path: "/", remote: remote, authorization: "bearer " + token) == .allow)
        for wrong in ["Bearer " + token.dropLast(), "Bearer " + token + "0", "Bearer", "Basic " + token, token] {
            #expect(access.decide(path: "/", remote: remote, authorization: String(wrong)) != .allow, "\(wrong)")
        }
        #expect(access.challenge.hasPrefix("Bearer"))
    }

    @Test func basicAuthChecksTheHashOffTheLoopAndRemembersAGoodHeader() async throws {
        let checks = CheckCounter()
        // The budget's clock is the test's: how long a check takes on a loaded machine does not matter.
        let clock = Mutex(ContinuousClock.now)
        let access = AdminAccess(credentials: AdminCredentials(basicUsername: "field", basicPasswordHash: Self.hash),
                                 now: { clock.withLock { $0 } }) { password, hash in
            checks.increment()
            return password == "right horse" && hash == Self.hash
        }
        let remote = try Self.address("198.51.100.7")
        func basic(_ user: String, _ password: String) -> String { "Basic " + Data("\(user):\(password)".utf8).base64EncodedString() }
        #expect(access.decide(path: "/", remote: remote, authorization: basic("intruder", "right horse")) != .allow)
        let good = basic("field", "right horse")
        guard case .checkPassword(let password, let header) = access.decide(path: "/", remote: remote, authorization: good) else {
            Issue.record("no password check")
            return
        }
        #expect(await access.check(password: password, header: header) == .allow)
        #expect(access.decide(path: "/", remote: remote, authorization: good) == .allow, "remembered: no second PBKDF2 run")
        #expect(checks.value == 1)
        // Wrong passwords cost a check each, at most four a second.
        guard case .checkPassword(let wrong, let wrongHeader) = access.decide(path: "/", remote: remote, authorization: basic("field", "wrong")) else {
            Issue.record("no password check")
            return
        }
        clock.withLock { $0 += .milliseconds(300) }
        let first = await access.check(password: wrong, header: wrongHeader)
        clock.withLock { $0 += .milliseconds(100) }
        let second = await access.check(password: wrong, header: wrongHeader)
        #expect(first == .deny(status: 401, reason: "wrong credentials"))
        #expect(second == .deny(status: 429, reason: "too many password checks; retry in a second"), "100 ms after the last check")
        #expect(checks.value == 2)
        clock.withLock { $0 += .milliseconds(250) }
        #expect(await access.check(password: wrong, header: wrongHeader) == .deny(status: 401, reason: "wrong credentials"), "250 ms on: checked again")
        #expect(checks.value == 3)
        #expect(access.challenge.hasPrefix("Basic"))
    }

    // MARK: Escaping and secrets

    static func snapshot(id: String = "CP001", text: String = "ok") -> StatusSnapshot {
        StatusSnapshot(
            generatedAt: "2026-01-01T00:00:00Z",
            gateway: GatewayStatus(ready: true, health: "ok", checks: ["north": .init(ok: false, detail: text)], south: "ws://x", north: "wss://y",
                                   sessions: 1),
            chargers: [ChargerStatus(id: id, connectedSince: "2026-01-01T00:00:00Z", remoteAddress: "127.0.0.1:1", southSecurityProfile: 1,
                                     northSecurityProfile: 3, northLink: "up",
                                     lastFromCharger: FrameSummary(at: "2026-01-01T00:00:00Z", message: text),
                                     certificateExpiry: nil, currentLimit: text, stages: ["s": [text: text]])],
            pipeline: PipelineStatus(file: "p.yaml", stages: [StageStatus(id: "guard", type: "ids", frames: 3, verdicts: ["drop": 1])]),
            securityEvents: [SecurityEventEntry(at: "2026-01-01T00:00:00Z", charger: id, type: text, techInfo: text)],
            captures: [CaptureEntry(charger: id, at: "t", trigger: text, frames: 2, bytes: 10, path: "/captures/CP001/a.jsonl")],
            healthChannel: HealthChannelStatus(broker: "b:1883", connected: false, queued: 3, queueLimit: 10, acknowledged: 5, dropped: 2))
    }

    @Test func everyPeerStringIsEscapedOnThePage() {
        let hostile = "<script>alert(1)</script>\"' onload=x &amp;"
        let page = StatusPage.render(Self.snapshot(id: "CP<b>", text: hostile))
        #expect(!page.contains("<script>"))
        #expect(!page.contains("CP<b>"))
        #expect(!page.contains("\"' onload"))
        #expect(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;&quot;&#39; onload=x &amp;amp;"))
        #expect(page.contains("<meta http-equiv=\"refresh\" content=\"10\">"))
        #expect(!page.contains("<script"), "no JavaScript at all")
        #expect(page.contains("dropped 2") && page.contains("disconnected") && page.contains("queued 3 of 10"))
    }

    @Test func theSnapshotJSONHasSnakeCaseKeysAndRoundTrips() throws {
        let snapshot = Self.snapshot()
        let json = try #require(try JSONSerialization.jsonObject(with: Data(snapshot.json())) as? [String: Any])
        #expect(Set(json.keys) == ["generated_at", "gateway", "chargers", "pipeline", "security_events", "captures", "health_channel"])
        let charger = try #require((json["chargers"] as? [[String: Any]])?.first)
        #expect(charger["north_security_profile"] as? Int == 3 && charger["queued_towards_csms"] as? Int == 0)
        #expect(try JSONDecoder().decode(StatusSnapshot.self, from: Data(snapshot.json())) == snapshot)
    }

    @Test func peerTextIsBoundedAndHasNoControlCharacters() {
        #expect(displaySafe("a\u{1b}[2Jb\nc", limit: 100) == "a\\u{1b}[2Jb\\u{a}c")
        #expect(displaySafe("<\"quoted\">", limit: 100) == "<\"quoted\">", "markup and quotes stay for the page to escape")
        #expect(displaySafe(String(repeating: "x", count: 1000), limit: 10) == "xxxxxxxxxx…(1000 bytes)")
    }

    // MARK: Security events

    @Test func theSecurityEventRingKeepsTheLast50NewestFirst() {
        let log = SecurityEventLog(capacity: 50)
        for index in 0 ..< 120 {
            let frame = #"[2,"id\#(index)","SecurityEventNotification",{"type":"Event\#(index)","timestamp":"2026-01-01T00:00:00Z","techInfo":"\#(String(repeating: "i", count: 400))"}]"#
            log.inspect(Array(frame.utf8), chargerId: "CP001")
        }
        log.inspect(Array(#"[2,"h1","Heartbeat",{}]"#.utf8), chargerId: "CP001")
        log.inspect(Array(#"[3,"r1",{"type":"SecurityEventNotification"}]"#.utf8), chargerId: "CP001")
        log.inspect(Array(#"[2,"b1","DataTransfer",{"vendorId":"SecurityEventNotification"}]"#.utf8), chargerId: "CP001")
        let recent = log.recent
        #expect(recent.count == 50)
        #expect(recent.first?.type == "Event119" && recent.last?.type == "Event70")
        #expect(recent.allSatisfy { ($0.techInfo?.count ?? 0) < 300 }, "tech info bounded")
    }

    // MARK: Captures

    @Test func onlyFilesTheDashcamWroteAreServed() throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("status-\(UUID().uuidString)").path
        let folder = state + "/dashcam/CP001"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: state + "/chargers/CP001", withIntermediateDirectories: true)
        try Data(#"{"charger":"CP001","at":"2026-01-01T00:00:00Z","trigger":"Faulted","frames":1}"#.utf8 + [10] + Data("{}\n".utf8))
            .write(to: URL(fileURLWithPath: folder + "/2026-01-01T000000Z-faulted.jsonl"))
        try Data("-----BEGIN PRIVATE KEY-----\n".utf8).write(to: URL(fileURLWithPath: state + "/chargers/CP001/key.pem"))
        try FileManager.default.createSymbolicLink(atPath: folder + "/link.jsonl", withDestinationPath: state + "/chargers/CP001/key.pem")
        try Data("x".utf8).write(to: URL(fileURLWithPath: folder + "/notes.txt"))
        let captures = CaptureFolder(stateDirectory: state)

        #expect(captures.read(folder: "CP001", file: "2026-01-01T000000Z-faulted.jsonl") != nil)
        for (folder, file) in [("CP001", "link.jsonl"), ("CP001", "notes.txt"), ("..", "chargers/CP001/key.pem"),
                               ("CP001", "../../chargers/CP001/key.pem"), ("../chargers", "CP001"), ("CP001", "missing.jsonl"),
                               (".", "CP001"), ("", "x.jsonl")] {
            #expect(captures.read(folder: folder, file: file) == nil, "\(folder)/\(file)")
        }
        let listed = captures.list()
        #expect(listed.map(\.trigger).contains("Faulted"))
        #expect(listed.first { $0.trigger == "Faulted" }?.path == "/captures/CP001/2026-01-01T000000Z-faulted.jsonl")
    }

    @Test func theRoutingTableDecodesOnlyWholeComponents() {
        #expect(AdminServer.Route(path: "/") == .page)
        #expect(AdminServer.Route(path: "/api/status") == .apiStatus)
        #expect(AdminServer.Route(path: "/api/chargers/CP%3A01") == .apiCharger("CP:01"))
        #expect(AdminServer.Route(path: "/captures/CP001/a%2F..%2Fb.jsonl") == .capture(folder: "CP001", file: "a/../b.jsonl"))
        #expect(AdminServer.Route(path: "/captures/CP001/x/y.jsonl") == .notFound)
        #expect(AdminServer.Route(path: "/api/chargers/") == .notFound)
        #expect(AdminServer.Route(path: "/etc/passwd") == .notFound)
    }

    // MARK: The listener

    @Test func theListenerServesGETAndHEADAndRefusesOtherMethods() async throws {
        var endpoints = AdminServer.Endpoints(metrics: { Array("m 1\n".utf8) }, health: { (true, "{}") })
        endpoints.status = { Self.snapshot() }
        endpoints.ready = { (false, "{\"ready\":false}") }
        let server = try await AdminServer.start(host: "127.0.0.1", port: 0, group: MultiThreadedEventLoopGroup.singleton, endpoints: endpoints)
        defer { server.close(promise: nil) }
        let port = try #require(server.localAddress?.port)

        func exchange(_ request: String) async throws -> String {
            let socket = try await RawSocket.connect(port: port)
            defer { socket.close() }
            try await socket.send(request)
            // HTTP/1.0: the server closes after its answer; a loaded machine (the whole suite, TSan) may take seconds.
            await RawSocket.eventually(within: .seconds(30)) { !socket.isOpen }
            return socket.receivedText
        }
        let page = try await exchange("GET / HTTP/1.0\r\n\r\n")
        #expect(page.hasPrefix("HTTP/1.0 200 OK") && page.contains("Content-Type: text/html") && page.contains("<h2>Chargers</h2>"))
        #expect(page.contains("Content-Security-Policy: default-src 'none'"))
        let head = try await exchange("HEAD /api/status HTTP/1.0\r\n\r\n")
        #expect(head.hasPrefix("HTTP/1.0 200 OK") && head.hasSuffix("\r\n\r\n"), "headers only")
        #expect(head.contains("Content-Length: \(Self.snapshot().json().count)"))
        let post = try await exchange("POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc")
        #expect(post.hasPrefix("HTTP/1.0 405") && post.contains("Allow: GET, HEAD"))
        #expect(try await exchange("GET /readyz HTTP/1.0\r\n\r\n").hasPrefix("HTTP/1.0 503"))
        #expect(try await exchange("GET /metrics HTTP/1.0\r\n\r\n").hasSuffix("m 1\n"))
    }
}

private final class CheckCounter: Sendable {
    private let count = Mutex(0)
    func increment() { count.withLock { $0 += 1 } }
    var value: Int { count.withLock { $0 } }
}


@Suite("status page: last frames")
struct LastFrameTests {
    @Test func aLargeFrameIsNotKeptAliveAndStillNamed() {
        var activity = LinkActivity()
        let big = #"[2,"m1","DataTransfer",{"vendorId":"x","data":""# + String(repeating: "a", count: 1 << 20) + #""}]"#
        activity.received(Array(big.utf8), from: .csms)
        #expect(activity.fromCSMS?.bytes.count == 128, "a prefix, not the megabyte")
        #expect(LinkActivity.summary(activity.fromCSMS)?.message == "DataTransfer")
        activity.received(Array(#"[3,"m1",{}]"#.utf8), from: .charger)
        #expect(LinkActivity.summary(activity.fromCharger)?.message == "CALLRESULT")
        activity.sent(Array(#" [ 2, "m9", "GetConfiguration", {}]"#.utf8), to: .charger)
        activity.sent(Array(#"[3,"c1",{"status":"Accepted"}]"#.utf8), to: .charger)  // an answer: not a CALL
        activity.received(Array(#"[3,"m9",{"configurationKey":[]}]"#.utf8), from: .charger)
        #expect(LinkActivity.summary(activity.fromCharger, answering: activity.callToCharger)?.message == "CALLRESULT (GetConfiguration)")
        activity.received(Array(#"[4,"other","GenericError","",{}]"#.utf8), from: .charger)
        #expect(LinkActivity.summary(activity.fromCharger, answering: activity.callToCharger)?.message == "CALLERROR", "not the answer to it")
        activity.received(Array("not json".utf8), from: .charger)
        #expect(LinkActivity.summary(activity.fromCharger)?.message == "malformed")
        activity.received(Array(#"[2,"m2","Heart<beat>\u001b",{}]"#.utf8), from: .charger)
        #expect(LinkActivity.summary(activity.fromCharger)?.message == "Heart<beat>\\u{1b}")
    }
}
