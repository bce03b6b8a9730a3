import Foundation
import Logging
import Metrics
import OCPP
import StageKit
import Synchronization

/// One status change the OCPI receiver must see, in order per EVSE.
struct PendingChange: Codable, Sendable, Equatable {
    var status: OCPIStatus
    var lastUpdated: Double
}

/// What the stage keeps per EVSE (and writes to the charger's state file).
struct EVSEState: Codable, Sendable, Equatable {
    /// Per OCPP connector (1.6: the connector itself, key "0"; 2.0.1: each connector of the EVSE).
    var connectorStatuses: [String: OCPIStatus] = [:]
    /// OCPP 2.0.1: a transaction with an EV connected is running on the EVSE.
    var transactionActive = false
    /// The status last published (and its time).
    var status: OCPIStatus = .unknown
    var lastUpdated: Double = 0
    /// Changes not yet acknowledged by the OCPI receiver, oldest first.
    var pending: [PendingChange] = []
}

/// A charger's file `chargers/<id>/nap_export/<stage>/state.json`.
struct ChargerFile: Codable, Sendable, Equatable {
    /// OCPP 1.6 connector 0: the whole charge point Unavailable or Faulted.
    var chargerLevel: OCPIStatus?
    /// Keyed by EVSE uid.
    var evses: [String: EVSEState] = [:]

    static func name(stageId: String) -> String { "nap_export/\(stageId)/state.json" }
}

/// Settings of the core, from the validated configuration.
struct CoreSettings: Sendable {
    var offlineGrace: Double = 300
    var offlineStatus: OCPIStatus = .unknown
    var pushEnabled = false
    var queueLimit = 100
    var historyLimit = 5000
    var windows: [(label: String, seconds: Double)] = [("24h", 86400), ("30d", 30 * 86400)]
    var exemptions: [Exemption] = []
}

/// The stage's shared state: every EVSE's status, the charger links, the queue for the OCPI
/// receiver and the uptime history. All of it behind one lock; disk writes go through `StageStore`
/// (off the event loop). Called from the chargers' event loops (`process`) and from the publisher task.
final class NapCore: Sendable {
    let site: Site
    let settings: CoreSettings
    let stageId: String
    let store: StageStore
    let logger: Logger
    private let state: Mutex<State>
    /// Set on every change; the publisher takes it (it polls, so a charger's event loop never waits on it).
    private let signal = Atomic<Bool>(false)
    private let droppedChanges = Counter(label: "ocpp_gateway_nap_dropped_changes_total")
    private let queueDepth = Gauge(label: "ocpp_gateway_nap_queue_depth")

    struct ChargerLink {
        var connected = false
        /// When the link went down (or the stage started without it).
        var downSince: Double
        var offline = false
        /// OCPP 2.0.1 transaction id → EVSE id, for TransactionEvents without `evse`.
        var transactions: [String: Int] = [:]
    }

    struct State {
        var files: [String: ChargerFile] = [:]
        var links: [String: ChargerLink] = [:]
        /// Per charger, the months in memory (the current one and two before), keyed by month.
        var history: [String: [String: MonthHistory]] = [:]
        var datexDirty = true
        /// Months whose history changed since the last `flushHistory` (charger id, month).
        var dirtyHistory: Set<[String]> = []
        /// Bumped on every change, so the pull interface and DATEX know what is new.
        var generation = 0
    }

    init(site: Site, settings: CoreSettings, stageId: String, store: StageStore, logger: Logger, now: Double) throws {
        self.site = site
        self.settings = settings
        self.stageId = stageId
        self.store = store
        self.logger = logger
        var initial = State()
        let month = Month.key(now)
        for chargerId in Set(site.evses.map(\.chargerId)) {
            var file = try store.load(ChargerFile.self, charger: chargerId, name: ChargerFile.name(stageId: stageId)) ?? ChargerFile()
            // EVSEs no longer configured are forgotten; new ones start UNKNOWN.
            let uids = Set(site.evses.filter { $0.chargerId == chargerId }.map(\.uid))
            file.evses = file.evses.filter { uids.contains($0.key) }
            for uid in uids where file.evses[uid] == nil { file.evses[uid] = EVSEState(lastUpdated: now) }
            if !settings.pushEnabled { for uid in uids { file.evses[uid]?.pending = [] } }
            initial.files[chargerId] = file
            initial.links[chargerId] = ChargerLink(downSince: now)
            var months: [String: MonthHistory] = [:]
            for key in [Month.previous(Month.previous(month)), Month.previous(month), month] {
                if let history = try store.load(MonthHistory.self, charger: chargerId,
                                                name: MonthHistory.fileName(stageId: stageId, month: key)) {
                    months[key] = history
                }
            }
            initial.history[chargerId] = months
        }
        state = Mutex(initial)
        // Each EVSE's history carries on from its last known status (or UNKNOWN).
        state.withLock { state in
            for evse in site.evses {
                let status = state.files[evse.chargerId]?.evses[evse.uid]?.status ?? .unknown
                recordHistory(&state, evse: evse, status: status, at: now)
            }
            for chargerId in state.files.keys { state.dirtyHistory.insert([chargerId, month]) }
        }
    }

