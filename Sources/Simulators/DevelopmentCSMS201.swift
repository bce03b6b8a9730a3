public import NIOCore
import NIOHTTP1
import NIOSSL
public import OCPP
import Synchronization
import Transport
import Foundation

/// The development CSMS in OCPP 2.0.1 (subprotocol `ocpp2.0.1`), for `make run-201`: what a legacy 1.6J
/// charger looks like to a 2.0.1 CSMS through the gateway (`north.ocpp_version: "2.0.1"`). Answers every
/// station CALL at once, checks every payload it receives against the OCA 2.0.1 schema (and says so in the
/// trace), and after a boot reads the heartbeat interval with GetVariables (a CSMS-initiated CALL).
public final class DevelopmentCSMS201: Sendable {
    public let options: DevelopmentCSMS.Options
    private let peers = Mutex<[String: OCPPPeer]>([:])
    private let received = Mutex<[(charger: String, frame: String)]>([])
    private let channel = Mutex<(any Channel)?>(nil)
    public let trace: (@Sendable (String) -> Void)?

    public init(options: DevelopmentCSMS.Options, trace: (@Sendable (String) -> Void)? = nil) {
        self.options = options
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

    /// Every frame received from stations, in order.
    public var receivedFrames: [(charger: String, frame: String)] { received.withLock { $0 } }

    /// Sends a 2.0.1 CALL to a connected station.
    public func call(_ chargerId: String, _ action: String, _ payload: JSONValue) -> EventLoopFuture<JSONValue>? {
        peers.withLock { $0[chargerId] }?.call(action, payload)
    }

    private func accept(_ request: UpgradeRequest) -> UpgradeAnswer {
        let prefix = options.path + "/"
        guard request.uri.hasPrefix(prefix), let id = String(request.uri.dropFirst(prefix.count)).removingPercentEncoding else {
            return .reject(.notFound)
        }
        guard request.offeredSubprotocols.contains(OCPPVersion.v201.subprotocol) else { return .reject(.badRequest) }
        return .accept(subprotocol: OCPPVersion.v201.subprotocol, onUpgrade: { [self] connection in
            let peer = OCPPPeer(connection: connection, name: "csms201")
            peer.onTrace = { [self] outgoing, text in
                if !outgoing { received.withLock { $0.append((id, text)) } }
                trace?("\(outgoing ? "CSMS → \(id)" : "CSMS ← \(id)")  \(text)")
            }
            peer.onCall = { [self] action, payload in
                if let problem = PayloadSchema.schema(for: action, version: .v201, response: false)?.validate(payload) {
                    trace?("CSMS: \(action) from \(id) fails the 2.0.1 schema: \(problem)")
                    return .failure(.callError(code: problem.code.rawValue, description: problem.description))
                }
                if action == "BootNotification", options.askConfigurationAfterBoot {
                    _ = peer.call("GetVariables", ["getVariableData": [["component": ["name": "OCPPCommCtrlr"], "variable": ["name": "HeartbeatInterval"]]]])
                }
                return answer(action, payload)
            }
            peer.onClose = { [self] reason in
                peers.withLock { if $0[id] === peer { $0[id] = nil } }
                trace?("CSMS: \(id) disconnected (\(reason))")
            }
            peers.withLock { $0[id] = peer }
            trace?("CSMS: \(id) connected over mutual TLS as an OCPP 2.0.1 charging station")
        })
    }

    private func answer(_ action: String, _ payload: JSONValue) -> Result<JSONValue, OCPPPeer.CallError> {
        switch action {
        case "BootNotification":
            return .success(["status": "Accepted", "currentTime": .string(ocppTimestamp()), "interval": .number(options.heartbeatInterval)])
        case "Heartbeat":
            return .success(["currentTime": .string(ocppTimestamp())])
        case "Authorize":
            return .success(["idTokenInfo": ["status": "Accepted"]])
        case "TransactionEvent":
            return .success(payload["idToken"] == nil ? [:] : ["idTokenInfo": ["status": "Accepted"]])
        case "SignCertificate":
            return .success(["status": "Accepted"])
        case "DataTransfer":
            return .success(["status": "Rejected"])
        case "StatusNotification", "MeterValues", "NotifyEvent", "NotifyReport", "LogStatusNotification", "FirmwareStatusNotification",
            "SecurityEventNotification":
            return .success([:])
        default:
            return .failure(.callError(code: "NotImplemented", description: "the development CSMS does not handle \(action)"))
        }
    }
}
