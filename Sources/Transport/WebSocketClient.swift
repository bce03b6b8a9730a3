public import Foundation
public import NIOCore
public import NIOHTTP1
public import NIOSSL
import NIOPosix
import NIOWebSocket
import Synchronization

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
    /// Bounds the whole attempt: TCP connect, TLS handshake and WebSocket upgrade together.
    public var connectTimeout: TimeAmount
    /// Accept a server certificate that names the host only in its subject's common name (no
    /// subjectAltName). RFC 6125 §6.4.4 forbids that fallback; it is refused unless this is set.
    public var allowCommonNameMatch: Bool
    /// The outbound queue of the connection once it is open.
    public var outboundLimits: OutboundLimits
    /// A context built before (`TLSContextCache`), used instead of building one from `tls` for this
    /// connection; `tls` still says what it was built from.
    public var tlsContext: NIOSSLContext?

    public init(url: URL, tls: TLSConfiguration? = nil, serverName: String? = nil, subprotocol: String = "ocpp1.6",
                basicAuth: (username: String, password: String)? = nil, maxMessageBytes: Int = 1 << 20,
                pingInterval: TimeAmount? = nil, connectTimeout: TimeAmount = .seconds(10), allowCommonNameMatch: Bool = false,
                outboundLimits: OutboundLimits = OutboundLimits()) {
        self.url = url
        self.tls = tls
        self.serverName = serverName
        self.subprotocol = subprotocol
        self.basicAuth = basicAuth
        self.maxMessageBytes = maxMessageBytes
        self.pingInterval = pingInterval
        self.connectTimeout = connectTimeout
        self.allowCommonNameMatch = allowCommonNameMatch
        self.outboundLimits = outboundLimits
    }
}

/// Why a client WebSocket could not be opened, in words an operator can act on.
public enum WebSocketConnectError: Error, CustomStringConvertible {
    case invalidURL(String)
    case rejected(status: HTTPResponseStatus)
    case subprotocolNotAccepted(offered: String, answered: String?)
    /// TLS could not be set up locally (files, configuration).
    case tlsFailure(String)
    /// The TLS handshake with the server failed; `failure.check` says which check.
    case tls(TLSHandshakeFailure)
    case closedDuringHandshake
    /// TCP, TLS and upgrade together took longer than `connectTimeout`.
    case timedOut(TimeAmount)
    /// The attempt was cancelled (`WebSocketConnectAttempt.cancel`).
    case cancelled(String)

    public var description: String {
        switch self {
        case .invalidURL(let url): "invalid URL \(url)"
        case .rejected(let status): "the server refused the WebSocket upgrade: HTTP \(status.code) \(status.reasonPhrase)"
        case .subprotocolNotAccepted(let offered, let answered):
            "the server did not accept subprotocol \(offered) (answered \(answered ?? "none"))"
        case .tlsFailure(let detail): detail
        case .tls(let failure): failure.description
        case .closedDuringHandshake: "the connection closed during the handshake"
        case .timedOut(let limit): "no WebSocket within \(Double(limit.nanoseconds) / 1e9) s (TCP + TLS + upgrade)"
        case .cancelled(let reason): "attempt cancelled: \(reason)"
        }
    }
}

/// A failed TLS handshake towards a server, and which check failed.
public struct TLSHandshakeFailure: Error, Sendable, CustomStringConvertible {
    public enum Check: String, Sendable, Equatable {
        /// The server certificate's notAfter is past.
        case expired
        /// The server certificate's notBefore is in the future.
        case notYetValid = "not_yet_valid"
        /// The server certificate has an extendedKeyUsage without serverAuth.
        case wrongExtendedKeyUsage = "wrong_eku"
        /// The chain does not lead to a configured CA (or another chain check failed).
        case untrustedChain = "untrusted_chain"
        /// The certificate does not name the host (subjectAltName).
        case hostname
        /// The certificate names the host only in its common name (RFC 6125 forbids that fallback).
        case commonNameOnly = "common_name_only"
        /// No TLS version in common (the server offers only TLS 1.0/1.1, or the like).
        case protocolVersion = "protocol_version"
        /// Anything else (no shared cipher, the server refused our certificate, EOF, …).
        case other
    }
    public var check: Check
    public var description: String
    /// NIOSSL's error, when there is one.
    public var underlying: (any Error & Sendable)?

    public init(check: Check, description: String, underlying: (any Error & Sendable)? = nil) {
        self.check = check
        self.description = description
        self.underlying = underlying
    }
}

