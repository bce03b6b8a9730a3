import Foundation
import OCPP
import Testing

/// The gateway's side of the 2.0.1 differential test (Tests/Interop/test_validation.py): it reads
/// the corpus the test made, one `{"action", "response", "version", "payload"}` object a line, from
/// the file named by `OCPP_VALIDATION_CORPUS` and writes one verdict a line
/// (`{"valid": true}` or `{"valid": false, "code", "path", "reason"}`) to `OCPP_VALIDATION_VERDICTS`.
/// The Python test compares them with `jsonschema`'s findings; without those variables (a plain
/// `swift test`) there is nothing to do and the driver is skipped.
@Suite("Validation corpus driver")
struct ValidationCorpusDriver {
    static let corpus = ProcessInfo.processInfo.environment["OCPP_VALIDATION_CORPUS"]
    static let verdicts = ProcessInfo.processInfo.environment["OCPP_VALIDATION_VERDICTS"]

    /// The verdict for one corpus line.
    static func verdict(for line: String) -> JSONValue {
        guard let item = try? JSONValue(parsing: line), let action = item["action"]?.stringValue, let payload = item["payload"] else {
            return ["valid": false, "code": "GenericError", "reason": "each line needs 'action' and 'payload'"]
        }
        guard let version = OCPPVersion(rawValue: item["version"]?.stringValue ?? OCPPVersion.v16.rawValue) else {
            return ["valid": false, "code": "GenericError", "reason": "unknown version"]
        }
        guard let schema = PayloadSchema.schema(for: action, version: version, response: item["response"]?.boolValue ?? false) else {
            return ["valid": false, "code": "NotImplemented", "reason": .string("unknown action \(action)")]
        }
        guard let problem = schema.validate(payload) else { return ["valid": true] }
        return ["valid": false, "code": .string(problem.code.rawValue), "path": .string(problem.path), "reason": .string(problem.reason)]
    }

    @Test(.enabled(if: corpus != nil && verdicts != nil, "run by Tests/Interop/test_validation.py"))
    func writeVerdicts() throws {
        let input = try String(contentsOfFile: try #require(Self.corpus), encoding: .utf8)
        var output = ""
        var count = 0
        for line in input.split(separator: "\n", omittingEmptySubsequences: true) {
            output += Self.verdict(for: String(line)).jsonText + "\n"
            count += 1
        }
        try output.write(toFile: try #require(Self.verdicts), atomically: true, encoding: .utf8)
        #expect(count > 0, "an empty corpus")
    }
}
