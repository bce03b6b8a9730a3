public import Logging
public import OCPP
public import Router
public import StageKit
import Foundation
import Metrics

/// Options of the 2.0.1 translation (`gateway.yaml`: `north.id_token_type`, …).
public struct North201Options: Sendable {
    /// The IdTokenEnumType given to the charger's idTags (1.6 does not say what they are).
    public var idTokenType: String
    /// Report data per NotifyReport page.
    public var reportPageSize: Int
    public var deviceModel: DeviceModelMap

    public init(idTokenType: String = "ISO14443", reportPageSize: Int = 20, deviceModel: DeviceModelMap = DeviceModelMap()) {
        self.idTokenType = idTokenType
        self.reportPageSize = reportPageSize
        self.deviceModel = deviceModel
    }

    /// Every IdTokenEnumType of OCPP 2.0.1 (part 2 §2.2.x).
    public static let idTokenTypes = ["Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress", "NoAuthorization"]
}

/// A legacy 1.6J charger as an OCPP 2.0.1 charging station: translates at the north edge of its
/// session (docs/ocpp201.md). One per session; the per-charger state lives in `TransactionBook`,
/// persisted through `StageStore`.
public final class North201Adapter: NorthAdapter {
    public let northVersion: OCPPVersion = .v201
    public let chargerId: String
    let store: StageStore
    let options: North201Options
    var logger: Logger
    weak var session: Session?
    /// The translation state; every change is saved.
    public internal(set) var book: TransactionBook

    /// What a CALL towards the CSMS was translated from, by message id, until its answer.
    var outgoing: [String: Outgoing] = [:]
    /// What a CSMS CALL was relayed to the charger as, by message id, until the charger's answer.
    var incoming: [String: Incoming] = [:]
    /// Bound of both tables (the lanes allow one CALL in flight; stages may hold a few more).
    static let maximumPending = 64

    static let invalidFrames = Counter(label: "ocpp_gateway_north201_invalid_frames_total")
    /// Lines a peer can provoke (a frame that cannot be translated, an invalid CSMS answer), throttled.
    private var logThrottle = LogThrottle()

    /// Logs a line a peer can provoke, at most 10 a minute (then one line saying how many were left out).
    func throttledLog(_ level: Logger.Level, _ message: String, _ metadata: Logger.Metadata) {
        let (log, suppressed) = logThrottle.admit(now: session?.now ?? .zero)
        guard log else { return }
        var metadata = metadata
        if suppressed > 0 { metadata["similar_lines_left_out"] = "\(suppressed)" }
        logger.log(level: level, "\(message)", metadata: metadata)
    }

    struct Outgoing {
        let action201: String
        let kind: Kind
        enum Kind {
            case plain
            case boot, heartbeat, authorize, dataTransfer
            /// The answer's `status` is the 1.6 answer (SignCertificate).
            case status
            case start(localId: Int)
            case stop(localId: Int, hadIdTag: Bool)
        }
    }

    struct Incoming {
        let action201: String
        let kind: Kind
        enum Kind {
            case statusOnly, requestStart, requestStop, unlock, trigger, sendLocalList, getLocalListVersion
            case getLog(requestId: Int, diagnostics: Bool), updateFirmware, setChargingProfile, clearChargingProfile
            case getCompositeSchedule(evseId: Int), getInstalledCertificateIds, dataTransfer
        }
    }

    public init(chargerId: String, store: StageStore, options: North201Options = North201Options(), logger: Logger) {
        self.chargerId = chargerId
        self.store = store
        self.options = options
        var logger = logger
        logger[metadataKey: "charger"] = "\(LogSafe.escape(chargerId))"
        self.logger = logger
        do {
            book = try store.load(TransactionBook.self, charger: chargerId, name: TransactionBook.fileName)?.restored() ?? TransactionBook()
        } catch {
            // A corrupt file is an error, never "no state": start afresh but keep counting ids above anything seen.
            logger.error("2.0.1 translation state unreadable; transactions in it are lost", metadata: ["error": "\(error)"])
            book = TransactionBook()
            book.nextLocalId = Int(Date().timeIntervalSince1970) % 1_000_000_000
        }
    }

    public func attached(to session: Session) { self.session = session }