/// An attempt to open a client WebSocket, which can be cancelled until it completes.
public final class WebSocketConnectAttempt: Sendable {
    public let futureResult: EventLoopFuture<WebSocketConnection>
    let eventLoop: any EventLoop
    let cancelHandler: @Sendable (String) -> Void

    init(futureResult: EventLoopFuture<WebSocketConnection>, eventLoop: any EventLoop, cancel: @escaping @Sendable (String) -> Void) {
        self.futureResult = futureResult
        self.eventLoop = eventLoop
        self.cancelHandler = cancel
    }

    /// Fails the attempt with `.cancelled(reason)` and closes its socket; nothing if it already completed.
    /// Callable from any thread.
    public func cancel(reason: String) {
        if eventLoop.inEventLoop {
            cancelHandler(reason)
        } else {
            let cancelHandler = self.cancelHandler
            eventLoop.execute { cancelHandler(reason) }
        }
    }
}

/// A file as it is on disk (device, inode, size and modification time to the nanosecond): equal stamps
/// mean the file was not replaced or rewritten, so what was read from it still holds.
public struct FileStamp: Hashable, Sendable {
    var device: UInt64 = 0, inode: UInt64 = 0, size: Int64 = 0, seconds: Int = 0, nanoseconds: Int = 0

    /// Nil for a nil path or a file that cannot be read.
    public init?(_ path: String?) {
        guard let path else { return nil }
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        device = UInt64(info.st_dev)
        inode = UInt64(info.st_ino)
        size = Int64(info.st_size)
        seconds = info.st_mtim.tv_sec
        nanoseconds = info.st_mtim.tv_nsec
    }
}

/// TLS client contexts by identity, reused across connects.
///
/// Building a `NIOSSLContext` parses the CA, certificate and key files and sets up a BoringSSL context
/// (trust store included): most of the cost of a connect besides the handshake itself. A charger that
/// reconnects, or a thousand of them after a network blip, reuse the context of their identity. An
/// entry is found by the files' paths and used only while the files are unchanged (device, inode, size
/// and modification time of each, to the nanosecond): a renewed key or certificate, or a new CA file,
/// builds a new context and replaces the entry. At most `capacity` entries; the least recently used
/// goes first.
///
/// NIOSSL 2.37 has no client-side session resumption (no `SSL_SESSION` cache, tickets or
/// `SSL_set_session` in its API, and the context's `SSL_CTX` is private), so every connect still makes a
/// full handshake; this cache saves the context, not the handshake.
public final class TLSContextCache: Sendable {
    private struct Key: Hashable {
        var caFile: String?, certificateFile: String?, keyFile: String?
    }

    private struct Entry {
        var stamps: [FileStamp?]  // the files the context was built from, as they were
        var context: NIOSSLContext
        var lastUse: UInt64
    }

    private struct State {
        var entries: [Key: Entry] = [:]
        var clock: UInt64 = 0
        var builds = 0
    }

    public let capacity: Int
    private let state = Mutex(State())

    public init(capacity: Int = 1024) {
        precondition(capacity > 0, "a cache needs room for one context")
        self.capacity = capacity
    }

    /// Contexts held now.
    public var count: Int { state.withLock { $0.entries.count } }

    /// Contexts built so far (misses), for tests and metrics.
    public var builds: Int { state.withLock { $0.builds } }

    /// What is held, for tests: each identity's files and its context.
    var entries: [(caFile: String?, certificateFile: String?, keyFile: String?, context: NIOSSLContext)] {
        state.withLock { state in state.entries.map { ($0.key.caFile, $0.key.certificateFile, $0.key.keyFile, $0.value.context) } }
    }

    /// The context for this identity: the cached one while its files are unchanged, else a new one from
    /// `configuration()` (with the short close_notify wait every WebSocket link uses).
    public func context(caFile: String?, certificateFile: String?, keyFile: String?,
                        configuration: () throws -> TLSConfiguration) throws -> NIOSSLContext {
        let key = Key(caFile: caFile, certificateFile: certificateFile, keyFile: keyFile)
        let stamps = [FileStamp(caFile), FileStamp(certificateFile), FileStamp(keyFile)]
        let cached = state.withLock { state -> NIOSSLContext? in
            guard var entry = state.entries[key], entry.stamps == stamps else { return nil }
            state.clock &+= 1
            entry.lastUse = state.clock
            state.entries[key] = entry
            return entry.context
        }
        if let cached { return cached }
        // Built outside the lock: parsing keys and certificates takes a while.
        let context = try NIOSSLContext(configuration: configuration().closingPromptly())
        state.withLock { state in
            state.builds += 1
            state.clock &+= 1
            state.entries[key] = Entry(stamps: stamps, context: context, lastUse: state.clock)
            while state.entries.count > capacity,
                  let oldest = state.entries.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
                state.entries[oldest] = nil
            }
        }
        return context
    }
}

