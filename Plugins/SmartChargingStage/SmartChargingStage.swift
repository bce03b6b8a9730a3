import ChargingSchedules
import Foundation
import Logging
import Synchronization
public import OCPP
public import StageKit

/// The gateway as a Local Controller for smart charging: the CSMS's charging profiles are kept
/// here, combined into the composite schedule, and compiled into what this charger can execute
/// (its number of periods, units, stack levels, purpose and current range). The compiled profile
/// is re-sent at each boundary the charger could not hold, so a one-period charger follows a
/// 48-period day-ahead curve.
///
/// Truthful answers: the CSMS's SetChargingProfile is forwarded to the charger *as compiled*, so the
/// CSMS gets the charger's own Accepted or Rejected. GetCompositeSchedule is answered with what the
/// gateway enforces; ClearChargingProfile clears what the gateway compiled from the cleared profiles.
public struct SmartChargingStage: Stage {
    public struct Configuration: Decodable, Sendable {
        /// What every charger can execute, until GetConfiguration says otherwise (`discover`).
        public var charger: ChargerSettings?
        /// Quirks by charge point model (BootNotification's chargePointModel), over `charger`.
        public var models: [String: ChargerSettings]?
        /// Quirks by charge point id, over the model's.
        public var chargers: [String: ChargerSettings]?
        /// After an accepted BootNotification, read ChargeProfileMaxStackLevel,
        /// ChargingScheduleAllowedChargingRateUnit and ChargingScheduleMaxPeriods from the charger.
        public var discover: Bool?
        /// How far ahead the composite schedule is computed, in hours.
        public var horizonHours: Double?
        /// Where OCPP 2.0.1 charging profiles arrive until a 2.0.1 north link exists.
        public var dataTransfer: DataTransferSettings?
        /// The operator's time-of-use policy.
        public var timeOfUse: TimeOfUseSettings?
        /// A limit in amps per phase shared by every charger behind this gateway, divided among those charging.
        public var siteLimitAmps: Double?
    }

    public struct DataTransferSettings: Decodable, Sendable {
        public var vendorId: String?
        public var messageId: String?
    }

    public struct TimeOfUseSettings: Decodable, Sendable {
        public var timeZone: String
        public var windows: [WindowSettings]
    }

    public struct WindowSettings: Decodable, Sendable {
        /// mon, tue, wed, thu, fri, sat, sun.
        public var days: [String]
        /// "HH:MM" local time; `to` may be "24:00".
        public var from: String
        public var to: String
        public var amps: Double?
        /// Kilowatts for the whole charger, converted with its voltage and phases.
        public var kw: Double?
    }

    public struct ChargerSettings: Decodable, Sendable {
        public var maxPeriods: Int?
        /// `A`, `W` or both.
        public var units: [String]?
        public var maxStackLevel: Int?
        /// The purpose the charger honours: TxDefaultProfile (default) or ChargePointMaxProfile.
        public var purpose: String?
        public var minimumAmps: Double?
        public var maximumAmps: Double?
        public var voltage: Double?
        public var phases: Int?
        /// Connectors a cap for the whole charger is divided among, until NumberOfConnectors is read.
        public var connectors: Int?
    }

    public static let type = "smart_charging"
    public static let summary = "Local Controller: compiles CSMS charging profiles into what a legacy charger can execute and re-sends them at each boundary."

    let defaults: ChargerCapabilities
    let modelSettings: [String: ChargerSettings]
    let chargerSettings: [String: ChargerSettings]
    let discover: Bool
    let horizon: TimeInterval
    let dataTransferVendor: String
    let dataTransferMessage: String
    let timeOfUse: TimeOfUsePolicy?
    let siteLimitAmps: Double?
    let registry: ChargerRegistry
    let store: StageStore
    let logger: Logger
    /// The id of the profile the gateway installs on the charger (one per connector).
    static let compiledProfileIdBase = 9000
    /// The file under `<state_dir>/chargers/<id>/`.
    static let stateFile = "smart_charging.json"
    /// Bounds on what a CSMS can make the gateway keep for one charger.
    static let maxStoredProfiles = 64
    static let maxHeld = 8

    public init(configuration: Configuration, context: StageSetupContext) throws {
        defaults = try Self.apply(configuration.charger, to: ChargerCapabilities())
        modelSettings = configuration.models ?? [:]
        chargerSettings = configuration.chargers ?? [:]
        // Check every override, and every model × charger combination, now: a mistake is reported by
        // `validate` and reload rather than silently ignored when that charger boots.
        for (model, settings) in modelSettings {
            let modelCapabilities: ChargerCapabilities
            do { modelCapabilities = try Self.apply(settings, to: defaults) } catch { throw SmartChargingError("models '\(model)': \(error)") }
            for (charger, own) in chargerSettings {
                do { _ = try Self.apply(own, to: modelCapabilities) } catch {
                    throw SmartChargingError("chargers '\(charger)' over models '\(model)': \(error)")
                }
            }
        }
        for (charger, own) in chargerSettings {
            do { _ = try Self.apply(own, to: defaults) } catch { throw SmartChargingError("chargers '\(charger)': \(error)") }
        }
        discover = configuration.discover ?? true
        horizon = (configuration.horizonHours ?? 48) * 3600
        guard horizon > 0 else { throw SmartChargingError("'horizon_hours' must be positive") }
        dataTransferVendor = configuration.dataTransfer?.vendorId ?? "ocpp-gateway"
        dataTransferMessage = configuration.dataTransfer?.messageId ?? "SetChargingProfile201"
        let supply = defaults.supply
        timeOfUse = try configuration.timeOfUse.map { try Self.policy($0, supply: supply) }
        if let limit = configuration.siteLimitAmps, !(limit > 0) { throw SmartChargingError("'site_limit_amps' must be positive") }
        siteLimitAmps = configuration.siteLimitAmps
        registry = ChargerRegistry.shared(stateDirectory: context.stateDirectory)
        store = context.store
        logger = context.logger
    }

