public import OCPP

/// An answer to a CALL: a CALLRESULT payload or a CALLERROR.
public enum NorthAnswer: Sendable, Equatable {
    case result(JSONValue)
    case error(code: OCPPErrorCode, description: String)
}

/// What the session writes for a CALL on its way to the CSMS (relayed from the charger or a stage's own).
public enum NorthCallDecision: Sendable, Equatable {
    /// Write `[2, <same id>, action, payload]` to the CSMS.
    case send(action: String, payload: JSONValue)
    /// Complete the CALL as if the CSMS had answered (with a 1.6 answer): things the CSMS has no equivalent for.
    case answerLocally(NorthAnswer)
}

/// What the session does with a CALL from the CSMS.
public enum NorthIncomingDecision: Sendable, Equatable {
    /// Continue through the stages (reversed order) to the charger as this 1.6 CALL, with the CSMS's message id.
    case relay(action: String, payload: JSONValue)
    /// Answer the CSMS with this CALLRESULT payload (already in the CSMS's version).
    case answer(JSONValue)
    /// Answer the CSMS with a CALLERROR.
    case error(code: OCPPErrorCode, description: String)
    /// The adapter answers later itself (`Session.answerNorth`).
    case handled
}

/// Translation at the north edge of a session, after every stage: the stages keep seeing OCPP 1.6
/// envelopes while the CSMS speaks another version (OCPP 2.0.1).
///
/// It sits outside the pipeline because the CALLs stages send themselves (the outbox's replays, the
/// certs stage's SignCertificate, smart charging's own CALLs) must be translated too, and a stage in
/// the chain would not see those. Attach one per session with `Session.northAdapter`; without one the
/// session's path is unchanged (byte-exact relay).
///
/// Every method runs on the session's event loop.
public protocol NorthAdapter: AnyObject {
    /// The version the CSMS speaks (CALLERROR spellings, malformed-frame codes towards the CSMS).
    var northVersion: OCPPVersion { get }

    /// The session attached the adapter (`Session.northAdapter = …`); the adapter keeps it weakly.
    func attached(to session: Session)

    /// A 1.6 CALL is about to be written to the CSMS. `fromGateway`: a stage's own CALL (e.g. the outbox
    /// replaying what was queued while the CSMS was away), not live from the charger.
    func outgoingCall(id: String, action: String, payload: JSONValue, fromGateway: Bool) -> NorthCallDecision

    /// The CSMS answered a CALL the adapter translated: the 1.6 answer the stages and the caller see, or
    /// nil when the adapter gives it later with `Session.deliverNorthAnswer` (e.g. once what the answer
    /// promises the charger is on disk).
    func answerFromCSMS(id: String, action: String, answer: NorthAnswer) -> NorthAnswer?

    /// A translated CALL towards the CSMS ended without an answer (timeout, link lost, session ended).
    func callAbandoned(id: String)

    /// A CALL from the CSMS, parsed but not yet validated or seen by any stage.
    func incomingCall(id: String, action: String, payload: JSONValue) -> NorthIncomingDecision

    /// The 1.6 answer (from the charger through the stages, or from a stage) to a CSMS CALL the adapter
    /// relayed: the answer in the CSMS's version.
    func answerToCSMS(id: String, answer: NorthAnswer) -> NorthAnswer

    /// The CSMS link went down or came back (buffer mode).
    func northLinkChanged(up: Bool)

    /// The session is over.
    func sessionEnded()
}
