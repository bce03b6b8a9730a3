import Foundation
import NIOCore
import NIOPosix
import Synchronization

/// A bare TCP client for probing the transport: sends whatever bytes a test makes and records
/// what comes back, with no HTTP or WebSocket logic of its own.
final class RawSocket: Sendable {
    let channel: any Channel
    private let collector: Collector

    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let bytes = Mutex<[UInt8]>([])
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            bytes.withLock { $0 += buffer.readableBytesView }
        }
    }

    private init(channel: any Channel, collector: Collector) {
        self.channel = channel
        self.collector = collector
    }

    /// Connects to 127.0.0.1:`port` (from `sourceAddress` if given); with `reads: false` it never
    /// reads, so the peer's writes pile up in the kernel buffers. `sending` is written on the event loop
    /// the moment the connection is up: a test task starved by a loaded machine (the whole suite under
    /// ThreadSanitizer on 2 cores) cannot then miss a server's handshake timeout between connect and send.
    static func connect(port: Int, reads: Bool = true, receiveBuffer: Int? = nil, sourceAddress: String? = nil,
                        sending first: String? = nil) async throws -> RawSocket {
        let collector = Collector()
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.autoRead, value: reads)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(collector) }
            }
        if let receiveBuffer { bootstrap = bootstrap.channelOption(.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer)) }
        if let sourceAddress { bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: sourceAddress, port: 0)) }
        let channel = try await bootstrap.connect(host: "127.0.0.1", port: port).flatMap { channel in
            guard let first else { return channel.eventLoop.makeSucceededFuture(channel) }
            return channel.writeAndFlush(channel.allocator.buffer(string: first)).map { channel }
        }.get()
        return RawSocket(channel: channel, collector: collector)
    }

    var received: [UInt8] { collector.bytes.withLock { $0 } }
    var receivedText: String { String(decoding: received, as: UTF8.self) }
    var isOpen: Bool { channel.isActive }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(channel.allocator.buffer(bytes: bytes)).get()
    }

    func send(_ text: String) async throws { try await send(Array(text.utf8)) }

    /// Writes without waiting for the kernel to take the bytes; the promise completes when it does.
    func write(_ bytes: [UInt8]) -> EventLoopFuture<Void> {
        channel.writeAndFlush(channel.allocator.buffer(bytes: bytes))
    }

    func close() { channel.close(promise: nil) }

    /// Waits (polling, at most `limit`) until `condition` holds; returns whether it did.
    @discardableResult
    /// The default is generous: it only matters when the condition is late, e.g. on a machine loaded by the
    /// whole suite or ThreadSanitizer.
    static func eventually(within limit: Duration = .seconds(20), _ condition: () -> Bool) async -> Bool {
        let deadline = ContinuousClock.now + limit
        while !condition() {
            if ContinuousClock.now > deadline { return false }
            try? await Task.sleep(for: .milliseconds(10))
        }
        return true
    }

    /// A WebSocket upgrade request for `path` offering ocpp1.6.
    static func upgradeRequest(path: String = "/ocpp/CP001", extraHeaders: String = "") -> String {
        "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: ocpp1.6\r\n"
            + extraHeaders + "\r\n"
    }

    /// One client frame (masked with a zero key, which RFC 6455 allows).
    static func frame(opcode: UInt8, fin: Bool = true, payload: [UInt8]) -> [UInt8] {
        var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
        switch payload.count {
        case ..<126: bytes.append(0x80 | UInt8(payload.count))
        case ..<65536: bytes += [0x80 | 126, UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
        default: bytes += [0x80 | 127] + (0..<8).reversed().map { UInt8((payload.count >> ($0 * 8)) & 0xFF) }
        }
        return bytes + [0, 0, 0, 0] + payload
    }

    /// The close code of the first close frame the server sent after its 101 response, if any.
    var closeCode: UInt16? {
        let bytes = received
        guard let end = firstRange(of: Array("\r\n\r\n".utf8), in: bytes) else { return nil }
        var index = end
        while index + 2 <= bytes.count {
            let opcode = bytes[index] & 0x0F
            var length = Int(bytes[index + 1] & 0x7F)
            var header = 2
            if length == 126, index + 4 <= bytes.count { length = Int(bytes[index + 2]) << 8 | Int(bytes[index + 3]); header = 4 }
            if length == 127 { return nil }
            guard index + header + length <= bytes.count else { return nil }
            if opcode == 0x8 {
                guard length >= 2 else { return nil }
                return UInt16(bytes[index + header]) << 8 | UInt16(bytes[index + header + 1])
            }
            index += header + length
        }
        return nil
    }

    private func firstRange(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
        guard haystack.count >= needle.count else { return nil }
        for start in 0...(haystack.count - needle.count) where Array(haystack[start..<start + needle.count]) == needle {
            return start + needle.count
        }
        return nil
    }
}
