public import NIOCore
public import NIOWebSocket
import Synchronization

/// How much a connection may hold for a peer that does not read, and for how long.
public struct OutboundLimits: Sendable, Equatable {
    /// The most bytes queued for the peer. Reading from the peer stops at half of it (NIO's
    /// high-water mark) and resumes at a quarter; a message sent while the queue is already past
    /// it closes the connection (so the queue never holds more than this plus one message).
    public var maxBytes: Int
    /// A peer whose queue stays over the high-water mark this long is disconnected; nil: never.
    public var writeTimeout: TimeAmount?

    public init(maxBytes: Int = 1 << 20, writeTimeout: TimeAmount? = .seconds(30)) {
        self.maxBytes = maxBytes
        self.writeTimeout = writeTimeout
    }

    var waterMark: ChannelOptions.Types.WriteBufferWaterMark {
        let high = max(2, maxBytes / 2)
        return .init(low: max(1, high / 2), high: high)
    }
}

/// How many messages a peer may send: a token bucket per connection. Past it the connection stops
/// reading until the bucket refills, so a flood waits in the peer's TCP buffers (nothing is dropped)
/// instead of costing the gateway CPU that other chargers on the loop need. A conforming OCPP peer
/// sends one CALL at a time and waits for its answer, far below any sensible budget.
public struct InboundBudget: Sendable, Equatable {
    public var messagesPerSecond: Double
    public var burst: Double

    public init(messagesPerSecond: Double, burst: Double) {
        self.messagesPerSecond = messagesPerSecond
        self.burst = max(1, burst)
    }
}

/// Why reading from a connection is paused; reading resumes when no reason is left.
public enum ReadPause: Hashable, Sendable, CaseIterable {
    /// The peer sent more messages than its `InboundBudget` allows; reading resumes as it refills.
    case overBudget
    /// This connection's own outbound queue is over its high-water mark (the peer does not read).
    case outboundFull
    /// The connection this one's messages go to cannot take more (set by whoever couples the two).
    case counterpart

    /// Its bit in `WebSocketConnection.pauseBits`.
    var bit: UInt8 {
        switch self {
        case .overBudget: 1
        case .outboundFull: 2
        case .counterpart: 4
        }
    }
}

/// One WebSocket carrying OCPP-J text frames, on either side of the gateway.
///
/// Text messages (reassembled from fragments by `NIOWebSocketFrameAggregator`) go to `onText`;
/// pings are answered; a ping is sent every `pingInterval` and a peer that has not answered the
/// previous one by the next tick is considered dead. Messages that arrive before `onText` is set
/// are kept and delivered when it is, so nothing is lost between the upgrade and the session.
///
/// Backpressure: the outbound queue is bounded (`OutboundLimits`); while it is over its
/// high-water mark the connection stops reading from its peer (the `read()` requests are held,
/// as NIO's `BackPressureHandler` does) and tells `onWritabilityChanged`, so whoever feeds it can
/// stop reading from *its* peer too (`pauseReading(.counterpart)`).
///
/// Protocol errors close with the RFC 6455 §7.4.1 code: 1009 for a message (also a fragmented
/// one) over the size limit, 1007 for a text message that is not UTF-8, 1003 for a binary one.
///
/// Everything runs on the channel's event loop. The class is `@unchecked Sendable` only so that
/// futures can carry it to that loop; every method asserts it is called there.
public final class WebSocketConnection: ChannelDuplexHandler, RemovableChannelHandler, @unchecked Sendable {
    public typealias InboundIn = WebSocketFrame
    public typealias OutboundIn = WebSocketFrame
    public typealias OutboundOut = WebSocketFrame

