import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import Synchronization
import Testing
@testable import Transport

/// A TLS peer that hangs up without its close_notify: NIOSSL keeps a closing link's TLS handler
/// (its BoringSSL connection and buffers, and the pipeline's context) until its close_notify wait
/// expires, even after the TCP connection is gone. The gateway's links wait briefly, so dead links are released at once.
@Suite("TLS links close promptly", .serialized)
struct TLSCloseTests {
    @Test func aLinkWhosePeerHangsUpWithoutCloseNotifyIsReleasedPromptly() async throws {
        let ca = try TestCA()
        let leaf = try ca.leaf()
        let serverTLS = TLSConfiguration.makeServerConfiguration(certificateChain: [.certificate(leaf.0)], privateKey: .privateKey(leaf.1))
        let server = try await RudeTLSWebSocketServer.start(tls: serverTLS)
        let caFile = try ca.writeFile()
        defer { try? FileManager.default.removeItem(atPath: caFile) }
        let options = WebSocketClientOptions(url: URL(string: "wss://127.0.0.1:\(server.port)/ocpp/CP001")!,
                                             tls: try NorthTLS.clientConfiguration(caFile: caFile, certificateFile: nil, keyFile: nil),
                                             serverName: "localhost", connectTimeout: .seconds(5))
        let handlers = WeakObjects()
        for _ in 0..<5 {
            let connection = try await WebSocketClient.connect(options, on: MultiThreadedEventLoopGroup.singleton.next()).get()
            try await connection.channel.eventLoop.submit {
                handlers.add(try connection.channel.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self))
            }.get()
            try await connection.channel.eventLoop.submit { connection.close(code: .normalClosure, reason: "done") }.get()
            try await connection.channel.closeFuture.get()
        }
        // NIOSSL's default wait is 5 s; the links' is 100 ms: 2 s tells them apart with a wide margin.
        let deadline = ContinuousClock.now + .seconds(2)
        while handlers.alive > 0 || WebSocketConnection.liveObjects(port: server.port) > 0, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(handlers.alive == 0)
        #expect(WebSocketConnection.liveObjects(port: server.port) == 0)
        try await server.channel.close()
    }
}

/// Objects watched without keeping them alive.
final class WeakObjects: Sendable {
    private struct Reference: @unchecked Sendable { weak var object: AnyObject? }
    private let references = Mutex<[Reference]>([])
    func add(_ object: AnyObject) { references.withLock { $0.append(Reference(object: object)) } }
    var alive: Int { references.withLock { $0.count(where: { $0.object != nil }) } }
}

/// A TLS WebSocket server that answers a close frame by closing TCP without sending close_notify
/// (its writes are muted first), as a crashed or careless CSMS or load balancer does.
private enum RudeTLSWebSocketServer {
    static func start(tls: TLSConfiguration) async throws -> (channel: any Channel, port: Int) {
        let context = try NIOSSLContext(configuration: tls)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let mute = Mute()
                    try channel.pipeline.syncOperations.addHandler(mute)
                    try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: context))
                    let upgrader = NIOWebSocketServerUpgrader(
                        shouldUpgrade: { channel, _ in
                            var headers = HTTPHeaders()
                            headers.add(name: "Sec-WebSocket-Protocol", value: "ocpp1.6")
                            return channel.eventLoop.makeSucceededFuture(headers)
                        },
                        upgradePipelineHandler: { channel, _ in
                            channel.eventLoop.makeCompletedFuture {
                                try channel.pipeline.syncOperations.addHandler(HangUpOnClose(mute: mute))
                            }
                        })
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(
                        withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in }))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return (channel, channel.localAddress?.port ?? 0)
    }

    /// Drops every write once muted: the peer sees TCP close without TLS close_notify.
    final class Mute: ChannelOutboundHandler, @unchecked Sendable {
        typealias OutboundIn = ByteBuffer
        var muted = false
        func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
            if muted { promise?.succeed(()) } else { context.write(data, promise: promise) }
        }
    }

    final class HangUpOnClose: ChannelInboundHandler {
        typealias InboundIn = WebSocketFrame
        let mute: Mute
        init(mute: Mute) { self.mute = mute }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            guard unwrapInboundIn(data).opcode == .connectionClose else { return }
            mute.muted = true
            context.close(promise: nil)
        }
    }
}
