public import NIOCore
import Foundation
import NIOHTTP1
import NIOPosix
import Router

/// The admin listener (`admin.listen`): `/metrics` (Prometheus text format), `/healthz`, `/readyz`,
/// the status page `/` with its JSON twin `/api/status` and `/api/chargers/<id>`, and dashcam
/// capture downloads `/captures/<folder>/<file>`. GET and HEAD only; request bodies are ignored
/// (never buffered); keep-alive as the client asks. Access rules: `AdminAccess`.
public enum AdminServer {
    public struct Endpoints: Sendable {
        public var metrics: @Sendable () -> [UInt8]
        public var health: @Sendable () -> (healthy: Bool, body: String)
        /// `/readyz`; without a runtime always ready.
        public var ready: @Sendable () -> (ready: Bool, body: String) = { (true, "{\"ready\":true}\n") }
        /// The status snapshot (`/`, `/api/status`); nil: those paths answer 404.
        public var status: (@Sendable () async -> StatusSnapshot)?
        /// One charger (`/api/chargers/<id>`); nil when it is not connected.
        public var charger: (@Sendable (String) async -> ChargerStatus?)?
        /// A dashcam capture's bytes (`/captures/<folder>/<file>`), nil unless it is one the dashcam wrote.
        public var capture: (@Sendable (_ folder: String, _ file: String) async -> [UInt8]?)?
        public var access = AdminAccess(credentials: .init())
        /// `<meta http-equiv=refresh>` of the status page, in seconds.
        public var refreshSeconds = 10

        public init(metrics: @escaping @Sendable () -> [UInt8], health: @escaping @Sendable () -> (healthy: Bool, body: String)) {
            self.metrics = metrics
            self.health = health
        }
    }

