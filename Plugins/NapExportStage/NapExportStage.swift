import Foundation
import Logging
import NIOCore
public import OCPP
public import StageKit
import Synchronization

/// `nap_export`: regulatory data at the edge. Keeps every configured EVSE's OCPI 2.2.1 status from the
/// chargers' StatusNotifications (1.6 and 2.0.1) and TransactionEvents (2.0.1) and their links, and
/// publishes it: pushed to an OCPI Locations receiver, served for pull, written as DATEX II v3, and
/// counted as NEVI uptime (gauges, monthly history, `ocpp-gateway report uptime`). It never changes,
/// holds or delays a frame; all publication runs in a task of its own (docs/regulatory.md).
public struct NapExportStage: Stage {
    public typealias Configuration = NapExportConfiguration

    public static let type = "nap_export"
    public static let summary = "Publishes EVSE status to a National Access Point (OCPI 2.2.1 push and pull, DATEX II) and counts NEVI uptime."

    let core: NapCore
    let publisher: NapPublisher
    /// The Locations sender interface (`NapLocations.respond`/`page`), for the admin listener or `pull_listen`.
    public let locations: NapLocations
    private let runtime: Runtime

    public init(configuration: Configuration, context: StageSetupContext) throws {
        try self.init(configuration: configuration, context: context, startTime: Date().timeIntervalSince1970, sender: nil,
                      autostart: true)
    }

    /// `sender` replaces the HTTP client (tests); `autostart: false` leaves the publisher loop and the pull
    /// server stopped, so a test drives `core.tick(at:)` and `publisher.deliverAll()` with its own clock.
    init(configuration: Configuration, context: StageSetupContext, startTime: Double, sender: (any HTTPSending)?,
         autostart: Bool) throws {
        let site = try configuration.validatedSite()
        var settings = CoreSettings()
        settings.offlineGrace = configuration.offlineGrace ?? 300
        settings.offlineStatus = configuration.offlineStatus.flatMap(OCPIStatus.init(rawValue:)) ?? .unknown
        settings.pushEnabled = configuration.ocpi != nil
        settings.queueLimit = configuration.ocpi?.queueLimit ?? 100
        settings.historyLimit = configuration.uptime?.historyMaxChanges ?? 5000
        if let windows = configuration.uptime?.windows {
            settings.windows = windows.compactMap { text in NapExportConfiguration.seconds(text).map { (text, $0) } }
        }
        settings.exemptions = (configuration.uptime?.exemptions ?? []).compactMap { exemption in
            guard let from = NapExportConfiguration.rfc3339(exemption.from), let to = NapExportConfiguration.rfc3339(exemption.to) else {
                return nil
            }
            return Exemption(from: from, to: to, evseIds: exemption.evseIds, reason: exemption.reason)
        }

        var push: NapPublisher.PushSettings?
        var httpSender = sender
        if let ocpi = configuration.ocpi, let url = URL(string: ocpi.url) {
            let token = try Self.readSecret(ocpi.tokenFile, key: "ocpi.token_file")
            push = NapPublisher.PushSettings(url: url, token: token, toCountryCode: ocpi.toCountryCode, toPartyId: ocpi.toPartyId,
                                             retryInitial: ocpi.retryInitial ?? 1, retryMax: ocpi.retryMax ?? 60,
                                             requestTimeout: ocpi.requestTimeout ?? 10)
            if httpSender == nil {
                do {
                    httpSender = try NIOHTTPSender(url: url, caFile: ocpi.caFile)
                } catch {
                    throw ConfigurationKeyError(key: "ocpi.ca_file", "cannot be used for TLS: \(error)")
                }
            }
        }
        let pullToken = try configuration.pullTokenFile.map { try Self.readSecret($0, key: "pull_token_file") }

        let store = context.store
        let core: NapCore
        do {
            core = try NapCore(site: site, settings: settings, stageId: context.stageId, store: store, logger: context.logger,
                               now: startTime)
        } catch {
            throw ConfigurationKeyError(key: "chargers", "the stage's saved state cannot be read: \(error)")
        }
        self.core = core
        locations = NapLocations(core: core)
        publisher = NapPublisher(core: core, push: push, sender: httpSender, datexPath: configuration.datex?.path,
                                 datexIdentifier: configuration.datex?.nationalIdentifier ?? "\(site.countryCode)*\(site.partyId)")
        runtime = Runtime()
        if autostart {
            runtime.start(publisher: publisher, locations: locations, listen: configuration.pullListen.flatMap(NapExportConfiguration.hostPort),
                          token: pullToken, logger: context.logger)
        }
    }

