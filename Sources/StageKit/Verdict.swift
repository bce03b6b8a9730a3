public import OCPP

/// What a stage decides about a frame.
///
/// A struct over a private enum, so that new kinds of verdict can be added without breaking
/// stages that switch over nothing.
public struct Verdict: Sendable {
    package enum Kind: Sendable {
        case forward
        case forwardModified(JSONValue)
        case drop(reason: String)
        case answer(JSONValue)
        case answerError(code: OCPPErrorCode, description: String, details: JSONValue)
        case answerLater
    }

    package let kind: Kind

    /// Pass the frame on, byte for byte, to the next stage and then to the other side.
    public static let forward = Verdict(kind: .forward)

    /// Pass the frame on with a new payload; message type and id are kept.
    public static func forward(modifiedPayload payload: JSONValue) -> Verdict { Verdict(kind: .forwardModified(payload)) }

    /// Stop the frame here. The reason is logged and counted.
    public static func drop(reason: String) -> Verdict { Verdict(kind: .drop(reason: reason)) }

    /// Answer a CALL with a CALLRESULT to whoever sent it; the frame goes no further.
    public static func answer(_ payload: JSONValue) -> Verdict { Verdict(kind: .answer(payload)) }

    /// Answer a CALL with a CALLERROR to whoever sent it; the frame goes no further.
    public static func answerError(_ code: OCPPErrorCode, _ description: String, details: JSONValue = .object([])) -> Verdict {
        Verdict(kind: .answerError(code: code, description: description, details: details))
    }

    /// Hold the CALL: the stage answers it later with `SessionContext.answer(_:to:with:)`, e.g. once
    /// the charger has accepted what the stage made of it. The frame goes no further.
    public static let answerLater = Verdict(kind: .answerLater)

    /// A short name for metrics and logs: forward, modify, drop, answer, error.
    public var label: String {
        switch kind {
        case .forward: "forward"
        case .forwardModified: "modify"
        case .drop: "drop"
        case .answer: "answer"
        case .answerError: "error"
        case .answerLater: "held"
        }
    }
}
