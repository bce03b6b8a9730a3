import Foundation
import North201
import OCPP
import Router
import StageKit
import StageTesting
import SmartChargingStage
import Testing

/// One row of the mapping table, CSMS → charger and back.
struct CSMSRow: CustomTestStringConvertible, Sendable {
    let action: String
    let request: JSONValue
    let action16: String
    let request16: JSONValue
    let answer16: JSONValue
    let answer201: JSONValue
    var testDescription: String { action }
}

/// One row, charger → CSMS and back.
struct ChargerRow: CustomTestStringConvertible, Sendable {
    let action16: String
    let request16: JSONValue
    let action: String
    let request: JSONValue
    let answer201: JSONValue
    let answer16: JSONValue
    var testDescription: String { action16 }
}

@Suite("North201 mapping rows")
struct MappingTests {
    static let csmsRows: [CSMSRow] = [
        CSMSRow(action: "ChangeAvailability", request: ["operationalStatus": "Inoperative", "evse": ["id": 2]],
                action16: "ChangeAvailability", request16: ["connectorId": 2, "type": "Inoperative"],
                answer16: ["status": "Scheduled"], answer201: ["status": "Scheduled"]),
        CSMSRow(action: "UnlockConnector", request: ["evseId": 1, "connectorId": 1], action16: "UnlockConnector", request16: ["connectorId": 1],
                answer16: ["status": "NotSupported"], answer201: ["status": "UnlockFailed"]),
        CSMSRow(action: "UnlockConnector", request: ["evseId": 2, "connectorId": 1], action16: "UnlockConnector", request16: ["connectorId": 2],
                answer16: ["status": "Unlocked"], answer201: ["status": "Unlocked"]),
        CSMSRow(action: "Reset", request: ["type": "Immediate"], action16: "Reset", request16: ["type": "Hard"],
                answer16: ["status": "Accepted"], answer201: ["status": "Accepted"]),
        CSMSRow(action: "Reset", request: ["type": "OnIdle"], action16: "Reset", request16: ["type": "Soft"],
                answer16: ["status": "Rejected"], answer201: ["status": "Rejected"]),
        CSMSRow(action: "TriggerMessage", request: ["requestedMessage": "StatusNotification", "evse": ["id": 1]],
                action16: "TriggerMessage", request16: ["requestedMessage": "StatusNotification", "connectorId": 1],
                answer16: ["status": "Accepted"], answer201: ["status": "Accepted"]),
        CSMSRow(action: "TriggerMessage", request: ["requestedMessage": "LogStatusNotification"],
                action16: "TriggerMessage", request16: ["requestedMessage": "DiagnosticsStatusNotification"],
                answer16: ["status": "NotImplemented"], answer201: ["status": "NotImplemented"]),
        CSMSRow(action: "TriggerMessage", request: ["requestedMessage": "TransactionEvent", "evse": ["id": 1]],
                action16: "TriggerMessage", request16: ["requestedMessage": "MeterValues", "connectorId": 1],
                answer16: ["status": "Accepted"], answer201: ["status": "Accepted"]),
        CSMSRow(action: "ClearCache", request: [:], action16: "ClearCache", request16: [:],
                answer16: ["status": "Accepted"], answer201: ["status": "Accepted"]),
        CSMSRow(action: "DataTransfer", request: ["vendorId": "Acme", "messageId": "m", "data": ["a": 1]],
                action16: "DataTransfer", request16: ["vendorId": "Acme", "messageId": "m", "data": "{\"a\":1}"],
                answer16: ["status": "Accepted", "data": "ok"], answer201: ["status": "Accepted", "data": "ok"]),
        CSMSRow(action: "SendLocalList", request: [
            "versionNumber": 3, "updateType": "Full",
            "localAuthorizationList": [["idToken": ["idToken": "T1", "type": "ISO14443"], "idTokenInfo": ["status": "Blocked"]]],
        ], action16: "SendLocalList", request16: [
            "listVersion": 3, "updateType": "Full", "localAuthorizationList": [["idTag": "T1", "idTagInfo": ["status": "Blocked"]]],
        ], answer16: ["status": "NotSupported"], answer201: ["status": "Failed"]),
        CSMSRow(action: "GetLocalListVersion", request: [:], action16: "GetLocalListVersion", request16: [:],
                answer16: ["listVersion": 3], answer201: ["versionNumber": 3]),
        CSMSRow(action: "ReserveNow", request: ["id": 7, "expiryDateTime": "2026-01-01T12:00:00Z", "idToken": ["idToken": "T1", "type": "ISO14443"], "evseId": 1],
                action16: "ReserveNow", request16: ["connectorId": 1, "expiryDate": "2026-01-01T12:00:00Z", "idTag": "T1", "reservationId": 7],
                answer16: ["status": "Occupied"], answer201: ["status": "Occupied"]),
        CSMSRow(action: "CancelReservation", request: ["reservationId": 7], action16: "CancelReservation", request16: ["reservationId": 7],
                answer16: ["status": "Accepted"], answer201: ["status": "Accepted"]),
        CSMSRow(action: "GetLog", request: ["logType": "DiagnosticsLog", "requestId": 5, "log": ["remoteLocation": "ftp://x/y"]],
                action16: "GetDiagnostics", request16: ["location": "ftp://x/y"],
                answer16: ["fileName": "diag.zip"], answer201: ["status": "Accepted", "filename": "diag.zip"]),
        CSMSRow(action: "UpdateFirmware", request: ["requestId": 9, "firmware": ["location": "https://x/fw", "retrieveDateTime": "2026-01-01T12:00:00Z"]],
                action16: "UpdateFirmware", request16: ["location": "https://x/fw", "retrieveDate": "2026-01-01T12:00:00Z"],
                answer16: [:], answer201: ["status": "Accepted"]),
        CSMSRow(action: "ClearChargingProfile", request: ["chargingProfileId": 4], action16: "ClearChargingProfile", request16: ["id": 4],
                answer16: ["status": "Unknown"], answer201: ["status": "Unknown"]),
        CSMSRow(action: "GetCompositeSchedule", request: ["duration": 600, "evseId": 1, "chargingRateUnit": "W"],
                action16: "GetCompositeSchedule", request16: ["connectorId": 1, "duration": 600, "chargingRateUnit": "W"],
                answer16: ["status": "Accepted", "connectorId": 1, "scheduleStart": "2026-01-01T00:00:00Z",
                           "chargingSchedule": ["duration": 600, "chargingRateUnit": "W", "chargingSchedulePeriod": [["startPeriod": 0, "limit": 7000]]]],
                answer201: ["status": "Accepted", "schedule": ["evseId": 1, "duration": 600, "scheduleStart": "2026-01-01T00:00:00Z",
                                                              "chargingRateUnit": "W", "chargingSchedulePeriod": [["startPeriod": 0, "limit": 7000]]]]),
        CSMSRow(action: "SetChargingProfile", request: ["evseId": 1, "chargingProfile": [
            "id": 11, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
            "chargingSchedule": [["id": 1, "chargingRateUnit": "W", "startSchedule": "2026-01-01T00:00:00Z",
                                  "chargingSchedulePeriod": [["startPeriod": 0, "limit": 11000]]]],
        ]], action16: "SetChargingProfile", request16: ["connectorId": 1, "csChargingProfiles": [
            "chargingProfileId": 11, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
            "chargingSchedule": ["startSchedule": "2026-01-01T00:00:00Z", "chargingRateUnit": "W",
                                 "chargingSchedulePeriod": [["startPeriod": 0, "limit": 11000]]],
        ]], answer16: ["status": "NotSupported"], answer201: ["status": "Rejected"]),
        CSMSRow(action: "CertificateSigned", request: ["certificateChain": "-----BEGIN CERTIFICATE-----"],
                action16: "CertificateSigned", request16: ["certificateChain": "-----BEGIN CERTIFICATE-----"],
                answer16: ["status": "Accepted"], answer201: ["status": "Accepted"]),
        CSMSRow(action: "InstallCertificate", request: ["certificateType": "CSMSRootCertificate", "certificate": "PEM"],
                action16: "InstallCertificate", request16: ["certificateType": "CentralSystemRootCertificate", "certificate": "PEM"],
                answer16: ["status": "Failed"], answer201: ["status": "Failed"]),
        CSMSRow(action: "DeleteCertificate", request: ["certificateHashData": ["hashAlgorithm": "SHA256", "issuerNameHash": "a", "issuerKeyHash": "b", "serialNumber": "1"]],
                action16: "DeleteCertificate", request16: ["certificateHashData": ["hashAlgorithm": "SHA256", "issuerNameHash": "a", "issuerKeyHash": "b", "serialNumber": "1"]],
                answer16: ["status": "NotFound"], answer201: ["status": "NotFound"]),
        CSMSRow(action: "GetInstalledCertificateIds", request: ["certificateType": ["CSMSRootCertificate"]],
                action16: "GetInstalledCertificateIds", request16: ["certificateType": "CentralSystemRootCertificate"],
                answer16: ["status": "Accepted", "certificateHashData": [["hashAlgorithm": "SHA256", "issuerNameHash": "a", "issuerKeyHash": "b", "serialNumber": "1"]]],
                answer201: ["status": "Accepted", "certificateHashDataChain": [["certificateType": "CSMSRootCertificate", "certificateHashData": [
                    "hashAlgorithm": "SHA256", "issuerNameHash": "a", "issuerKeyHash": "b", "serialNumber": "1"]]]]),
    ]