    /// `settings` over `base`: only the keys given change anything.
    static func apply(_ settings: ChargerSettings?, to base: ChargerCapabilities) throws -> ChargerCapabilities {
        guard let settings else { return base }
        var capabilities = base
        if let units = settings.units {
            capabilities.units = try Set(units.map { unit in
                guard let parsed = RateUnit(rawValue: unit) else { throw SmartChargingError("'units' takes A and/or W, not '\(unit)'") }
                return parsed
            })
        }
        if let name = settings.purpose {
            guard let purpose = ProfilePurpose(rawValue: name), purpose != .tx else {
                throw SmartChargingError("'purpose' is TxDefaultProfile or ChargePointMaxProfile, not '\(name)'")
            }
            capabilities.purpose = purpose
        }
        if let periods = settings.maxPeriods { capabilities.maxPeriods = max(1, periods) }
        if let level = settings.maxStackLevel { capabilities.maxStackLevel = max(0, level) }
        if let minimum = settings.minimumAmps { capabilities.minimumAmps = minimum }
        if let maximum = settings.maximumAmps { capabilities.maximumAmps = maximum }
        if let voltage = settings.voltage {
            guard voltage > 0 else { throw SmartChargingError("'voltage' must be positive") }
            capabilities.supply.voltage = voltage
        }
        if let phases = settings.phases {
            guard (1...3).contains(phases) else { throw SmartChargingError("'phases' is 1, 2 or 3") }
            capabilities.supply.phases = phases
        }
        if let connectors = settings.connectors {
            guard (1...64).contains(connectors) else { throw SmartChargingError("'connectors' is 1 … 64") }
            capabilities.connectors = connectors
        }
        guard capabilities.minimumAmps < capabilities.maximumAmps else { throw SmartChargingError("'minimum_amps' must be below 'maximum_amps'") }
        return capabilities
    }

    /// A charger's capabilities from configuration: defaults, then its model's quirks, then its own.
    /// Every combination was checked in `init`, so none fails here.
    func configured(_ chargerId: String, model: String?) -> ChargerCapabilities {
        var capabilities = defaults
        do {
            if let model, let settings = modelSettings[model] { capabilities = try Self.apply(settings, to: capabilities) }
            if let settings = chargerSettings[chargerId] { capabilities = try Self.apply(settings, to: capabilities) }
        } catch {
            logger.error("smart_charging: a checked override failed", metadata: ["error": "\(error)"])
        }
        return capabilities
    }

    /// What the charger can execute: configuration, with what the charger itself reported on top.
    func capabilities(_ state: State, _ chargerId: String) -> ChargerCapabilities {
        var capabilities = configured(chargerId, model: state.model)
        guard let reported = state.discovered else { return capabilities }
        if let periods = reported.maxPeriods { capabilities.maxPeriods = periods }
        if let level = reported.maxStackLevel { capabilities.maxStackLevel = level }
        if let units = reported.units?.compactMap(RateUnit.init(rawValue:)), !units.isEmpty { capabilities.units = Set(units) }
        if let connectors = reported.numberOfConnectors { capabilities.connectors = connectors }
        return capabilities
    }

    static func policy(_ settings: TimeOfUseSettings, supply: ElectricalSupply) throws -> TimeOfUsePolicy {
        guard let zone = TimeZone(identifier: settings.timeZone) else {
            throw SmartChargingError("unknown time zone '\(settings.timeZone)'; use an IANA name such as Europe/Berlin")
        }
        let days = ["sun": 1, "mon": 2, "tue": 3, "wed": 4, "thu": 5, "fri": 6, "sat": 7]
        func minutes(_ text: String) throws -> Int {
            let parts = text.split(separator: ":").compactMap { Int($0) }
            guard parts.count == 2, (0...24).contains(parts[0]), (0..<60).contains(parts[1]), parts[0] * 60 + parts[1] <= 1440 else {
                throw SmartChargingError("'\(text)' is not a time of day (HH:MM)")
            }
            return parts[0] * 60 + parts[1]
        }
        let windows = try settings.windows.map { window in
            let weekdays = try Set(window.days.map { day in
                guard let number = days[day.lowercased()] else { throw SmartChargingError("'\(day)' is not a day; use mon … sun") }
                return number
            })
            let start = try minutes(window.from), end = try minutes(window.to)
            guard start < end else { throw SmartChargingError("a window must end after it starts (\(window.from)–\(window.to))") }
            guard let amps = window.amps ?? window.kw.map({ $0 * 1000 / (supply.voltage * Double(supply.phases)) }) else {
                throw SmartChargingError("each window needs 'amps' or 'kw'")
            }
            return TimeOfUsePolicy.Window(weekdays: weekdays, start: start, end: end, amps: amps)
        }
        return TimeOfUsePolicy(timeZone: zone, windows: windows)
    }

    // MARK: Per-charger state

    /// A CSMS profile as the gateway keeps it: parsed, and as received (what is persisted).
    struct Entry {
        var profile: ChargingProfile
        var stored: StoredProfile
    }

    /// A CSMS profile on its way to the charger; until the charger accepts it, it can be taken back.
    struct Pending {
        var messageId: String
        var connector: Int
        var profileId: Int
        /// The profiles it replaced, restored if the charger refuses it.
        var replaced: [Entry]
        /// A DataTransfer (2.0.1) rather than a SetChargingProfile; held CALLs are answered by the gateway.
        var viaDataTransfer: Bool
    }

    final class State {
        var model: String?
        /// What the charger reported in GetConfiguration (this session or an earlier one); nil: not yet.
        var discovered: DiscoveredCapabilities?
        var discovering = false
        var profiles: [Int: [Entry]] = [:]  // by connector
        /// What the gateway installed on the charger, by connector.
        var installed: [Int: InstalledProfile] = [:]
        var transactions: [Int: TransactionContext] = [:]  // by connector
        var pendingStart: [(messageId: String, connector: Int, start: Date)] = []
        /// CSMS SetChargingProfile CALLs forwarded to the charger, awaiting its answer.
        var forwarded: [Pending] = []
        /// CSMS profiles held until the charger's capabilities are known.
        var held: [Pending] = []
        var resend: [Int: any ScheduledWork] = [:]
        /// Set when this stage instance leaves the session (a reload): it no longer writes or sends.
        var retired = false
        var storedProfileCount: Int { profiles.values.reduce(0) { $0 + $1.count } }
    }

    enum Key: SessionStateKey { typealias Value = State }

    func state(_ session: any SessionContext) -> State {
        // A retired state belongs to an instance a reload replaced (when state is shared by type).
        if let state = session[Key.self], !state.retired { return state }
        let state = restore(session)
        session[Key.self] = state
        return state
    }