    // MARK: Events from the chargers

    /// The charger's session started: its link is up.
    func linkUp(charger: String, at now: Double) {
        mutate(charger: charger, at: now) { state in
            state.links[charger]?.connected = true
            state.links[charger]?.offline = false
        }
    }

    /// The charger's session ended (it disconnected): after the grace its EVSEs go `offline_status`.
    func linkDown(charger: String, at now: Double) {
        mutate(charger: charger, at: now) { state in
            state.links[charger]?.connected = false
            state.links[charger]?.downSince = now
        }
    }

    /// OCPP 1.6 StatusNotification.
    func statusNotificationV16(charger: String, connectorId: Int, status: String, at now: Double) {
        guard let mapped = StatusMapping.v16(status) else { return }
        mutate(charger: charger, at: now) { state in
            if connectorId == 0 {
                state.files[charger]?.chargerLevel = mapped == .inoperative || mapped == .outOfOrder ? mapped : nil
            } else if let evse = site.evse(charger: charger, ocppId: connectorId) {
                state.files[charger]?.evses[evse.uid]?.connectorStatuses = ["0": mapped]
            }
        }
    }

    /// OCPP 2.0.1 StatusNotification (one connector of an EVSE).
    func statusNotificationV201(charger: String, evseId: Int, connectorId: Int, status: String, at now: Double) {
        guard let mapped = StatusMapping.v201(status), let evse = site.evse(charger: charger, ocppId: evseId) else { return }
        mutate(charger: charger, at: now) { state in
            state.files[charger]?.evses[evse.uid]?.connectorStatuses["\(connectorId)"] = mapped
        }
    }

    /// OCPP 2.0.1 TransactionEvent.
    func transactionEventV201(charger: String, eventType: String, transactionId: String?, evseId: Int?, chargingState: String?,
                              at now: Double) {
        mutate(charger: charger, at: now) { state in
            guard var link = state.links[charger] else { return }
            var evseNumber = evseId
            if let transactionId {
                if let evseId, site.evse(charger: charger, ocppId: evseId) != nil {
                    // One running transaction per EVSE: a new one replaces a forgotten one (bounded map).
                    link.transactions = link.transactions.filter { $0.value != evseId }
                    link.transactions[transactionId] = evseId
                }
                evseNumber = evseNumber ?? link.transactions[transactionId]
                if eventType == "Ended" { link.transactions[transactionId] = nil }
            }
            state.links[charger] = link
            guard let evseNumber, let evse = site.evse(charger: charger, ocppId: evseNumber) else { return }
            if eventType == "Ended" {
                state.files[charger]?.evses[evse.uid]?.transactionActive = false
            } else if let chargingState {
                state.files[charger]?.evses[evse.uid]?.transactionActive = StatusMapping.v201ChargingState(chargingState) != nil
            }
        }
    }

    /// Time passes: chargers past the grace go offline, months roll over. Returns true if anything changed.
    @discardableResult
    func tick(at now: Double) -> Bool {
        var changed = false
        for charger in Set(site.evses.map(\.chargerId)) {
            let before = state.withLock { $0.generation }
            mutate(charger: charger, at: now) { _ in }
            changed = changed || state.withLock { $0.generation } != before
        }
        rollMonth(at: now)
        return changed
    }

