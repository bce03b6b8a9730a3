public import Foundation
public import NIOCore
public import NIOHTTP1
public import NIOSSL
import NIOPosix
import NIOWebSocket

/// Where and how to open a client WebSocket.
public struct WebSocketClientOptions: Sendable {
    public var url: URL
    /// TLS for `wss://`; nil for `ws://`.
    public var tls: TLSConfiguration?
    /// The name to verify in the server certificate (and send as SNI); defaults to the URL's host.
    public var serverName: String?
    public var subprotocol: String
    /// Sent as `Authorization: Basic …`.
    public var basicAuth: (username: String, password: String)?
    public var maxMessageBytes: Int
    public var pingInterval: TimeAmount?
    public var connectTimeout: TimeAmount

    public init(url: URL, tls: TLSConfiguration? = nil, serverName: String? = nil, subprotocol: String = "ocpp1.6",
                basicAuth: (username: String, password: String)? = nil, maxMessageBytes: Int = 1 << 20,
                pingInterval: TimeAmount? = nil, connectTimeout: TimeAmount = .seconds(10)) {
        self.url = url
        self.tls = tls
        self.serverName = serverName
        self.subprotocol = subprotocol
        self.basicAuth = basicAuth
        self.maxMessageBytes = maxMessageBytes
        self.pingInterval = pingInterval
        self.connectTimeout = connectTimeout
    }
}

/// Why a client WebSocket could not be opened, in words an operator can act on.
public enum WebSocketConnectError: Error, CustomStringConvertible {
    case invalidURL(String)
    case rejected(status: HTTPResponseStatus)
    case subprotocolNotAccepted(offered: String, answered: String?)
    case tlsFailure(String)
    case closedDuringHandshake

    public var description: String {
        switch self {
        case .invalidURL(let url): "invalid URL \(url)"
        case .rejected(let status): "the server refused the WebSocket upgrade: HTTP \(status.code) \(status.reasonPhrase)"
        case .subprotocolNotAccepted(let offered, let answered):
            "the server did not accept subprotocol \(offered) (answered \(answered ?? "none"))"
        case .tlsFailure(let detail): detail
        case .closedDuringHandshake: "the connection closed during the handshake"
        }
    }
}

public enum WebSocketClient {
    /// Opens a WebSocket on `eventLoop`; the connection's handlers all run there.
    public static func connect(_ options: WebSocketClientOptions, on eventLoop: any EventLoop) -> EventLoopFuture<WebSocketConnection> {
        let promise = eventLoop.makePromise(of: WebSocketConnection.self)
        guard let host = options.url.host, let components = URLComponents(url: options.url, resolvingAgainstBaseURL: false) else {
            promise.fail(WebSocketConnectError.invalidURL(options.url.absoluteString))
            return promise.futureResult
        }
        let secure = options.url.scheme == "wss"
        let port = options.url.port ?? (secure ? 443 : 80)
        let path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        let uri = components.percentEncodedQuery.map { path + "?" + $0 } ?? path

        let sslContext: NIOSSLContext?
        do {
            sslContext = try options.tls.map { try NIOSSLContext(configuration: $0) }
        } catch {
            promise.fail(WebSocketConnectError.tlsFailure("cannot set up TLS: \(error)"))
            return promise.futureResult
        }
        let hostIsAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        let verifiedName = options.serverName ?? (hostIsAddress ? nil : host)

        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(options.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let sslContext {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: sslContext, serverHostname: verifiedName))
                    }
                    let failures = HandshakeFailureCatcher(promise: promise)
                    let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: options.maxMessageBytes, automaticErrorHandling: true) {
                        channel, response in
                        channel.eventLoop.makeCompletedFuture {
                            channel.pipeline.syncOperations.removeHandler(failures, promise: nil)
                            let answered = response.headers["Sec-WebSocket-Protocol"].first
                            guard answered == options.subprotocol else {
                                promise.fail(WebSocketConnectError.subprotocolNotAccepted(offered: options.subprotocol, answered: answered))
                                channel.close(promise: nil)
                                return
                            }
                            let connection = try WebSocketConnection.install(on: channel, isClient: true,
                                                                             maxMessageBytes: options.maxMessageBytes,
                                                                             pingInterval: options.pingInterval)
                            connection.peerCertificateDER = try? channel.pipeline.syncOperations
                                .handler(type: NIOSSLClientHandler.self).peerCertificate?.toDERBytes()
                            promise.succeed(connection)
                        }
                    }
                    try channel.pipeline.syncOperations.addHTTPClientHandlers(
                        withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
                    try channel.pipeline.syncOperations.addHandler(failures)
                }
            }
        bootstrap.connect(host: host, port: port).whenComplete { result in
            switch result {
            case .failure(let error):
                promise.fail(error)
            case .success(let channel):
                channel.closeFuture.whenComplete { _ in promise.fail(WebSocketConnectError.closedDuringHandshake) }
                var headers = HTTPHeaders()
                headers.add(name: "Host", value: options.url.port.map { "\(host):\($0)" } ?? host)
                headers.add(name: "Sec-WebSocket-Protocol", value: options.subprotocol)
                if let auth = options.basicAuth {
                    let token = Data("\(auth.username):\(auth.password)".utf8).base64EncodedString()
                    headers.add(name: "Authorization", value: "Basic \(token)")
                }
                headers.add(name: "Content-Length", value: "0")
                let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: uri, headers: headers)
                channel.write(HTTPClientRequestPart.head(head), promise: nil)
                channel.writeAndFlush(HTTPClientRequestPart.end(nil), promise: nil)
            }
        }
        return promise.futureResult
    }
}

/// Turns a refused upgrade or a TLS error during the handshake into a failed connect.
private final class HandshakeFailureCatcher: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<WebSocketConnection>

    init(promise: EventLoopPromise<WebSocketConnection>) { self.promise = promise }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            promise.fail(WebSocketConnectError.rejected(status: head.status))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        promise.fail(Self.explain(error))
        context.close(promise: nil)
    }

    static func explain(_ error: any Error) -> any Error {
        guard let sslError = error as? NIOSSLError else { return error }
        let text = "\(sslError)"
        if text.contains("CERTIFICATE_VERIFY_FAILED") {
            return WebSocketConnectError.tlsFailure("TLS handshake failed: the server's certificate is not trusted by the configured CA (\(text))")
        }
        return WebSocketConnectError.tlsFailure("TLS handshake failed: \(text)")
    }
}
