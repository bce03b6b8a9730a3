import Foundation
import Synchronization
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
    /// The request came over TLS (a server with `tls` options).
    public var isTLS = false
    /// The client certificate the peer presented in the TLS handshake (already verified against the
    /// server's trust roots when it has any); nil without TLS or without a certificate.
    public var peerCertificate: PeerCertificate?
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
    /// From accept until the upgrade request has arrived (TLS handshake included): a connection
    /// that has not sent its whole request by then is closed (slowloris, idle sockets).
    public var handshakeTimeout: TimeAmount
    /// From the upgrade request until the decision is taken and the upgrade done.
    public var decisionTimeout: TimeAmount
    /// Connections from one IP address, counted from accept until close; nil: no limit.
    public var maxConnectionsPerSource: Int?
    /// Connections accepted and not yet upgraded, from all sources together; nil: no limit.
    public var maxPendingConnections: Int?
    /// The outbound queue of each upgraded connection.
    public var outboundLimits: OutboundLimits
    /// Messages each client may send (nil: unlimited); see `InboundBudget`.
    public var inboundBudget: InboundBudget?
    /// Told of every connection the server closes before its upgrade (limits, timeouts).
    public var onRefusal: (@Sendable (ConnectionRefusal) -> Void)?

    public init(host: String, port: Int, tls: TLSConfiguration? = nil, maxMessageBytes: Int = 65_536, pingInterval: TimeAmount? = nil,
                handshakeTimeout: TimeAmount = .seconds(10), decisionTimeout: TimeAmount = .seconds(30),
                maxConnectionsPerSource: Int? = nil, maxPendingConnections: Int? = nil,
                outboundLimits: OutboundLimits = OutboundLimits(), onRefusal: (@Sendable (ConnectionRefusal) -> Void)? = nil) {
        self.host = host
        self.port = port
        self.tls = tls
        self.maxMessageBytes = maxMessageBytes
        self.pingInterval = pingInterval
        self.handshakeTimeout = handshakeTimeout
        self.decisionTimeout = decisionTimeout
        self.maxConnectionsPerSource = maxConnectionsPerSource
        self.maxPendingConnections = maxPendingConnections
        self.outboundLimits = outboundLimits
        self.onRefusal = onRefusal
    }
}

/// A connection the server closed before (or instead of) its upgrade.
public struct ConnectionRefusal: Sendable, Equatable {
    public enum Reason: String, Sendable, Equatable {
        /// `maxConnectionsPerSource` reached at accept: answered HTTP 429 and closed.
        case tooManyFromSource = "too_many_from_source"
        /// `maxPendingConnections` reached at accept: answered HTTP 503 and closed.
        case tooManyPending = "too_many_pending"
        /// No complete upgrade request within `handshakeTimeout`.
        case handshakeTimeout = "handshake_timeout"
        /// The decision and upgrade took longer than `decisionTimeout`.
        case decisionTimeout = "decision_timeout"
        /// More than `WebSocketServer.maxRequestBytes` before the upgrade.
        case requestTooLarge = "request_too_large"
        /// The TLS handshake failed: a client certificate that does not chain to the trust roots or is
        /// not valid now, no common protocol version or suite, or no TLS at all.
        case tlsHandshakeFailed = "tls_handshake_failed"
    }
    public var reason: Reason
    /// The peer's IP address, if known.
    public var source: String?
    /// Connections open from that source (for `tooManyFromSource`) or pending (for `tooManyPending`).
    public var open: Int
    /// For `tlsHandshakeFailed`: the TLS error.
    public var detail: String? = nil
    /// For `tlsHandshakeFailed`: the client certificate the peer presented, when it got that far.
    public var peerCertificate: PeerCertificate? = nil
}

/// Counts connections per source and connections not yet upgraded, from accept to close.
public final class ConnectionLimiter: Sendable {
    public let maxPerSource: Int?
    public let maxPending: Int?
    private struct Counts {
        var perSource: [String: Int] = [:]
        var pending = 0
    }
    private let counts = Mutex(Counts())

    public init(maxPerSource: Int?, maxPending: Int?) {
        self.maxPerSource = maxPerSource
        self.maxPending = maxPending
    }