    /// Whether CSMS profiles can be compiled: the charger's capabilities are known (or not to be asked).
    func ready(_ state: State) -> Bool { !discover || state.discovered != nil }

    // MARK: Persistence

    /// Reads what an earlier session, instance or process kept for this charger.
    private func restore(_ session: any SessionContext) -> State {
        let state = State()
        let saved: PersistedState?
        do {
            saved = try store.load(PersistedState.self, charger: session.chargerId, name: Self.stateFile)
        } catch {
            // Never read as "no state" silently: the error is logged and counted by the store, and the
            // charger is treated as unknown (capabilities re-read before anything is compiled).
            session.logger.error("smart charging state unreadable; capabilities will be read again", metadata: ["error": "\(error)"])
            session.reportIncident("smart charging state unreadable")
            return state
        }
        guard let saved else { return state }
        state.model = saved.model
        state.discovered = saved.discovered
        for (connector, stored) in saved.profiles {
            for item in stored {
                do {
                    state.profiles[connector, default: []].append(Entry(profile: try item.parsed(), stored: item))
                } catch {
                    session.logger.error("a stored charging profile could not be read; dropped", metadata: ["error": "\(error)"])
                }
            }
        }
        state.installed = saved.installed
        state.transactions = saved.transactions.mapValues { TransactionContext(id: $0.id, start: Date(timeIntervalSince1970: $0.start)) }
        return state
    }

    /// Writes the charger's state off the event loop (atomic, coalesced).
    private func persist(_ state: State, _ session: any SessionContext) {
        guard !state.retired else { return }
        let saved = PersistedState(
            model: state.model, discovered: state.discovered, profiles: state.profiles.mapValues { $0.map(\.stored) },
            installed: state.installed,
            transactions: state.transactions.mapValues { StoredTransaction(id: $0.id, start: $0.start.timeIntervalSince1970) })
        // Written by hand (JSONEncoder cost ~86,000 instructions a save); JSONEncoder only for what it refuses.
        if let bytes = saved.json() {
            store.save(Data(bytes), charger: session.chargerId, name: Self.stateFile)
        } else {
            store.save(saved, charger: session.chargerId, name: Self.stateFile)
        }
    }

    // MARK: Frames