    @Test(arguments: csmsRows)
    func csmsToCharger(_ row: CSMSRow) {
        let h = Harness()
        let id = h.csmsCalls(row.action, row.request)
        let relayed = h.toCharger()
        #expect(relayed.map(\.action) == [row.action16])
        #expect(relayed.first?.messageId == id)
        #expect(relayed.first?.payload() == row.request16, "got \(relayed.first?.text ?? "nothing")")
        h.tester.chargerAnswers(id, payload: row.answer16)
        let answer = h.answerToCSMS(id)
        #expect(answer?.messageType == .callResult)
        #expect(answer?.payload() == row.answer201, "got \(answer?.text ?? "nothing")")
    }

    static let chargerRows: [ChargerRow] = [
        ChargerRow(action16: "Heartbeat", request16: [:], action: "Heartbeat", request: [:],
                   answer201: ["currentTime": "2026-01-01T00:00:00Z"], answer16: ["currentTime": "2026-01-01T00:00:00Z"]),
        ChargerRow(action16: "StatusNotification", request16: ["connectorId": 2, "errorCode": "NoError", "status": "Preparing", "timestamp": "2026-01-01T00:00:00Z"],
                   action: "StatusNotification", request: ["timestamp": "2026-01-01T00:00:00Z", "connectorStatus": "Occupied", "evseId": 2, "connectorId": 1],
                   answer201: [:], answer16: [:]),
        ChargerRow(action16: "MeterValues", request16: ["connectorId": 1, "meterValue": [["timestamp": "2026-01-01T00:00:00Z", "sampledValue": [
            ["value": "230.0", "measurand": "Voltage", "phase": "L1-N", "unit": "V", "context": "Sample.Clock", "location": "Inlet"]]]]],
                   action: "MeterValues", request: ["evseId": 1, "meterValue": [["timestamp": "2026-01-01T00:00:00Z", "sampledValue": [
                    ["value": .number("230.0"), "context": "Sample.Clock", "measurand": "Voltage", "phase": "L1-N", "location": "Inlet", "unitOfMeasure": ["unit": "V"]]]]]],
                   answer201: [:], answer16: [:]),
        ChargerRow(action16: "DataTransfer", request16: ["vendorId": "Acme", "messageId": "x", "data": "hello"],
                   action: "DataTransfer", request: ["vendorId": "Acme", "messageId": "x", "data": "hello"],
                   answer201: ["status": "Accepted", "data": ["k": 1]], answer16: ["status": "Accepted", "data": "{\"k\":1}"]),
        ChargerRow(action16: "DiagnosticsStatusNotification", request16: ["status": "UploadFailed"],
                   action: "LogStatusNotification", request: ["status": "UploadFailure"], answer201: [:], answer16: [:]),
        ChargerRow(action16: "FirmwareStatusNotification", request16: ["status": "Installed"],
                   action: "FirmwareStatusNotification", request: ["status": "Installed"], answer201: [:], answer16: [:]),
        ChargerRow(action16: "SecurityEventNotification", request16: ["type": "FirmwareUpdated", "timestamp": "2026-01-01T00:00:00Z"],
                   action: "SecurityEventNotification", request: ["type": "FirmwareUpdated", "timestamp": "2026-01-01T00:00:00Z"],
                   answer201: [:], answer16: [:]),
        ChargerRow(action16: "SignCertificate", request16: ["csr": "CSR"], action: "SignCertificate",
                   request: ["csr": "CSR", "certificateType": "ChargingStationCertificate"],
                   answer201: ["status": "Accepted"], answer16: [:]),
    ]

