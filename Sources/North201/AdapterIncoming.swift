public import OCPP
public import Router
import StageKit

/// CSMS → charger: 2.0.1 CALLs into their 1.6 forms, and the charger's 1.6 answers back into 2.0.1.
extension North201Adapter {
    public func incomingCall(id: String, action: String, payload p: JSONValue) -> NorthIncomingDecision {
        guard let schema = PayloadSchema.schema(for: action, version: .v201, response: false) else {
            return .error(code: .notImplemented, description: "unknown action")
        }
        guard MessageCatalogue.isAllowed(action, from: .fromCSMS, version: .v201) else {
            return .error(code: .notSupported, description: "\(action) is sent by a charging station, not a CSMS")
        }
        if let problem = schema.validate(p) {
            // Invalid CSMS frames never reach the charger; the CSMS gets what a 2.0.1 station sends.
            return .error(code: problem.code, description: String(problem.description.prefix(200)))
        }
        switch action {
        case "RequestStartTransaction":
            let token = p["idToken"]?["idToken"]?.stringValue ?? ""
            guard token.count <= 20 else { return answer(action, ["status": "Rejected"]) }
            var payload = JSONValue.members([("connectorId", p["evseId"]), ("idTag", .string(token))])
            if let profile = p["chargingProfile"] {
                guard case .success(let profile16) = Mapping201.chargingProfile16(profile, transactionId: nil),
                      profile16["chargingProfilePurpose"]?.stringValue == "TxProfile"
                else { return answer(action, ["status": "Rejected"]) }
                payload["chargingProfile"] = profile16
            }
            book.addRemoteStart(PendingRemoteStart(remoteStartId: p["remoteStartId"]?.intValue ?? 0, idToken: token,
                                                   idTokenType: p["idToken"]?["type"]?.stringValue ?? "Central",
                                                   connectorId: p["evseId"]?.intValue))
            save()
            return relay(id, action, .requestStart, "RemoteStartTransaction", payload)
        case "RequestStopTransaction":
            guard let tx = book.transaction(id: p["transactionId"]?.stringValue ?? ""), !tx.ended else {
                return answer(action, ["status": "Rejected"])
            }
            return relay(id, action, .requestStop, "RemoteStopTransaction", ["transactionId": .number(tx.localId)])
        case "GetTransactionStatus":
            let inQueue = session.map { !$0.isNorthUp || $0.queuedCalls(towards: .csms) > 0 } ?? false
            let ongoing: JSONValue? = p["transactionId"].map { id in
                .bool(book.transaction(id: id.stringValue ?? "").map { !$0.ended } ?? false)
            }
            return answer(action, .members([("ongoingIndicator", ongoing), ("messagesInQueue", .bool(inQueue))]))
        case "Reset":
            if p["evseId"] != nil { return answer(action, ["status": "Rejected"]) }  // a 1.6 charger resets as a whole
            if p["type"]?.stringValue == "OnIdle", book.hasOpenTransaction {
                book.resetOnIdle = true
                save()
                return answer(action, ["status": "Scheduled"])
            }
            return relay(id, action, .statusOnly, "Reset", ["type": .string(p["type"]?.stringValue == "OnIdle" ? "Soft" : "Hard")])
        case "ChangeAvailability":
            return relay(id, action, .statusOnly, "ChangeAvailability", [
                "connectorId": .number(p["evse"]?["id"]?.intValue ?? 0), "type": p["operationalStatus"] ?? "Operative",
            ])
        case "UnlockConnector":
            return relay(id, action, .unlock, "UnlockConnector", ["connectorId": p["evseId"] ?? 1])
        case "TriggerMessage":
            let evse = p["evse"]?["id"]
            switch p["requestedMessage"]?.stringValue {
            case let message? where ["BootNotification", "Heartbeat", "MeterValues", "StatusNotification", "FirmwareStatusNotification"].contains(message):
                return relay(id, action, .trigger, "TriggerMessage", .members([("requestedMessage", .string(message)), ("connectorId", evse)]))
            case "TransactionEvent":
                // A transaction's meter values come back as TransactionEvent(Updated).
                return relay(id, action, .trigger, "TriggerMessage", .members([("requestedMessage", "MeterValues"), ("connectorId", evse)]))
            case "LogStatusNotification":
                return relay(id, action, .trigger, "TriggerMessage", .members([("requestedMessage", "DiagnosticsStatusNotification"), ("connectorId", evse)]))
            case "SignChargingStationCertificate":
                // The certs stage makes the key and the CSR (Security Whitepaper form).
                return relay(id, action, .trigger, "ExtendedTriggerMessage", ["requestedMessage": "SignChargePointCertificate"])
            default:
                return answer(action, ["status": "NotImplemented"])
            }
        case "ClearCache":
            return relay(id, action, .statusOnly, "ClearCache", [:])
        case "DataTransfer":
            let data: JSONValue? = p["data"].map { $0.stringValue.map { .string($0) } ?? .string($0.jsonText) }
            return relay(id, action, .dataTransfer, "DataTransfer", .members([("vendorId", p["vendorId"]), ("messageId", p["messageId"]), ("data", data)]))
        case "SendLocalList":
            let entries = (p["localAuthorizationList"]?.arrayValue ?? []).compactMap(Mapping201.localListEntry)
            return relay(id, action, .sendLocalList, "SendLocalList", .members([
                ("listVersion", p["versionNumber"]), ("updateType", p["updateType"]),
                ("localAuthorizationList", entries.isEmpty ? nil : .array(entries)),
            ]))
        case "GetLocalListVersion":
            return relay(id, action, .getLocalListVersion, "GetLocalListVersion", [:])
        case "ReserveNow":
            guard let token = p["idToken"]?["idToken"]?.stringValue, token.count <= 20 else { return answer(action, ["status": "Rejected"]) }
            return relay(id, action, .statusOnly, "ReserveNow", .members([
                ("connectorId", .number(p["evseId"]?.intValue ?? 0)), ("expiryDate", p["expiryDateTime"]), ("idTag", .string(token)),
                ("parentIdTag", Map.clip(p["groupIdToken"]?["idToken"], 20)), ("reservationId", p["id"]),
            ]))
        case "CancelReservation":
            return relay(id, action, .statusOnly, "CancelReservation", ["reservationId": p["reservationId"] ?? 0])
        case "GetLog":
            let requestId = p["requestId"]?.intValue ?? 0
            book.logRequestId = requestId
            save()
            let log = p["log"] ?? [:]
            if p["logType"]?.stringValue == "SecurityLog" {
                // The Security Whitepaper's GetLog has the 2.0.1 form.
                return relay(id, action, .getLog(requestId: requestId, diagnostics: false), "GetLog", p)
            }
            return relay(id, action, .getLog(requestId: requestId, diagnostics: true), "GetDiagnostics", .members([
                ("location", log["remoteLocation"]), ("retries", p["retries"]), ("retryInterval", p["retryInterval"]),
                ("startTime", log["oldestTimestamp"]), ("stopTime", log["latestTimestamp"]),
            ]))
        case "UpdateFirmware":
            book.firmwareRequestId = p["requestId"]?.intValue
            save()
            let firmware = p["firmware"] ?? [:]
            return relay(id, action, .updateFirmware, "UpdateFirmware", .members([
                ("location", firmware["location"]), ("retrieveDate", firmware["retrieveDateTime"]),
                ("retries", p["retries"]), ("retryInterval", p["retryInterval"]),
            ]))
        case "SetChargingProfile":
            let profile = p["chargingProfile"] ?? [:]
            let local = profile["transactionId"]?.stringValue.flatMap { book.transaction(id: $0)?.localId }
            switch Mapping201.chargingProfile16(profile, transactionId: local) {
            case .failure(let refusal):
                return answer(action, ["status": "Rejected", "statusInfo": ["reasonCode": "UnsupportedRequest",
                                                                            "additionalInfo": .string(String(refusal.description.prefix(512)))]])
            case .success(let profile16):
                return relay(id, action, .setChargingProfile, "SetChargingProfile", ["connectorId": p["evseId"] ?? 0, "csChargingProfiles": profile16])
            }
        case "ClearChargingProfile":
            let criteria = p["chargingProfileCriteria"]
            if let purpose = criteria?["chargingProfilePurpose"]?.stringValue, Mapping201.purpose16(purpose) == nil {
                return answer(action, ["status": "Unknown"])
            }
            return relay(id, action, .clearChargingProfile, "ClearChargingProfile", .members([
                ("id", p["chargingProfileId"]), ("connectorId", criteria?["evseId"]),
                ("chargingProfilePurpose", Mapping201.purpose16(criteria?["chargingProfilePurpose"]?.stringValue).map { .string($0) }),
                ("stackLevel", criteria?["stackLevel"]),
            ]))
        case "GetCompositeSchedule":
            let evse = p["evseId"]?.intValue ?? 0
            return relay(id, action, .getCompositeSchedule(evseId: evse), "GetCompositeSchedule", .members([
                ("connectorId", .number(evse)), ("duration", p["duration"]), ("chargingRateUnit", p["chargingRateUnit"]),
            ]))
        case "GetChargingProfiles":
            // 1.6 cannot list installed profiles; the gateway's compiled view is not a 2.0.1 report (docs/ocpp201.md).
            return answer(action, ["status": "NoProfiles"])
        case "CertificateSigned":
            guard p["certificateType"]?.stringValue ?? "ChargingStationCertificate" == "ChargingStationCertificate" else {
                return answer(action, ["status": "Rejected"])
            }
            return relay(id, action, .statusOnly, "CertificateSigned", ["certificateChain": p["certificateChain"] ?? ""])
        case "InstallCertificate":
            let type: String
            switch p["certificateType"]?.stringValue {
            case "CSMSRootCertificate": type = "CentralSystemRootCertificate"
            case "ManufacturerRootCertificate": type = "ManufacturerRootCertificate"
            default: return answer(action, ["status": "Rejected"])
            }
            return relay(id, action, .statusOnly, "InstallCertificate", ["certificateType": .string(type), "certificate": p["certificate"] ?? ""])
        case "DeleteCertificate":
            return relay(id, action, .statusOnly, "DeleteCertificate", ["certificateHashData": p["certificateHashData"] ?? [:]])
        case "GetInstalledCertificateIds":
            let types = p["certificateType"]?.arrayValue?.compactMap(\.stringValue) ?? ["CSMSRootCertificate"]
            let mapped = types.compactMap { type -> String? in
                switch type {
                case "CSMSRootCertificate": "CentralSystemRootCertificate"
                case "ManufacturerRootCertificate": "ManufacturerRootCertificate"
                default: nil
                }
            }
            guard mapped.count == 1 else {
                // One type per 1.6 request; V2G and MO certificates do not exist on a 1.6 charger.
                return mapped.isEmpty ? answer(action, ["status": "NotFound"])
                    : .error(code: .notSupported, description: "ask for one certificate type at a time")
            }
            return relay(id, action, .getInstalledCertificateIds, "GetInstalledCertificateIds", ["certificateType": .string(mapped[0])])
        case "GetVariables":
            getVariables(id: id, p)
            return .handled
        case "SetVariables":
            setVariables(id: id, p)
            return .handled
        case "GetBaseReport":
            getBaseReport(id: id, p)
            return .handled
        default:
            return .error(code: .notSupported, description: "\(action) is not supported by this charging station (a 1.6J charger behind a gateway)")
        }
    }

