import Foundation
public import NIOCore
import OCPP
import Transport

/// A legacy OCPP 1.6J charger: plain `ws://`, Basic auth (Security Profile 1), a scripted
/// charging session, and answers to the CSMS's usual CALLs.
public struct LegacyCharger: Sendable {
    public struct Options: Sendable {
        /// The gateway's south endpoint without the charger id, e.g. `ws://127.0.0.1:9000/ocpp`.
        public var endpoint: String
        public var chargerId: String
        public var password: String?
        public var idTag = "04A2B3C4D5E6F7"
        public var meterSamples = 3
        /// TCP + upgrade, as a whole.
        public var connectTimeout: TimeAmount = .seconds(10)

        public init(endpoint: String, chargerId: String, password: String?) {
            self.endpoint = endpoint
            self.chargerId = chargerId
            self.password = password
        }
    }

    public let options: Options
    public let trace: (@Sendable (String) -> Void)?

    public init(options: Options, trace: (@Sendable (String) -> Void)? = nil) {
        self.options = options
        self.trace = trace
    }

    /// Opens the WebSocket; throws `WebSocketConnectError.rejected` with the gateway's status when refused.
    public func connect(on eventLoop: any EventLoop) async throws -> OCPPPeer {
        var allowed = CharacterSet.urlPathAllowed
        allowed.remove(charactersIn: "/")
        let id = options.chargerId.addingPercentEncoding(withAllowedCharacters: allowed) ?? options.chargerId
        guard let url = URL(string: options.endpoint + "/" + id) else { throw WebSocketConnectError.invalidURL(options.endpoint) }
        let connection = try await WebSocketClient.connect(
            WebSocketClientOptions(url: url, subprotocol: "ocpp1.6",
                                   basicAuth: options.password.map { (options.chargerId, $0) }, connectTimeout: options.connectTimeout),
            on: eventLoop
        ).get()
        let peer = OCPPPeer(connection: connection, name: options.chargerId)
        let chargerId = options.chargerId
        if let trace {
            peer.onTrace = { outgoing, text in trace("\(outgoing ? "\(chargerId) →" : "\(chargerId) ←")  \(text)") }
        }
        peer.onCall = { action, payload in Self.answer(action, payload) }
        return peer
    }

    /// Boot, status, authorize, a transaction with meter values, stop, heartbeat.
    public func runChargingSession(on peer: OCPPPeer) async throws {
        let boot = try await peer.call("BootNotification", [
            "chargePointVendor": "LegacyCo", "chargePointModel": "LC-22", "chargePointSerialNumber": .string("SN-\(options.chargerId)"),
            "firmwareVersion": "1.0.3",
        ]).get()
        guard boot["status"]?.stringValue == "Accepted" else { throw SimulatorError("BootNotification was not accepted: \(boot.jsonText)") }
        _ = try await status("Available", on: peer)
        let authorize = try await peer.call("Authorize", ["idTag": .string(options.idTag)]).get()
        guard authorize["idTagInfo"]?["status"]?.stringValue == "Accepted" else {
            throw SimulatorError("Authorize was not accepted: \(authorize.jsonText)")
        }
        _ = try await status("Preparing", on: peer)
        let start = try await peer.call("StartTransaction", [
            "connectorId": 1, "idTag": .string(options.idTag), "meterStart": 1000, "timestamp": .string(ocppTimestamp()),
        ]).get()
        guard let transactionId = start["transactionId"]?.intValue else {
            throw SimulatorError("StartTransaction returned no transactionId: \(start.jsonText)")
        }
        _ = try await status("Charging", on: peer)
        var energy = 1000
        for sample in 0..<options.meterSamples {
            energy += 250
            _ = try await peer.call("MeterValues", [
                "connectorId": 1, "transactionId": .number(transactionId),
                "meterValue": [[
                    "timestamp": .string(ocppTimestamp()),
                    "sampledValue": [
                        ["value": .string("\(energy)"), "measurand": "Energy.Active.Import.Register", "unit": "Wh"],
                        ["value": .string(String(format: "%.1f", 16.0 + Double(sample) * 0.1)), "measurand": "Current.Import",
                         "phase": "L1", "unit": "A"],
                        ["value": "230.0", "measurand": "Voltage", "phase": "L1-N", "unit": "V"],
                    ],
                ]],
            ]).get()
        }
        _ = try await peer.call("StopTransaction", [
            "transactionId": .number(transactionId), "meterStop": .number(energy), "timestamp": .string(ocppTimestamp()),
            "idTag": .string(options.idTag), "reason": "Local",
        ]).get()
        _ = try await status("Available", on: peer)
        _ = try await peer.call("Heartbeat", [:]).get()
    }

    private func status(_ status: String, on peer: OCPPPeer) async throws -> JSONValue {
        try await peer.call("StatusNotification", [
            "connectorId": 1, "errorCode": "NoError", "status": .string(status), "timestamp": .string(ocppTimestamp()),
        ]).get()
    }

    static func answer(_ action: String, _ payload: JSONValue) -> Result<JSONValue, OCPPPeer.CallError> {
        switch action {
        case "GetConfiguration":
            return .success(["configurationKey": [
                ["key": "HeartbeatInterval", "readonly": false, "value": "300"],
                ["key": "MeterValueSampleInterval", "readonly": false, "value": "60"],
                ["key": "NumberOfConnectors", "readonly": true, "value": "1"],
            ], "unknownKey": []])
        case "ChangeConfiguration", "Reset", "RemoteStartTransaction", "RemoteStopTransaction", "TriggerMessage",
            "ChangeAvailability", "ClearCache", "DataTransfer", "SetChargingProfile", "ClearChargingProfile":
            return .success(["status": "Accepted"])
        case "UnlockConnector":
            return .success(["status": "Unlocked"])
        default:
            return .failure(.callError(code: "NotImplemented", description: "\(action) is not supported by this charger"))
        }
    }
}

public struct SimulatorError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
