import OCPP
#if canImport(Glibc)
import Glibc
#endif

/// One input: parse it as a frame; if it is one, decode, validate and re-encode its payload and
/// check the invariants the router relies on.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let frame = try? Frame.parse(bytes) else { return 0 }
    precondition(frame.bytes == bytes, "a parsed frame must keep its bytes")
    precondition(frame.messageId.utf8.count <= Frame.maximumMessageIdLength)
    let payload = frame.payload()
    let envelope = Envelope(chargerId: "FUZZ", direction: .fromCharger, frame: frame, action: frame.action)
    _ = envelope.payload()
    let action = frame.action ?? MessageCatalogue.ocpp16.keys.sorted()[size % MessageCatalogue.ocpp16.count]
    if let schema = PayloadSchema.ocpp16(action, response: frame.messageType != .call) {
        // The frame path validates on the bytes: it must judge every payload as the tree validator does.
        precondition(schema.validate(bytes: frame.payloadBytes) == schema.validate(payload), "byte and tree validation disagree")
        precondition(schema.validate(bytes: frame.payloadBytes, checkFormats: false) == schema.validate(payload, checkFormats: false),
                     "byte and tree validation disagree")
    }
    // Rewriting the payload must give a frame that parses back to the same header and payload.
    let rewritten = FrameEncoder.replacingPayload(of: frame, with: payload)
    guard let again = try? Frame.parse(rewritten) else { preconditionFailure("a rewritten frame does not parse") }
    precondition(again.messageId == frame.messageId && again.action == frame.action && again.messageType == frame.messageType)
    precondition(again.payload() == payload, "payload changed in a round trip")
    _ = FrameEncoder.callError(id: frame.messageId, code: "GenericError", description: frame.errorDescription ?? "")
    return 0
}

@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

var argc = CommandLine.argc
var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argc, &argv, fuzzOneInput))
