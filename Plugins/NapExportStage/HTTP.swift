import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL

/// One HTTP request of the OCPI push.
struct OutgoingRequest: Sendable {
    var method: String
    var url: URL
    var headers: [(String, String)]
    var body: [UInt8]
}

struct IncomingResponse: Sendable {
    var status: Int
    var body: [UInt8]
}

/// Sends one request and returns the answer; throws on a network failure or timeout.
protocol HTTPSending: Sendable {
    func send(_ request: OutgoingRequest, timeout: Duration) async throws -> IncomingResponse
}

struct HTTPFailure: Error, CustomStringConvertible {
    var description: String
}

/// A minimal HTTP/1.1 client on SwiftNIO (one connection per request, `Connection: close`), with TLS
/// through NIOSSL for https. Runs on NIO's shared event loops, never on a charger's frame path.
struct NIOHTTPSender: HTTPSending {
    let tlsContext: NIOSSLContext?

    /// `caFile`: PEM roots for an https receiver (system roots without it).
    init(url: URL, caFile: String?) throws {
        if url.scheme == "https" {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.minimumTLSVersion = .tlsv12
            if let caFile { configuration.trustRoots = .file(caFile) }
            tlsContext = try NIOSSLContext(configuration: configuration)
        } else {
            tlsContext = nil
        }
    }

    func send(_ request: OutgoingRequest, timeout: Duration) async throws -> IncomingResponse {
        guard let host = request.url.host else { throw HTTPFailure(description: "no host in the URL") }
        let port = request.url.port ?? (request.url.scheme == "https" ? 443 : 80)
        let group = MultiThreadedEventLoopGroup.singleton
        let eventLoop = group.next()
        let promise = eventLoop.makePromise(of: IncomingResponse.self)
        let tlsContext = self.tlsContext
        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(.seconds(Int64(max(1, timeout.components.seconds))))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tlsContext {
                        let handler = try NIOSSLClientHandler(context: tlsContext, serverHostname: host.first?.isNumber == true ? nil : host)
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(ResponseCollector(promise: promise))
                }
            }
        let timer = eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000
                                                            + timeout.components.attoseconds / 1_000_000_000)) {
            promise.fail(HTTPFailure(description: "no answer within \(timeout)"))
        }
        defer { timer.cancel() }
        let channel: any Channel
        do {
            channel = try await bootstrap.connect(host: host, port: port).get()
        } catch {
            promise.fail(error)
            throw error
        }
        var path = request.url.path.isEmpty ? "/" : request.url.path
        if let query = request.url.query { path += "?" + query }
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: request.url.port.map { "\(host):\($0)" } ?? host)
        headers.add(name: "Connection", value: "close")
        headers.add(name: "Content-Length", value: "\(request.body.count)")
        for (name, value) in request.headers { headers.add(name: name, value: value) }
        let head = HTTPRequestHead(version: .http1_1, method: HTTPMethod(rawValue: request.method), uri: path, headers: headers)
        let body = request.body
        channel.eventLoop.execute {
            channel.write(HTTPClientRequestPart.head(head), promise: nil)
            if !body.isEmpty { channel.write(HTTPClientRequestPart.body(.byteBuffer(channel.allocator.buffer(bytes: body))), promise: nil) }
            channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
        }
        do {
            let response = try await promise.futureResult.get()
            channel.close(promise: nil)
            return response
        } catch {
            channel.close(promise: nil)
            throw error
        }
    }
}

/// Collects one response (bounded: a receiver cannot make the gateway hold more than 1 MiB).
private final class ResponseCollector: ChannelInboundHandler {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<IncomingResponse>
    private var status = 0
    private var body: [UInt8] = []
    private static let limit = 1 << 20

    init(promise: EventLoopPromise<IncomingResponse>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): status = Int(head.status.code)
        case .body(let buffer):
            if body.count + buffer.readableBytes <= Self.limit { body += buffer.readableBytesView }
        case .end:
            promise.succeed(IncomingResponse(status: status, body: body))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        promise.fail(HTTPFailure(description: "connection closed before the answer"))
        context.fireChannelInactive()
    }
}

/// The stage's own small HTTP server for the Locations sender interface (`pull_listen`).
enum PullServer {
    static func start(host: String, port: Int, locations: NapLocations, token: String?) async throws -> any Channel {
        try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    try channel.pipeline.syncOperations.addHandler(PullHandler(locations: locations, token: token))
                }
            }
            .bind(host: host, port: port)
            .get()
    }
}

private final class PullHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let locations: NapLocations
    /// The accepted `Authorization` value, `Token <base64>`; nil: open.
    let expected: String?
    private var head: HTTPRequestHead?

    init(locations: NapLocations, token: String?) {
        self.locations = locations
        expected = token.map { "Token " + Data($0.utf8).base64EncodedString() }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head): self.head = head
        case .body: break  // GET only; a body is ignored, never buffered.
        case .end:
            guard let head else { return }
            self.head = nil
            respond(head, context: context)
        }
    }

    private func respond(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let now = Date().timeIntervalSince1970
        let parts = head.uri.split(separator: "?", maxSplits: 1).map(String.init)
        var answer: (status: Int, headers: [(String, String)], body: [UInt8])
        if head.method != .GET {
            answer = NapLocations.error(405, 2000, "use GET", now: now)
        } else if let expected, !HTTPSafety.sameBytes(head.headers.first(name: "Authorization") ?? "", expected) {
            answer = NapLocations.error(401, 2000, "a valid 'Authorization: Token …' is required", now: now)
        } else {
            answer = locations.respond(path: parts.first ?? "/", query: parts.count > 1 ? parts[1] : "",
                                       host: HTTPSafety.safeHost(head.headers.first(name: "Host")), now: now)
        }
        var headers = HTTPHeaders()
        for (name, value) in answer.headers { headers.add(name: name, value: value) }
        headers.add(name: "Content-Length", value: "\(answer.body.count)")
        // Echoed as OCPI asks (transport_and_format §4.1.2), limited to 36 printable ASCII characters.
        for name in ["X-Request-ID", "X-Correlation-ID"] {
            if let value = head.headers.first(name: name) {
                headers.add(name: name, value: String(value.filter { $0.isASCII && !$0.isNewline && $0 != "\r" && $0 != "\0" }.prefix(36)))
            }
        }
        let status = HTTPResponseStatus(statusCode: answer.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: answer.body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        if !head.isKeepAlive { context.close(promise: nil) }
    }
}

/// What the pull server does with peer-supplied header values.
enum HTTPSafety {
    /// Compares without stopping at the first difference (no timing hint about the token).
    static func sameBytes(_ a: String, _ b: String) -> Bool {
        let x = Array(a.utf8), y = Array(b.utf8)
        var difference = x.count ^ y.count
        for index in 0..<max(x.count, y.count) {
            difference |= Int((index < x.count ? x[index] : 0) ^ (index < y.count ? y[index] : 0))
        }
        return difference == 0
    }

    /// The Host header as it may appear in a `Link` header: host name or address and port characters only.
    static func safeHost(_ host: String?) -> String {
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]")
        guard let host, !host.isEmpty, host.count <= 255, host.allSatisfy({ allowed.contains($0) }) else { return "localhost" }
        return host
    }
}