    @Test(arguments: chargerRows)
    func chargerToCSMS(_ row: ChargerRow) {
        let h = Harness()
        let id = h.tester.chargerSends(call: row.action16, payload: row.request16)
        let sent = h.toCSMS()
        #expect(sent.map(\.action) == [row.action])
        #expect(sent.first?.messageId == id)
        #expect(sent.first?.payload() == row.request, "got \(sent.first?.text ?? "nothing")")
        if row.action16 == "MeterValues" { #expect(sent.first?.text.contains("\"value\":230.0") == true, "the charger's spelling of the number") }
        h.tester.csmsAnswers(id, payload: row.answer201)
        let answer = h.toCharger().first
        #expect(answer?.messageType == .callResult)
        if row.action16 == "SignCertificate" {
            #expect(answer?.payload() == ["status": "Accepted"])
        } else {
            #expect(answer?.payload() == row.answer16, "got \(answer?.text ?? "nothing")")
        }
    }

    @Test func invalidCSMSFramesGetTheStationsCallErrorAndNeverReachTheCharger() {
        let h = Harness()
        let missing = h.csmsCalls("RequestStartTransaction", ["remoteStartId": 1])
        #expect(h.answerToCSMS(missing)?.errorCode == "OccurrenceConstraintViolation")
        let extra = h.csmsCalls("Reset", ["type": "Immediate", "bogus": 1])
        #expect(h.answerToCSMS(extra)?.errorCode == "FormatViolation")
        let badEnum = h.csmsCalls("Reset", ["type": "Hard"])
        #expect(h.answerToCSMS(badEnum)?.errorCode == "PropertyConstraintViolation")
        let unknown = h.csmsCalls("Teleport", [:])
        #expect(h.answerToCSMS(unknown)?.errorCode == "NotImplemented")
        let unsupported = h.csmsCalls("SetNetworkProfile", ["configurationSlot": 1, "connectionData": [
            "ocppVersion": "OCPP20", "ocppTransport": "JSON", "ocppCsmsUrl": "wss://x", "messageTimeout": 30, "securityProfile": 3, "ocppInterface": "Wired0",
        ]])
        #expect(h.answerToCSMS(unsupported)?.errorCode == "NotSupported")
        let wrongWay = h.csmsCalls("BootNotification", ["reason": "PowerUp", "chargingStation": ["model": "m", "vendorName": "v"]])
        #expect(h.answerToCSMS(wrongWay)?.errorCode == "NotSupported")
        let malformed = "[2,\"m1\",\"Reset\",{\"type\":]"
        h.tester.csmsSends(malformed)
        #expect(h.tester.takeSentToCSMS().first?.errorCode == "FormatViolation")
        #expect(h.toCharger().isEmpty)
    }

    @Test func chargerCallsA201CSMSHasNoEquivalentForAreAnsweredNotDropped() {
        let h = Harness()
        let id = h.tester.chargerSends(call: "CustomOperation", payload: [:])
        #expect(h.toCSMS().isEmpty)
        #expect(h.toCharger().first { $0.messageId == id }?.errorCode == "NotSupported")
    }

    @Test func unsupportedRowsAnswerWithAStatus() {
        let h = Harness()
        let profiles = h.csmsCalls("GetChargingProfiles", ["requestId": 1, "chargingProfile": ["chargingProfilePurpose": "TxProfile"]])
        #expect(h.answerToCSMS(profiles)?.payload() == ["status": "NoProfiles"])
        let external = h.csmsCalls("SetChargingProfile", ["evseId": 0, "chargingProfile": [
            "id": 1, "stackLevel": 0, "chargingProfilePurpose": "ChargingStationExternalConstraints", "chargingProfileKind": "Absolute",
            "chargingSchedule": [["id": 1, "chargingRateUnit": "A", "chargingSchedulePeriod": [["startPeriod": 0, "limit": 16]]]],
        ]])
        #expect(h.answerToCSMS(external)?.payload()["status"] == "Rejected")
        let trigger = h.csmsCalls("TriggerMessage", ["requestedMessage": "SignV2GCertificate"])
        #expect(h.answerToCSMS(trigger)?.payload() == ["status": "NotImplemented"])
        let evseReset = h.csmsCalls("Reset", ["type": "Immediate", "evseId": 1])
        #expect(h.answerToCSMS(evseReset)?.payload() == ["status": "Rejected"])
        // The charger cannot do GetDiagnostics: Rejected, not a CALLERROR.
        let log = h.csmsCalls("GetLog", ["logType": "DiagnosticsLog", "requestId": 1, "log": ["remoteLocation": "ftp://x"]])
        if let frame = h.toCharger().first { h.tester.chargerAnswersError(frame.messageId, code: .notImplemented) }
        #expect(h.answerToCSMS(log)?.payload() == ["status": "Rejected"])
        #expect(h.toCharger().isEmpty)
    }

    /// A translation that would break the 2.0.1 schema is never sent: the caller gets a CALLERROR instead.
    @Test func anInvalidTranslationIsNeverSentNorth() {
        let h = Harness()
        let id = h.tester.chargerSends(call: "MeterValues", payload: [
            "connectorId": 1, "meterValue": [["timestamp": "yesterday", "sampledValue": [["value": "1"]]]],
        ])
        #expect(h.tester.takeSentToCSMS().isEmpty)
        let answer = h.toCharger().first { $0.messageId == id }
        #expect(answer?.errorCode == "InternalError")
        #expect(OCPPErrorCode(rawValue: answer?.errorCode ?? "-").isValid(in: .v16) == true)
    }

    /// A charger that sends one untranslatable frame after another cannot flood the log.
    @Test func untranslatableFramesAreLoggedAtMostTenTimesAMinute() {
        let logs = LogCapture()
        let h = Harness(logs: logs)
        for _ in 0..<50 {
            h.tester.chargerSends(call: "MeterValues", payload: [
                "connectorId": 1, "meterValue": [["timestamp": "yesterday\u{1b}[31m", "sampledValue": [["value": "1"]]]],
            ])
        }
        #expect(logs.lines.count == 10)
        #expect(!logs.text.contains("\u{1b}"))
        h.tester.advance(by: .seconds(61))
        h.tester.chargerSends(call: "MeterValues", payload: [
            "connectorId": 1, "meterValue": [["timestamp": "yesterday", "sampledValue": [["value": "1"]]]],
        ])
        #expect(logs.lines.count == 11)
        #expect(logs.lines.last?.contains("similar_lines_left_out=40") == true)
    }

    /// A CSMS answer that breaks its 2.0.1 schema does not become a 1.6 answer.
    @Test func anInvalidCSMSAnswerBecomesACallErrorForTheCharger() {
        let h = Harness(stages: [])
        let id = h.tester.chargerSends(call: "Heartbeat", payload: [:])
        _ = h.toCSMS()
        h.tester.csmsAnswers(id, payload: ["currentTime": 12])
        #expect(h.toCharger().first?.errorCode == "FormationViolation")
    }

    @Test func transactionStatusIsAnsweredByTheGateway() {
        let h = Harness()
        let unknown = h.csmsCalls("GetTransactionStatus", ["transactionId": "nope"])
        #expect(h.answerToCSMS(unknown)?.payload() == ["ongoingIndicator": false, "messagesInQueue": false])
        let (_, txId) = TransactionTests.start(h)
        let ongoing = h.csmsCalls("GetTransactionStatus", ["transactionId": .string(txId)])
        #expect(h.answerToCSMS(ongoing)?.payload() == ["ongoingIndicator": true, "messagesInQueue": false])
        h.tester.session.northLinkDown()
        let queued = h.csmsCalls("GetTransactionStatus", [:])
        #expect(h.answerToCSMS(queued)?.payload() == ["messagesInQueue": true])
        #expect(h.toCharger().isEmpty)
    }

    @Test func withoutAnAdapterFramesAreRelayedByteForByte() {
        let tester = StageTester(stages: [])
        let text = "[2,\"a1\",\"MeterValues\",{\"connectorId\":1,\"meterValue\":[{\"timestamp\":\"2026-01-01T00:00:00Z\",\"sampledValue\":[{\"value\":\"230.0\"}]}]}]"
        tester.chargerSends(text)
        #expect(tester.takeSentToCSMS().first?.text == text)
    }

    @Test func theSmartChargingStageSeesTheTranslated16Profile() throws {
        let stage = try StageTester.build(SmartChargingStage.self, config: "discover: false\ncharger: { units: [W], max_periods: 24, max_stack_level: 8, voltage: 230, phases: 3 }")
        let h = Harness(stages: [("smart_charging", stage)])
        let id = h.csmsCalls("SetChargingProfile", ["evseId": 1, "chargingProfile": [
            "id": 11, "stackLevel": 1, "chargingProfilePurpose": "TxDefaultProfile", "chargingProfileKind": "Absolute",
            "chargingSchedule": [["id": 1, "chargingRateUnit": "A", "startSchedule": "2026-01-01T00:00:00Z",
                                  "chargingSchedulePeriod": [["startPeriod": 0, "limit": 16, "numberPhases": 3]]]],
        ]])
        let relayed = h.toCharger()
        #expect(relayed.map(\.action) == ["SetChargingProfile"])
        let schedule = relayed.first?.payload()["csChargingProfiles"]?["chargingSchedule"]
        #expect(schedule?["chargingRateUnit"] == "W", "compiled for a W-only charger: \(relayed.first?.text ?? "")")
        if let frame = relayed.first { h.tester.chargerAnswers(frame.messageId, payload: ["status": "Accepted"]) }
        #expect(h.answerToCSMS(id)?.payload() == ["status": "Accepted"])
    }
}