    private func relay(_ id: String, _ action201: String, _ kind: Incoming.Kind, _ action16: String, _ payload: JSONValue) -> NorthIncomingDecision {
        remember(id, Incoming(action201: action201, kind: kind))
        return .relay(action: action16, payload: payload)
    }

    /// A CALLRESULT the adapter gives itself, validated like every frame it writes north.
    func answer(_ action201: String, _ payload: JSONValue) -> NorthIncomingDecision {
        if let problem = problem(action201, payload, response: true) {
            return .error(code: .internalError, description: "invalid translation: \(problem)")
        }
        return .answer(payload)
    }

    public func answerToCSMS(id: String, answer: NorthAnswer) -> NorthAnswer {
        guard let relayed = incoming.removeValue(forKey: id) else {
            if case .error(let code, let description) = answer { return .error(code: code.spelled(for: .v201), description: description) }
            return answer
        }
        let p: JSONValue
        switch answer {
        case .error(let code, let description):
            // A charger that cannot do it: the status a conformant station gives, where the action has one.
            switch relayed.kind {
            case .getLog, .updateFirmware, .statusOnly, .requestStart, .requestStop, .setChargingProfile, .trigger:
                if code == .notImplemented || code == .notSupported {
                    return validated(relayed.action201, ["status": .string(relayed.action201 == "TriggerMessage" ? "NotImplemented" : "Rejected")])
                }
            default: break
            }
            return .error(code: code.spelled(for: .v201), description: description)
        case .result(let payload):
            p = payload
        }
        let status = p["status"]?.stringValue
        let result: JSONValue
        switch relayed.kind {
        case .statusOnly, .requestStart, .requestStop, .trigger, .dataTransfer:
            var mapped = JSONValue.members([("status", status.map { .string($0) })])
            if case .requestStart = relayed.kind { mapped = ["status": .string(status == "Accepted" ? "Accepted" : "Rejected")] }
            if case .requestStop = relayed.kind { mapped = ["status": .string(status == "Accepted" ? "Accepted" : "Rejected")] }
            if relayed.action201 == "CertificateSigned" || relayed.action201 == "ClearCache" {
                mapped = ["status": .string(status == "Accepted" ? "Accepted" : "Rejected")]
            }
            if case .dataTransfer = relayed.kind, let data = p["data"] { mapped["data"] = data }
            result = mapped
        case .unlock:
            result = ["status": .string(status == "Unlocked" ? "Unlocked" : "UnlockFailed")]
        case .sendLocalList:
            result = ["status": .string(status == "Accepted" || status == "VersionMismatch" ? status! : "Failed")]
        case .getLocalListVersion:
            result = ["versionNumber": p["listVersion"] ?? 0]
        case .getLog(_, let diagnostics):
            if diagnostics {
                result = .members([("status", .string(p["fileName"] == nil ? "Rejected" : "Accepted")), ("filename", Map.clip(p["fileName"], 255))])
            } else {
                result = .members([("status", .string(status == "Accepted" || status == "AcceptedCanceled" ? status! : "Rejected")),
                                   ("filename", Map.clip(p["filename"], 255))])
            }
        case .updateFirmware:
            result = ["status": "Accepted"]
        case .setChargingProfile:
            result = ["status": .string(status == "Accepted" ? "Accepted" : "Rejected")]
        case .clearChargingProfile:
            result = ["status": .string(status == "Accepted" ? "Accepted" : "Unknown")]
        case .getCompositeSchedule(let evseId):
            if status == "Accepted", let schedule = p["chargingSchedule"] {
                result = ["status": "Accepted", "schedule": .members([
                    ("evseId", .number(evseId)), ("duration", schedule["duration"] ?? 0),
                    ("scheduleStart", p["scheduleStart"] ?? schedule["startSchedule"] ?? .string(now)),
                    ("chargingRateUnit", schedule["chargingRateUnit"]),
                    ("chargingSchedulePeriod", .array((schedule["chargingSchedulePeriod"]?.arrayValue ?? []).map { period in
                        .members([("startPeriod", period["startPeriod"]), ("limit", period["limit"]), ("numberPhases", period["numberPhases"])])
                    })),
                ])]
            } else {
                result = ["status": "Rejected"]
            }
        case .getInstalledCertificateIds:
            let hashes = p["certificateHashData"]?.arrayValue ?? []
            let type: String = "CSMSRootCertificate"
            result = .members([
                ("status", .string(status == "Accepted" && !hashes.isEmpty ? "Accepted" : "NotFound")),
                ("certificateHashDataChain", hashes.isEmpty ? nil : .array(hashes.map { ["certificateType": .string(type), "certificateHashData": $0] })),
            ])
        }
        return validated(relayed.action201, result)
    }

    private func validated(_ action201: String, _ payload: JSONValue) -> NorthAnswer {
        if let problem = problem(action201, payload, response: true) {
            return .error(code: .internalError, description: "the gateway could not translate the charger's answer: \(problem)")
        }
        return .result(payload)
    }

    /// A Reset OnIdle was answered Scheduled: once no transaction is left, the charger is reset.
    func resetIfIdle() {
        guard book.resetOnIdle, !book.hasOpenTransaction, let session else { return }
        book.resetOnIdle = false
        save()
        // After the charger has its StopTransaction answer.
        session.schedule(after: .milliseconds(1)) { [weak session] in
            session?.sendCall("Reset", payload: ["type": "Soft"], to: .charger) { _ in }
        }
    }
}