    public func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        // An OCPP 2.0.1 station runs its own smart charging (K use cases): its frames pass untouched.
        guard session.version == .v16 else { return .forward }
        let state = state(session)
        switch (envelope.direction, envelope.messageType, envelope.action ?? "") {
        case (.fromCSMS, .call, "SetChargingProfile"):
            return setChargingProfile(envelope.payload(), messageId: envelope.messageId, state, session)
        case (.fromCSMS, .call, "GetCompositeSchedule"):
            return compositeSchedule(envelope.payload(), state, session)
        case (.fromCSMS, .call, "ClearChargingProfile"):
            return clearChargingProfile(envelope.payload(), state, session)
        case (.fromCSMS, .call, "DataTransfer"):
            let payload = envelope.payload()
            if payload["vendorId"]?.stringValue == dataTransferVendor, payload["messageId"]?.stringValue == dataTransferMessage {
                return profileFromDataTransfer(payload, messageId: envelope.messageId, state, session)
            }
        case (.fromCharger, .callResult, "SetChargingProfile"), (.fromCharger, .callError, "SetChargingProfile"):
            chargerAnswered(envelope, state, session)
        case (.fromCharger, .call, "BootNotification"):
            // The model's quirks apply from its boot on; the charger's own settings stay on top.
            let model = envelope.payload()["chargePointModel"]?.stringValue.map { String($0.prefix(64)) }
            if model != state.model {
                state.model = model
                persist(state, session)
            }
        case (.fromCSMS, .callResult, "BootNotification"):
            // A charger that rebooted may have lost what it held in RAM: install again once it is known
            // what it can execute (the router sends nothing before this acceptance anyway).
            if envelope.payload()["status"]?.stringValue == "Accepted", ready(state) { pushAll(state, session, reason: "boot") }
        case (.fromCharger, .call, "StartTransaction"):
            let payload = envelope.payload()
            let start = payload["timestamp"]?.stringValue.flatMap(parseDate) ?? Date(timeIntervalSince1970: session.wallTime)
            state.pendingStart.append((envelope.messageId, payload["connectorId"]?.intValue ?? 1, start))
            if state.pendingStart.count > 8 { state.pendingStart.removeFirst(state.pendingStart.count - 8) }
        case (.fromCSMS, .callResult, "StartTransaction"):
            guard let index = state.pendingStart.firstIndex(where: { $0.messageId == envelope.messageId }) else { break }
            let pending = state.pendingStart.remove(at: index)
            if let id = envelope.payload()["transactionId"]?.intValue {
                state.transactions[pending.connector] = TransactionContext(id: id, start: pending.start)
                registry.setCharging(session.chargerId, true)
                persist(state, session)
                pushAll(state, session, reason: "transaction \(id) started")
                rebalanceOthers(session)
            }
        case (.fromCharger, .call, "StopTransaction"):
            let id = envelope.payload()["transactionId"]?.intValue
            guard let connector = state.transactions.first(where: { $0.value.id == id })?.key else { break }
            state.transactions[connector] = nil
            // A TxProfile ends with its transaction (1.6 §3.13.3).
            state.profiles[connector]?.removeAll { $0.profile.purpose == .tx }
            if state.profiles[connector]?.isEmpty == true { state.profiles[connector] = nil }
            registry.setCharging(session.chargerId, !state.transactions.isEmpty)
            persist(state, session)
            pushAll(state, session, reason: "transaction stopped")
            rebalanceOthers(session)
        default:
            break
        }
        return .forward
    }

    /// Why the charger (as the spec describes it) would refuse `profile` on `connector`; nil if it would not.
    private func refusal(_ profile: ChargingProfile, connector: Int, _ state: State, _ session: any SessionContext) -> String? {
        if connector < 0 { return "no such connector" }
        if let connectors = state.discovered?.numberOfConnectors, connector > connectors { return "no such connector" }
        switch profile.purpose {
        case .chargePointMax where connector != 0:
            return "a ChargePointMaxProfile is set on connector 0 only"
        case .tx where connector == 0:
            return "a TxProfile needs a connector with a transaction, not connector 0"
        case .tx:
            guard let transaction = state.transactions[connector] else { return "no transaction on connector \(connector)" }
            if let id = profile.transactionId, id != transaction.id { return "transaction \(id) is not the one on connector \(connector)" }
        default:
            break
        }
        let replaces = state.profiles[connector]?.contains { Self.replaces(profile, $0.profile) } ?? false
        if !replaces, state.storedProfileCount >= Self.maxStoredProfiles { return "too many charging profiles" }
        return nil
    }

    /// 1.6 §3.13.2: the same id, or the same stack level and purpose, replaces.
    static func replaces(_ new: ChargingProfile, _ old: ChargingProfile) -> Bool {
        old.id == new.id || (old.stackLevel == new.stackLevel && old.purpose == new.purpose)
    }

    /// Puts `entry` in the store tentatively; returns what it replaced.
    private func insert(_ entry: Entry, connector: Int, _ state: State) -> [Entry] {
        var profiles = state.profiles[connector] ?? []
        let replaced = profiles.filter { Self.replaces(entry.profile, $0.profile) }
        profiles.removeAll { Self.replaces(entry.profile, $0.profile) }
        profiles.append(entry)
        state.profiles[connector] = profiles
        return replaced
    }

    /// The charger refused a CSMS profile: it leaves the store (and the composite schedule), and what it replaced comes back.
    private func takeBack(_ pending: Pending, _ state: State, _ session: any SessionContext) {
        state.profiles[pending.connector]?.removeAll { $0.profile.id == pending.profileId }
        state.profiles[pending.connector, default: []].append(contentsOf: pending.replaced)
        if state.profiles[pending.connector]?.isEmpty == true { state.profiles[pending.connector] = nil }
        persist(state, session)
        // The charger keeps what it had; the gateway's timers follow the profiles that stay.
        let compiled = compile(pending.connector, state, session)
        schedulePush(pending.connector, at: compiled?.resendAt, state, session)
    }

    private func setChargingProfile(_ payload: JSONValue, messageId: String, _ state: State, _ session: any SessionContext) -> Verdict {
        guard let connector = payload["connectorId"]?.intValue, let json = payload["csChargingProfiles"] else { return .forward }
        let profile: ChargingProfile
        do {
            profile = try ChargingProfile(ocpp16: json)
        } catch {
            return .answerError(.propertyConstraintViolation, "SetChargingProfile: \(error)")
        }
        if let reason = refusal(profile, connector: connector, state, session) {
            session.logger.info("charging profile rejected", metadata: ["csms_profile": "\(profile.id)", "reason": "\(reason)"])
            return .answer(["status": "Rejected"])
        }
        let replaced = insert(Entry(profile: profile, stored: StoredProfile(format: .ocpp16, json: json.jsonText)), connector: connector, state)
        let pending = Pending(messageId: messageId, connector: connector, profileId: profile.id, replaced: replaced, viaDataTransfer: false)
        guard ready(state) else { return hold(pending, state, session) }
        guard let compiled = compile(connector, state, session) else { return .forward }
        schedulePush(connector, at: compiled.resendAt, state, session)
        state.forwarded.append(pending)
        if state.forwarded.count > Self.maxHeld { state.forwarded.removeFirst() }
        session.logger.info("charging profile compiled for the charger", metadata: [
            "csms_profile": "\(profile.id)", "periods_in": "\(profile.schedule.periods.count)",
            "periods_out": "\(compiled.periods.count)", "next_at": "\(compiled.resendAt.map { "\($0)" } ?? "-")",
        ])
        return .forward(modifiedPayload: ["connectorId": .number(connector), "csChargingProfiles": compiled.profile])
    }

    /// The charger answered a CSMS SetChargingProfile the gateway forwarded as compiled.
    private func chargerAnswered(_ envelope: Envelope, _ state: State, _ session: any SessionContext) {
        guard let index = state.forwarded.firstIndex(where: { $0.messageId == envelope.messageId }) else { return }
        let pending = state.forwarded.remove(at: index)
        let accepted = envelope.messageType == .callResult && envelope.payload()["status"]?.stringValue == "Accepted"
        settle(pending, accepted: accepted, answer: Self.describe(envelope), state, session)
    }

    /// The charger's verdict on a CSMS profile: kept (and connector 0's applied to every connector) or taken back.
    private func settle(_ pending: Pending, accepted: Bool, answer: String, profile: JSONValue? = nil, _ state: State,
                        _ session: any SessionContext) {
        if accepted {
            installed(pending.connector, state, session, profile: profile)
            persist(state, session)
            // Connector 0's profiles cap or default every connector: the others are compiled again.
            if pending.connector == 0 { pushAll(state, session, reason: "connector 0 profile", except: [0]) }
        } else {
            session.logger.info("the charger refused a charging profile; it is not kept", metadata: [
                "csms_profile": "\(pending.profileId)", "answer": "\(LogSafe.escape(answer))",
            ])
            takeBack(pending, state, session)
        }
    }

    /// Keeps a CSMS profile until the charger's capabilities are known; answered with the charger's verdict then.
    private func hold(_ pending: Pending, _ state: State, _ session: any SessionContext) -> Verdict {
        guard state.held.count < Self.maxHeld else {
            takeBack(pending, state, session)
            return .answer(["status": "Rejected"])
        }
        state.held.append(pending)
        if !state.discovering { discoverCapabilities(state, session) }
        return .answerLater
    }

    /// Installs a CSMS profile with a gateway CALL and answers the CSMS with the charger's verdict.
    private func install(_ pending: Pending, _ state: State, _ session: any SessionContext) {
        guard let compiled = compile(pending.connector, state, session) else {
            takeBack(pending, state, session)
            session.answer(pending.messageId, to: .csms, with: ["status": "Rejected"], error: nil)
            return
        }
        schedulePush(pending.connector, at: compiled.resendAt, state, session)
        session.sendCall("SetChargingProfile", payload: ["connectorId": .number(pending.connector), "csChargingProfiles": compiled.profile],
                         to: .charger) { outcome in
            guard !state.retired else { return }
            let accepted: Bool
            if case .result(let answer) = outcome { accepted = answer["status"]?.stringValue == "Accepted" } else { accepted = false }
            settle(pending, accepted: accepted, answer: Self.describe(outcome), profile: compiled.profile, state, session)
            if case .connectionClosed = outcome { return }
            session.answer(pending.messageId, to: .csms, with: ["status": .string(accepted ? "Accepted" : "Rejected")], error: nil)
        }
    }

    /// Records what the charger now holds on `connector`.
    private func installed(_ connector: Int, _ state: State, _ session: any SessionContext, profile: JSONValue? = nil) {
        let capabilities = capabilities(state, session.chargerId)
        state.installed[connector] = InstalledProfile(
            profileId: profile?["chargingProfileId"]?.intValue ?? Self.compiledProfileIdBase + connector,
            stackLevel: profile?["stackLevel"]?.intValue ?? capabilities.maxStackLevel,
            purpose: profile?["chargingProfilePurpose"]?.stringValue ?? capabilities.purpose.rawValue,
            installedAt: session.wallTime)
    }

    /// The profiles and caps in force for `connector`: its own and connector 0's TxDefaultProfiles (and
    /// its TxProfiles), capped by its share of every limit for the whole charger (connector 0's
    /// ChargePointMaxProfile, the time-of-use policy, the site share), divided equally among the
    /// charger's connectors. `wholeCharger`: connector 0 as the charger, undivided (GetCompositeSchedule).
    func sources(_ connector: Int, _ state: State, _ session: any SessionContext, from now: Date, until end: Date,
                 wholeCharger: Bool = false) -> (profiles: [ChargingProfile], constraints: [[LimitSegment]]) {
        let station = (state.profiles[0] ?? []).map(\.profile)
        var profiles = station.filter { $0.purpose == .txDefault }
        if connector != 0 { profiles += (state.profiles[connector] ?? []).map(\.profile).filter { $0.purpose != .chargePointMax } }
        let capabilities = capabilities(state, session.chargerId)
        let share = wholeCharger ? 1 : max(1, capabilities.connectors)
        var constraints: [[LimitSegment]] = []
        let caps = station.filter { $0.purpose == .chargePointMax }
        if !caps.isEmpty {
            constraints.append(CompositeSchedule.compute(profiles: caps, from: now, until: end, transaction: nil, supply: capabilities.supply))
        }
        if let timeOfUse { constraints.append(timeOfUse.segments(from: now, until: end).map { segment in
            LimitSegment(start: segment.start, end: segment.end, amps: segment.amps, phases: capabilities.supply.phases)
        }) }
        if let siteLimitAmps {
            let amps = registry.share(of: siteLimitAmps, for: session.chargerId)
            constraints.append([LimitSegment(start: now, end: end, amps: amps, phases: capabilities.supply.phases)])
        }
        constraints = constraints.map { segments in
            segments.map { LimitSegment(start: $0.start, end: $0.end, limit: $0.limit?.divided(by: share)) }
        }
        return (profiles, constraints)
    }

    /// - Parameter notBefore: a boundary the caller is acting on; a timer may fire a moment early,
    ///   and compiling before the boundary would send the period that is ending again.
    func compile(_ connector: Int, _ state: State, _ session: any SessionContext, notBefore: Date? = nil) -> CompiledProfile? {
        let now = max(Date(timeIntervalSince1970: session.wallTime), notBefore ?? .distantPast)
        let (profiles, constraints) = sources(connector, state, session, from: now, until: now + horizon)
        guard !profiles.isEmpty || !constraints.isEmpty else { return nil }
        let capabilities = capabilities(state, session.chargerId)
        let segments = CompositeSchedule.compute(profiles: profiles, from: now, until: now + horizon, transaction: state.transactions[connector],
                                                 supply: capabilities.supply, constraints: constraints)
        // The highest stack level the charger honours, so a stale profile left on it cannot cap ours.
        return ProfileCompiler.compile(segments, now: now, capabilities: capabilities,
                                       profileId: Self.compiledProfileIdBase + connector, stackLevel: capabilities.maxStackLevel)
    }

    /// Sends the freshly compiled profile for `connector` when the charger's current one runs out.
    private func schedulePush(_ connector: Int, at date: Date?, _ state: State, _ session: any SessionContext) {
        state.resend.removeValue(forKey: connector)?.cancel()
        guard let date, !state.retired else { return }
        let delay = max(0, date.timeIntervalSince1970 - session.wallTime)
        state.resend[connector] = session.schedule(after: .milliseconds(Int64((delay * 1000).rounded(.up)))) {
            push(connector, state, session, reason: "schedule boundary", boundary: date)
        }
    }

    private func push(_ connector: Int, _ state: State, _ session: any SessionContext, reason: String, boundary: Date? = nil) {
        guard !state.retired, let compiled = compile(connector, state, session, notBefore: boundary) else { return }
        schedulePush(connector, at: compiled.resendAt, state, session)
        session.sendCall("SetChargingProfile", payload: ["connectorId": .number(connector), "csChargingProfiles": compiled.profile],
                         to: .charger) { outcome in
            guard !state.retired else { return }
            if case .result(let answer) = outcome, answer["status"]?.stringValue == "Accepted" {
                installed(connector, state, session, profile: compiled.profile)
                persist(state, session)
                return
            }
            session.logger.warning("the charger did not accept a compiled profile", metadata: [
                "reason": "\(reason)", "outcome": "\(LogSafe.escape(Self.describe(outcome)))",
            ])
        }
    }

    /// Connectors the gateway limits: those with profiles, and connector 0 when something caps the whole charger.
    private func limitedConnectors(_ state: State) -> [Int] {
        var connectors = Set(state.profiles.filter { !$0.value.isEmpty }.keys)
        if timeOfUse != nil || siteLimitAmps != nil { connectors.insert(0) }
        return connectors.sorted()
    }

    private func pushAll(_ state: State, _ session: any SessionContext, reason: String, except skipped: Set<Int> = []) {
        for connector in limitedConnectors(state) where !skipped.contains(connector) { push(connector, state, session, reason: reason) }
    }

    /// Other chargers' shares of the site limit changed: each re-compiles on its own event loop.
    private func rebalanceOthers(_ session: any SessionContext) {
        guard siteLimitAmps != nil else { return }
        for handle in registry.handles(except: session.chargerId) {
            handle.run { other in
                guard let state = other[Key.self], !state.retired else { return }
                pushAll(state, other, reason: "site limit re-divided")
            }
        }
    }

    /// A new session, a reconnect without boot, a gateway restart, or a reload that built this
    /// instance: the charger's state comes back from disk and, when it is known what the charger
    /// executes, what it must hold is installed again (so a new site limit reaches it at once).
    public func sessionStarted(_ session: any SessionContext) {
        guard session.version == .v16 else { return }
        let state = state(session)
        let charging = !state.transactions.isEmpty
        registry.join(session.chargerId, session: ObjectIdentifier(session), handle: session.handle, charging: charging)
        // A charger that booted before (its model is known) is served now; a new one after its boot.
        if ready(state), state.model != nil { pushAll(state, session, reason: "session started") }
        // Capabilities are read in every session (the firmware may have changed); the router holds
        // this CALL until the charger's boot was accepted.
        if discover { discoverCapabilities(state, session) }
        if charging { rebalanceOthers(session) }
    }

    /// The status page: the limit the charger is held to now, per connector (amps per phase), or `none`.
    public func status(in session: any SessionContext) -> [String: String] {
        guard let state = session[Key.self], !state.retired else { return [:] }
        let capabilities = capabilities(state, session.chargerId)
        let now = Date(timeIntervalSince1970: session.wallTime)
        let connectors = max(1, min(capabilities.connectors, 8))
        let limits = (1...connectors).map { connector -> String in
            let (profiles, constraints) = sources(connector, state, session, from: now, until: now + 60)
            let segments = CompositeSchedule.compute(profiles: profiles, from: now, until: now + 60, transaction: state.transactions[connector],
                                                     supply: capabilities.supply, constraints: constraints)
            let limit = ProfileCompiler.enforced(segments, now: now, capabilities: capabilities).first?.limit
            let text = limit.map { "\(($0.amps * 10).rounded() / 10) A × \($0.phases)" } ?? "none"
            return connectors == 1 ? text : "#\(connector) \(text)"
        }
        return ["current_limit": limits.joined(separator: ", ")]
    }

    public func sessionEnded(_ session: any SessionContext) {
        guard let state = session[Key.self] else { return }
        // This instance is done with the session (the charger left, or a reload replaced the stage):
        // its timers stop and it writes nothing more; what is on disk stays for the next one.
        state.retired = true
        for work in state.resend.values { work.cancel() }
        state.resend = [:]
        // Only a charger that really left leaves the registry (a reload keeps the session going).
        guard session.isClosed else { return }
        let wasCharging = registry.leave(session.chargerId, session: ObjectIdentifier(session))
        if wasCharging { rebalanceOthers(session) }
    }

    /// A 2.0.1 profile inside DataTransfer: compiled like a 1.6 one, installed with a gateway CALL,
    /// and the DataTransfer answered with the charger's verdict.
    private func profileFromDataTransfer(_ payload: JSONValue, messageId: String, _ state: State, _ session: any SessionContext) -> Verdict {
        let request: JSONValue
        let profile: ChargingProfile
        let stored: StoredProfile
        do {
            guard let data = payload["data"]?.stringValue else { throw ProfileError("'data' must hold the request as JSON text") }
            request = try JSONValue(parsing: data)
            guard let json = request["chargingProfile"] else { throw ProfileError("'data' needs evseId and chargingProfile") }
            profile = try ChargingProfile(ocpp201: json)
            stored = StoredProfile(format: .ocpp201, json: json.jsonText)
        } catch {
            return .answer(["status": "Rejected", "data": .string("\(error)")])
        }
        let connector = request["evseId"]?.intValue ?? 0
        if let reason = refusal(profile, connector: connector, state, session) {
            return .answer(["status": "Rejected", "data": .string(reason)])
        }
        let replaced = insert(Entry(profile: profile, stored: stored), connector: connector, state)
        let pending = Pending(messageId: messageId, connector: connector, profileId: profile.id, replaced: replaced, viaDataTransfer: true)
        guard ready(state) else { return hold(pending, state, session) }
        install(pending, state, session)
        return .answerLater
    }

    private func compositeSchedule(_ payload: JSONValue, _ state: State, _ session: any SessionContext) -> Verdict {
        guard let connector = payload["connectorId"]?.intValue, let duration = payload["duration"]?.intValue, duration > 0 else { return .forward }
        if connector < 0 { return .answer(["status": "Rejected"]) }
        if let connectors = state.discovered?.numberOfConnectors, connector > connectors { return .answer(["status": "Rejected"]) }
        let capabilities = capabilities(state, session.chargerId)
        let now = Date(timeIntervalSince1970: session.wallTime)
        // Computed for at most 31 days, whatever was asked.
        let length = min(duration, 31 * 86_400)
        let end = now + Double(length)
        let (profiles, constraints) = sources(connector, state, session, from: now, until: end, wholeCharger: connector == 0)
        let segments = CompositeSchedule.compute(profiles: profiles, from: now, until: end, transaction: state.transactions[connector],
                                                 supply: capabilities.supply, constraints: constraints)
        // What the charger is held to: the composite of every source, clamped to its range as compiled.
        var limits = ProfileCompiler.enforced(segments, now: now, capabilities: capabilities)
        if connector == 0, capabilities.connectors > 1 {
            // The whole charger may draw its maximum on every connector, never more than the caps.
            limits = limits.map { segment in
                guard let limit = segment.limit, segments.contains(where: { $0.start <= segment.start && segment.start < $0.end && $0.limit == nil })
                else { return segment }
                return LimitSegment(start: segment.start, end: segment.end,
                                    limit: Limit(amps: limit.amps * Double(capabilities.connectors), phases: limit.phases))
            }
        }
        let unit: RateUnit = payload["chargingRateUnit"]?.stringValue.flatMap(RateUnit.init(rawValue:)) ?? ProfileCompiler.unit(for: capabilities)
        var periods: [JSONValue] = []
        var last: (value: Double, phases: Int)?
        for segment in limits {
            guard let limit = segment.limit else { continue }
            let value = ProfileCompiler.value(of: limit, in: unit, supply: capabilities.supply)
            if let last, last.value == value, last.phases == limit.phases { continue }
            last = (value, limit.phases)
            var period: JSONValue = ["startPeriod": .number(Int(segment.start.timeIntervalSince(now).rounded())), "limit": .number(value)]
            if limit.phases != 3 { period["numberPhases"] = .number(limit.phases) }
            periods.append(period)
        }
        return .answer([
            "status": "Accepted", "connectorId": .number(connector), "scheduleStart": .string(now.formatted(.iso8601)),
            "chargingSchedule": ["duration": .number(length), "startSchedule": .string(now.formatted(.iso8601)),
                                 "chargingRateUnit": .string(unit.rawValue), "chargingSchedulePeriod": .array(periods)],
        ])
    }

    private func clearChargingProfile(_ payload: JSONValue, _ state: State, _ session: any SessionContext) -> Verdict {
        let id = payload["id"]?.intValue
        let connector = payload["connectorId"]?.intValue
        let purpose = payload["chargingProfilePurpose"]?.stringValue
        let stackLevel = payload["stackLevel"]?.intValue
        var cleared = 0
        for key in state.profiles.keys where connector == nil || key == connector {
            let before = state.profiles[key]?.count ?? 0
            state.profiles[key]?.removeAll { entry in
                let profile = entry.profile
                return (id == nil || profile.id == id) && (purpose == nil || profile.purpose.rawValue == purpose)
                    && (stackLevel == nil || profile.stackLevel == stackLevel)
            }
            cleared += before - (state.profiles[key]?.count ?? 0)
        }
        guard cleared > 0 else { return .answer(["status": "Unknown"]) }
        let emptied = state.profiles.filter { $0.value.isEmpty }.keys.sorted()
        for key in emptied { state.profiles[key] = nil }
        // The charger holds only what the gateway compiled: remove that where nothing limits the
        // connector any more, re-install the rest; both after the answer has gone out.
        let stillLimited = Set(limitedConnectors(state))
        let removals = state.installed.keys.filter { !stillLimited.contains($0) }.sorted()
        for key in removals { state.resend.removeValue(forKey: key)?.cancel() }
        persist(state, session)
        session.schedule(after: .zero) {
            guard !state.retired else { return }
            for key in removals {
                let installedId = state.installed[key]?.profileId ?? Self.compiledProfileIdBase + key
                session.sendCall("ClearChargingProfile", payload: ["id": .number(installedId)], to: .charger) { outcome in
                    guard !state.retired, case .result = outcome else { return }
                    state.installed[key] = nil
                    persist(state, session)
                }
            }
            pushAll(state, session, reason: "profiles cleared")
        }
        return .answer(["status": "Accepted"])
    }

    // MARK: Capabilities

    /// Reads the charger's limits. Until they are known, CSMS profiles wait (`hold`); nothing is
    /// compiled in a unit the charger did not report.
    private func discoverCapabilities(_ state: State, _ session: any SessionContext) {
        guard !state.discovering, !state.retired else { return }
        state.discovering = true
        let keys: [JSONValue] = ["ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit", "ChargingScheduleMaxPeriods",
                                 "MaxChargingProfilesInstalled", "NumberOfConnectors"]
        session.sendCall("GetConfiguration", payload: ["key": .array(keys)], to: .charger) { outcome in
            state.discovering = false
            guard !state.retired else { return }
            let before = state.discovered
            switch outcome {
            case .result(let answer):
                state.discovered = Self.capabilities(from: answer)
            case .error:
                // The charger will not say: configuration stands for it.
                if state.discovered == nil { state.discovered = DiscoveredCapabilities() }
            case .timedOut, .rejected, .connectionClosed:
                break
            }
            let held = state.held
            state.held = []
            guard ready(state) else {
                // Nothing to compile with: answer honestly, keep nothing.
                for pending in held.reversed() {
                    takeBack(pending, state, session)
                    if case .connectionClosed = outcome { continue }
                    session.answer(pending.messageId, to: .csms, with: ["status": "Rejected"], error: nil)
                }
                session.logger.warning("charger smart-charging capabilities unknown", metadata: ["outcome": "\(LogSafe.escape(Self.describe(outcome)))"])
                return
            }
            if state.discovered != before { persist(state, session) }
            for pending in held { install(pending, state, session) }
            if state.discovered != before || before == nil {
                pushAll(state, session, reason: "capabilities read", except: Set(held.map(\.connector)))
            }
            let capabilities = capabilities(state, session.chargerId)
            session.logger.info("charger smart-charging capabilities", metadata: [
                "max_periods": "\(capabilities.maxPeriods)", "max_stack_level": "\(capabilities.maxStackLevel)",
                "units": "\(capabilities.units.map(\.rawValue).sorted())",
                "max_profiles_installed": "\(state.discovered?.maxProfilesInstalled.map(String.init) ?? "?")",
                "connectors": "\(capabilities.connectors)",
            ])
        }
    }

    /// What a GetConfiguration answer says; keys the charger did not report stay nil (configuration stands).
    static func capabilities(from answer: JSONValue) -> DiscoveredCapabilities {
        var found = DiscoveredCapabilities()
        for entry in answer["configurationKey"]?.arrayValue ?? [] {
            guard let key = entry["key"]?.stringValue, let value = entry["value"]?.stringValue else { continue }
            let number = Int(value.trimmingCharacters(in: .whitespaces))
            switch key {
            case "ChargeProfileMaxStackLevel": if let level = number, (0...1000).contains(level) { found.maxStackLevel = level }
            case "ChargingScheduleMaxPeriods": if let periods = number, (1...1000).contains(periods) { found.maxPeriods = periods }
            case "MaxChargingProfilesInstalled": if let count = number, count >= 0 { found.maxProfilesInstalled = min(count, 1000) }
            case "NumberOfConnectors": if let count = number, (1...64).contains(count) { found.numberOfConnectors = count }
            case "ChargingScheduleAllowedChargingRateUnit":
                let units = Set(value.split(separator: ",").compactMap { part -> RateUnit? in
                    switch part.trimmingCharacters(in: .whitespaces) {
                    case "Current", "A": .amps
                    case "Power", "W": .watts
                    default: nil
                    }
                })
                if !units.isEmpty { found.units = units.map(\.rawValue).sorted() }
            default: break
            }
        }
        return found
    }

    // MARK: Logging

    /// A gateway CALL's outcome as OCPP JSON (peer text: escape before logging).
    static func describe(_ outcome: CallOutcome) -> String {
        switch outcome {
        case .result(let payload): payload.jsonText
        case .error(let code, let description): JSONValue.array(["CALLERROR", .string(code), .string(description)]).jsonText
        case .timedOut: "timed out"
        case .rejected(let reason): "not sent: \(reason)"
        case .connectionClosed: "connection closed"
        }
    }

    static func describe(_ envelope: Envelope) -> String {
        if envelope.messageType == .callError {
            return JSONValue.array(["CALLERROR", .string(envelope.frame.errorCode ?? ""), .string(envelope.frame.errorDescription ?? "")]).jsonText
        }
        return envelope.payload().jsonText
    }
}

