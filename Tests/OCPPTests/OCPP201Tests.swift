import OCPP
import Testing

@Suite("OCPP 2.0.1 message catalogue")
struct Catalogue201Tests {
    @Test func directionsFollowPart2() {
        let fromStation = ["Authorize", "BootNotification", "TransactionEvent", "NotifyReport", "NotifyEvent", "Get15118EVCertificate",
                           "PublishFirmwareStatusNotification", "ReservationStatusUpdate", "SignCertificate", "NotifyEVChargingNeeds"]
        let fromCSMS = ["RequestStartTransaction", "RequestStopTransaction", "GetVariables", "SetVariables", "GetBaseReport",
                        "GetTransactionStatus", "InstallCertificate", "CostUpdated", "PublishFirmware", "UnpublishFirmware",
                        "SetNetworkProfile", "CustomerInformation"]
        for action in fromStation {
            #expect(MessageCatalogue.isAllowed(action, from: .fromCharger, version: .v201), "\(action)")
            #expect(!MessageCatalogue.isAllowed(action, from: .fromCSMS, version: .v201), "\(action)")
        }
        for action in fromCSMS {
            #expect(MessageCatalogue.isAllowed(action, from: .fromCSMS, version: .v201), "\(action)")
            #expect(!MessageCatalogue.isAllowed(action, from: .fromCharger, version: .v201), "\(action)")
        }
        #expect(MessageCatalogue.isAllowed("DataTransfer", from: .fromCharger, version: .v201))
        #expect(MessageCatalogue.isAllowed("DataTransfer", from: .fromCSMS, version: .v201))
        #expect(MessageCatalogue.isAllowed("GetVariables", from: .fromGateway, version: .v201))
        #expect(!MessageCatalogue.isAllowed("MadeUpAction", from: .fromGateway, version: .v201))
    }

    @Test func theVersionsDoNotShareActionsTheyDoNotHaveInCommon() {
        for action in ["StartTransaction", "StopTransaction", "RemoteStartTransaction", "GetConfiguration", "GetDiagnostics",
                       "ExtendedTriggerMessage", "SignedUpdateFirmware"] {
            #expect(MessageCatalogue.descriptor(for: action, version: .v201) == nil, "\(action) is 1.6 only")
            #expect(PayloadSchema.schema(for: action, version: .v201, response: false) == nil, "\(action)")
        }
        for action in ["TransactionEvent", "RequestStartTransaction", "GetVariables", "NotifyReport"] {
            #expect(MessageCatalogue.descriptor(for: action) == nil, "\(action) is 2.0.1 only; the default stays 1.6")
            #expect(!MessageCatalogue.isAllowed(action, from: .fromCharger) && !MessageCatalogue.isAllowed(action, from: .fromCSMS))
            #expect(PayloadSchema.schema(for: action, version: .v16, response: false) == nil)
        }
    }

    @Test func everyActionHasSchemasAndEverySchemaAnAction() {
        #expect(MessageCatalogue.ocpp201.count == 64)
        #expect(Set(MessageCatalogue.ocpp201.keys) == Set(PayloadSchema.ocpp201.keys))
        #expect(Set(MessageCatalogue.ocpp16.keys) == Set(PayloadSchema.ocpp16.keys))
        for (name, descriptor) in MessageCatalogue.ocpp201 {
            #expect(descriptor.name == name)
            #expect(!descriptor.isSecurityExtension, "security is native to 2.0.1")
            #expect(!descriptor.sender.isEmpty)
        }
        #expect(MessageCatalogue.ocpp201.values.filter { $0.sender == .both }.map(\.name) == ["DataTransfer"])
        #expect(MessageCatalogue.ocpp201.values.filter { $0.sender == .chargingStation }.count == 24)
        #expect(MessageCatalogue.ocpp201.values.filter { $0.sender == .csms }.count == 39)
    }

    /// Rate limits and MQTT routes are written per class: an action that exists in both versions
    /// must be classed and directed alike, or a rule would mean one thing for 1.6 and another for 2.0.1.
    @Test func namesakesAreClassedAndDirectedAlike() {
        let shared = Set(MessageCatalogue.ocpp16.keys).intersection(MessageCatalogue.ocpp201.keys)
        #expect(shared.count == 28)
        for action in shared {
            #expect(MessageCatalogue.ocpp16[action]?.actionClass == MessageCatalogue.ocpp201[action]?.actionClass, "\(action)")
            #expect(MessageCatalogue.ocpp16[action]?.sender == MessageCatalogue.ocpp201[action]?.sender, "\(action)")
        }
        #expect(MessageCatalogue.ocpp201["TransactionEvent"]?.actionClass == .transaction)
        #expect(MessageCatalogue.ocpp201["NotifyEVChargingNeeds"]?.actionClass == .smartCharging)
        #expect(MessageCatalogue.ocpp201["Get15118EVCertificate"]?.actionClass == .security)
    }

