import Foundation
import OCPP
@testable import SmartChargingStage
import StageKit
import Testing

/// The state file's write path: the folder of a path, the mode of a new file, smart_charging's hand-written JSON.
@Suite("state files")
struct StateFileTests {
    @Test func theFolderOfAPathIsWhatNSStringSays() {
        for path in ["/var/lib/gw/chargers/CP1/smart_charging.json", "/a/b", "/x", "relative/file.json", "a//b", "/a/b/c/d.tmp-1-2"] {
            #expect(AtomicFile.folder(of: path) == (path as NSString).deletingLastPathComponent, "\(path)")
        }
        // A bare name: its folder is the working directory (NSString says "", which is no folder).
        #expect(AtomicFile.folder(of: "file.json") == ".")
    }

    @Test func theUmaskIsReadFromProcStatus() {
        #expect(AtomicFile.umask(fromStatus: "Name:\tgw\nUmask:\t0022\nState:\tS (sleeping)\n") == 0o022)
        #expect(AtomicFile.umask(fromStatus: "Umask:\t0277\n") == 0o277)
        #expect(AtomicFile.umask(fromStatus: "Name:\tgw\n") == nil)
        // This process's, read the same way (Linux 4.7 and later have the line).
        #expect(AtomicFile.processUmask != nil)
    }

    @Test func theModeIsFixedOnlyWhenTheUmaskTookABitOfIt() {
        #expect(!AtomicFile.modeNeedsFixing(0o600, umask: 0o022))
        #expect(!AtomicFile.modeNeedsFixing(0o600, umask: 0o077))
        #expect(AtomicFile.modeNeedsFixing(0o600, umask: 0o277))
        #expect(AtomicFile.modeNeedsFixing(0o664, umask: 0o022))
        #expect(!AtomicFile.modeNeedsFixing(0o644, umask: 0o022))
        #expect(AtomicFile.modeNeedsFixing(0o600, umask: nil))
    }

    @Test func aWriteMakesAMissingFolderAndAPrivateFile() throws {
        let root = NSTemporaryDirectory() + "state-file-" + UUID().uuidString
        defer { try? FileManager.default.removeItem(atPath: root) }
        let path = root + "/chargers/CP1/smart_charging.json"
        try AtomicFile.write(Data("{\"a\":1}".utf8), to: path)
        try AtomicFile.write(Data("{\"a\":2}".utf8), to: path)
        #expect(try AtomicFile.read(path) == Data("{\"a\":2}".utf8))
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(stat(root + "/chargers/CP1", &info) == 0)
        #expect(info.st_mode & 0o777 == 0o700)
        // No temporary file left behind.
        #expect(try FileManager.default.contentsOfDirectory(atPath: root + "/chargers/CP1") == ["smart_charging.json"])
        try AtomicFile.write(Data("{}".utf8), to: path, mode: 0o640)
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o640)
    }

    static func sample() -> PersistedState {
        PersistedState(
            model: "Wallbox \"Pulsar\"",
            discovered: DiscoveredCapabilities(maxPeriods: 24, units: ["A", "W"], maxStackLevel: nil, maxProfilesInstalled: 10,
                                               numberOfConnectors: 2),
            profiles: [1: [StoredProfile(format: .ocpp16, json: #"{"chargingProfileId":7,"stackLevel":0}"#)],
                       10: [StoredProfile(format: .ocpp201, json: "{}"), StoredProfile(format: .ocpp16, json: "{\"x\":\"\\n\"}")]],
            installed: [1: InstalledProfile(profileId: 7, stackLevel: 0, purpose: "TxProfile", installedAt: 1_732_550_000.125),
                         2: InstalledProfile(profileId: 9_007_199_254_740_993, stackLevel: 3, purpose: "ChargePointMaxProfile", installedAt: 0)],
            transactions: [2: StoredTransaction(id: 4_611_686_018_427_387_904, start: 1_732_550_123.5)])
    }

    @Test func theStateFileReadsBackAsJSONEncoderWroteIt() throws {
        for state in [Self.sample(), PersistedState(model: nil, discovered: nil, profiles: [:], installed: [:], transactions: [:])] {
            let bytes = try #require(state.json())
            let decoded = try JSONDecoder().decode(PersistedState.self, from: Data(bytes))
            #expect(decoded.model == state.model)
            #expect(decoded.discovered == state.discovered)
            #expect(decoded.profiles == state.profiles)
            #expect(decoded.installed == state.installed)
            #expect(decoded.transactions == state.transactions)
            #expect(decoded.version == state.version)
            // The same members as JSONEncoder's (nil ones left out), keys sorted.
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            let reference = try JSONValue(parsing: Array(try encoder.encode(state)))
            let mine = try JSONValue(parsing: bytes)
            #expect(Self.shape(mine) == Self.shape(reference))
        }
    }

    /// Members (recursively) with numbers compared as numbers (`0` and `0.0` are one value).
    static func shape(_ value: JSONValue) -> String {
        switch value {
        case .object(let members): "{" + members.sorted { $0.key < $1.key }.map { "\($0.key):\(shape($0.value))" }.joined(separator: ",") + "}"
        case .array(let elements): "[" + elements.map(shape).joined(separator: ",") + "]"
        case .number(let text): Int(text).map(String.init) ?? Double(text).map { "\($0)" } ?? text
        default: value.jsonText
        }
    }

    @Test func aNumberJSONCannotHoldIsLeftToJSONEncoder() {
        var state = Self.sample()
        state.transactions[3] = StoredTransaction(id: 1, start: .nan)
        #expect(state.json() == nil)
    }
}

/// A state file's name is checked on its bytes: the same verdict as splitting it at `/`.
@Suite("state file names")
struct StateFileNameTests {
    static func splitVerdict(_ name: String) -> Bool {
        let parts = name.split(separator: "/", omittingEmptySubsequences: false)
        return !parts.isEmpty && parts.allSatisfy { !$0.isEmpty && $0 != "." && $0 != ".." }
    }

    @Test func aNameIsSafeExactlyWhenEachPartIsANameOfItsOwn() {
        let names = ["smart_charging.json", "dashcam/2026.jsonl", "", "/", "a/", "/a", "a//b", ".", "..", "...", "a/./b", "a/../b",
                     "../a", "a/..", ".a", "a.", "..a", "a..", ".../b", "a/...", "ünï/cödé", "a/b/c/d", "./", "/..", ". ", " ."]
        for name in names {
            #expect(StageStore.isSafeName(name) == Self.splitVerdict(name), "\(name.debugDescription)")
        }
    }
}