    /// Applies `change` for a charger, then publishes every EVSE of it whose status differs.
    private func mutate(charger: String, at now: Double, _ change: (inout State) -> Void) {
        guard site.evses.contains(where: { $0.chargerId == charger }) else { return }
        var changedFile = false
        var changedMonths: Set<String> = []
        state.withLock { state in
            change(&state)
            guard var link = state.links[charger], var file = state.files[charger] else { return }
            if !link.connected, !link.offline, now - link.downSince >= settings.offlineGrace {
                link.offline = true
                state.links[charger] = link
            }
            for evse in site.evses where evse.chargerId == charger {
                guard var evseState = file.evses[evse.uid] else { continue }
                let status = effectiveStatus(evseState, link: link, chargerLevel: file.chargerLevel)
                if status != evseState.status {
                    evseState.status = status
                    evseState.lastUpdated = max(now, evseState.lastUpdated)
                    if settings.pushEnabled {
                        evseState.pending.append(PendingChange(status: status, lastUpdated: evseState.lastUpdated))
                        if evseState.pending.count > settings.queueLimit {
                            evseState.pending.removeFirst(evseState.pending.count - settings.queueLimit)
                            droppedChanges.increment()
                        }
                    }
                    if recordHistory(&state, evse: evse, status: status, at: evseState.lastUpdated) {
                        changedMonths.insert(Month.key(evseState.lastUpdated))
                    }
                    state.generation += 1
                    state.datexDirty = true
                    changedFile = true
                }
                if evseState != file.evses[evse.uid] {
                    file.evses[evse.uid] = evseState
                    changedFile = true
                }
            }
            // Connector statuses changed without a visible change still belong on disk.
            if state.files[charger] != file {
                state.files[charger] = file
                changedFile = true
            }
            if changedFile { saveFile(state, chargerId: charger) }
            for month in changedMonths { state.dirtyHistory.insert([charger, month]) }
        }
        if changedFile {
            updateQueueGauge()
            signal.store(true, ordering: .releasing)
        }
    }

    func effectiveStatus(_ evse: EVSEState, link: ChargerLink, chargerLevel: OCPIStatus?) -> OCPIStatus {
        if link.offline { return settings.offlineStatus }
        if let chargerLevel { return chargerLevel }
        var reported = evse.connectorStatuses.values.max { $0.precedence < $1.precedence } ?? .unknown
        if evse.transactionActive, reported == .available || reported == .reserved || reported == .unknown { reported = .charging }
        return reported
    }

    // MARK: History

    @discardableResult
    private func recordHistory(_ state: inout State, evse: EVSEDefinition, status: OCPIStatus, at time: Double) -> Bool {
        let month = Month.key(time)
        var months = state.history[evse.chargerId] ?? [:]
        var history = months[month] ?? MonthHistory(month: month)
        var evseHistory = history.evses[evse.evseId] ?? EVSEHistory(chargerId: evse.chargerId)
        let kept = evseHistory.record(HistoryEntry(t: time, s: status), limit: settings.historyLimit)
        history.evses[evse.evseId] = evseHistory
        history.exemptions = exemptions(for: month)
        months[month] = history
        state.history[evse.chargerId] = months
        return kept
    }

    private func exemptions(for month: String) -> [Exemption] {
        guard let bounds = Month.bounds(month) else { return [] }
        return settings.exemptions.filter { $0.to > bounds.start && $0.from < bounds.end }
    }

    /// At a month's first tick, each EVSE's new month starts with the status it had.
    private func rollMonth(at now: Double) {
        let month = Month.key(now)
        guard let bounds = Month.bounds(month) else { return }
        state.withLock { state in
            for chargerId in state.files.keys {
                var months = state.history[chargerId] ?? [:]
                guard months[month] == nil else { continue }
                let keep = Set([Month.previous(Month.previous(month)), Month.previous(month), month])
                months = months.filter { keep.contains($0.key) }
                state.history[chargerId] = months
                for evse in site.evses where evse.chargerId == chargerId {
                    let status = state.files[chargerId]?.evses[evse.uid]?.status ?? .unknown
                    recordHistory(&state, evse: evse, status: status, at: bounds.start)
                }
                state.dirtyHistory.insert([chargerId, month])
            }
        }
    }

    /// Uptime over the last `seconds` for every EVSE (from the months in memory).
    func uptime(window seconds: Double, at now: Double) -> [(evse: EVSEDefinition, figures: UptimeFigures)] {
        state.withLock { state in
            site.evses.map { evse in
                let months = (state.history[evse.chargerId] ?? [:]).sorted { $0.key < $1.key }
                var entries: [HistoryEntry] = []
                for (_, month) in months { entries += month.evses[evse.evseId]?.changes ?? [] }
                let windows = settings.exemptions.filter { $0.applies(to: evse.evseId) }.map { (from: $0.from, to: $0.to) }
                return (evse, UptimeFigures.compute(entries: entries, from: now - seconds, to: now, exemptions: windows))
            }
        }
    }

