import Foundation
public import NIOCore
public import NIOHTTP1
public import NIOSSL
import NIOPosix
import NIOWebSocket

/// A WebSocket upgrade request, as a server's decision function sees it.
public struct UpgradeRequest: Sendable {
    /// The request target as sent (still percent-encoded).
    public var uri: String
    public var headers: HTTPHeaders
    public var remoteAddress: SocketAddress?
    /// The subprotocols the client offered, in its order of preference.
    public var offeredSubprotocols: [String] {
        headers["Sec-WebSocket-Protocol"].flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }
    }

    /// The `Authorization: Basic` credentials, if present and decodable; `.malformed` if present but not.
    public var basicAuth: BasicAuthHeader {
        guard let value = headers["Authorization"].first else { return .absent }
        let parts = value.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "basic",
              let data = Data(base64Encoded: String(parts[1]).trimmingCharacters(in: .whitespaces)),
              let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":")
        else { return .malformed }
        return .present(username: String(text[..<colon]), password: String(text[text.index(after: colon)...]))
    }

    public enum BasicAuthHeader: Sendable, Equatable {
        case absent
        case malformed
        case present(username: String, password: String)
    }
}

/// What a server answers to an upgrade request.
public enum UpgradeAnswer: Sendable {
    /// Complete the handshake (selecting `subprotocol`, or none) and hand over the connection.
    case accept(subprotocol: String?, onUpgrade: @Sendable (WebSocketConnection) -> Void)
    /// Refuse with an HTTP status; `headers` are added to the response (e.g. `WWW-Authenticate`).
    case reject(HTTPResponseStatus, headers: HTTPHeaders = [:])
}

public struct WebSocketServerOptions: Sendable {
    public var host: String
    public var port: Int
    public var tls: TLSConfiguration?
    public var maxMessageBytes: Int
    public var pingInterval: TimeAmount?

    public init(host: String, port: Int, tls: TLSConfiguration? = nil, maxMessageBytes: Int = 65_536, pingInterval: TimeAmount? = nil) {
        self.host = host
        self.port = port
        self.tls = tls
        self.maxMessageBytes = maxMessageBytes
        self.pingInterval = pingInterval
    }
}

/// A WebSocket server whose every upgrade is decided by a function (which may take its time:
/// the gateway connects north before it answers).
public enum WebSocketServer {
    public typealias Decide = @Sendable (UpgradeRequest, any Channel) -> EventLoopFuture<UpgradeAnswer>

    /// Binds and returns the listening channel; close it to stop accepting.
    public static func start(_ options: WebSocketServerOptions, group: any EventLoopGroup, decide: @escaping Decide) async throws -> any Channel {
        let sslContext = try options.tls.map { try NIOSSLContext(configuration: $0) }
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                    }
                    let pending = NIOLoopBoundBox(PendingUpgrade(), eventLoop: channel.eventLoop)
                    let upgrader = NIOWebSocketServerUpgrader(
                        maxFrameSize: options.maxMessageBytes,
                        automaticErrorHandling: true,
                        shouldUpgrade: { channel, head in
                            let request = UpgradeRequest(uri: head.uri, headers: head.headers, remoteAddress: channel.remoteAddress)
                            return decide(request, channel).map { answer in
                                switch answer {
                                case .accept(let subprotocol, let onUpgrade):
                                    pending.value.onUpgrade = onUpgrade
                                    var headers = HTTPHeaders()
                                    if let subprotocol { headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol) }
                                    return headers
                                case .reject(let status, let headers):
                                    pending.value.rejection = (status, headers)
                                    return nil
                                }
                            }
                        },
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                // The refusal responder speaks HTTP; from here on the bytes are WebSocket frames.
                                if let responder = pending.value.responder {
                                    channel.pipeline.syncOperations.removeHandler(responder, promise: nil)
                                    pending.value.responder = nil
                                }
                                let connection = try WebSocketConnection.install(on: channel, isClient: false,
                                                                                 maxMessageBytes: options.maxMessageBytes,
                                                                                 pingInterval: options.pingInterval)
                                pending.value.onUpgrade?(connection)
                                pending.value.onUpgrade = nil
                            }
                        })
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
                    let responder = RefusalResponder(pending: pending)
                    pending.value.responder = responder
                    try channel.pipeline.syncOperations.addHandler(responder)
                }
            }
            .bind(host: options.host, port: options.port)
            .get()
    }
}

/// What the decision said, kept between `shouldUpgrade` and the response.
final class PendingUpgrade {
    var onUpgrade: (@Sendable (WebSocketConnection) -> Void)?
    var rejection: (HTTPResponseStatus, HTTPHeaders)?
    fileprivate var responder: RefusalResponder?
}

/// Answers every request that did not become a WebSocket: with the refusal the decision gave,
/// or 426 for plain HTTP.
private final class RefusalResponder: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    let pending: NIOLoopBoundBox<PendingUpgrade>

    init(pending: NIOLoopBoundBox<PendingUpgrade>) { self.pending = pending }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = unwrapInboundIn(data) else { return }
        let (status, extra) = pending.value.rejection
            ?? (.upgradeRequired, ["Upgrade": "websocket", "Sec-WebSocket-Version": "13"])
        let body = "\(status.code) \(status.reasonPhrase)\n"
        var headers = extra
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: status, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: body)))), promise: nil)
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
    }
}