    public func northLinkChanged(up: Bool) {}

    public func sessionEnded() {
        outgoing = [:]
        incoming = [:]
    }

    public func callAbandoned(id: String) { outgoing[id] = nil }

    func save() { store.save(book, charger: chargerId, name: TransactionBook.fileName) }

    var now: String { Map.timestamp(session?.wallTime ?? Date().timeIntervalSince1970) }

    private func remember(_ id: String, _ value: Outgoing) {
        if outgoing.count >= Self.maximumPending, let oldest = outgoing.keys.first { outgoing[oldest] = nil }
        outgoing[id] = value
    }

    func remember(_ id: String, _ value: Incoming) {
        if incoming.count >= Self.maximumPending, let oldest = incoming.keys.first { incoming[oldest] = nil }
        incoming[id] = value
    }

    /// A frame the adapter made that fails the 2.0.1 schema is a bug: logged, counted, never sent.
    func problem(_ action: String, _ payload: JSONValue, response: Bool) -> String? {
        guard let schema = PayloadSchema.schema(for: action, version: .v201, response: response) else {
            Self.invalidFrames.increment()
            throttledLog(.error, "no 2.0.1 schema for a translated frame; not sent", ["action": "\(LogSafe.escape(action))"])
            return "no 2.0.1 schema for \(action)"
        }
        guard let problem = schema.validate(payload) else { return nil }
        Self.invalidFrames.increment()
        throttledLog(.error, "translated 2.0.1 frame fails its schema; not sent", [
            "action": "\(LogSafe.escape(action))", "response": "\(response)", "problem": "\(LogSafe.escape(problem.description, limit: 200))",
        ])
        return problem.description
    }

    // MARK: Charger → CSMS

    public func outgoingCall(id: String, action: String, payload p: JSONValue, fromGateway: Bool) -> NorthCallDecision {
        let translated: (String, JSONValue, Outgoing.Kind)
        switch action {
        case "BootNotification":
            let station = JSONValue.members([
                ("model", Map.clip(p["chargePointModel"], 20)),
                ("vendorName", Map.clip(p["chargePointVendor"], 50)),
                ("serialNumber", Map.clip(p["chargePointSerialNumber"] ?? p["chargeBoxSerialNumber"], 25)),
                ("firmwareVersion", Map.clip(p["firmwareVersion"], 50)),
                ("modem", p["iccid"] == nil && p["imsi"] == nil ? nil : .members([("iccid", Map.clip(p["iccid"], 20)), ("imsi", Map.clip(p["imsi"], 20))])),
            ])
            translated = ("BootNotification", ["chargingStation": station, "reason": "PowerUp"], .boot)
        case "Heartbeat":
            translated = ("Heartbeat", [:], .heartbeat)
        case "StatusNotification":
            return statusNotification(id: id, p)
        case "Authorize":
            translated = ("Authorize", ["idToken": idToken(p["idTag"]?.stringValue ?? "")], .authorize)
        case "StartTransaction":
            return startTransaction(id: id, p, offline: fromGateway)
        case "MeterValues":
            return meterValues(id: id, p, offline: fromGateway)
        case "StopTransaction":
            return stopTransaction(id: id, p, offline: fromGateway)
        case "DataTransfer":
            translated = ("DataTransfer", .members([
                ("vendorId", p["vendorId"]), ("messageId", p["messageId"]), ("data", p["data"]),
            ]), .dataTransfer)
        case "DiagnosticsStatusNotification", "LogStatusNotification":
            translated = ("LogStatusNotification", .members([
                ("status", .string(Mapping201.uploadStatus(p["status"]?.stringValue))),
                ("requestId", (p["requestId"]?.intValue ?? book.logRequestId).map { .number($0) }),
            ]), .plain)
        case "FirmwareStatusNotification", "SignedFirmwareStatusNotification":
            guard let status = p["status"]?.stringValue, Mapping201.firmwareStatuses.contains(status) else {
                return .answerLocally(.result([:]))  // a whitepaper status 2.0.1 does not have: nothing to tell
            }
            translated = ("FirmwareStatusNotification", .members([
                ("status", .string(status)),
                ("requestId", (p["requestId"]?.intValue ?? book.firmwareRequestId).map { .number($0) }),
            ]), .plain)
        case "SecurityEventNotification":
            translated = ("SecurityEventNotification", .members([
                ("type", Map.clip(p["type"], 50)), ("timestamp", p["timestamp"]), ("techInfo", Map.clip(p["techInfo"], 255)),
            ]), .plain)
        case "SignCertificate":
            translated = ("SignCertificate", .members([("csr", p["csr"]), ("certificateType", "ChargingStationCertificate")]), .status)
        default:
            return .answerLocally(.error(code: .notSupported, description: "a 2.0.1 CSMS has no \(action)"))
        }
        return send(id: id, action: translated.0, payload: translated.1, kind: translated.2)
    }