public enum WebSocketClient {
    /// Opens a WebSocket on `eventLoop`; the connection's handlers all run there.
    public static func connect(_ options: WebSocketClientOptions, on eventLoop: any EventLoop) -> EventLoopFuture<WebSocketConnection> {
        start(options, on: eventLoop).futureResult
    }

    /// An attempt that has already failed with `error`.
    public static func failed(_ error: any Error, on eventLoop: any EventLoop) -> WebSocketConnectAttempt {
        WebSocketConnectAttempt(futureResult: eventLoop.makeFailedFuture(error), eventLoop: eventLoop, cancel: { _ in })
    }

    /// Starts opening a WebSocket on `eventLoop`; the attempt ends (with the connection or an
    /// error) within `options.connectTimeout`, or earlier when cancelled.
    public static func start(_ options: WebSocketClientOptions, on eventLoop: any EventLoop) -> WebSocketConnectAttempt {
        let promise = eventLoop.makePromise(of: WebSocketConnection.self)
        let state = AttemptState()
        let attempt = WebSocketConnectAttempt(futureResult: promise.futureResult, eventLoop: eventLoop) { reason in
            state.abort(WebSocketConnectError.cancelled(reason), promise: promise)
        }
        guard let host = options.url.host, let components = URLComponents(url: options.url, resolvingAgainstBaseURL: false) else {
            promise.fail(WebSocketConnectError.invalidURL(options.url.absoluteString))
            return attempt
        }
        let secure = options.url.scheme == "wss"
        let port = options.url.port ?? (secure ? 443 : 80)
        let path = components.percentEncodedPath.isEmpty ? "/" : components.percentEncodedPath
        let uri = components.percentEncodedQuery.map { path + "?" + $0 } ?? path

        let sslContext: NIOSSLContext?
        do {
            sslContext = try options.tlsContext ?? options.tls.map { try NIOSSLContext(configuration: $0.closingPromptly()) }
        } catch {
            promise.fail(WebSocketConnectError.tlsFailure("cannot set up TLS: \(error)"))
            return attempt
        }
        let hostIsAddress = (try? SocketAddress(ipAddress: host, port: 0)) != nil
        let verifiedName = options.serverName ?? (hostIsAddress ? nil : host)

        // One deadline for TCP + TLS + upgrade (the bootstrap's own timeout bounds only TCP).
        let timeout = eventLoop.scheduleTask(in: options.connectTimeout) {
            state.abort(WebSocketConnectError.timedOut(options.connectTimeout), promise: promise)
        }
        promise.futureResult.whenComplete { _ in timeout.cancel() }

        let bootstrap = ClientBootstrap(group: eventLoop)
            .connectTimeout(options.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelOption(.maxMessagesPerRead, value: 1)
            .channelOption(.recvAllocator, value: fairReadAllocator)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let failures = HandshakeFailureCatcher(promise: promise, verifiedName: verifiedName)
                    if let sslContext {
                        let handler: NIOSSLClientHandler
                        if !options.allowCommonNameMatch, sslContext.configuration.certificateVerification == .fullVerification {
                            handler = try NIOSSLClientHandler._makeSSLClientHandler(
                                context: sslContext, serverHostname: verifiedName,
                                additionalPeerCertificateVerificationCallback: SubjectAltNameRequirement.check)
                        } else {
                            handler = try NIOSSLClientHandler(context: sslContext, serverHostname: verifiedName)
                        }
                        try channel.pipeline.syncOperations.addHandler(handler)
                    }
                    let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: options.maxMessageBytes, automaticErrorHandling: true) {
                        channel, response in
                        channel.eventLoop.makeCompletedFuture {
                            channel.pipeline.syncOperations.removeHandler(failures, promise: nil)
                            guard !state.isAborted else {
                                channel.close(promise: nil)
                                return
                            }
                            let answered = response.headers["Sec-WebSocket-Protocol"].first
                            guard answered == options.subprotocol else {
                                promise.fail(WebSocketConnectError.subprotocolNotAccepted(offered: options.subprotocol, answered: answered))
                                channel.close(promise: nil)
                                return
                            }
                            let connection = try WebSocketConnection.install(on: channel, isClient: true,
                                                                             maxMessageBytes: options.maxMessageBytes,
                                                                             pingInterval: options.pingInterval,
                                                                             outboundLimits: options.outboundLimits)
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
                // Cancelled or timed out while TCP was connecting: nobody wants this socket.
                guard state.attach(channel) else { return }
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
        return attempt
    }
}

/// The socket of an attempt and whether it was aborted; touched only on the attempt's event loop.
private final class AttemptState: @unchecked Sendable {
    private var channel: (any Channel)?
    private(set) var isAborted = false

    /// Fails the attempt and closes its socket (once).
    func abort(_ error: any Error, promise: EventLoopPromise<WebSocketConnection>) {
        guard !isAborted else { return }
        isAborted = true
        promise.fail(error)
        channel?.close(promise: nil)
        channel = nil
    }

    /// Records the connected socket; false (and closes it) if the attempt was aborted meanwhile.
    func attach(_ channel: any Channel) -> Bool {
        guard !isAborted else {
            channel.close(promise: nil)
            return false
        }
        self.channel = channel
        channel.closeFuture.whenComplete { [weak self] _ in self?.channel = nil }
        return true
    }
}

/// RFC 6125 §6.4.4: a server certificate must name the host in subjectAltName; NIOSSL falls back
/// to the common name when there is none, so such a certificate is refused here, as an extra check
/// inside the handshake (NIOSSL's additional peer verification), before any byte of the request
/// (Basic credentials included) is sent.
enum SubjectAltNameRequirement {
    static let failure = WebSocketConnectError.tls(TLSHandshakeFailure(
        check: .commonNameOnly,
        description: "TLS handshake failed: the server's certificate names its host only in the common name, "
            + "without subjectAltName (RFC 6125); set north.allow_common_name: true to accept it"))

    static func check(_ leaf: NIOSSLCertificate, _ channel: any Channel) -> EventLoopFuture<Void> {
        leaf._subjectAlternativeNames().isEmpty ? channel.eventLoop.makeFailedFuture(failure) : channel.eventLoop.makeSucceededVoidFuture()
    }
}

/// Turns a refused upgrade or a TLS error during the handshake into a failed connect.
private final class HandshakeFailureCatcher: ChannelInboundHandler, RemovableChannelHandler, Sendable {
    typealias InboundIn = HTTPClientResponsePart
    let promise: EventLoopPromise<WebSocketConnection>
    let verifiedName: String?

    init(promise: EventLoopPromise<WebSocketConnection>, verifiedName: String?) {
        self.promise = promise
        self.verifiedName = verifiedName
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            promise.fail(WebSocketConnectError.rejected(status: head.status))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // The peer's certificate is still readable here, before NIOSSL closes the channel.
        let leaf = try? context.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self).peerCertificate
        promise.fail(TLSDiagnosis.explain(error, leaf: leaf, verifiedName: verifiedName))
        context.close(promise: nil)
    }
}

/// Which TLS check failed, from NIOSSL's typed errors and, for a failed chain verification, the
/// server certificate itself (BoringSSL reports only CERTIFICATE_VERIFY_FAILED).
enum TLSDiagnosis {
    /// BoringSSL's packed error code: library 16 (SSL), reason in the low 12 bits.
    static let sslLibrary: UInt32 = 16
    static let certificateVerifyFailed: UInt32 = 125
    static let unsupportedProtocol: UInt32 = 240
    static let wrongVersionNumber: UInt32 = 247
    static let alertProtocolVersion: UInt32 = 1070

