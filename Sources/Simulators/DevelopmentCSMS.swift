public import NIOCore
import NIOSSL
public import OCPP
import NIOHTTP1
import Synchronization
import Transport
import Foundation

/// A small CSMS for development, tests and benchmarks: answers every charger CALL at once,
/// requires a client certificate (Security Profile 3) or Basic auth (2), and can send CALLs.
public final class DevelopmentCSMS: Sendable {
    public struct Options: Sendable {
        public var host = "127.0.0.1"
        public var port = 9443
        public var path = "/ocpp"
        public var certificateFile: String
        public var keyFile: String
        /// Client certificates are verified against this CA (Security Profile 3); nil = no client certificate.
        public var clientCAFile: String?
        /// Basic auth passwords per charger (Security Profile 2).
        public var passwords: [String: String] = [:]
        public var heartbeatInterval = 300
        /// After answering a BootNotification, send the charger a GetConfiguration (a CSMS-initiated CALL).
        public var askConfigurationAfterBoot = false

        public init(certificateFile: String, keyFile: String, clientCAFile: String?) {
            self.certificateFile = certificateFile
            self.keyFile = keyFile
            self.clientCAFile = clientCAFile
        }
    }

    public let options: Options
    private let peers = Mutex<[String: OCPPPeer]>([:])
    private let received = Mutex<[(charger: String, frame: String)]>([])
    private let transactionCounter = Mutex(0)
    private let channel = Mutex<(any Channel)?>(nil)
    /// Prints the flow; nil keeps quiet.
    public let trace: (@Sendable (String) -> Void)?

    /// Keep every received frame for `receivedFrames` (tests); benchmarks turn it off.
    let recordFrames: Bool

    public init(options: Options, recordFrames: Bool = true, trace: (@Sendable (String) -> Void)? = nil) {
        self.options = options
        self.recordFrames = recordFrames
        self.trace = trace
    }

    public func start(group: any EventLoopGroup) async throws -> Int {
        let server = try await options.listen(on: group) { [self] request in accept(request) }
        channel.withLock { $0 = server }
        return server.localAddress?.port ?? options.port
    }

    public func stop() async {
        let server = channel.withLock { $0 }
        try? await server?.close()
        for peer in peers.withLock({ Array($0.values) }) { peer.close() }
    }

    /// Every frame received from chargers, in order, with the charger's id.
    public var receivedFrames: [(charger: String, frame: String)] { received.withLock { $0 } }
    public var connectedChargers: [String] { peers.withLock { $0.keys.sorted() } }

    /// Sends a CALL to a connected charger.
    public func call(_ chargerId: String, _ action: String, _ payload: JSONValue) -> EventLoopFuture<JSONValue>? {
        peers.withLock { $0[chargerId] }?.call(action, payload)
    }

    private func accept(_ request: UpgradeRequest) -> UpgradeAnswer {
        let prefix = options.path + "/"
        guard request.uri.hasPrefix(prefix), let id = String(request.uri.dropFirst(prefix.count)).removingPercentEncoding else {
            return .reject(.notFound)
        }
        if let expected = options.passwords[id] {
            guard case .present(let user, let password) = request.basicAuth, user == id, password == expected else {
                return .reject(.unauthorized)
            }
        }
        guard request.offeredSubprotocols.contains("ocpp1.6") else { return .reject(.badRequest) }
        return .accept(subprotocol: "ocpp1.6", onUpgrade: { [self] connection in
            let peer = OCPPPeer(connection: connection, name: "csms")
            if recordFrames || trace != nil {
                peer.onTrace = { [self] outgoing, text in
                    if !outgoing, recordFrames { received.withLock { $0.append((id, text)) } }
                    trace?("\(outgoing ? "CSMS → \(id)" : "CSMS ← \(id)")  \(text)")
                }
            }
            // The peer's own closures hold it weakly: a peer that closed is released with its connection.
            peer.onCall = { [self, weak peer] action, payload in
                if action == "BootNotification", options.askConfigurationAfterBoot {
                    // `call` queues behind the answer being written now.
                    _ = peer?.call("GetConfiguration", ["key": ["HeartbeatInterval"]])
                }
                return answer(action, payload)
            }
            peer.onClose = { [self, weak peer] reason in
                peers.withLock { if let peer, $0[id] === peer { $0[id] = nil } }
                trace?("CSMS: \(id) disconnected (\(reason))")
            }
            peers.withLock { $0[id] = peer }
            trace?("CSMS: \(id) connected over mutual TLS")
        })
    }

    private func answer(_ action: String, _ payload: JSONValue) -> Result<JSONValue, OCPPPeer.CallError> {
        switch action {
        case "BootNotification":
            return .success(["status": "Accepted", "currentTime": .string(ocppTimestamp()), "interval": .number(options.heartbeatInterval)])
        case "Heartbeat":
            return .success(["currentTime": .string(ocppTimestamp())])
        case "Authorize":
            return .success(["idTagInfo": ["status": "Accepted"]])
        case "StartTransaction":
            let id = transactionCounter.withLock { counter in
                counter += 1
                return counter
            }
            return .success(["transactionId": .number(id), "idTagInfo": ["status": "Accepted"]])
        case "StopTransaction":
            return .success(["idTagInfo": ["status": "Accepted"]])
        case "DataTransfer":
            return .success(["status": "Accepted"])
        case "MeterValues", "StatusNotification", "DiagnosticsStatusNotification", "FirmwareStatusNotification",
            "SecurityEventNotification", "LogStatusNotification", "SignedFirmwareStatusNotification":
            return .success([:])
        default:
            return .failure(.callError(code: "NotImplemented", description: "the development CSMS does not handle \(action)"))
        }
    }
}

extension DevelopmentCSMS.Options {
    /// Listens as a CSMS: TLS ≥ 1.2 with this certificate, client certificates checked against
    /// `clientCAFile` when set (mutual TLS), every upgrade decided by `accept`.
    func listen(on group: any EventLoopGroup,
                accept: @escaping @Sendable (UpgradeRequest) -> UpgradeAnswer) async throws -> any Channel {
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: try NIOSSLCertificate.fromPEMFile(certificateFile).map { .certificate($0) },
            privateKey: .privateKey(try NIOSSLPrivateKey(file: keyFile, format: .pem)))
        tls.minimumTLSVersion = .tlsv12
        if let ca = clientCAFile {
            tls.certificateVerification = .noHostnameVerification
            tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
        }
        return try await WebSocketServer.start(
            WebSocketServerOptions(host: host, port: port, tls: tls, maxMessageBytes: 1 << 20), group: group
        ) { request, channel in
            channel.eventLoop.makeSucceededFuture(accept(request))
        }
    }
}