    private func send(id: String, action: String, payload: JSONValue, kind: Outgoing.Kind) -> NorthCallDecision {
        if let problem = problem(action, payload, response: false) {
            return .answerLocally(.error(code: .internalError, description: "the gateway could not translate \(action) for the CSMS: \(problem)"))
        }
        remember(id, Outgoing(action201: action, kind: kind))
        return .send(action: action, payload: payload)
    }

    func idToken(_ token: String, type: String? = nil) -> JSONValue {
        ["idToken": .string(String(token.prefix(36))), "type": .string(type ?? options.idTokenType)]
    }

    private func statusNotification(id: String, _ p: JSONValue) -> NorthCallDecision {
        let connector = p["connectorId"]?.intValue ?? 0
        let status = p["status"]?.stringValue
        let timestamp = p["timestamp"] ?? .string(now)
        // Problems become NotifyEvent (2.0.1 reports them through the device model, not the status).
        if let code = p["errorCode"]?.stringValue, code != "NoError" {
            let component: JSONValue = connector == 0
                ? ["name": "ChargingStation"]
                : ["name": "Connector", "evse": ["id": .number(connector), "connectorId": 1]]
            let event = JSONValue.members([
                ("eventId", .number(book.takeEventId())), ("timestamp", timestamp), ("trigger", "Delta"),
                ("actualValue", .string(String(code.prefix(2500)))), ("techCode", Map.clip(p["vendorErrorCode"], 50)),
                ("techInfo", Map.clip(p["info"], 500)), ("eventNotificationType", "HardWiredNotification"),
                ("component", component), ("variable", ["name": "Problem"]),
            ])
            sendNative("NotifyEvent", ["generatedAt": .string(now), "seqNo": 0, "eventData": [event]])
        }
        // During a transaction, a change of charging state is a TransactionEvent(Updated).
        if connector > 0, let state = Mapping201.chargingState(status), let tx = book.openTransaction(connectorId: connector),
           tx.chargingState != state, let seqNo = book.takeSeqNo(localId: tx.localId) {
            book.update(localId: tx.localId) { $0.chargingState = state }
            sendNative("TransactionEvent", [
                "eventType": "Updated", "timestamp": timestamp, "triggerReason": "ChargingStateChanged", "seqNo": .number(seqNo),
                "transactionInfo": ["transactionId": .string(tx.transactionId), "chargingState": .string(state)],
                "evse": ["id": .number(connector), "connectorId": 1],
            ])
        }
        save()
        guard connector > 0 else {
            // 2.0.1 has no status for the station as a whole (its availability is a device-model variable).
            return .answerLocally(.result([:]))
        }
        let payload: JSONValue = [
            "timestamp": timestamp, "connectorStatus": .string(Mapping201.connectorStatus(status)),
            "evseId": .number(connector), "connectorId": 1,
        ]
        // The status goes first, in the charger's own message; the events above queue behind it.
        return send(id: id, action: "StatusNotification", payload: payload, kind: .plain)
    }

    /// Sends a 2.0.1 CALL of the adapter's own (validated; a failure is logged and counted, never sent).
    func sendNative(_ action: String, _ payload: JSONValue, onAnswer: ((CallOutcome) -> Void)? = nil) {
        guard problem(action, payload, response: false) == nil else {
            onAnswer?(.error(code: OCPPErrorCode.internalError.rawValue, description: "invalid translation"))
            return
        }
        session?.sendNorthNative(action, payload: payload) { outcome in onAnswer?(outcome) }
    }