    static func explain(_ error: any Error, leaf: NIOSSLCertificate?, verifiedName: String?, now: Date = Date()) -> any Error {
        if let extra = error as? NIOSSLExtraError, extra == .failedToValidateHostname {
            return WebSocketConnectError.tls(TLSHandshakeFailure(
                check: .hostname,
                description: "TLS handshake failed: the server's certificate does not name \(verifiedName ?? "the host") "
                    + "in its subjectAltName",
                underlying: extra))
        }
        guard let sslError = error as? NIOSSLError else { return error }
        let reasons: [UInt32]
        switch sslError {
        case .handshakeFailed(.sslError(let stack)), .handshakeFailed(.unknownError(let stack)):
            reasons = stack.compactMap(sslReason)
        case .handshakeFailed:
            reasons = []
        default:
            return WebSocketConnectError.tls(TLSHandshakeFailure(check: .other, description: "TLS failed: \(sslError)", underlying: sslError))
        }
        if reasons.contains(where: { [unsupportedProtocol, wrongVersionNumber, alertProtocolVersion].contains($0) }) {
            return WebSocketConnectError.tls(TLSHandshakeFailure(
                check: .protocolVersion,
                description: "TLS handshake failed: no TLS version in common (the gateway requires TLS 1.2 or newer)",
                underlying: sslError))
        }
        if reasons.contains(certificateVerifyFailed) {
            let (check, why) = certificateProblem(leaf, now: now)
            return WebSocketConnectError.tls(TLSHandshakeFailure(
                check: check, description: "TLS handshake failed: the server's certificate \(why)", underlying: sslError))
        }
        return WebSocketConnectError.tls(TLSHandshakeFailure(check: .other, description: "TLS handshake failed: \(sslError)",
                                                             underlying: sslError))
    }