    public let channel: any Channel
    let isClient: Bool
    let pingInterval: TimeAmount?
    public let outboundLimits: OutboundLimits
    private var context: ChannelHandlerContext?
    /// The context of the channel's `WebSocketFrameEncoder`: text frames this connection encodes itself are
    /// written there, so they go on to the handlers before the encoder (TLS, the socket) and skip it.
    private var frameWriter: ChannelHandlerContext?
    /// Messages read but not yet delivered: before `onText` is set, or while reading is paused
    /// (the rest of a read burst; at most what one burst holds).
    private var pending: [[UInt8]] = []
    private var pendingHead = 0
    private var pingTask: Scheduled<Void>?
    private var awaitingPong = false
    private var closeSent = false
    /// Why reading is paused, one bit per `ReadPause` (a `Set` hashed on every change, and its accesses, which
    /// call the hasher, were checked for exclusivity at run time on every frame).
    private var pauseBits: UInt8 = 0
    private var heldRead = false
    private var writeTimeoutTask: Scheduled<Void>?
    /// The peer's message budget (nil: unlimited), its tokens and when they were last counted.
    let inboundBudget: InboundBudget?
    private var budgetTokens: Double = 0
    private var budgetCountedAt = NIODeadline.now()
    private var budgetTask: Scheduled<Void>?
    /// Why the link closed, as far as this side knows (close frame code, ping timeout, error).
    public private(set) var closeReason: String?
    /// A client's mask keys: its event loop's block of CSPRNG bytes (nil on the server side, which does not mask).
    private let maskKeys: MaskKeySource?

    /// Receives each text message.
    public var onText: (([UInt8]) -> Void)? {
        get { textHandler }
        set {
            _ = exchange(&textHandler, with: newValue)
            deliverPending()
        }
    }
    /// `onText`'s storage: private, so that reading it per frame needs no run-time exclusivity check (a public
    /// stored property can be accessed in place from other modules).
    private var textHandler: (([UInt8]) -> Void)?
    /// The TLS peer's certificate (DER), for a client connection over TLS.
    public internal(set) var peerCertificateDER: [UInt8]?

    /// True once something consumes this connection's messages.
    public var isRelaying: Bool { textHandler != nil }

    /// Runs once when the channel closes, whatever the cause.
    public var onClose: ((String) -> Void)?

    /// Told when the outbound queue goes over its high-water mark (`false`) and back under the
    /// low-water mark (`true`).
    public var onWritabilityChanged: ((Bool) -> Void)?

    /// Whether the outbound queue is under its high-water mark.
    public var isWritable: Bool { channel.isWritable }

    /// Whether reading from the peer is paused, and why.
    public var readPauseReasons: Set<ReadPause> { Set(ReadPause.allCases.filter { pauseBits & $0.bit != 0 }) }

    /// Bytes queued for the peer and not yet written to the socket.
    public var bufferedOutboundBytes: Int {
        (try? channel.syncOptions?.getOption(.bufferedWritableBytes)) ?? 0
    }

    init(channel: any Channel, isClient: Bool, pingInterval: TimeAmount?, outboundLimits: OutboundLimits = OutboundLimits(),
         inboundBudget: InboundBudget? = nil) {
        self.channel = channel
        self.isClient = isClient
        self.pingInterval = pingInterval
        self.outboundLimits = outboundLimits
        self.inboundBudget = inboundBudget
        self.budgetTokens = inboundBudget?.burst ?? 0
        // The source belongs to the loop's thread; a connection made off its loop (tests) gets its own.
        self.maskKeys = isClient ? (channel.eventLoop.inEventLoop ? MaskKeySource.current : MaskKeySource()) : nil
        servicePort = (isClient ? channel.remoteAddress?.port : channel.localAddress?.port) ?? 0
        Self.live.withLock { $0[servicePort, default: 0] += 1 }
    }

    deinit {
        let port = servicePort
        Self.live.withLock { counts in
            counts[port, default: 1] -= 1
            if counts[port] == 0 { counts[port] = nil }
        }
    }

    /// The server's port of this connection (the local one on the server side, the remote one on
    /// the client side), for `liveObjects(port:)`.
    private let servicePort: Int
    private static let live = Mutex<[Int: Int]>([:])
    /// Connection objects alive (open, or closed and not yet released) to or from the server on
    /// `port`: after every peer has gone it must fall to zero; a leak shows here first.
    public static func liveObjects(port: Int) -> Int { live.withLock { $0[port] ?? 0 } }