    private func startTransaction(id: String, _ p: JSONValue, offline: Bool) -> NorthCallDecision {
        let connector = p["connectorId"]?.intValue ?? 1
        let idTag = p["idTag"]?.stringValue
        let startKey = "\(connector)|\(idTag ?? "")|\(p["timestamp"]?.stringValue ?? "")|\(p["meterStart"]?.intValue ?? 0)"
        if let known = book.transactions.last(where: { $0.startKey == startKey }), known.ended || known.startAnswered {
            // The outbox replayed a StartTransaction the CSMS already has.
            return .answerLocally(.result(["transactionId": .number(known.localId), "idTagInfo": ["status": "Accepted"]]))
        }
        let remote = book.takeRemoteStart(idTag: idTag, connectorId: connector)
        let tx = book.start(connectorId: connector, startKey: startKey, idToken: idTag, idTokenType: remote?.idTokenType,
                            remoteStartId: remote?.remoteStartId)
        guard let seqNo = book.takeSeqNo(localId: tx.localId) else { return .answerLocally(.error(code: .internalError, description: "no transaction")) }
        save()
        let meterValue: [JSONValue] = [[
            "timestamp": p["timestamp"] ?? .string(now),
            "sampledValue": [[
                "value": p["meterStart"] ?? 0, "context": "Transaction.Begin", "measurand": "Energy.Active.Import.Register",
                "unitOfMeasure": ["unit": "Wh"],
            ]],
        ]]
        let payload = JSONValue.members([
            ("eventType", "Started"), ("timestamp", p["timestamp"] ?? .string(now)),
            ("triggerReason", .string(remote == nil ? "Authorized" : "RemoteStart")), ("seqNo", .number(seqNo)),
            ("offline", offline ? true : nil),
            ("transactionInfo", .members([
                ("transactionId", .string(tx.transactionId)), ("remoteStartId", tx.remoteStartId.map { .number($0) }),
            ])),
            ("idToken", idTag.map { idToken($0, type: tx.idTokenType) }),
            ("evse", ["id": .number(connector), "connectorId": 1]),
            ("meterValue", .array(meterValue)),
            ("reservationId", p["reservationId"]),
        ])
        return send(id: id, action: "TransactionEvent", payload: payload, kind: .start(localId: tx.localId))
    }

    private func meterValues(id: String, _ p: JSONValue, offline: Bool) -> NorthCallDecision {
        let connector = p["connectorId"]?.intValue ?? 0
        let values = Mapping201.meterValues(p["meterValue"]?.arrayValue ?? [])
        if let local = p["transactionId"]?.intValue, let tx = book.transaction(localId: local), !tx.ended {
            guard let seqNo = book.takeSeqNo(localId: local) else { return .answerLocally(.result([:])) }
            save()
            let signed = values?.contains { $0["sampledValue"]?.arrayValue?.contains { $0["signedMeterValue"] != nil } == true } == true
            let periodic = values?.allSatisfy { $0["sampledValue"]?.arrayValue?.allSatisfy { $0["context"]?.stringValue == "Sample.Clock" } == true } == true
            let payload = JSONValue.members([
                ("eventType", "Updated"), ("timestamp", values?.last?["timestamp"] ?? .string(now)),
                ("triggerReason", .string(signed ? "SignedDataReceived" : periodic ? "MeterValueClock" : "MeterValuePeriodic")),
                ("seqNo", .number(seqNo)), ("offline", offline ? true : nil),
                ("transactionInfo", ["transactionId": .string(tx.transactionId)]),
                ("evse", ["id": .number(tx.connectorId), "connectorId": 1]),
                ("meterValue", values.map { .array($0) }),
            ])
            return send(id: id, action: "TransactionEvent", payload: payload, kind: .plain)
        }
        guard let values else { return .answerLocally(.result([:])) }
        return send(id: id, action: "MeterValues", payload: ["evseId": .number(connector), "meterValue": .array(values)], kind: .plain)
    }

