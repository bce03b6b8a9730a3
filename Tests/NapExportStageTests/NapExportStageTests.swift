import Foundation
import Logging
@testable import NapExportStage
import OCPP
import Router
import StageKit
import StageTesting
import Synchronization
import Testing

let start: Double = 1_793_491_200  // 2026-11-01T00:00:00Z

/// A site with two chargers: CP001 (OCPP 1.6, connectors 1 and 2) and CP201 (OCPP 2.0.1, EVSE 1).
func siteConfig(extra: String = "", ocpi: String? = nil) -> String {
    """
    country_code: DE
    party_id: ABC
    location:
      id: LOC1
      name: Depot Nord
      address: Hauptstrasse 1
      city: Berlin
      postal_code: "10115"
      country: DEU
      latitude: "52.520008"
      longitude: "13.404954"
      time_zone: Europe/Berlin
      operator_name: ACME Charging
    chargers:
      CP001:
        connectors:
          "1": { evse_id: "DE*ABC*E1234*1", standard: IEC_62196_T2, format: SOCKET, power_type: AC_3_PHASE, max_voltage: 230, max_amperage: 32, max_electric_power: 22000 }
          "2": { evse_id: "DE*ABC*E1234*2", standard: IEC_62196_T2, format: SOCKET, power_type: AC_3_PHASE, max_voltage: 230, max_amperage: 32 }
      CP201:
        connectors:
          "1": { evse_id: "DE*ABC*E5678*1", standard: IEC_62196_T2_COMBO, format: CABLE, power_type: DC, max_voltage: 920, max_amperage: 200 }
    offline_grace: 120
    \(ocpi ?? "")
    \(extra)
    """
}

/// Records the requests the stage sends; fails them while `down` is set.
final class FakeReceiver: HTTPSending, Sendable {
    private let state = Mutex<(requests: [OutgoingRequest], down: Bool)>(([], false))
    var requests: [OutgoingRequest] { state.withLock { $0.requests } }
    func setDown(_ down: Bool) { state.withLock { $0.down = down } }

    func send(_ request: OutgoingRequest, timeout: Duration) async throws -> IncomingResponse {
        try state.withLock { state in
            if state.down { throw HTTPFailure(description: "connection refused") }
            state.requests.append(request)
        }
        return IncomingResponse(status: 200, body: Array(#"{"status_code":1000,"status_message":"Success","timestamp":"2026-11-01T00:00:00Z"}"#.utf8))
    }

    /// The PATCHed statuses per EVSE uid, in order.
    var patches: [String: [String]] {
        var result: [String: [String]] = [:]
        for request in requests where request.method == "PATCH" {
            let uid = request.url.lastPathComponent
            result[uid, default: []].append((try? JSONValue(parsing: request.body))?["status"]?.stringValue ?? "?")
        }
        return result
    }
}

/// Builds the stage with the package initialiser: no publisher task, no sockets, the test's clock.
func makeStage(_ yaml: String, directory: String, sender: (any HTTPSending)? = nil, at time: Double = start) throws -> NapExportStage {
    let node = try composeYAML(yaml, file: "<config>")
    let configuration = try NodeDecoder(file: "<config>").decode(NapExportConfiguration.self, from: node, subject: "stage 'nap_export'")
    let context = StageSetupContext(stageId: "nap", logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }),
                                    stateDirectory: directory, south: SouthSettings(securityProfile: 1, chargers: [:]),
                                    north: NorthSettings(securityProfile: 3))
    return try NapExportStage(configuration: configuration, context: context, startTime: time, sender: sender, autostart: false)
}

func tokenFile(_ directory: String) throws -> String {
    let path = directory + "/ocpi.token"
    try AtomicFile.write(Data("secret-token-c".utf8), to: path)
    return path
}

func status(_ stage: NapExportStage, _ uid: String) -> OCPIStatus? {
    stage.core.snapshot().evses.first { $0.definition.uid == uid }?.status
}

func statusNotification16(_ tester: StageTester, connector: Int, _ status: String) {
    tester.chargerSends(call: "StatusNotification", payload: ["connectorId": .number(Double(connector)), "errorCode": "NoError",
                                                              "status": .string(status)])
}

