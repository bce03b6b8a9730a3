public import NIOCore
import NIOHTTP1
import NIOPosix

/// `/metrics` (Prometheus text format) and `/healthz` on `admin.listen`.
public enum AdminServer {
    public struct Endpoints: Sendable {
        public var metrics: @Sendable () -> [UInt8]
        public var health: @Sendable () -> (healthy: Bool, body: String)

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
        case .body: break
        case .end:
            guard let head else { return }
            self.head = nil
            respond(to: head, context: context)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?").first.map(String.init) ?? head.uri
        let status: HTTPResponseStatus
        let contentType: String
        let body: [UInt8]
        switch (head.method, path) {
        case (.GET, "/metrics"):
            status = .ok
            contentType = "text/plain; version=0.0.4; charset=utf-8"
            body = endpoints.metrics()
        case (.GET, "/healthz"):
            let (healthy, text) = endpoints.health()
            status = healthy ? .ok : .serviceUnavailable
            contentType = "application/json"
            body = Array(text.utf8)
        case (_, "/metrics"), (_, "/healthz"):
            status = .methodNotAllowed
            contentType = "text/plain"
            body = Array("use GET\n".utf8)
        default:
            status = .notFound
            contentType = "text/plain"
            body = Array("not found; try /metrics or /healthz\n".utf8)
        }
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: "\(body.count)")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        if !head.isKeepAlive { context.close(promise: nil) }
    }
}