    // MARK: Reading

    /// Every EVSE with its published status and time, in the Location's order.
    func snapshot() -> (evses: [(definition: EVSEDefinition, status: OCPIStatus, lastUpdated: Double)], generation: Int) {
        state.withLock { state in
            (site.evses.map { evse in
                let evseState = state.files[evse.chargerId]?.evses[evse.uid] ?? EVSEState()
                return (evse, evseState.status, evseState.lastUpdated)
            }, state.generation)
        }
    }

    func history(charger: String, month: String) -> MonthHistory? { state.withLock { $0.history[charger]?[month] } }

    func takeDatexDirty() -> Bool {
        state.withLock { state in
            defer { state.datexDirty = false }
            return state.datexDirty
        }
    }

    // MARK: The OCPI queue

    /// The oldest undelivered change of each EVSE that has one, in the Location's order.
    func pendingHeads() -> [(evse: EVSEDefinition, change: PendingChange)] {
        state.withLock { state in
            site.evses.compactMap { evse in
                state.files[evse.chargerId]?.evses[evse.uid]?.pending.first.map { (evse, $0) }
            }
        }
    }

    var pendingCount: Int {
        state.withLock { state in state.files.values.reduce(0) { $0 + $1.evses.values.reduce(0) { $0 + $1.pending.count } } }
    }

    /// The receiver acknowledged `change` for `evse`: it leaves the queue (on disk too).
    func delivered(_ change: PendingChange, evse: EVSEDefinition) {
        state.withLock { state in
            guard var file = state.files[evse.chargerId], var evseState = file.evses[evse.uid],
                  evseState.pending.first == change else { return }
            evseState.pending.removeFirst()
            file.evses[evse.uid] = evseState
            state.files[evse.chargerId] = file
            saveFile(state, chargerId: evse.chargerId)
        }
        updateQueueGauge()
    }

    /// The Location object for a PUT: each EVSE with its oldest undelivered status (or its current one),
    /// which the PUT delivers, so the PATCHes that follow keep each EVSE's order.
    func locationForPut(at now: Double) -> (location: JSONValue, delivered: [(EVSEDefinition, PendingChange)]) {
        let (evses, delivered): ([(definition: EVSEDefinition, status: OCPIStatus, lastUpdated: Double)], [(EVSEDefinition, PendingChange)]) =
            state.withLock { state in
                var list: [(definition: EVSEDefinition, status: OCPIStatus, lastUpdated: Double)] = []
                var delivered: [(EVSEDefinition, PendingChange)] = []
                for evse in site.evses {
                    let evseState = state.files[evse.chargerId]?.evses[evse.uid] ?? EVSEState()
                    if let head = evseState.pending.first {
                        list.append((evse, head.status, head.lastUpdated))
                        delivered.append((evse, head))
                    } else {
                        list.append((evse, evseState.status, evseState.lastUpdated))
                    }
                }
                return (list, delivered)
            }
        return (OCPIObjects.location(site, evses: evses, now: now), delivered)
    }

    func wakeUp() { signal.store(true, ordering: .releasing) }
    /// True once after each change.
    func consumeSignal() -> Bool { signal.exchange(false, ordering: .acquiring) }
    func markDatexDirty() { state.withLock { $0.datexDirty = true } }

    private func updateQueueGauge() { queueDepth.record(Double(pendingCount)) }

    // MARK: Disk

    private func saveFile(_ state: State, chargerId: String) {
        guard let file = state.files[chargerId] else { return }
        store.save(file, charger: chargerId, name: ChargerFile.name(stageId: stageId))
    }

    /// Hands the changed months to the store (the publisher does this once per loop, off the event loops:
    /// a month's file can hold thousands of entries, too much to encode on every frame).
    func flushHistory() {
        let dirty: [(String, MonthHistory)] = state.withLock { state in
            defer { state.dirtyHistory = [] }
            return state.dirtyHistory.compactMap { key in state.history[key[0]]?[key[1]].map { (key[0], $0) } }
        }
        for (chargerId, history) in dirty {
            store.save(history, charger: chargerId, name: MonthHistory.fileName(stageId: stageId, month: history.month))
        }
    }
}