/// A 2.0.1 frame from the charger, straight through the stage (StageTester's sessions speak 1.6).
func send201(_ stage: NapExportStage, _ tester: StageTester, _ action: String, _ payload: JSONValue) {
    let text = #"[2,"\#(UUID().uuidString)","\#(action)",\#(payload.jsonText)]"#
    let frame = try! Frame.parse(Array(text.utf8))
    let envelope = Envelope(chargerId: tester.chargerId, direction: .fromCharger, frame: frame, action: action, version: .v201,
                            receivedAt: tester.now)
    #expect(stage.process(envelope, in: tester.session).label == "forward")
}

@Suite struct StatusMappingTests {
    @Test(arguments: [
        ("Available", OCPIStatus.available), ("Preparing", .charging), ("Charging", .charging), ("SuspendedEV", .charging),
        ("SuspendedEVSE", .charging), ("Finishing", .charging), ("Reserved", .reserved), ("Unavailable", .inoperative),
        ("Faulted", .outOfOrder),
    ])
    func ocpp16StatusesMapToOCPI(ocpp: String, ocpi: OCPIStatus) throws {
        let directory = StageTester.freshStateDirectory()
        let stage = try makeStage(siteConfig(), directory: directory)
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start)
        statusNotification16(tester, connector: 2, ocpp)
        #expect(status(stage, "DE*ABC*E1234*2") == ocpi)
        // The other connector has not reported yet.
        #expect(status(stage, "DE*ABC*E1234*1") == .unknown)
        // The frame goes on untouched.
        #expect(tester.takeSentToCSMS().count == 1)
    }

    @Test func connectorZeroTakesTheWholeChargerDownAndBack() throws {
        let stage = try makeStage(siteConfig(), directory: StageTester.freshStateDirectory())
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start)
        statusNotification16(tester, connector: 1, "Charging")
        statusNotification16(tester, connector: 2, "Available")
        statusNotification16(tester, connector: 0, "Faulted")
        #expect(status(stage, "DE*ABC*E1234*1") == .outOfOrder)
        #expect(status(stage, "DE*ABC*E1234*2") == .outOfOrder)
        statusNotification16(tester, connector: 0, "Unavailable")
        #expect(status(stage, "DE*ABC*E1234*2") == .inoperative)
        statusNotification16(tester, connector: 0, "Available")
        #expect(status(stage, "DE*ABC*E1234*1") == .charging)
        #expect(status(stage, "DE*ABC*E1234*2") == .available)
    }

    @Test func unconfiguredConnectorsAndChargersAreIgnored() throws {
        let stage = try makeStage(siteConfig(), directory: StageTester.freshStateDirectory())
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP999", wallTime: start)
        statusNotification16(tester, connector: 1, "Faulted")
        let other = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start)
        statusNotification16(other, connector: 7, "Faulted")
        #expect(stage.core.snapshot().evses.allSatisfy { $0.status == .unknown })
    }

    @Test(arguments: [("Available", OCPIStatus.available), ("Occupied", .charging), ("Reserved", .reserved),
                      ("Unavailable", .inoperative), ("Faulted", .outOfOrder)])
    func ocpp201ConnectorStatusesMapToOCPI(ocpp: String, ocpi: OCPIStatus) throws {
        let stage = try makeStage(siteConfig(), directory: StageTester.freshStateDirectory())
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP201", wallTime: start)
        send201(stage, tester, "StatusNotification", ["timestamp": "2026-11-01T00:00:00Z", "connectorStatus": .string(ocpp),
                                                      "evseId": 1, "connectorId": 1])
        #expect(status(stage, "DE*ABC*E5678*1") == ocpi)
    }

    @Test func ocpp201TransactionEventsOccupyTheEVSE() throws {
        let stage = try makeStage(siteConfig(), directory: StageTester.freshStateDirectory())
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP201", wallTime: start)
        let uid = "DE*ABC*E5678*1"
        send201(stage, tester, "StatusNotification", ["timestamp": "2026-11-01T00:00:00Z", "connectorStatus": "Available",
                                                      "evseId": 1, "connectorId": 1])
        send201(stage, tester, "TransactionEvent", [
            "eventType": "Started", "timestamp": "2026-11-01T00:00:01Z", "triggerReason": "CablePluggedIn", "seqNo": 0,
            "transactionInfo": ["transactionId": "tx-1", "chargingState": "EVConnected"], "evse": ["id": 1, "connectorId": 1],
        ])
        #expect(status(stage, uid) == .charging)
        // An update without `evse` is found by its transaction id.
        send201(stage, tester, "TransactionEvent", [
            "eventType": "Updated", "timestamp": "2026-11-01T00:00:02Z", "triggerReason": "ChargingStateChanged", "seqNo": 1,
            "transactionInfo": ["transactionId": "tx-1", "chargingState": "Idle"],
        ])
        #expect(status(stage, uid) == .available)
        send201(stage, tester, "TransactionEvent", [
            "eventType": "Updated", "timestamp": "2026-11-01T00:00:03Z", "triggerReason": "ChargingStateChanged", "seqNo": 2,
            "transactionInfo": ["transactionId": "tx-1", "chargingState": "Charging"],
        ])
        #expect(status(stage, uid) == .charging)
        send201(stage, tester, "TransactionEvent", [
            "eventType": "Ended", "timestamp": "2026-11-01T00:00:04Z", "triggerReason": "EVCommunicationLost", "seqNo": 3,
            "transactionInfo": ["transactionId": "tx-1", "stoppedReason": "EVDisconnected"],
        ])
        #expect(status(stage, uid) == .available)
        // A 2.0.1 EVSE with two connectors: one in use makes the EVSE in use.
        send201(stage, tester, "StatusNotification", ["timestamp": "2026-11-01T00:00:05Z", "connectorStatus": "Faulted",
                                                      "evseId": 1, "connectorId": 2])
        #expect(status(stage, uid) == .available)
        send201(stage, tester, "StatusNotification", ["timestamp": "2026-11-01T00:00:06Z", "connectorStatus": "Occupied",
                                                      "evseId": 1, "connectorId": 1])
        #expect(status(stage, uid) == .charging)
    }
}