    /// A token from a file the gateway's user alone may read (never logged).
    static func readSecret(_ path: String, key: String) throws -> String {
        if let bits = AtomicFile.exposedModeBits(path) {
            throw ConfigurationKeyError(key: key, "\(path) is readable by others (mode bits \(String(bits, radix: 8))); chmod 600 it")
        }
        let data: Data?
        do {
            data = try AtomicFile.read(path)
        } catch {
            throw ConfigurationKeyError(key: key, "cannot read \(path): \(error.reason)")
        }
        guard let data, let text = String(data: data, encoding: .utf8)?.trimmingCharacters(in: .whitespacesAndNewlines), !text.isEmpty
        else { throw ConfigurationKeyError(key: key, "\(path) is missing or empty") }
        return text
    }

    // MARK: Frames and links

    public func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        guard envelope.direction == .fromCharger, envelope.isCall else { return .forward }
        let charger = session.chargerId
        let now = session.wallTime
        switch (envelope.version, envelope.action) {
        case (.v16, "StatusNotification"):
            let payload = envelope.payload()
            if let connector = payload["connectorId"]?.intValue, let status = payload["status"]?.stringValue {
                core.statusNotificationV16(charger: charger, connectorId: connector, status: status, at: now)
            }
        case (.v201, "StatusNotification"):
            let payload = envelope.payload()
            if let evse = payload["evseId"]?.intValue, let connector = payload["connectorId"]?.intValue,
               let status = payload["connectorStatus"]?.stringValue {
                core.statusNotificationV201(charger: charger, evseId: evse, connectorId: connector, status: status, at: now)
            }
        case (.v201, "TransactionEvent"):
            let payload = envelope.payload()
            if let eventType = payload["eventType"]?.stringValue {
                let info = payload["transactionInfo"]
                core.transactionEventV201(charger: charger, eventType: eventType, transactionId: info?["transactionId"]?.stringValue,
                                          evseId: payload["evse"]?["id"]?.intValue, chargingState: info?["chargingState"]?.stringValue,
                                          at: now)
            }
        default:
            break
        }
        return .forward
    }

    public func sessionStarted(_ session: any SessionContext) {
        core.linkUp(charger: session.chargerId, at: session.wallTime)
    }

    public func sessionEnded(_ session: any SessionContext) {
        // A reload that retires the stage leaves the charger connected: not a link loss.
        guard session.isClosed else { return }
        core.linkDown(charger: session.chargerId, at: session.wallTime)
    }

    public func shutdown() async {
        // A stage that never ran (`validate` builds and at once shuts it down) leaves the disk alone.
        if await runtime.stop(publisher: publisher) { core.flushHistory() }
        await core.store.flush()
    }
}

/// The publisher task and the pull server of one stage instance. Started a second after the stage is
/// built, so `validate` (which builds and at once shuts the stage down) never touches the network; the
/// pull port is retried while a previous instance (before a reload) still holds it.
final class Runtime: Sendable {
    private struct State {
        var stopped = false
        var task: Task<Void, Never>?
        var server: (any Channel)?
        var running = false
    }
    private let state = Mutex(State())

    func start(publisher: NapPublisher, locations: NapLocations, listen: (host: String, port: Int)?, token: String?, logger: Logger) {
        let task = Task { [self] in
            try? await Task.sleep(for: .seconds(1))
            let proceed = state.withLock { state -> Bool in
                if !state.stopped { state.running = true }
                return !state.stopped
            }
            guard proceed else { return }
            if let listen {
                Task { await self.listen(listen, locations: locations, token: token, logger: logger) }
            }
            await publisher.run()
        }
        state.withLock { $0.task = task }
    }

    private var isStopped: Bool { state.withLock { $0.stopped } }

    private func listen(_ address: (host: String, port: Int), locations: NapLocations, token: String?, logger: Logger) async {
        var warned = false
        while !isStopped {
            do {
                let channel = try await PullServer.start(host: address.host, port: address.port, locations: locations, token: token)
                let keep = state.withLock { state -> Bool in
                    if state.stopped { return false }
                    state.server = channel
                    return true
                }
                if !keep { try? await channel.close() }
                logger.info("OCPI Locations pull interface listening", metadata: ["listen": "\(address.host):\(address.port)"])
                return
            } catch {
                if !warned {
                    logger.warning("cannot listen for OCPI pull yet; retrying", metadata: ["listen": "\(address.host):\(address.port)",
                                                                                          "error": "\(error)"])
                    warned = true
                }
                try? await Task.sleep(for: .seconds(1))
            }
        }
    }

    /// Stops the task and the server; returns whether they had started.
    @discardableResult
    func stop(publisher: NapPublisher) async -> Bool {
        let (task, server) = state.withLock { state in
            state.stopped = true
            return (state.task, state.server)
        }
        publisher.stop()
        task?.cancel()
        await task?.value
        try? await server?.close()
        return state.withLock { $0.running }
    }
}