    public func handlerAdded(context: ChannelHandlerContext) {
        _ = exchange(&self.context, with: context)
        _ = exchange(&frameWriter, with: try? context.pipeline.syncOperations.context(handlerType: WebSocketFrameEncoder.self))
        schedulePing()
        let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
        context.channel.closeFuture.whenComplete { _ in
            let connection = loopBound.value
            connection.pingTask?.cancel()
            connection.budgetTask?.cancel()
            connection.budgetTask = nil
            connection.writeTimeoutTask?.cancel()
            connection.writeTimeoutTask = nil
            let reason = connection.closeReason ?? "connection closed"
            let onClose = connection.onClose
            connection.onClose = nil
            connection.onText = nil
            connection.onWritabilityChanged = nil
            _ = exchange(&connection.context, with: nil)
            _ = exchange(&connection.frameWriter, with: nil)
            onClose?(reason)
        }
        // The queue may already be over the mark when the handler joins (the upgrade response).
        if !context.channel.isWritable { outboundBecameFull(context: context) }
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .text:
            let (bytes, isASCII) = Self.unmaskedText(of: frame)
            // RFC 6455 §8.1: a text message that is not UTF-8 fails the connection with 1007.
            guard isASCII || Self.isValidUTF8(bytes) else {
                close(code: .dataInconsistentWithMessage, reason: "text message is not valid UTF-8")
                return
            }
            // Nothing held back (`pending` is emptied when the last held message is delivered).
            if let onText = textHandler, pauseBits == 0, pending.isEmpty, admitMessage() {
                onText(bytes)
            } else {
                // Grown outside the property's access (a reallocation releases the old storage).
                var held = exchange(&pending, with: [])
                held.append(bytes)
                _ = exchange(&pending, with: held)
            }
        case .binary:
            // OCPP-J is text only (1.6 §4.1.1); a binary frame means a confused or hostile peer.
            close(code: .unacceptableData, reason: "binary frame received")
        case .ping:
            var pong = WebSocketFrame(fin: true, opcode: .pong, data: frame.unmaskedData)
            pong.maskKey = maskKeys?.next()
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
        switch error {
        case is NIOWebSocketError:
            // A single frame over the limit or a bad frame: `WebSocketProtocolErrorHandler` (earlier
            // in the pipeline) has already sent the close frame with the right code and closes
            // the channel once it is written.
            closeSent = true
            let channel = context.channel
            Self.closeLater(channel)
        case NIOWebSocketFrameAggregator.Error.accumulatedFrameSizeIsTooLarge:
            // Fragments adding up to more than the limit: 1009, as for a single frame.
            close(code: .messageTooLarge, reason: "fragmented message over the size limit")
        case NIOWebSocketFrameAggregator.Error.tooManyFragments:
            close(code: .policyViolation, reason: "message in too many fragments")
        case is NIOWebSocketFrameAggregator.Error:
            close(code: .protocolError, reason: "invalid fragmentation")
        default:
            context.close(promise: nil)
        }
    }

    /// A text message's bytes, unmasked (a client's frames are masked, RFC 6455 §5.3) into a new array in
    /// one pass, 8 bytes at a time, and whether they are all ASCII (the usual OCPP frame: no UTF-8 check
    /// needed). `WebSocketFrame.unmaskedData` copied the buffer, unmasked it byte by byte and was then
    /// copied again into the array.
    static func unmaskedText(of frame: WebSocketFrame) -> (bytes: [UInt8], isASCII: Bool) {
        let pattern = frame.maskKey.map { maskPattern($0, offset: (frame.extensionData?.readableBytes ?? 0) % 4) } ?? 0
        return frame.data.withUnsafeReadableBytes { source in
            var highBits: UInt64 = 0
            let bytes = [UInt8](unsafeUninitializedCapacity: source.count) { target, initialized in
                highBits = unmask(source, into: UnsafeMutableRawBufferPointer(target), pattern: pattern)
                initialized = source.count
            }
            return (bytes, highBits & 0x8080_8080_8080_8080 == 0)
        }
    }