@Suite struct LinkStateTests {
    @Test func aChargerGoneLongerThanTheGraceIsUnknown() throws {
        let stage = try makeStage(siteConfig(), directory: StageTester.freshStateDirectory())
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start)
        stage.sessionStarted(tester.session)
        statusNotification16(tester, connector: 1, "Available")
        tester.endSession()
        #expect(tester.session.isClosed)
        stage.core.tick(at: start + 119)
        #expect(status(stage, "DE*ABC*E1234*1") == .available)
        stage.core.tick(at: start + 120)
        #expect(status(stage, "DE*ABC*E1234*1") == .unknown)
        #expect(status(stage, "DE*ABC*E1234*2") == .unknown)
        // It comes back: its own statuses count again.
        let again = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start + 200)
        stage.sessionStarted(again.session)
        #expect(status(stage, "DE*ABC*E1234*1") == .available)
    }

    @Test func aReconnectWithinTheGraceChangesNothing() throws {
        let stage = try makeStage(siteConfig(), directory: StageTester.freshStateDirectory())
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start)
        stage.sessionStarted(tester.session)
        statusNotification16(tester, connector: 1, "Charging")
        let generation = stage.core.snapshot().generation
        tester.endSession()
        stage.core.tick(at: start + 60)
        let again = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start + 61)
        stage.sessionStarted(again.session)
        stage.core.tick(at: start + 1000)
        #expect(status(stage, "DE*ABC*E1234*1") == .charging)
        #expect(stage.core.snapshot().generation == generation)
    }

    @Test func aReloadThatRetiresTheStageIsNotALinkLoss() throws {
        let stage = try makeStage(siteConfig(), directory: StageTester.freshStateDirectory())
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start)
        stage.sessionStarted(tester.session)
        statusNotification16(tester, connector: 1, "Available")
        tester.reload(to: [])
        stage.core.tick(at: start + 10_000)
        #expect(status(stage, "DE*ABC*E1234*1") == .available)
    }

    @Test func theOfflineStatusIsConfigurable() throws {
        let stage = try makeStage(siteConfig(extra: "offline_status: OUTOFORDER"), directory: StageTester.freshStateDirectory())
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start)
        stage.sessionStarted(tester.session)
        statusNotification16(tester, connector: 1, "Available")
        tester.endSession()
        stage.core.tick(at: start + 121)
        #expect(status(stage, "DE*ABC*E1234*1") == .outOfOrder)
    }
}

@Suite struct PushTests {
    func ocpi(_ directory: String, queueLimit: Int = 100) throws -> String {
        """
        ocpi:
          url: http://127.0.0.1:1/ocpi/2.2.1/locations
          token_file: \(try tokenFile(directory))
          retry_initial: 0.5
          retry_max: 4
          queue_limit: \(queueLimit)
        """
    }