struct SmartChargingError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

// MARK: State on disk

/// What the charger reported in GetConfiguration; nil fields were not reported.
struct DiscoveredCapabilities: Codable, Equatable {
    var maxPeriods: Int?
    var units: [String]?
    var maxStackLevel: Int?
    var maxProfilesInstalled: Int?
    var numberOfConnectors: Int?
}

/// A CSMS profile as received (the JSON text of csChargingProfiles, or of a 2.0.1 chargingProfile).
struct StoredProfile: Codable, Equatable {
    enum Format: String, Codable { case ocpp16, ocpp201 }
    var format: Format
    var json: String

    func parsed() throws -> ChargingProfile {
        let value = try JSONValue(parsing: json)
        switch format {
        case .ocpp16: return try ChargingProfile(ocpp16: value)
        case .ocpp201: return try ChargingProfile(ocpp201: value)
        }
    }
}

/// What the gateway installed on one connector of the charger.
struct InstalledProfile: Codable, Equatable {
    var profileId: Int
    var stackLevel: Int
    var purpose: String
    /// Seconds since 1970.
    var installedAt: Double
}

struct StoredTransaction: Codable, Equatable {
    var id: Int
    /// Seconds since 1970.
    var start: Double
}

extension PersistedState {
    /// The file's JSON as `JSONEncoder` with sorted keys writes it (the same members, nil ones left out,
    /// connector keys as strings), for `JSONDecoder` to read back; nil when a number is not finite,
    /// which JSON cannot hold (the caller hands the state to `JSONEncoder`, which reports it).
    func json() -> [UInt8]? {
        func number(_ value: Double) -> JSONValue? { value.isFinite ? .number(value) : nil }
        func integer(_ value: Int) -> JSONValue { .number(String(value)) }
        func object(_ members: [(key: String, value: JSONValue?)]) -> JSONValue {
            .object(members.compactMap { member in member.value.map { (member.key, $0) } }.sorted { $0.key < $1.key })
        }
        func byConnector<Value>(_ values: [Int: Value], _ encode: (Value) -> JSONValue?) -> JSONValue? {
            var members: [(key: String, value: JSONValue?)] = []
            for (connector, value) in values {
                guard let encoded = encode(value) else { return nil }
                members.append((String(connector), encoded))
            }
            return object(members)
        }
        guard
            let installed = byConnector(installed, { profile in
                number(profile.installedAt).map { installedAt in
                    object([("installedAt", installedAt), ("profileId", integer(profile.profileId)),
                            ("purpose", .string(profile.purpose)), ("stackLevel", integer(profile.stackLevel))])
                }
            }),
            let profiles = byConnector(profiles, { stored in
                .array(stored.map { object([("format", .string($0.format.rawValue)), ("json", .string($0.json))]) })
            }),
            let transactions = byConnector(transactions, { transaction in
                number(transaction.start).map { object([("id", integer(transaction.id)), ("start", $0)]) }
            })
        else { return nil }
        let discovered = self.discovered.map { found in
            object([("maxPeriods", found.maxPeriods.map { integer($0) }),
                    ("maxProfilesInstalled", found.maxProfilesInstalled.map { integer($0) }),
                    ("maxStackLevel", found.maxStackLevel.map { integer($0) }),
                    ("numberOfConnectors", found.numberOfConnectors.map { integer($0) }),
                    ("units", found.units.map { .array($0.map { .string($0) }) })])
        }
        return object([("discovered", discovered), ("installed", installed), ("model", model.map { .string($0) }),
                       ("profiles", profiles), ("transactions", transactions), ("version", integer(version))]).serialized()
    }
}