    /// The 4-byte mask key twice over as a word whose bytes in memory are the key from byte `offset` on.
    static func maskPattern<Key: Collection<UInt8>>(_ key: Key, offset: Int) -> UInt64 {
        var pattern: UInt64 = 0
        var index = 0
        for byte in key { pattern |= UInt64(byte) << (8 * index); index += 1 }
        pattern |= pattern << 32
        // Start at byte `offset` of the key: the little-endian value shifts right by 8 bits a byte.
        pattern = offset == 0 ? pattern : (pattern >> (8 * UInt64(offset))) | (pattern << (64 - 8 * UInt64(offset)))
        return UInt64(littleEndian: pattern)
    }

    /// Copies `source` into `target` XORed with `pattern` (the mask key twice, in memory order, starting
    /// at the mask byte of `source`'s first byte); returns the OR of the bytes written (their high bits
    /// tell whether any is not ASCII).
    static func unmask(_ source: UnsafeRawBufferPointer, into target: UnsafeMutableRawBufferPointer, pattern: UInt64) -> UInt64 {
        let count = source.count
        var seen: UInt64 = 0
        var index = 0
        while index + 8 <= count {
            let word = source.loadUnaligned(fromByteOffset: index, as: UInt64.self) ^ pattern
            target.storeBytes(of: word, toByteOffset: index, as: UInt64.self)
            seen |= word
            index += 8
        }
        withUnsafeBytes(of: pattern) { key in
            while index < count {
                let byte = source[index] ^ key[index & 7]
                target[index] = byte
                seen |= UInt64(byte)
                index += 1
            }
        }
        return seen
    }

    /// Whether `bytes` is UTF-8, without building a string.
    static func isValidUTF8(_ bytes: [UInt8]) -> Bool {
        if !bytes.contains(where: { $0 >= 0x80 }) { return true }  // ASCII: the usual OCPP frame
        return !transcode(bytes.makeIterator(), from: UTF8.self, to: UTF32.self, stoppingOnError: true, into: { _ in })
    }

    // MARK: Backpressure

    /// Takes one message's token from the budget; when none is left, reading pauses until one is back
    /// (the message waits in `pending`). Spent when a message is delivered, so a read burst cannot overdraw it.
    private func admitMessage() -> Bool {
        guard let budget = inboundBudget else { return true }
        let now = NIODeadline.now()
        budgetTokens = min(budget.burst, budgetTokens + Double((now - budgetCountedAt).nanoseconds) / 1e9 * budget.messagesPerSecond)
        budgetCountedAt = now
        if budgetTokens >= 1 {
            budgetTokens -= 1
            return true
        }
        guard budgetTask == nil else { return false }
        pauseReading(.overBudget)
        let wait = TimeAmount.nanoseconds(Int64((1 - budgetTokens) / budget.messagesPerSecond * 1e9) + 1)
        let loopBound = NIOLoopBound(self, eventLoop: channel.eventLoop)
        budgetTask = channel.eventLoop.scheduleTask(in: wait) {
            let connection = loopBound.value
            connection.budgetTask = nil
            connection.resumeReading(.overBudget)
        }
        return false
    }

    public func read(context: ChannelHandlerContext) {
        if pauseBits == 0 {
            context.read()
        } else {
            heldRead = true
        }
    }