    @Test func putFirstThenEveryChangeInOrderPerEVSE() async throws {
        let directory = StageTester.freshStateDirectory()
        let receiver = FakeReceiver()
        let stage = try makeStage(siteConfig(ocpi: try ocpi(directory)), directory: directory, sender: receiver)
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start)
        stage.sessionStarted(tester.session)
        for (index, value) in ["Available", "Preparing", "Charging", "Finishing", "Available"].enumerated() {
            tester.wallTime = start + Double(index)
            statusNotification16(tester, connector: 1, value)
        }
        #expect(await stage.publisher.deliverAll())
        let requests = receiver.requests
        #expect(requests.first?.method == "PUT")
        #expect(requests.first?.url.path == "/ocpi/2.2.1/locations/DE/ABC/LOC1")
        // The PUT carried each EVSE's first undelivered status (AVAILABLE); then the changes follow in order.
        #expect(receiver.patches["DE*ABC*E1234*1"] == ["CHARGING", "AVAILABLE"])
        let put = try JSONValue(parsing: requests[0].body)
        #expect(put["evses"]?.arrayValue?.first?["status"]?.stringValue == "AVAILABLE")
        let headers = Dictionary(requests[1].headers, uniquingKeysWith: { a, _ in a })
        #expect(headers["Authorization"] == "Token " + Data("secret-token-c".utf8).base64EncodedString())
        #expect(headers["X-Request-ID"] != nil && headers["X-Correlation-ID"] != nil)
        #expect(stage.core.pendingCount == 0)
        // PATCH bodies carry last_updated.
        let patch = try JSONValue(parsing: requests[1].body)
        #expect(patch["last_updated"]?.stringValue == "2026-11-01T00:00:01.000Z")
    }

    @Test func theQueueSurvivesARestartAndIsDeliveredInOrder() async throws {
        let directory = StageTester.freshStateDirectory()
        let receiver = FakeReceiver()
        receiver.setDown(true)
        let config = siteConfig(ocpi: try ocpi(directory))
        let stage = try makeStage(config, directory: directory, sender: receiver)
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start)
        stage.sessionStarted(tester.session)
        for (index, value) in ["Available", "Charging", "Finishing", "Faulted"].enumerated() {
            tester.wallTime = start + Double(index)
            statusNotification16(tester, connector: 2, value)
        }
        #expect(await stage.publisher.deliverAll() == false)
        // Finishing is CHARGING too: three changes wait.
        #expect(stage.core.pendingCount == 3)
        await stage.core.store.flush()

        // The gateway restarts: a new instance reads the queue back.
        receiver.setDown(false)
        let restarted = try makeStage(config, directory: directory, sender: receiver, at: start + 30)
        #expect(restarted.core.pendingCount == 3)
        #expect(await restarted.publisher.deliverAll())
        // The PUT delivered the oldest (AVAILABLE), the PATCHes the rest in order.
        let put = try JSONValue(parsing: try #require(receiver.requests.first).body)
        #expect(put["evses"]?.arrayValue?[1]["status"]?.stringValue == "AVAILABLE")
        #expect(receiver.patches["DE*ABC*E1234*2"] == ["CHARGING", "OUTOFORDER"])
        #expect(restarted.core.pendingCount == 0)
    }

    @Test func aFullQueueDropsTheOldestAndKeepsTheLatest() async throws {
        let directory = StageTester.freshStateDirectory()
        let receiver = FakeReceiver()
        receiver.setDown(true)
        let stage = try makeStage(siteConfig(ocpi: try ocpi(directory, queueLimit: 2)), directory: directory, sender: receiver)
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start)
        for (index, value) in ["Available", "Charging", "Reserved", "Faulted", "Unavailable"].enumerated() {
            tester.wallTime = start + Double(index)
            statusNotification16(tester, connector: 1, value)
        }
        #expect(stage.core.pendingCount == 2)
        receiver.setDown(false)
        #expect(await stage.publisher.deliverAll())
        #expect(receiver.patches["DE*ABC*E1234*1"] == ["INOPERATIVE"])
        let put = try JSONValue(parsing: receiver.requests[0].body)
        #expect(put["evses"]?.arrayValue?.first?["status"]?.stringValue == "OUTOFORDER")
    }

    @Test func aReceiverThatLostTheLocationGetsItAgain() async throws {
        let directory = StageTester.freshStateDirectory()
        let receiver = FakeReceiver()
        let stage = try makeStage(siteConfig(ocpi: try ocpi(directory)), directory: directory, sender: receiver)
        #expect(await stage.publisher.deliverAll())
        #expect(stage.publisher.isLocationPut)
        #expect(receiver.requests.map(\.method) == ["PUT"])
    }

    @Test func backOffDoublesUpToTheMaximum() throws {
        let directory = StageTester.freshStateDirectory()
        let stage = try makeStage(siteConfig(ocpi: try ocpi(directory)), directory: directory, sender: FakeReceiver())
        #expect((1...6).map { stage.publisher.backoff(afterFailures: $0) } == [0.5, 1, 2, 4, 4, 4])
    }
}

