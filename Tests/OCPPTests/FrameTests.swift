import OCPP
import Testing

@Suite("Frame parsing")
struct FrameTests {
    func parse(_ text: String) throws -> Frame { try Frame.parse(Array(text.utf8)) }

    @Test func callKeepsItsBytesAndHeader() throws {
        let text = #"[2, "19223201", "BootNotification", {"chargePointVendor": "VendorX", "chargePointModel": "SingleSocketCharger"}]"#
        let frame = try parse(text)
        #expect(frame.messageType == .call)
        #expect(frame.messageId == "19223201")
        #expect(frame.action == "BootNotification")
        #expect(frame.bytes == Array(text.utf8))
        #expect(frame.payload()["chargePointVendor"]?.stringValue == "VendorX")
    }

    @Test func callResultAndCallError() throws {
        let result = try parse(#"[3,"a",{"status":"Accepted"}]"#)
        #expect(result.messageType == .callResult)
        #expect(result.action == nil)
        #expect(result.payload()["status"] == "Accepted")

        let error = try parse(#"[4,"b","NotImplemented","no such action",{"x":1}]"#)
        #expect(error.messageType == .callError)
        #expect(error.errorCode == "NotImplemented")
        #expect(error.errorDescription == "no such action")
        #expect(error.payload()["x"]?.intValue == 1)
    }

    @Test func numbersKeepTheirSpellingWhenAPayloadIsRewritten() throws {
        let frame = try parse(#"[2,"m","MeterValues",{"v":230.0,"e":1.50E+3,"s":"\u00e9"}]"#)
        var payload = frame.payload()
        payload["extra"] = true
        let rewritten = try Frame.parse(FrameEncoder.replacingPayload(of: frame, with: payload))
        #expect(rewritten.text == #"[2,"m","MeterValues",{"v":230.0,"e":1.50E+3,"s":"é","extra":true}]"#)
        #expect(rewritten.messageId == "m")
    }

    @Test(arguments: [
        (#"[2,"1","Heartbeat",{"a": }]"#, FrameError.Kind.invalidJSON),
        (#"[2,"1","Heartbeat",{}"#, .invalidJSON),
        (#"{"not":"an array"}"#, .invalidStructure),
        (#"[2,"1","Heartbeat"]"#, .invalidStructure),
        (#"[2,"1","Heartbeat",{},{}]"#, .invalidStructure),
        (#"[2,1,"Heartbeat",{}]"#, .invalidStructure),
        (#"[2,"1","Heartbeat",[]]"#, .invalidStructure),
        (#"[3,"1"]"#, .invalidStructure),
        (#"[7,"1",{}]"#, .unknownMessageType),
        (#"[2,"","Heartbeat",{}]"#, .invalidStructure),
        (#"[2,"1","Heartbeat",{}] trailing"#, .invalidJSON),
        ("", .invalidJSON),
    ])
    func malformedFramesAreRejected(text: String, kind: FrameError.Kind) {
        #expect(throws: FrameError.self) { try parse(text) }
        do {
            _ = try parse(text)
        } catch let error as FrameError {
            #expect(error.kind == kind, "\(text): \(error)")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func theMessageIdIsReportedWhenItCouldBeRead() {
        do {
            _ = try parse(#"[2,"abc","Heartbeat",{"broken": }]"#)
            Issue.record("parsed a broken frame")
        } catch let error as FrameError {
            #expect(error.messageId == "abc")
            #expect(error.errorCode(for: .v16) == .formationViolation)
            #expect(error.errorCode(for: .v201).rawValue == "FormatViolation")
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func messageIdsLongerThan36CharactersAreRejected() throws {
        let ok = String(repeating: "x", count: 36)
        #expect(try parse(#"[2,"\#(ok)","Heartbeat",{}]"#).messageId == ok)
        #expect(throws: FrameError.self) { try parse(#"[2,"\#(ok)y","Heartbeat",{}]"#) }
    }

    @Test func invalidUTF8AndControlCharactersAreRejected() {
        var bytes = Array(#"[2,"1","DataTransfer",{"vendorId":"x"#.utf8)
        bytes += [0xC3, 0x28]
        bytes += Array(#""}]"#.utf8)
        #expect(throws: FrameError.self) { try Frame.parse(bytes) }
        #expect(throws: FrameError.self) { try parse("[2,\"1\",\"A\",{\"a\":\"\u{01}\"}]") }
    }

    @Test func deepNestingIsRefusedRatherThanExhaustingTheStack() {
        let deep = String(repeating: "[", count: 10_000)
        #expect(throws: FrameError.self) { try parse(#"[2,"1","DataTransfer",{"d":\#(deep)}]"#) }
    }

    @Test func encoderOutputParsesBack() throws {
        let call = try Frame.parse(FrameEncoder.call(id: "id\"1", action: "Authorize", payload: ["idTag": "line\nbreak"]))
        #expect(call.messageId == "id\"1")
        #expect(call.payload()["idTag"] == "line\nbreak")
        let error = try Frame.parse(FrameEncoder.callError(id: "x", code: "GenericError", description: String(repeating: "d", count: 300)))
        #expect(error.errorDescription?.count == 255)
    }
}

@Suite("Message catalogue")
struct MessageCatalogueTests {
    @Test func directionsFollowTheSpecification() {
        #expect(MessageCatalogue.isAllowed("BootNotification", from: .fromCharger))
        #expect(!MessageCatalogue.isAllowed("BootNotification", from: .fromCSMS))
        #expect(MessageCatalogue.isAllowed("RemoteStartTransaction", from: .fromCSMS))
        #expect(!MessageCatalogue.isAllowed("RemoteStartTransaction", from: .fromCharger))
        #expect(MessageCatalogue.isAllowed("DataTransfer", from: .fromCharger))
        #expect(MessageCatalogue.isAllowed("DataTransfer", from: .fromCSMS))
        #expect(!MessageCatalogue.isAllowed("MadeUpAction", from: .fromCharger))
    }

    @Test func securityWhitepaperActionsAreKnown() {
        for action in ["SignCertificate", "SecurityEventNotification", "LogStatusNotification", "SignedFirmwareStatusNotification"] {
            #expect(MessageCatalogue.ocpp16[action]?.sender == .chargePoint, "\(action)")
            #expect(MessageCatalogue.ocpp16[action]?.isSecurityExtension == true)
        }
        for action in ["CertificateSigned", "DeleteCertificate", "ExtendedTriggerMessage", "GetInstalledCertificateIds",
                       "GetLog", "InstallCertificate", "SignedUpdateFirmware"] {
            #expect(MessageCatalogue.ocpp16[action]?.sender == .centralSystem, "\(action)")
        }
        #expect(MessageCatalogue.ocpp16.count == 39)
    }
}
