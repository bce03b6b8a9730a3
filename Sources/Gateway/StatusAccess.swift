import Foundation
public import NIOCore
public import Router
import Synchronization

/// Who may see what on `admin.listen` (docs/operations.md, "Admin access"):
///
/// - `/healthz`, `/readyz` and `/metrics` are served to every client that reaches the listener
///   (probes and Prometheus; they hold no secret), as before.
/// - Everything else (the status page, `/api/…`, capture downloads) is served to loopback clients,
///   and to others only with `admin.token` (`Authorization: Bearer …`) or `admin.basic_auth`.
/// - With neither configured, clients beyond loopback get 403 for those pages: deny by default.
///
/// The decision looks only at the TCP peer address and the `Authorization` header: no proxy header
/// (`X-Forwarded-For`) is trusted, so a local reverse proxy counts as loopback; put its own auth in front.
public struct AdminAccess: Sendable {
    public let credentials: AdminCredentials
    let verifyPassword: @Sendable (_ password: String, _ hash: String) -> Bool
    /// The clock of the password-check budget (tests pass their own: the budget is about time, not load).
    let now: @Sendable () -> ContinuousClock.Instant
    let memory = Memory()

    public init(credentials: AdminCredentials, now: @escaping @Sendable () -> ContinuousClock.Instant = { ContinuousClock.now },
                verifyPassword: @escaping @Sendable (_ password: String, _ hash: String) -> Bool = { _, _ in false }) {
        self.credentials = credentials
        self.now = now
        self.verifyPassword = verifyPassword
    }

    public enum Decision: Equatable, Sendable {
        case allow
        /// 401 (with a challenge) or 403 (nothing would help) or 429 (too many password checks).
        case deny(status: Int, reason: String)
        /// A Basic password to check against the hash: slow (PBKDF2), so done off the event loop.
        case checkPassword(password: String, header: String)
    }

    /// Paths every client may ask for.
    public static let openPaths: Set<String> = ["/healthz", "/readyz", "/metrics"]

    /// `WWW-Authenticate` for a 401.
    public var challenge: String {
        credentials.basicPasswordHash != nil ? "Basic realm=\"ocpp-gateway admin\", charset=\"UTF-8\"" : "Bearer realm=\"ocpp-gateway admin\""
    }

    public func decide(path: String, remote: SocketAddress?, authorization: String?) -> Decision {
        if Self.openPaths.contains(path) { return .allow }
        if let remote, Self.isLoopback(remote) { return .allow }
        guard credentials.isConfigured else {
            return .deny(status: 403, reason: "the status page is served to loopback clients only; set admin.token or admin.basic_auth to open it to others")
        }
        guard let authorization else { return .deny(status: 401, reason: "credentials required") }
        let parts = authorization.split(separator: " ", maxSplits: 1)
        guard parts.count == 2 else { return .deny(status: 401, reason: "malformed Authorization header") }
        let scheme = parts[0].lowercased()
        let value = parts[1].trimmingCharacters(in: .whitespaces)
        if scheme == "bearer", let token = credentials.token {
            return Self.constantTimeEquals(Array(value.utf8), Array(token.utf8)) ? .allow : .deny(status: 401, reason: "wrong token")
        }
        if scheme == "basic", let username = credentials.basicUsername, credentials.basicPasswordHash != nil {
            guard let data = Data(base64Encoded: value), let decoded = String(data: data, encoding: .utf8),
                  let colon = decoded.firstIndex(of: ":")
            else { return .deny(status: 401, reason: "malformed Basic credentials") }
            let user = String(decoded[..<colon])
            let password = String(decoded[decoded.index(after: colon)...])
            guard Self.constantTimeEquals(Array(user.utf8), Array(username.utf8)) else { return .deny(status: 401, reason: "wrong credentials") }
            if memory.wasVerified(authorization) { return .allow }
            return .checkPassword(password: password, header: authorization)
        }
        return .deny(status: 401, reason: "unsupported credentials")
    }

    /// Checks a Basic password against `admin.basic_auth.password_hash`, off the event loop. At most four
    /// checks a second for the whole listener (each costs a PBKDF2 run); a header that passed is remembered
    /// (the last four), so a browser refreshing the page does not cost one every time.
    public func check(password: String, header: String) async -> Decision {
        guard let hash = credentials.basicPasswordHash else { return .deny(status: 401, reason: "wrong credentials") }
        guard memory.admitCheck(now: now()) else { return .deny(status: 429, reason: "too many password checks; retry in a second") }
        let verify = verifyPassword
        let ok = await Task.detached { verify(password, hash) }.value
        guard ok else { return .deny(status: 401, reason: "wrong credentials") }
        memory.remember(header)
        return .allow
    }

    /// 127.0.0.0/8, ::1 and IPv4-mapped 127.x.
    public static func isLoopback(_ address: SocketAddress) -> Bool {
        guard let ip = address.ipAddress else { return false }
        return AdminCredentials.isLoopback(host: ip)
    }

    /// Compares without leaking, through timing, how many leading bytes matched (the length may show).
    static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var difference: UInt8 = a.count == b.count ? 0 : 1
        for i in 0 ..< max(a.count, b.count) {
            difference |= (i < a.count ? a[i] : 0) ^ (i < b.count ? b[i] : 0)
        }
        return difference == 0
    }

    final class Memory: Sendable {
        private struct State {
            var verified: [String] = []
            var lastCheck: ContinuousClock.Instant?
        }
        private let state = Mutex(State())

        func wasVerified(_ header: String) -> Bool {
            state.withLock { state in state.verified.contains { AdminAccess.constantTimeEquals(Array($0.utf8), Array(header.utf8)) } }
        }

        func remember(_ header: String) {
            state.withLock { state in
                state.verified.append(header)
                if state.verified.count > 4 { state.verified.removeFirst() }
            }
        }

        func admitCheck(now: ContinuousClock.Instant) -> Bool {
            state.withLock { state in
                if let last = state.lastCheck, now - last < .milliseconds(250) { return false }
                state.lastCheck = now
                return true
            }
        }
    }
}