    public func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            writeTimeoutTask?.cancel()
            writeTimeoutTask = nil
            resumeReading(.outboundFull)
            onWritabilityChanged?(true)
        } else {
            outboundBecameFull(context: context)
        }
        context.fireChannelWritabilityChanged()
    }

    private func outboundBecameFull(context: ChannelHandlerContext) {
        pauseReading(.outboundFull)
        if writeTimeoutTask == nil, let timeout = outboundLimits.writeTimeout {
            let channel = context.channel
            let loopBound = NIOLoopBound(self, eventLoop: context.eventLoop)
            writeTimeoutTask = context.eventLoop.scheduleTask(in: timeout) {
                let connection = loopBound.value
                if connection.closeReason == nil {
                    connection.closeReason = "the peer read nothing for \(timeout.nanoseconds / 1_000_000) ms with its queue full"
                }
                // The peer does not read: a close frame would only queue behind the rest.
                channel.close(promise: nil)
            }
        }
        onWritabilityChanged?(false)
    }

    /// Stops reading from the peer for `reason` (until `resumeReading` with the same reason).
    public func pauseReading(_ reason: ReadPause) {
        channel.eventLoop.assertInEventLoop()
        pauseBits |= reason.bit
    }

    /// Withdraws `reason`; reading resumes when no reason is left.
    public func resumeReading(_ reason: ReadPause) {
        channel.eventLoop.assertInEventLoop()
        let bits = pauseBits
        guard bits & reason.bit != 0 else { return }
        pauseBits = bits & ~reason.bit
        guard pauseBits == 0 else { return }
        deliverPending()
        guard pauseBits == 0, heldRead, let context else { return }
        heldRead = false
        context.read()
    }

    /// Delivers held messages in order until none is left or reading is paused again.
    private func deliverPending() {
        while pendingHead < pending.count, pauseBits == 0, let onText = textHandler, admitMessage() {
            let message = pending[pendingHead]
            pendingHead += 1
            onText(message)
        }
        if pendingHead == pending.count {
            _ = exchange(&pending, with: [])
            pendingHead = 0
        }
    }

    // MARK: Sending

    /// Sends one text message. While the outbound queue is already past `outboundLimits.maxBytes`
    /// a message closes the connection instead (the peer is not reading).
    public func send(_ bytes: [UInt8]) {
        channel.eventLoop.assertInEventLoop()
        guard !closeSent else { return }
        // `frameWriter` is set with `context` and cleared with it: the one stored reference read per frame
        // (each read of a handler context here is checked for exclusivity at run time).
        guard let frameWriter else { return sendThroughEncoder(bytes) }
        // The queue's size is asked only past the high-water mark (half of `maxBytes`): a channel option
        // read on every send cost ~2,000 instructions a frame.
        if !channel.isWritable, bufferedOutboundBytes > outboundLimits.maxBytes {
            return closeOverfull()
        }
        // The whole frame in one buffer, written past the frame encoder (`frameWriter`): the encoder allocated
        // a second buffer for the header of every masked frame, masked byte by byte, and every handler between
        // this one and the encoder saw the write (~4,000 instructions a frame in all).
        var buffer = channel.allocator.buffer(capacity: Self.maximumHeaderBytes + bytes.count)
        Self.writeTextFrame(bytes, maskWord: maskKeys?.nextWord(), into: &buffer)
        frameWriter.writeAndFlush(NIOAny(buffer), promise: nil)
    }

    /// `send` without a frame encoder of our own to write past (not the gateway's pipelines): NIO encodes.
    private func sendThroughEncoder(_ bytes: [UInt8]) {
        guard let context else { return }
        if !context.channel.isWritable, bufferedOutboundBytes > outboundLimits.maxBytes {
            return closeOverfull()
        }
        var frame = WebSocketFrame(fin: true, opcode: .text, data: context.channel.allocator.buffer(bytes: bytes))
        frame.maskKey = maskKeys?.next()
        context.writeAndFlush(wrapOutboundOut(frame), promise: nil)
    }

    /// A message sent while the queue is past `outboundLimits.maxBytes`: the peer does not read.
    private func closeOverfull() {
        if closeReason == nil { closeReason = "outbound queue over \(outboundLimits.maxBytes) bytes (the peer does not read)" }
        context?.close(promise: nil)
    }

    /// A text frame's header at most: 2 bytes, an 8-byte length, a 4-byte mask key (RFC 6455 §5.2).
    static let maximumHeaderBytes = 14

    /// Writes one unfragmented text frame (RFC 6455 §5.2): the header, the mask key of a client's frame, and
    /// the message (masked 8 bytes at a time with `maskKey`, §5.3).
    static func writeTextFrame<Key: Collection<UInt8>>(_ bytes: [UInt8], maskKey: Key?, into buffer: inout ByteBuffer) {
        let word = maskKey.map { key in
            var word: UInt32 = 0
            withUnsafeMutableBytes(of: &word) { for (index, byte) in key.prefix(4).enumerated() { $0[index] = byte } }
            return word
        }
        writeTextFrame(bytes, maskWord: word, into: &buffer)
    }

    /// `writeTextFrame` with the mask key as 4 bytes in memory order (`MaskKeySource.nextWord()`): no key
    /// struct or collection per frame.
    static func writeTextFrame(_ bytes: [UInt8], maskWord: UInt32?, into buffer: inout ByteBuffer) {
        let count = bytes.count
        let lengthBytes = count <= 125 ? 0 : count <= 0xFFFF ? 2 : 8
        let headerBytes = 2 + lengthBytes + (maskWord == nil ? 0 : 4)
        // One write into the buffer: every `writeInteger` checked capacity and the buffer's storage again.
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: headerBytes + count) { target in
            target[0] = 0x81  // FIN, text
            let maskBit: UInt8 = maskWord == nil ? 0 : 0x80
            switch lengthBytes {
            case 0: target[1] = maskBit | UInt8(count)
            case 2: target[1] = maskBit | 126
            default: target[1] = maskBit | 127
            }
            for index in 0..<lengthBytes { target[2 + index] = UInt8(truncatingIfNeeded: count >> (8 * (lengthBytes - 1 - index))) }
            var pattern: UInt64 = 0
            if let maskWord {
                target.storeBytes(of: maskWord, toByteOffset: 2 + lengthBytes, as: UInt32.self)
                // The key twice over, in memory order (what `maskPattern` makes of the 4 bytes).
                pattern = UInt64(maskWord) | UInt64(maskWord) << 32
            }
            bytes.withUnsafeBytes { source in
                _ = unmask(source, into: UnsafeMutableRawBufferPointer(rebasing: target[headerBytes..<headerBytes + count]), pattern: pattern)
            }
            return headerBytes + count
        }
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
        frame.maskKey = maskKeys?.next()
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(frame)).whenComplete { _ in channel.close(promise: nil) }
        // A peer that never finishes the closing handshake must not keep the socket.
        Self.closeLater(channel)
    }

    /// Closes `channel` in 5 s unless it closed by then; the timer goes with the channel, so a closed
    /// connection (its TLS buffers, its handlers) is released at once, not 5 s later — at a few hundred
    /// disconnects a second those 5 s held ~1,700 dead connections (≈ 90 MiB) in the soak benchmark.
    static func closeLater(_ channel: any Channel) {
        let task = channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in task.cancel() }
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
            ping.maskKey = connection.maskKeys?.next()
            context.writeAndFlush(connection.wrapOutboundOut(ping), promise: nil)
            connection.schedulePing()
        }
    }
}