    public static func start(host: String, port: Int, group: any EventLoopGroup, endpoints: Endpoints) async throws -> any Channel {
        try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(AdminHandler(endpoints: endpoints))
                }
            }
            .bind(host: host, port: port)
            .get()
    }

    /// One answer of the admin listener.
    struct Response: Sendable {
        var status: HTTPResponseStatus
        var contentType: String
        var body: [UInt8]
        var headers: [(String, String)] = []

        init(_ status: HTTPResponseStatus, _ contentType: String, _ body: [UInt8], headers: [(String, String)] = []) {
            self.status = status
            self.contentType = contentType
            self.body = body
            self.headers = headers
        }

        static func text(_ status: HTTPResponseStatus, _ text: String, headers: [(String, String)] = []) -> Response {
            Response(status, "text/plain; charset=utf-8", Array(text.utf8), headers: headers)
        }
    }

    /// The routing table: a path to what answers it.
    enum Route: Equatable {
        case metrics, healthz, readyz, page, apiStatus
        case apiCharger(String)
        case capture(folder: String, file: String)
        case notFound

        init(path: String) {
            switch path {
            case "/metrics": self = .metrics
            case "/healthz": self = .healthz
            case "/readyz": self = .readyz
            case "/", "/index.html": self = .page
            case "/api/status": self = .apiStatus
            default:
                let parts = path.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
                if parts.count == 4, parts[1] == "api", parts[2] == "chargers", let id = parts[3].removingPercentEncoding, !id.isEmpty {
                    self = .apiCharger(id)
                } else if parts.count == 4, parts[1] == "captures", let folder = parts[2].removingPercentEncoding,
                          let file = parts[3].removingPercentEncoding {
                    self = .capture(folder: folder, file: file)
                } else {
                    self = .notFound
                }
            }
        }
    }

    /// The probes and the scrape: answered on the spot, without a task.
    static func answerNow(_ route: Route, endpoints: Endpoints) -> Response? {
        switch route {
        case .metrics:
            return Response(.ok, "text/plain; version=0.0.4; charset=utf-8", endpoints.metrics())
        case .healthz:
            let (healthy, text) = endpoints.health()
            return Response(healthy ? .ok : .serviceUnavailable, "application/json", Array(text.utf8))
        case .readyz:
            let (ready, text) = endpoints.ready()
            return Response(ready ? .ok : .serviceUnavailable, "application/json", Array(text.utf8))
        case .notFound:
            return notFound
        default:
            return nil
        }
    }

    /// Answers one request (after the access check). Async: the snapshot reads sessions on their loops
    /// and the disk in a task, never blocking the admin connection's loop.
    static func answer(_ route: Route, endpoints: Endpoints) async -> Response {
        if let now = answerNow(route, endpoints: endpoints) { return now }
        switch route {
        case .metrics, .healthz, .readyz, .notFound:
            return notFound  // answered by answerNow
        case .page:
            guard let status = endpoints.status else { return notFound }
            let html = StatusPage.render(await status(), refreshSeconds: endpoints.refreshSeconds)
            return Response(.ok, "text/html; charset=utf-8", Array(html.utf8))
        case .apiStatus:
            guard let status = endpoints.status else { return notFound }
            return Response(.ok, "application/json", await status().json())
        case .apiCharger(let id):
            guard let charger = endpoints.charger else { return notFound }
            guard let found = await charger(id) else { return .text(.notFound, "charger not connected\n") }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            return Response(.ok, "application/json", Array((try? encoder.encode(found)) ?? Data()) + [UInt8(ascii: "\n")])
        case .capture(let folder, let file):
            guard let capture = endpoints.capture, let bytes = await capture(folder, file) else { return .text(.notFound, "no such capture\n") }
            // Shown as text, never interpreted: the frames inside came from peers.
            let name = String(file.filter { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.".contains($0)) })
            return Response(.ok, "text/plain; charset=utf-8", bytes, headers: [("Content-Disposition", "inline; filename=\"\(name)\"")])
        }
    }

    static let notFound = Response.text(.notFound, "not found; try /, /api/status, /metrics, /healthz or /readyz\n")
}

private final class AdminHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let endpoints: AdminServer.Endpoints
    private var head: HTTPRequestHead?

    init(endpoints: AdminServer.Endpoints) { self.endpoints = endpoints }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break  // never buffered: GET and HEAD carry none worth reading
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? head.uri
        guard head.method == .GET || head.method == .HEAD else {
            write(.text(.methodNotAllowed, "use GET or HEAD\n", headers: [("Allow", "GET, HEAD")]), for: head, context: context)
            return
        }
        let route = AdminServer.Route(path: path)
        let endpoints = self.endpoints
        let decision = endpoints.access.decide(path: path, remote: context.channel.remoteAddress,
                                               authorization: head.headers.first(name: "Authorization"))
        // Probes and the scrape are cheap and synchronous, as before: no task.
        if decision == .allow, let response = AdminServer.answerNow(route, endpoints: endpoints) {
            write(response, for: head, context: context)
            return
        }
        let answer: EventLoopFuture<AdminServer.Response>
        switch decision {
        case .allow:
            answer = context.eventLoop.makeFutureWithTask { await AdminServer.answer(route, endpoints: endpoints) }
        case .deny(let status, let reason):
            write(denied(status, reason), for: head, context: context)
            return
        case .checkPassword(let password, let header):
            let access = endpoints.access
            answer = context.eventLoop.makeFutureWithTask {
                switch await access.check(password: password, header: header) {
                case .allow: return await AdminServer.answer(route, endpoints: endpoints)
                case .deny(let status, let reason): return deniedResponse(status, reason, access: access)
                case .checkPassword: return deniedResponse(401, "wrong credentials", access: access)
                }
            }
        }
        answer.assumeIsolated().whenComplete { [self] result in
            switch result {
            case .success(let response): write(response, for: head, context: context)
            case .failure: write(.text(.internalServerError, "internal error\n"), for: head, context: context)
            }
        }
    }

    private func denied(_ status: Int, _ reason: String) -> AdminServer.Response {
        deniedResponse(status, reason, access: endpoints.access)
    }

    private func write(_ response: AdminServer.Response, for head: HTTPRequestHead, context: ChannelHandlerContext) {
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: "\(response.body.count)")
        // The page is self-contained: no script, no foreign resource, no framing, nothing cached.
        headers.add(name: "Content-Security-Policy", value: "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")
        headers.add(name: "X-Content-Type-Options", value: "nosniff")
        headers.add(name: "X-Frame-Options", value: "DENY")
        headers.add(name: "Referrer-Policy", value: "no-referrer")
        headers.add(name: "Cache-Control", value: "no-store")
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: response.status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        if !head.isKeepAlive { context.close(promise: nil) }
    }
}

/// A refusal: 401 with a challenge, 403, or 429 with Retry-After. The reason never repeats what the client sent.
private func deniedResponse(_ status: Int, _ reason: String, access: AdminAccess) -> AdminServer.Response {
    var headers: [(String, String)] = []
    if status == 401 { headers.append(("WWW-Authenticate", access.challenge)) }
    if status == 429 { headers.append(("Retry-After", "1")) }
    return .text(HTTPResponseStatus(statusCode: status), reason + "\n", headers: headers)
}
