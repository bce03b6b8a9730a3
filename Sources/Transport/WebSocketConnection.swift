public import NIOCore
public import NIOWebSocket

/// One WebSocket carrying OCPP-J text frames, on either side of the gateway.
///
/// Text messages (reassembled from fragments by `NIOWebSocketFrameAggregator`) go to `onText`;
/// pings are answered; a ping is sent every `pingInterval` and a peer that has not answered the
/// previous one by the next tick is considered dead. Messages that arrive before `onText` is set
/// are kept and delivered when it is, so nothing is lost between the upgrade and the session.
///
/// Everything runs on the channel's event loop. The class is `@unchecked Sendable` only so that
/// futures can carry it to that loop; every method asserts it is called there.
public final class WebSocketConnection: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    public typealias InboundIn = WebSocketFrame
    public typealias OutboundOut = WebSocketFrame

    public let channel: any Channel
    let isClient: Bool
    let pingInterval: TimeAmount?
    private var context: ChannelHandlerContext?
    private var pending: [[UInt8]] = []
    private var pingTask: Scheduled<Void>?
    private var awaitingPong = false
    private var closeSent = false
    /// Why the link closed, as far as this side knows (close frame code, ping timeout, error).
    public private(set) var closeReason: String?

    /// Receives each text message.
    public var onText: (([UInt8]) -> Void)? {
        didSet {
            guard let onText, !pending.isEmpty else { return }
            let buffered = pending
            pending = []
            for message in buffered { onText(message) }
        }
    }
    /// The TLS peer's certificate (DER), for a client connection over TLS.
    public internal(set) var peerCertificateDER: [UInt8]?

    /// True once something consumes this connection's messages.
    public var isRelaying: Bool { onText != nil }

    /// Runs once when the channel closes, whatever the cause.
    public var onClose: ((String) -> Void)?

    init(channel: any Channel, isClient: Bool, pingInterval: TimeAmount?) {
        self.channel = channel
        self.isClient = isClient
        self.pingInterval = pingInterval
    }

    public func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        schedulePing()
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.channel.closeFuture.whenComplete { _ in
            let connection = loopBound.value
            connection.pingTask?.cancel()
            let reason = connection.closeReason ?? "connection closed"
            let onClose = connection.onClose
            connection.onClose = nil
            connection.onText = nil
            connection.context = nil
            onClose?(reason)
        }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            let bytes = Array(frame.unmaskedData.readableBytesView)
            if let onText { onText(bytes) } else { pending.append(bytes) }
        case .binary:
            // OCPP-J is text only (1.6 §4.1.1); a binary frame means a confused or hostile peer.
            close(code: .unacceptableData, reason: "binary frame received")
        case .ping:
            var pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            if isClient { pong.maskKey = .random() }
            context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
        case .pong:
            awaitingPong = false
        case .connectionClose:
            var data = frame.unmaskedData
            let code = data.readWebSocketErrorCode()
            if closeReason == nil { closeReason = "peer closed the WebSocket (\(code.map { "\($0)" } ?? "no code"))" }
            close(code: .normalClosure, reason: nil)
        default:
            break
        }
    }

    public func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if closeReason == nil { closeReason = "\(error)" }
        context.close(promise: nil)
    }

    /// Sends one text message.
    public func send(_ bytes: [UInt8]) {
        channel.eventLoop.assertInEventLoop()
        guard let context, !closeSent else { return }
        var frame = WebSocketFrame(fin: true, opcode: .text, data: context.channel.allocator.buffer(bytes: bytes))
        if isClient { frame.maskKey = .random() }
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    /// Sends a close frame and closes the channel once it is written.
    public func close(code: WebSocketErrorCode, reason: String?) {
        channel.eventLoop.assertInEventLoop()
        if closeReason == nil, let reason { closeReason = reason }
        guard let context else { return }
        guard !closeSent else { return }
        closeSent = true
        var payload = context.channel.allocator.buffer(capacity: 2)
        payload.write(webSocketErrorCode: code)
        var frame = WebSocketFrame(fin: true, opcode: .connectionClose, data: payload)
        if isClient { frame.maskKey = .random() }
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
        // A peer that never finishes the closing handshake must not keep the socket.
        channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
    }

    private func schedulePing() {
        guard let pingInterval, let context else { return }
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        pingTask = context.eventLoop.scheduleTask(in: pingInterval) {
            let connection = loopBound.value
            guard let context = connection.context else { return }
            if connection.awaitingPong {
                connection.closeReason = "no pong within \(pingInterval)"
                connection.close(code: .goingAway, reason: nil)
                return
            }
            connection.awaitingPong = true
            var ping = WebSocketFrame(fin: true, opcode: .ping, data: context.channel.allocator.buffer(string: "ocpp-gateway"))
            if connection.isClient { ping.maskKey = .random() }
            context.writeAndFlush(connection.wrapOutboundOut(ping), promise: nil)
            connection.schedulePing()
        }
    }
}

extension WebSocketConnection {
    /// Adds the aggregator and the connection to a channel that has just been upgraded.
    static func install(on channel: any Channel, isClient: Bool, maxMessageBytes: Int, pingInterval: TimeAmount?) throws -> WebSocketConnection {
        let connection = WebSocketConnection(channel: channel, isClient: isClient, pingInterval: pingInterval)
        try channel.pipeline.syncOperations.addHandlers([
            NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 64,
                                        maxAccumulatedFrameSize: maxMessageBytes),
            connection,
        ])
        return connection
    }
}