extension WebSocketConnection {
    /// Adds the aggregator and the connection to a channel that has just been upgraded.
    static func install(on channel: any Channel, isClient: Bool, maxMessageBytes: Int, pingInterval: TimeAmount?,
                        outboundLimits: OutboundLimits = OutboundLimits(), inboundBudget: InboundBudget? = nil) throws -> WebSocketConnection {
        try channel.syncOptions?.setOption(.writeBufferWaterMark, value: outboundLimits.waterMark)
        let connection = WebSocketConnection(channel: channel, isClient: isClient, pingInterval: pingInterval,
                                             outboundLimits: outboundLimits, inboundBudget: inboundBudget)
        try channel.pipeline.syncOperations.addHandlers([
            NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 64,
                                        maxAccumulatedFrameSize: maxMessageBytes),
            connection,
        ])
        return connection
    }
}

/// Puts `value` into `slot` and hands back what was there. Stored properties of this file's classes are set
/// with it where the old value may be released: a release can run any deinit, so an assignment that released
/// inside the property's access made the optimizer keep the run-time exclusivity check on every access to that
/// property (~80 instructions each, on every frame); the old value returned is released after the access.
@inline(__always)
private func exchange<T>(_ slot: inout T, with value: T) -> T {
    var value = value
    swap(&slot, &value)
    return value
}