    /// Counts a new connection, or says why it must be refused (and then counts nothing).
    func admit(source: String?) -> ConnectionRefusal? {
        counts.withLock { counts in
            if let maxPending, counts.pending >= maxPending {
                return ConnectionRefusal(reason: .tooManyPending, source: source, open: counts.pending)
            }
            if let source, let maxPerSource {
                let open = counts.perSource[source, default: 0]
                if open >= maxPerSource { return ConnectionRefusal(reason: .tooManyFromSource, source: source, open: open) }
                counts.perSource[source] = open + 1
            }
            counts.pending += 1
            return nil
        }
    }

    /// The connection was upgraded: it no longer counts as pending.
    func upgraded() {
        counts.withLock { $0.pending -= 1 }
    }

    /// The connection closed.
    func closed(source: String?, wasPending: Bool) {
        counts.withLock { counts in
            if wasPending { counts.pending -= 1 }
            if let source, maxPerSource != nil, let open = counts.perSource[source] {
                counts.perSource[source] = open > 1 ? open - 1 : nil
            }
        }
    }

    /// Open connections from `source` (counted only when there is a per-source limit).
    public func openConnections(from source: String) -> Int { counts.withLock { $0.perSource[source] ?? 0 } }
    /// Connections accepted and not yet upgraded.
    public var pendingConnections: Int { counts.withLock { $0.pending } }
}

/// A WebSocket server whose every upgrade is decided by a function (which may take its time:
/// the gateway connects north before it answers).
public enum WebSocketServer {
    public typealias Decide = @Sendable (UpgradeRequest, any Channel) -> EventLoopFuture<UpgradeAnswer>

    /// Bytes a client may send before its upgrade completes (the request head is at most NIO's
    /// 80 KiB header limit); more closes the connection, so nothing is buffered without bound
    /// while the decision runs.
    public static let maxRequestBytes = 96 * 1024

    /// Binds and returns the listening channel; close it to stop accepting.
    public static func start(_ options: WebSocketServerOptions, group: any EventLoopGroup, decide: @escaping Decide) async throws -> any Channel {
        try await start(options, group: group, limiter: ConnectionLimiter(maxPerSource: options.maxConnectionsPerSource,
                                                                          maxPending: options.maxPendingConnections),
                        decide: decide)
    }