/// `<state_dir>/chargers/<id>/smart_charging.json`.
struct PersistedState: Codable {
    var version = 1
    var model: String?
    var discovered: DiscoveredCapabilities?
    var profiles: [Int: [StoredProfile]]
    var installed: [Int: InstalledProfile]
    var transactions: [Int: StoredTransaction]
}

/// The chargers connected to this gateway and which are charging, for the site limit. One per
/// state directory (so one per gateway), shared by every instance of the stage: a reload that
/// replaces the stage keeps it, and the new instance divides the site among the same chargers.
final class ChargerRegistry: Sendable {
    private struct Member {
        var session: ObjectIdentifier
        var handle: SessionHandle
        var charging: Bool
    }
    private let members = Mutex<[String: Member]>([:])
    private static let registries = Mutex<[String: ChargerRegistry]>([:])

    static func shared(stateDirectory: String) -> ChargerRegistry {
        registries.withLock { all in
            if let existing = all[stateDirectory] { return existing }
            let registry = ChargerRegistry()
            all[stateDirectory] = registry
            return registry
        }
    }

    func join(_ chargerId: String, session: ObjectIdentifier, handle: SessionHandle, charging: Bool) {
        members.withLock { $0[chargerId] = Member(session: session, handle: handle, charging: charging) }
    }

    /// Removes a charger's session (not a newer session of the same charger); true if it was charging.
    func leave(_ chargerId: String, session: ObjectIdentifier) -> Bool {
        members.withLock { members in
            guard members[chargerId]?.session == session else { return false }
            return members.removeValue(forKey: chargerId)?.charging ?? false
        }
    }

    func setCharging(_ chargerId: String, _ charging: Bool) {
        members.withLock { $0[chargerId]?.charging = charging }
    }

    /// Equal shares among the chargers charging; one that is not yet charging is counted in, so
    /// that starting cannot overshoot the site before the re-division reaches the others.
    func share(of amps: Double, for chargerId: String) -> Double {
        members.withLock { members in
            let charging = members.values.filter(\.charging).count
            let counted = charging + (members[chargerId]?.charging == true ? 0 : 1)
            return amps / Double(max(1, counted))
        }
    }

    func handles(except chargerId: String) -> [SessionHandle] {
        members.withLock { $0.filter { $0.key != chargerId }.map(\.value.handle) }
    }
}