    private func stopTransaction(id: String, _ p: JSONValue, offline: Bool) -> NorthCallDecision {
        let idTag = p["idTag"]?.stringValue
        guard let local = p["transactionId"]?.intValue, let tx = book.transaction(localId: local), !tx.ended else {
            // Unknown to the gateway, or already Ended (the outbox replayed it twice): nothing more to tell the CSMS.
            return .answerLocally(.result(idTag == nil ? [:] : ["idTagInfo": ["status": "Accepted"]]))
        }
        guard let seqNo = book.takeSeqNo(localId: local) else { return .answerLocally(.result([:])) }
        book.update(localId: local) { $0.ended = true }
        save()
        let reason = Mapping201.stopReason(p["reason"]?.stringValue)
        var values = Mapping201.meterValues(p["transactionData"]?.arrayValue ?? []) ?? []
        values.append([
            "timestamp": p["timestamp"] ?? .string(now),
            "sampledValue": [[
                "value": p["meterStop"] ?? 0, "context": "Transaction.End", "measurand": "Energy.Active.Import.Register",
                "unitOfMeasure": ["unit": "Wh"],
            ]],
        ])
        let payload = JSONValue.members([
            ("eventType", "Ended"), ("timestamp", p["timestamp"] ?? .string(now)), ("triggerReason", .string(reason.triggerReason)),
            ("seqNo", .number(seqNo)), ("offline", offline ? true : nil),
            ("transactionInfo", .members([
                ("transactionId", .string(tx.transactionId)), ("stoppedReason", .string(reason.stoppedReason)),
                ("remoteStartId", tx.remoteStartId.map { .number($0) }),
            ])),
            ("idToken", idTag.map { idToken($0, type: $0 == tx.idToken ? tx.idTokenType : nil) }),
            ("evse", ["id": .number(tx.connectorId), "connectorId": 1]),
            ("meterValue", .array(values)),
        ])
        return send(id: id, action: "TransactionEvent", payload: payload, kind: .stop(localId: local, hadIdTag: idTag != nil))
    }

    public func answerFromCSMS(id: String, action: String, answer: NorthAnswer) -> NorthAnswer? {
        guard let sent = outgoing.removeValue(forKey: id) else { return answer }
        let p: JSONValue
        switch answer {
        case .error(let code, let description):
            return .error(code: code.spelled(for: .v16), description: description)
        case .result(let payload):
            if let schema = PayloadSchema.schema(for: sent.action201, version: .v201, response: true), let problem = schema.validate(payload) {
                throttledLog(.warning, "the CSMS's answer fails the 2.0.1 schema", [
                    "action": "\(sent.action201)", "problem": "\(LogSafe.escape(problem.description, limit: 200))",
                ])
                return .error(code: .formationViolation, description: "the CSMS's \(sent.action201) answer is invalid: \(problem)")
            }
            p = payload
        }
        switch sent.kind {
        case .plain:
            return .result([:])
        case .status:
            return .result(["status": .string(p["status"]?.stringValue == "Accepted" ? "Accepted" : "Rejected")])
        case .boot:
            return .result(.members([("status", p["status"]), ("currentTime", p["currentTime"]), ("interval", p["interval"])]))
        case .heartbeat:
            return .result(.members([("currentTime", p["currentTime"])]))
        case .authorize:
            return .result(["idTagInfo": Mapping201.idTagInfo(p["idTokenInfo"])])
        case .dataTransfer:
            let data: JSONValue? = p["data"].map { $0.stringValue.map { .string($0) } ?? .string($0.jsonText) }
            return .result(.members([("status", p["status"]), ("data", data)]))
        case .start(let localId):
            book.update(localId: localId) { $0.startAnswered = true }
            let answer = NorthAnswer.result(["transactionId": .number(localId), "idTagInfo": Mapping201.idTagInfo(p["idTokenInfo"])])
            // The charger learns its transaction id only once the transaction is on disk: after a kill -9 the
            // gateway must still know the id the charger will go on using.
            let handle = session?.handle
            store.save(book, charger: chargerId, name: TransactionBook.fileName) { _ in
                handle?.run { context in (context as? Session)?.deliverNorthAnswer(id: id, answer: answer) }
            }
            return nil
        case .stop(_, let hadIdTag):
            resetIfIdle()
            return .result(hadIdTag ? ["idTagInfo": Mapping201.idTagInfo(p["idTokenInfo"])] : [:])
        }
    }
}