func has(_ lines: [String], _ prefix: String, _ text: String) -> Bool {
    lines.contains { line in line.hasPrefix(prefix) && line.contains(text) }
}

@Suite struct ConfigurationTests {
    /// Loads a pipeline file with the stage and returns the diagnostics, one per line.
    func diagnostics(_ config: String, directory: String = StageTester.freshStateDirectory()) async throws -> [String] {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let file = directory + "/site.yaml"
        let indented = config.split(separator: "\n", omittingEmptySubsequences: false).map { "      " + $0 }.joined(separator: "\n")
        try "version: 1\nstages:\n  - id: nap\n    type: nap_export\n    config:\n\(indented)\n".write(toFile: file, atomically: true, encoding: .utf8)
        var registry = StageRegistry()
        registry.register(NapExportStage.self)
        let loader = PipelineLoader(registry: registry, southSettings: SouthSettings(securityProfile: 1, chargers: [:]),
                                    northSettings: NorthSettings(securityProfile: 3), stateDirectory: directory,
                                    logger: Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() }))
        do {
            let pipeline = try loader.load(file: file)
            for stage in pipeline.stages { await stage.instance.shutdown() }
            return []
        } catch {
            return error.diagnostics.map { $0.description.replacingOccurrences(of: directory + "/", with: "") }
        }
    }

    @Test func everyProblemIsReportedAtItsKey() async throws {
        var config = siteConfig()
        config = config.replacingOccurrences(of: "country: DEU", with: "country: DE")
        config = config.replacingOccurrences(of: #"latitude: "52.520008""#, with: #"latitude: "95.520008""#)
        config = config.replacingOccurrences(of: #"evse_id: "DE*ABC*E1234*2""#, with: #"evse_id: "DE-ABC-1234-2""#)
        config = config.replacingOccurrences(of: "standard: IEC_62196_T2_COMBO", with: "standard: CCS2")
        config = config.replacingOccurrences(of: "power_type: DC", with: "power_type: DC_1000")
        let found = try await diagnostics(config)
        // Lines: config starts at line 6 of the file (see `diagnostics`).
        #expect(has(found, "site.yaml:14:", "'location.country' must be an ISO 3166-1 alpha-3"))
        #expect(has(found, "site.yaml:15:", "'location.latitude' must be between -90 and 90"))
        #expect(has(found, "site.yaml:23:", "evse_id' is not an eMI3 EVSE id"))
        #expect(has(found, "site.yaml:26:", "standard' must be an OCPI 2.2.1 ConnectorType"))
        #expect(has(found, "site.yaml:26:", "power_type' must be one of"))
        #expect(found.count == 5, "\(found)")
    }

    @Test func coordinatesMustBeWrittenAsOCPIAsks() async throws {
        let config = siteConfig().replacingOccurrences(of: #"longitude: "13.404954""#, with: "longitude: 13.4")
        let found = try await diagnostics(config)
        #expect(found.count == 1)
        #expect(found.first?.contains("'location.longitude' must be written like 13.404954") == true)
    }

    @Test func theEVSEIdMustBelongToTheParty() async throws {
        let config = siteConfig().replacingOccurrences(of: #""DE*ABC*E5678*1""#, with: #""DE*XYZ*E5678*1""#)
        let found = try await diagnostics(config)
        #expect(found.count == 1)
        #expect(found.first?.contains("starts with DE*XYZ but the party is DE*ABC") == true)
    }

    @Test func aTokenFileOthersCanReadIsRefused() async throws {
        let directory = StageTester.freshStateDirectory()
        let path = try tokenFile(directory)
        chmod(path, 0o644)
        let found = try await diagnostics(siteConfig(ocpi: "ocpi:\n  url: http://127.0.0.1:1/locations\n  token_file: \(path)"))
        #expect(found.count == 1)
        #expect(found.first?.contains("'ocpi.token_file'") == true && found.first?.contains("chmod 600") == true)
        #expect(found.first?.contains("secret-token-c") == false)
    }

    @Test func aValidSiteLoadsAndValidatingTouchesNeitherDiskNorNetwork() async throws {
        let directory = StageTester.freshStateDirectory()
        #expect(try await diagnostics(siteConfig(extra: "datex:\n  path: \(directory)/datex.xml"), directory: directory).isEmpty)
        // `validate` builds the stage and shuts it down at once: no state, no DATEX file.
        #expect(!FileManager.default.fileExists(atPath: directory + "/chargers"))
        #expect(!FileManager.default.fileExists(atPath: directory + "/datex.xml"))
    }
}

@Suite struct UptimeTests {
    @Test func uptimeFollowsTheNEVIFormulaWithExemptions() {
        // 100 s observed: up 0–50, down 50–80, unknown 80–90, up 90–100. Exempt 60–70 and 75–85.
        let entries = [HistoryEntry(t: 0, s: .available), HistoryEntry(t: 50, s: .outOfOrder), HistoryEntry(t: 80, s: .unknown),
                       HistoryEntry(t: 90, s: .charging)]
        let figures = UptimeFigures.compute(entries: entries, from: 0, to: 100, exemptions: [(60, 70), (75, 85), (65, 68)])
        #expect(figures.total == 100)
        #expect(figures.up == 60)
        #expect(figures.outage == 40)
        #expect(figures.unknown == 10)
        #expect(figures.excluded == 20)
        #expect(figures.percent == 80)
    }

    @Test func timeBeforeTheFirstStatusIsNotObserved() {
        let figures = UptimeFigures.compute(entries: [HistoryEntry(t: 40, s: .available)], from: 0, to: 100, exemptions: [])
        #expect(figures.total == 60)
        #expect(figures.percent == 100)
        #expect(UptimeFigures.compute(entries: [], from: 0, to: 100, exemptions: []).percent == nil)
    }

    @Test func historyIsCoalescedAndBounded() {
        var history = EVSEHistory(chargerId: "CP001")
        var kept: [Bool] = []
        for (time, status) in [(0.0, OCPIStatus.available), (1, .available), (2, .charging), (3, .available), (4, .charging)] {
            kept.append(history.record(HistoryEntry(t: time, s: status), limit: 3))
        }
        #expect(kept == [true, false, true, true, false])
        #expect(history.changes.count == 3 && history.truncated)
    }

    @Test func theStageWritesAMonthlyHistoryTheReportReads() async throws {
        let directory = StageTester.freshStateDirectory()
        let config = siteConfig(extra: """
        uptime:
          windows: [24h, 7d]
          exemptions:
            - { from: "2026-11-01T02:00:00Z", to: "2026-11-01T03:00:00Z", evse_ids: ["DE*ABC*E1234*1"], reason: scheduled maintenance }
        """)
        let stage = try makeStage(config, directory: directory)
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start)
        stage.sessionStarted(tester.session)
        statusNotification16(tester, connector: 1, "Available")
        statusNotification16(tester, connector: 2, "Available")
        tester.wallTime = start + 3600       // 01:00 faulted for two hours, one of them exempt
        statusNotification16(tester, connector: 1, "Faulted")
        tester.wallTime = start + 3 * 3600
        statusNotification16(tester, connector: 1, "Available")
        let day = stage.core.uptime(window: 86400, at: start + 86400)
        let first = try #require(day.first { $0.evse.evseId == "DE*ABC*E1234*1" }?.figures)
        #expect(first.outage == 7200 && first.excluded == 3600)
        #expect(abs(first.percent! - (86400 - 3600) / 86400 * 100) < 1e-9)
        stage.core.flushHistory()
        await stage.core.store.flush()

        let csv = try UptimeReport.csv(stateDirectory: directory, month: "2026-11", now: start + 86400)
        let lines = csv.split(separator: "\n").map(String.init)
        #expect(lines[0] == UptimeReport.header)
        #expect(lines.contains("DE*ABC*E1234*1,CP001,2026-11,1440.0,1320.0,120.0,60.0,0.0,95.833,true"))
        #expect(lines.contains("DE*ABC*E1234*2,CP001,2026-11,1440.0,1440.0,0.0,0.0,0.0,100.000,true"))
        // CP201 never reported: unknown all day, all of it outage.
        #expect(lines.contains("DE*ABC*E5678*1,CP201,2026-11,1440.0,0.0,1440.0,0.0,1440.0,0.000,true"))
        #expect(throws: ReportError.self) { try UptimeReport.csv(stateDirectory: directory, month: "2026-13", now: start) }
    }
}

@Suite struct PublicationTests {
    @Test func pullPagesTheLocationWithDateFilters() throws {
        let stage = try makeStage(siteConfig(), directory: StageTester.freshStateDirectory())
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start + 100)
        statusNotification16(tester, connector: 1, "Charging")
        let page = stage.locations.page(offset: 0, limit: 10, dateFrom: nil, dateTo: nil, now: start + 200)
        #expect(page.status == 200)
        let body = try JSONValue(parsing: page.body)
        #expect(body["status_code"]?.intValue == 1000)
        #expect(body["data"]?.arrayValue?.count == 1)
        #expect(body["data"]?.arrayValue?.first?["evses"]?.arrayValue?.first?["status"]?.stringValue == "CHARGING")
        #expect(page.headers.contains { $0.0 == "X-Total-Count" && $0.1 == "1" })
        let later = stage.locations.page(offset: 0, limit: 10, dateFrom: start + 101, dateTo: nil, now: start + 200)
        #expect(try JSONValue(parsing: later.body)["data"]?.arrayValue?.isEmpty == true)
        let beyond = stage.locations.page(offset: 1, limit: 10, dateFrom: nil, dateTo: nil, now: start + 200)
        #expect(try JSONValue(parsing: beyond.body)["data"]?.arrayValue?.isEmpty == true)
        let one = stage.locations.respond(path: "/ocpi/2.2.1/locations/LOC1/DE*ABC*E1234*1", query: "", host: "h", now: start)
        #expect(try JSONValue(parsing: one.body)["data"]?["status"]?.stringValue == "CHARGING")
        #expect(stage.locations.respond(path: "/ocpi/2.2.1/locations/OTHER", query: "", host: "h", now: start).status == 404)
        #expect(stage.locations.respond(path: "/ocpi/2.2.1/locations", query: "limit=-1", host: "h", now: start).status == 400)
    }

    @Test func peerSuppliedHeaderValuesAreCheckedBeforeUse() {
        #expect(HTTPSafety.safeHost("127.0.0.1:9410") == "127.0.0.1:9410")
        #expect(HTTPSafety.safeHost("evil.example\r\nSet-Cookie: x") == "localhost")
        #expect(HTTPSafety.safeHost(nil) == "localhost")
        #expect(HTTPSafety.sameBytes("Token abc", "Token abc"))
        #expect(!HTTPSafety.sameBytes("Token abd", "Token abc"))
        #expect(!HTTPSafety.sameBytes("Token ab", "Token abc"))
        #expect(!HTTPSafety.sameBytes("", "Token abc"))
    }

    @Test func datexIsWrittenOnChange() async throws {
        let directory = StageTester.freshStateDirectory()
        let path = directory + "/datex/status.xml"
        let stage = try makeStage(siteConfig(extra: "datex:\n  path: \(path)"), directory: directory)
        let tester = StageTester(stages: [("nap", stage)], chargerId: "CP001", wallTime: start)
        stage.publisher.writeDatexIfChanged(now: start)
        statusNotification16(tester, connector: 1, "Charging")
        stage.publisher.writeDatexIfChanged(now: start + 1)
        let xml = try String(contentsOfFile: path, encoding: .utf8)
        #expect(xml.contains(#"xsi:type="egi:EnergyInfrastructureStatusPublication""#))
        #expect(xml.contains(#"id="DE*ABC*E1234*1" version="1"/>"#))
        #expect(xml.contains("<egi:status>charging</egi:status>"))
        #expect(xml.contains("<egi:status>unknown</egi:status>"))
        // Nothing changed: nothing written.
        try FileManager.default.removeItem(atPath: path)
        stage.publisher.writeDatexIfChanged(now: start + 2)
        #expect(!FileManager.default.fileExists(atPath: path))
    }
}