    @Test func subprotocols() {
        #expect(OCPPVersion(subprotocol: "ocpp2.0.1") == .v201)
        #expect(OCPPVersion(subprotocol: "ocpp1.6") == .v16)
        #expect(OCPPVersion(subprotocol: "ocpp2.0") == nil)
        #expect(OCPPVersion.v201.subprotocol == "ocpp2.0.1")
    }
}

@Suite("CALLERROR codes per version")
struct ErrorCodeTests {
    @Test func eachVersionHasItsTable() {
        #expect(OCPPErrorCode.codes(for: .v16).count == 10)
        #expect(OCPPErrorCode.codes(for: .v201).count == 12)
        #expect(Set(OCPPErrorCode.codes(for: .v16).map(\.rawValue)).count == 10)
        #expect(Set(OCPPErrorCode.codes(for: .v201).map(\.rawValue)).count == 12)
        #expect(OCPPErrorCode.formationViolation.isValid(in: .v16) && !OCPPErrorCode.formationViolation.isValid(in: .v201))
        #expect(OCPPErrorCode.formatViolation.isValid(in: .v201) && !OCPPErrorCode.formatViolation.isValid(in: .v16))
        for code in [OCPPErrorCode.rpcFrameworkError, .messageTypeNotSupported] {
            #expect(code.isValid(in: .v201) && !code.isValid(in: .v16), "\(code)")
        }
        #expect(OCPPErrorCode.formatViolation(for: .v16).rawValue == "FormationViolation")
        #expect(OCPPErrorCode.formatViolation(for: .v201).rawValue == "FormatViolation")
    }

    @Test func aRelayedCodeIsSpelledTheWayTheReceiverKnows() {
        #expect(OCPPErrorCode.formationViolation.spelled(for: .v201) == .formatViolation)
        #expect(OCPPErrorCode.formatViolation.spelled(for: .v16) == .formationViolation)
        #expect(OCPPErrorCode.rpcFrameworkError.spelled(for: .v16) == .protocolError)
        #expect(OCPPErrorCode.messageTypeNotSupported.spelled(for: .v16) == .protocolError)
        #expect(OCPPErrorCode(rawValue: "MadeUpError").spelled(for: .v201) == .genericError)
        for version in OCPPVersion.allCases {
            for code in OCPPErrorCode.codes(for: version) {
                #expect(code.spelled(for: version) == code, "\(code) stays \(code) in \(version)")
                #expect(code.spelled(for: version == .v16 ? .v201 : .v16).isValid(in: version == .v16 ? .v201 : .v16))
            }
        }
    }