    /// As above, counting connections in `limiter` (which then overrides the options' limits).
    public static func start(_ options: WebSocketServerOptions, group: any EventLoopGroup, limiter: ConnectionLimiter,
                             decide: @escaping Decide) async throws -> any Channel {
        let sslContext = try options.tls.map { try NIOSSLContext(configuration: $0.closingPromptly()) }
        let onRefusal = options.onRefusal
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            // Fairness between the chargers of one event loop: one read of at most 16 KiB per connection
            // per loop turn, so a flooding peer delays the others by one small batch of frames, not seconds.
            .childChannelOption(.maxMessagesPerRead, value: 1)
            .childChannelOption(.recvAllocator, value: fairReadAllocator)
            .childChannelInitializer { channel in
                // Counted at accept, so idle sockets that never send a request count too.
                let source = channel.remoteAddress?.ipAddress
                if let refusal = limiter.admit(source: source) {
                    onRefusal?(refusal)
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            ImmediateRefusal(status: refusal.reason == .tooManyPending ? .serviceUnavailable : .tooManyRequests))
                    }
                }
                let pending = NIOLoopBoundBox(PendingUpgrade(), eventLoop: channel.eventLoop)
                pending.value.arm(on: channel, after: options.handshakeTimeout) {
                    onRefusal?(ConnectionRefusal(reason: .handshakeTimeout, source: source, open: 0))
                }
                channel.closeFuture.whenComplete { _ in
                    pending.value.deadline?.cancel()
                    limiter.closed(source: source, wasPending: !pending.value.upgraded)
                }
                return channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: sslContext))
                        try channel.pipeline.syncOperations.addHandler(TLSHandshakeWatch { error, certificate in
                            onRefusal?(ConnectionRefusal(reason: .tlsHandshakeFailed, source: source, open: 0,
                                                         detail: "\(error)", peerCertificate: certificate))
                        })
                    }
                    let byteLimit = RequestByteLimit(limit: maxRequestBytes) {
                        onRefusal?(ConnectionRefusal(reason: .requestTooLarge, source: source, open: 0))
                    }
                    try channel.pipeline.syncOperations.addHandler(byteLimit)
                    pending.value.byteLimit = byteLimit
                    let upgrader = NIOWebSocketServerUpgrader(
                        maxFrameSize: options.maxMessageBytes,
                        automaticErrorHandling: true,
                        shouldUpgrade: { channel, head in
                            // The request is in: from here the decision has its own bound.
                            pending.value.arm(on: channel, after: options.decisionTimeout) {
                                onRefusal?(ConnectionRefusal(reason: .decisionTimeout, source: source, open: 0))
                            }
                            var request = UpgradeRequest(uri: head.uri, headers: head.headers, remoteAddress: channel.remoteAddress)
                            if sslContext != nil {
                                request.isTLS = true
                                let tls = try? channel.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
                                request.peerCertificate = tls?.peerCertificate.flatMap(PeerCertificate.init)
                            }
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
                                if let byteLimit = pending.value.byteLimit {
                                    channel.pipeline.syncOperations.removeHandler(byteLimit, promise: nil)
                                    pending.value.byteLimit = nil
                                }
                                pending.value.deadline?.cancel()
                                pending.value.deadline = nil
                                pending.value.upgraded = true
                                limiter.upgraded()
                                let connection = try WebSocketConnection.install(on: channel, isClient: false,
                                                                                 maxMessageBytes: options.maxMessageBytes,
                                                                                 pingInterval: options.pingInterval,
                                                                                 outboundLimits: options.outboundLimits,
                                                                                 inboundBudget: options.inboundBudget)
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
    fileprivate var byteLimit: RequestByteLimit?
    /// When the connection is closed unless it has moved on (request in, upgrade done).
    var deadline: Scheduled<Void>?
    var upgraded = false

    /// (Re)starts the deadline: `channel` is closed after `timeout` unless re-armed or upgraded.
    func arm(on channel: any Channel, after timeout: TimeAmount, onExpiry: @escaping @Sendable () -> Void) {
        deadline?.cancel()
        deadline = channel.eventLoop.scheduleTask(in: timeout) {
            onExpiry()
            channel.close(promise: nil)
        }
    }
}

/// Reports a TLS handshake that failed (with the certificate the client presented, if NIOSSL kept it).
private final class TLSHandshakeWatch: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    let onFailure: (any Error, PeerCertificate?) -> Void
    private var done = false

    init(onFailure: @escaping (any Error, PeerCertificate?) -> Void) { self.onFailure = onFailure }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done, case NIOSSLError.handshakeFailed = error {
            done = true
            let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self)
            onFailure(error, tls?.peerCertificate.flatMap(PeerCertificate.init))
        }
        context.fireErrorCaught(error)
    }
}

/// Closes a connection whose bytes before the upgrade exceed `limit`.
private final class RequestByteLimit: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    let limit: Int
    let onExceeded: @Sendable () -> Void
    private var received = 0

    init(limit: Int, onExceeded: @escaping @Sendable () -> Void) {
        self.limit = limit
        self.onExceeded = onExceeded
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytes
        guard received <= limit else {
            if context.channel.isActive { onExceeded() }
            context.close(promise: nil)
            return
        }
        context.fireChannelRead(data)
    }
}

/// Answers a connection refused at accept with a bare HTTP status and closes it, reading nothing.
private final class ImmediateRefusal: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let status: HTTPResponseStatus

    init(status: HTTPResponseStatus) { self.status = status }

    func channelActive(context: ChannelHandlerContext) {
        let text = "HTTP/1.1 \(status.code) \(status.reasonPhrase)\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(channel.allocator.buffer(string: text))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {}
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

/// Reads of 512 B to 16 KiB (adaptive): small enough that one connection's burst is a short turn of the loop.
/// The first read gets 1 KiB (an upgrade request, an OCPP frame or a TLS record of one fits): each channel keeps
/// its last receive buffer for the next read, so a larger start is held by every idle charger twice (south and
/// north), while a link that carries more grows its reads within a few of them.
let fairReadAllocator = AdaptiveRecvByteBufferAllocator(minimum: 512, initial: 1024, maximum: 16_384)