    /// The reason of a BoringSSL error in the SSL library, from its packed code.
    static func sslReason(_ error: BoringSSLInternalError) -> UInt32? {
        // `description` is "Error: <packed code> <text>"; the packed code is the stable part.
        let fields = error.description.split(separator: " ", maxSplits: 2)
        guard fields.count >= 2, let packed = UInt32(fields[1]), packed >> 24 == sslLibrary else { return nil }
        return packed & 0xFFF
    }

    /// Which check the server's leaf certificate fails, when the chain did not verify.
    static func certificateProblem(_ leaf: NIOSSLCertificate?, now: Date) -> (TLSHandshakeFailure.Check, String) {
        guard let leaf else { return (.untrustedChain, "did not verify (no certificate to inspect)") }
        let seconds = time_t(now.timeIntervalSince1970)
        let formatter = ISO8601DateFormatter()
        if leaf.notValidAfter < seconds {
            return (.expired, "expired on \(formatter.string(from: Date(timeIntervalSince1970: TimeInterval(leaf.notValidAfter))))")
        }
        if leaf.notValidBefore > seconds {
            return (.notYetValid, "is not valid before \(formatter.string(from: Date(timeIntervalSince1970: TimeInterval(leaf.notValidBefore))))")
        }
        if let usages = extendedKeyUsages(leaf), !usages.contains(serverAuth), !usages.contains(anyExtendedKeyUsage) {
            return (.wrongExtendedKeyUsage, "is not for TLS servers (its extendedKeyUsage lacks serverAuth)")
        }
        return (.untrustedChain, "is not trusted by the configured CA (no valid chain to it)")
    }

    /// id-kp-serverAuth (1.3.6.1.5.5.7.3.1) and anyExtendedKeyUsage (2.5.29.37.0), DER content octets.
    static let serverAuth: [UInt8] = [0x2B, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x01]
    static let anyExtendedKeyUsage: [UInt8] = [0x55, 0x1D, 0x25, 0x00]

    /// The OIDs of the extendedKeyUsage extension (2.5.29.37), nil when the certificate has none.
    static func extendedKeyUsages(_ certificate: NIOSSLCertificate) -> [[UInt8]]? {
        guard let extendedKeyUsage = NIOSSLObjectIdentifier("2.5.29.37") else { return nil }
        for ext in certificate._extensions where ext.objectIdentifier == extendedKeyUsage {
            return derObjectIdentifiers(Array(ext.data))
        }
        return nil
    }

    /// The content octets of each OBJECT IDENTIFIER in a DER SEQUENCE OF OBJECT IDENTIFIER.
    static func derObjectIdentifiers(_ der: [UInt8]) -> [[UInt8]] {
        func length(at index: inout Int) -> Int? {
            guard index < der.count else { return nil }
            let first = der[index]
            index += 1
            if first < 0x80 { return Int(first) }
            let count = Int(first & 0x7F)
            guard count <= 3, index + count <= der.count else { return nil }
            var value = 0
            for _ in 0..<count { value = value << 8 | Int(der[index]); index += 1 }
            return value
        }
        var index = 0
        guard der.first == 0x30 else { return [] }
        index = 1
        guard let total = length(at: &index), index + total <= der.count else { return [] }
        var oids: [[UInt8]] = []
        let end = index + total
        while index < end {
            let tag = der[index]
            index += 1
            guard let count = length(at: &index), index + count <= end else { break }
            if tag == 0x06 { oids.append(Array(der[index..<index + count])) }
            index += count
        }
        return oids
    }
}