    @Test(arguments: [
        // frame, 1.6 code (unchanged), 2.0.1 code (part 4 §4.3)
        (#"[2,"abc","Heartbeat",{"broken": }]"#, "FormationViolation", "FormatViolation"),
        (#"[2,"abc","Heartbeat",{"a":1}"#, "FormationViolation", "FormatViolation"),
        (#"[2,"ab"#, "FormationViolation", "RpcFrameworkError"),
        (#"[2 2,"ab","Heartbeat",{}]"#, "FormationViolation", "RpcFrameworkError"),
        ("", "FormationViolation", "RpcFrameworkError"),
        (#"{"not":"an array"}"#, "FormationViolation", "RpcFrameworkError"),
        (#"[2,"1","Heartbeat"]"#, "FormationViolation", "RpcFrameworkError"),
        (#"[2,"","Heartbeat",{}]"#, "FormationViolation", "RpcFrameworkError"),
        (#"[7,"1",{}]"#, "ProtocolError", "MessageTypeNotSupported"),
    ])
    func frameErrorsGetTheCodeOfTheirVersion(text: String, v16: String, v201: String) {
        do {
            _ = try Frame.parse(Array(text.utf8))
            Issue.record("parsed \(text)")
        } catch {
            #expect(error.errorCode(for: .v16).rawValue == v16, "\(text): \(error)")
            #expect(error.errorCode(for: .v201).rawValue == v201, "\(text): \(error)")
            #expect(error.errorCode(for: .v16).isValid(in: .v16) && error.errorCode(for: .v201).isValid(in: .v201))
        }
    }
}

@Suite("OCPP 2.0.1 payload validation")
struct Validation201Tests {
    func check(_ action: String, response: Bool = false, _ text: String) throws -> PayloadProblem? {
        let schema = try #require(PayloadSchema.ocpp201(action, response: response), "\(action)")
        return schema.validate(try JSONValue(parsing: text))
    }

    static let boot = #"{"reason":"PowerUp","chargingStation":{"model":"SingleSocketCharger","vendorName":"VendorX"}}"#

    @Test func aBootNotificationFromPart4IsValid() throws {
        #expect(try check("BootNotification", Self.boot) == nil)
        #expect(try check("BootNotification", response: true,
                          #"{"currentTime":"2013-02-01T20:53:32.486Z","interval":300,"status":"Accepted"}"#) == nil)
    }

    @Test func anExtraFieldIsAFormatViolationIn201AndStillAFormationViolationIn16() throws {
        let problem = try #require(try check("BootNotification", #"{"reason":"PowerUp","chargingStation":{"model":"M","vendorName":"V","x":1}}"#))
        #expect(problem.code.rawValue == "FormatViolation")
        #expect(problem.path == "chargingStation")
        let twice = try #require(try check("Heartbeat", #"{"customData":{"vendorId":"a"},"customData":{"vendorId":"b"}}"#))
        #expect(twice.code == .formatViolation)
        let old = try #require(PayloadSchema.ocpp16("Heartbeat", response: false)?.validate(["x": 1]))
        #expect(old.code.rawValue == "FormationViolation")
    }

    @Test func customDataIsOpenButNeedsItsVendorId() throws {
        #expect(try check("Heartbeat", #"{"customData":{"vendorId":"acme","anything":[1,{"x":null}]}}"#) == nil)
        #expect(try check("Heartbeat", #"{"customData":{"anything":1}}"#)?.code == .occurrenceConstraintViolation)
        #expect(try check("Heartbeat", #"{"customData":{"vendorId":"acme"},"other":1}"#)?.code == .formatViolation)
    }

    @Test func listsHaveAMaximumSize() throws {
        #expect(try check("GetReport", #"{"requestId":1,"componentCriteria":["Active","Available","Enabled","Problem"]}"#) == nil)
        let problem = try #require(try check("GetReport", #"{"requestId":1,"componentCriteria":["Active","Available","Enabled","Problem","Active"]}"#))
        #expect(problem.code == .occurrenceConstraintViolation)
        #expect(problem.path == "componentCriteria")
        #expect(try check("GetReport", #"{"requestId":1,"componentCriteria":[]}"#)?.code == .occurrenceConstraintViolation)
    }

    @Test(arguments: [("100", true), ("0", true), ("101", false), ("-1", false), ("100.0", true), ("50.5", false)])
    func numbersHaveBounds(stateOfCharge: String, valid: Bool) throws {
        let text = #"{"evseId":1,"chargingNeeds":{"requestedEnergyTransfer":"DC","dcChargingParameters":{"evMaxCurrent":125,"evMaxVoltage":400,"stateOfCharge":\#(stateOfCharge)}}}"#
        let problem = try check("NotifyEVChargingNeeds", text)
        #expect((problem == nil) == valid, "\(stateOfCharge): \(problem.map(\.description) ?? "valid")")
        if let problem {
            #expect(problem.path == "chargingNeeds.dcChargingParameters.stateOfCharge")
            #expect(problem.code == (stateOfCharge.contains(".") ? .typeConstraintViolation : .propertyConstraintViolation))
        }
    }

    /// Draft 6 counts a number with an integral value as an integer; draft 4 (1.6) does not.
    @Test func anIntegralNumberIsAnIntegerIn201Only() throws {
        for number in ["300.0", "3e2", "3.00E+2"] {
            #expect(try check("BootNotification", response: true,
                              #"{"currentTime":"2026-11-25T10:00:00Z","interval":\#(number),"status":"Accepted"}"#) == nil, "\(number)")
            let old = PayloadSchema.ocpp16("BootNotification", response: true)?
                .validate(try JSONValue(parsing: #"{"currentTime":"2026-11-25T10:00:00Z","interval":\#(number),"status":"Accepted"}"#))
            #expect(old?.code == .typeConstraintViolation, "1.6 is unchanged: \(number)")
        }
        for number in ["300.5", "1e400", "true", "\"300\""] {
            #expect(try check("BootNotification", response: true,
                              #"{"currentTime":"2026-11-25T10:00:00Z","interval":\#(number),"status":"Accepted"}"#)?.code == .typeConstraintViolation,
                    "\(number)")
        }
    }

    @Test(arguments: [
        ("2026-11-25T10:15:30.250Z", true), ("2028-02-29T00:00:00Z", true), ("2000-02-29T00:00:00+01:00", true),
        ("2026-02-29T00:00:00Z", false), ("1900-02-29T00:00:00Z", false), ("2026-04-31T00:00:00Z", false),
        ("0000-01-01T00:00:00Z", false), ("2026-11-25T10:15:60Z", false), ("2026-11-25T10:15:30", false),
    ])
    func dateTimesNeedARealCalendarDayIn201(text: String, valid: Bool) throws {
        let problem = try check("Heartbeat", response: true, #"{"currentTime":"\#(text)"}"#)
        #expect((problem == nil) == valid, "\(text): \(problem.map(\.description) ?? "valid")")
        #expect(problem == nil || problem?.code == .typeConstraintViolation)
        // 1.6 keeps its rules: any day 01–31 and a leap second pass there.
        if ["2026-02-29T00:00:00Z", "2026-04-31T00:00:00Z", "2026-11-25T10:15:60Z"].contains(text) {
            #expect(PayloadSchema.ocpp16("Heartbeat", response: true)?.validate(["currentTime": .string(text)]) == nil)
        }
    }

    @Test func lengthsCountCharactersNotBytes() throws {
        // vendorName is a string[0..50]: 50 characters, 100 bytes in UTF-8.
        let fifty = String(repeating: "é", count: 50)
        #expect(try check("BootNotification", #"{"reason":"PowerUp","chargingStation":{"model":"M","vendorName":"\#(fifty)"}}"#) == nil)
        let problem = try check("BootNotification", #"{"reason":"PowerUp","chargingStation":{"model":"M","vendorName":"\#(fifty)é"}}"#)
        #expect(problem?.code == .typeConstraintViolation)
        #expect(problem?.path == "chargingStation.vendorName")
    }

    @Test func enumerationsAndRequiredFields() throws {
        #expect(try check("BootNotification", #"{"reason":"powerUp","chargingStation":{"model":"M","vendorName":"V"}}"#)?.code
                    == .propertyConstraintViolation)
        #expect(try check("BootNotification", #"{"chargingStation":{"model":"M","vendorName":"V"}}"#)?.code == .occurrenceConstraintViolation)
        #expect(try check("BootNotification", #"{"reason":null,"chargingStation":{"model":"M","vendorName":"V"}}"#)?.code
                    == .typeConstraintViolation)
    }

    @Test func dataTransferCarriesAnyData() throws {
        for data in [#"null"#, #"[1,"two",{"three":3}]"#, #""text""#, #"{"deep":{"er":[true]}}"#] {
            #expect(try check("DataTransfer", #"{"vendorId":"acme","data":\#(data)}"#) == nil, "\(data)")
        }
        #expect(try check("DataTransfer", #"{"data":1}"#)?.code == .occurrenceConstraintViolation)
    }

    @Test func aTransactionEventWithMeterValuesNestedTwoListsDeep() throws {
        let event = #"""
        {"eventType":"Updated","timestamp":"2026-11-25T10:15:30Z","triggerReason":"MeterValuePeriodic","seqNo":3,
         "transactionInfo":{"transactionId":"f3c2a9","chargingState":"Charging"},"evse":{"id":1,"connectorId":1},
         "meterValue":[{"timestamp":"2026-11-25T10:15:30Z","sampledValue":[
            {"value":1234.5,"measurand":"Energy.Active.Import.Register","unitOfMeasure":{"unit":"Wh","multiplier":0}},
            {"value":16,"measurand":"Current.Import","phase":"L1","context":"Sample.Periodic","location":"Outlet"}]}]}
        """#
        #expect(try check("TransactionEvent", event) == nil)
        let wrongPhase = event.replacing(#""phase":"L1""#, with: #""phase":"L4""#)
        let problem = try check("TransactionEvent", wrongPhase)
        #expect(problem?.code == .propertyConstraintViolation)
        #expect(problem?.path == "meterValue[0].sampledValue[1].phase")
        let empty = event.replacing(#""meterValue":[{"#, with: #""meterValue":[],"x":[{"#)
        #expect(try check("TransactionEvent", empty)?.code == .occurrenceConstraintViolation, "an empty meterValue list")
    }
}
