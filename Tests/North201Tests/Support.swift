import Foundation
import Logging
import North201
import OCPP
import Router
import StageKit
import StageTesting
import Testing

/// A session through `StageTester` with a 2.0.1 adapter at its north edge.
final class Harness {
    let tester: StageTester
    let store: StageStore
    let stateDirectory: String
    var adapter: North201Adapter

    init(stages: [(id: String, stage: any Stage)] = [], stateDirectory: String = StageTester.freshStateDirectory(),
         options: North201Options = North201Options(), logs: LogCapture? = nil) {
        self.stateDirectory = stateDirectory
        store = StageStore(stateDirectory: stateDirectory, logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        tester = StageTester(stages: stages)
        let handler: any LogHandler = logs ?? SwiftLogNoOpLogHandler()
        adapter = North201Adapter(chargerId: tester.chargerId, store: store, options: options,
                                  logger: Logger(label: "test", factory: { _ in handler }))
        tester.session.northAdapter = adapter
    }

    /// Waits until the state is on disk and runs what the adapter handed back to the session (a held answer).
    func settle() {
        store.flushSynchronously()
        tester.advance(by: .zero)
    }

    /// Frames sent to the CSMS, each checked against the OCA 2.0.1 schema of its action.
    func toCSMS() -> [Frame] {
        let frames = tester.takeSentToCSMS()
        for frame in frames { Harness.expectValid201(frame, pendingCalls: &callsToCSMS) }
        return frames
    }

    func toCharger() -> [Frame] {
        let frames = tester.takeSentToCharger()
        for frame in frames where frame.messageType == .call {
            #expect(PayloadSchema.schema(for: frame.action!, version: .v16, response: false)?.validate(frame.payload()) == nil,
                    "1.6 frame to the charger fails its schema: \(frame.text)")
        }
        return frames
    }

    /// CSMS CALLs whose answer this harness will validate, by id → 2.0.1 action.
    var callsFromCSMS: [String: String] = [:]
    var callsToCSMS: [String: String] = [:]

    @discardableResult
    func csmsCalls(_ action: String, _ payload: JSONValue) -> String {
        let id = tester.csmsSends(call: action, payload: payload)
        callsFromCSMS[id] = action
        return id
    }

    /// The answer sent to the CSMS for `id`, validated against the 2.0.1 response schema.
    func answerToCSMS(_ id: String) -> Frame? {
        let frames = tester.takeSentToCSMS(where: { $0.messageId == id && $0.messageType != .call })
        guard let frame = frames.first else { return nil }
        if frame.messageType == .callResult, let action = callsFromCSMS[id] {
            let problem = PayloadSchema.schema(for: action, version: .v201, response: true)?.validate(frame.payload())
            #expect(problem == nil, "2.0.1 \(action) response fails its schema: \(problem?.description ?? "") in \(frame.text)")
        }
        if frame.messageType == .callError {
            #expect(OCPPErrorCode(rawValue: frame.errorCode ?? "").isValid(in: .v201), "not a 2.0.1 error code: \(frame.text)")
        }
        return frame
    }

    static func expectValid201(_ frame: Frame, pendingCalls: inout [String: String]) {
        if frame.messageType == .call {
            let schema = PayloadSchema.schema(for: frame.action!, version: .v201, response: false)
            #expect(schema != nil, "not a 2.0.1 action: \(frame.text)")
            let problem = schema?.validate(frame.payload())
            #expect(problem == nil, "2.0.1 \(frame.action!) fails its schema: \(problem?.description ?? "") in \(frame.text)")
            #expect(MessageCatalogue.isAllowed(frame.action!, from: .fromCharger, version: .v201), "\(frame.action!) is not a station's CALL")
        }
    }

    /// Restarts: a new session and adapter on the same state folder (what a restart or a reconnect does).
    func restart() -> Harness {
        store.flushSynchronously()
        return Harness(stateDirectory: stateDirectory)
    }
}

/// `part` is contained in `whole`: every member of an object part is in the whole (recursively), arrays and scalars equal.
func contains(_ whole: JSONValue?, _ part: JSONValue) -> Bool {
    guard let whole else { return false }
    switch (whole, part) {
    case (.object, .object(let members)):
        return members.allSatisfy { contains(whole[$0.key], $0.value) }
    case (.array(let a), .array(let b)):
        return a.count == b.count && zip(a, b).allSatisfy { contains($0, $1) }
    default:
        return whole == part
    }
}

extension JSONValue {
    /// The element `index` of an array, or nil.
    subscript(_ index: Int) -> JSONValue? {
        guard let array = arrayValue, array.indices.contains(index) else { return nil }
        return array[index]
    }
}
