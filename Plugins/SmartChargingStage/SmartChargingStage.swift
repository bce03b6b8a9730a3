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
    let site: SiteLimit?
    /// The id of the profile the gateway installs on the charger (one per connector).
    static let compiledProfileIdBase = 9000

    public init(configuration: Configuration, context: StageSetupContext) throws {
        defaults = try Self.apply(configuration.charger, to: ChargerCapabilities())
        modelSettings = configuration.models ?? [:]
        chargerSettings = configuration.chargers ?? [:]
        // Check every override now, so a mistake is reported by `validate` rather than ignored later.
        for settings in Array(modelSettings.values) + Array(chargerSettings.values) { _ = try Self.apply(settings, to: defaults) }
        discover = configuration.discover ?? true
        horizon = (configuration.horizonHours ?? 48) * 3600
        dataTransferVendor = configuration.dataTransfer?.vendorId ?? "ocpp-gateway"
        dataTransferMessage = configuration.dataTransfer?.messageId ?? "SetChargingProfile201"
        let supply = defaults.supply
        timeOfUse = try configuration.timeOfUse.map { try Self.policy($0, supply: supply) }
        site = try configuration.siteLimitAmps.map { limit in
            guard limit > 0 else { throw SmartChargingError("'site_limit_amps' must be positive") }
            return SiteLimit(amps: limit)
        }
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
        if let voltage = settings.voltage { capabilities.supply.voltage = voltage }
        if let phases = settings.phases { capabilities.supply.phases = phases }
        guard capabilities.minimumAmps < capabilities.maximumAmps else { throw SmartChargingError("'minimum_amps' must be below 'maximum_amps'") }
        return capabilities
    }

    /// A charger's capabilities from configuration: defaults, then its model's quirks, then its own.
    func configured(_ chargerId: String, model: String?) -> ChargerCapabilities {
        var capabilities = defaults
        if let model, let settings = modelSettings[model] { capabilities = (try? Self.apply(settings, to: capabilities)) ?? capabilities }
        if let settings = chargerSettings[chargerId] { capabilities = (try? Self.apply(settings, to: capabilities)) ?? capabilities }
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

    final class State {
        var capabilities: ChargerCapabilities
        var profiles: [Int: [ChargingProfile]] = [:]  // by connector
        var transaction: TransactionContext?
        var pendingStart: [String: Date] = [:]  // StartTransaction message id → its timestamp
        var resend: [Int: any ScheduledWork] = [:]
        /// As the charger reports them; the gateway installs one compiled profile per connector it limits.
        var maxProfilesInstalled: Int?
        var numberOfConnectors: Int?
        init(_ capabilities: ChargerCapabilities) { self.capabilities = capabilities }
    }

    enum Key: SessionStateKey { typealias Value = State }

    func state(_ session: any SessionContext) -> State {
        if let state = session[Key.self] { return state }
        let state = State(configured(session.chargerId, model: nil))
        session[Key.self] = state
        return state
    }

    // MARK: Frames

    public func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        let state = state(session)
        switch (envelope.direction, envelope.messageType, envelope.action ?? "") {
        case (.fromCSMS, .call, "SetChargingProfile"):
            return setChargingProfile(envelope.payload(), state, session)
        case (.fromCSMS, .call, "GetCompositeSchedule"):
            return compositeSchedule(envelope.payload(), state, session)
        case (.fromCSMS, .call, "ClearChargingProfile"):
            return clearChargingProfile(envelope.payload(), state, session)
        case (.fromCSMS, .call, "DataTransfer"):
            let payload = envelope.payload()
            if payload["vendorId"]?.stringValue == dataTransferVendor, payload["messageId"]?.stringValue == dataTransferMessage {
                return profileFromDataTransfer(payload, messageId: envelope.messageId, state, session)
            }
        case (.fromCharger, .call, "BootNotification"):
            // The model's quirks apply from its boot on; the charger's own settings stay on top.
            state.capabilities = configured(session.chargerId, model: envelope.payload()["chargePointModel"]?.stringValue)
        case (.fromCharger, .call, "StartTransaction"):
            state.pendingStart[envelope.messageId] = envelope.payload()["timestamp"]?.stringValue.flatMap(parseDate)
                ?? Date(timeIntervalSince1970: session.wallTime)
        case (.fromCSMS, .callResult, "StartTransaction"):
            if let id = envelope.payload()["transactionId"]?.intValue {
                let start = state.pendingStart.removeValue(forKey: envelope.messageId) ?? Date(timeIntervalSince1970: session.wallTime)
                state.transaction = TransactionContext(id: id, start: start)
                site?.setCharging(session.chargerId, true)
                pushAll(state, session, reason: "transaction \(id) started")
                rebalanceOthers(session)
            }
        case (.fromCharger, .call, "StopTransaction"):
            state.transaction = nil
            site?.setCharging(session.chargerId, false)
            rebalanceOthers(session)
        case (.fromCSMS, .callResult, "BootNotification"):
            if envelope.payload()["status"]?.stringValue == "Accepted" {
                if discover { discoverCapabilities(state, session) } else { pushAll(state, session, reason: "boot") }
            }
        default:
            break
        }
        return .forward
    }

    private func setChargingProfile(_ payload: JSONValue, _ state: State, _ session: any SessionContext) -> Verdict {
        guard let connector = payload["connectorId"]?.intValue, let json = payload["csChargingProfiles"] else { return .forward }
        if let connectors = state.numberOfConnectors, connector > connectors {
            return .answer(["status": "Rejected"])
        }
        let profile: ChargingProfile
        do {
            profile = try ChargingProfile(ocpp16: json)
        } catch {
            return .answerError(.propertyConstraintViolation, "SetChargingProfile: \(error)")
        }
        var profiles = state.profiles[connector] ?? []
        // 1.6 §3.13.2: the same id, or the same stack level and purpose, replaces.
        profiles.removeAll { $0.id == profile.id || ($0.stackLevel == profile.stackLevel && $0.purpose == profile.purpose) }
        profiles.append(profile)
        state.profiles[connector] = profiles
        guard let compiled = compile(connector, state, session) else { return .forward }
        schedulePush(connector, at: compiled.resendAt, state, session)
        session.logger.info("charging profile compiled for the charger", metadata: [
            "csms_profile": "\(profile.id)", "periods_in": "\(profile.schedule.periods.count)",
            "periods_out": "\(compiled.periods.count)", "next_at": "\(compiled.resendAt.map { "\($0)" } ?? "-")",
        ])
        return .forward(modifiedPayload: ["connectorId": .number(connector), "csChargingProfiles": compiled.profile])
    }

    /// - Parameter notBefore: a boundary the caller is acting on; a timer may fire a moment early,
    ///   and compiling before the boundary would send the period that is ending again.
    func compile(_ connector: Int, _ state: State, _ session: any SessionContext, notBefore: Date? = nil) -> CompiledProfile? {
        let profiles = (state.profiles[connector] ?? []) + (connector == 0 ? [] : state.profiles[0] ?? [])
        let now = max(Date(timeIntervalSince1970: session.wallTime), notBefore ?? .distantPast)
        let constraints = self.constraints(for: session.chargerId, from: now)
        guard !profiles.isEmpty || !constraints.isEmpty else { return nil }
        let segments = CompositeSchedule.compute(profiles: profiles, from: now, until: now + horizon, transaction: state.transaction,
                                                 supply: state.capabilities.supply, constraints: constraints)
        // The highest stack level the charger honours, so a stale profile left on it cannot cap ours.
        return ProfileCompiler.compile(segments, now: now, capabilities: state.capabilities,
                                       profileId: Self.compiledProfileIdBase + connector, stackLevel: state.capabilities.maxStackLevel)
    }

    /// Sends the freshly compiled profile for `connector` when the charger's current one runs out.
    private func schedulePush(_ connector: Int, at date: Date?, _ state: State, _ session: any SessionContext) {
        state.resend.removeValue(forKey: connector)?.cancel()
        guard let date else { return }
        let delay = max(0, date.timeIntervalSince1970 - session.wallTime)
        state.resend[connector] = session.schedule(after: .milliseconds(Int64((delay * 1000).rounded(.up)))) {
            push(connector, state, session, reason: "schedule boundary", boundary: date)
        }
    }

    private func push(_ connector: Int, _ state: State, _ session: any SessionContext, reason: String, boundary: Date? = nil) {
        guard let compiled = compile(connector, state, session, notBefore: boundary) else { return }
        schedulePush(connector, at: compiled.resendAt, state, session)
        session.sendCall("SetChargingProfile", payload: ["connectorId": .number(connector), "csChargingProfiles": compiled.profile],
                         to: .charger) { outcome in
            if case .result(let answer) = outcome, answer["status"]?.stringValue == "Accepted" { return }
            session.logger.warning("the charger did not accept a compiled profile", metadata: ["reason": "\(reason)", "outcome": "\(outcome)"])
        }
    }

    private func pushAll(_ state: State, _ session: any SessionContext, reason: String) {
        var connectors = state.profiles.keys.filter { !(state.profiles[$0] ?? []).isEmpty }
        // Time-of-use and site limits apply to the whole charger even when the CSMS sent nothing.
        if connectors.isEmpty, timeOfUse != nil || site != nil { connectors = [0] }
        for connector in connectors.sorted() { push(connector, state, session, reason: reason) }
    }

    /// The operator's caps for a charger: its time-of-use windows and its share of the site limit.
    func constraints(for chargerId: String, from now: Date) -> [[LimitSegment]] {
        var constraints: [[LimitSegment]] = []
        if let timeOfUse { constraints.append(timeOfUse.segments(from: now, until: now + horizon)) }
        if let share = site?.share(for: chargerId) { constraints.append([LimitSegment(start: now, end: now + horizon, amps: share)]) }
        return constraints
    }

    /// Other chargers' shares of the site limit changed: each re-compiles on its own event loop.
    private func rebalanceOthers(_ session: any SessionContext) {
        guard let site else { return }
        for handle in site.handles(except: session.chargerId) {
            handle.run { other in
                guard let state = other[Key.self] else { return }
                pushAll(state, other, reason: "site limit re-divided")
            }
        }
    }

    public func sessionStarted(_ session: any SessionContext) {
        site?.join(session.chargerId, handle: session.handle)
    }

    public func sessionEnded(_ session: any SessionContext) {
        guard let site else { return }
        let wasCharging = site.leave(session.chargerId)
        if wasCharging { rebalanceOthers(session) }
    }

    /// A 2.0.1 profile inside DataTransfer: compiled like a 1.6 one, installed with a gateway CALL,
    /// and the DataTransfer answered with the charger's verdict.
    private func profileFromDataTransfer(_ payload: JSONValue, messageId: String, _ state: State, _ session: any SessionContext) -> Verdict {
        let request: JSONValue
        let profile: ChargingProfile
        do {
            guard let data = payload["data"]?.stringValue else { throw ProfileError("'data' must hold the request as JSON text") }
            request = try JSONValue(parsing: data)
            guard let json = request["chargingProfile"] else { throw ProfileError("'data' needs evseId and chargingProfile") }
            profile = try ChargingProfile(ocpp201: json)
        } catch {
            return .answer(["status": "Rejected", "data": .string("\(error)")])
        }
        let connector = request["evseId"]?.intValue ?? 0
        var profiles = state.profiles[connector] ?? []
        profiles.removeAll { $0.id == profile.id }
        profiles.append(profile)
        state.profiles[connector] = profiles
        guard let compiled = compile(connector, state, session) else { return .answer(["status": "Rejected"]) }
        schedulePush(connector, at: compiled.resendAt, state, session)
        session.sendCall("SetChargingProfile", payload: ["connectorId": .number(connector), "csChargingProfiles": compiled.profile],
                         to: .charger) { outcome in
            let accepted: Bool
            if case .result(let answer) = outcome { accepted = answer["status"]?.stringValue == "Accepted" } else { accepted = false }
            session.answer(messageId, to: .csms, with: ["status": .string(accepted ? "Accepted" : "Rejected")], error: nil)
        }
        return .answerLater
    }

    private func compositeSchedule(_ payload: JSONValue, _ state: State, _ session: any SessionContext) -> Verdict {
        guard let connector = payload["connectorId"]?.intValue, let duration = payload["duration"]?.intValue else { return .forward }
        let now = Date(timeIntervalSince1970: session.wallTime)
        let profiles = (state.profiles[connector] ?? []) + (connector == 0 ? [] : state.profiles[0] ?? [])
        guard !profiles.isEmpty else { return .answer(["status": "Rejected"]) }
        let segments = CompositeSchedule.compute(profiles: profiles, from: now, until: now + Double(duration), transaction: state.transaction,
                                                 supply: state.capabilities.supply)
        let watts = payload["chargingRateUnit"]?.stringValue == "W"
        let factor = watts ? state.capabilities.supply.voltage * Double(state.capabilities.supply.phases) : 1
        let periods: [JSONValue] = segments.compactMap { segment in
            guard let amps = segment.amps else { return nil }
            return ["startPeriod": .number(Int(segment.start.timeIntervalSince(now).rounded())), "limit": .number((amps * factor * 10).rounded(.down) / 10)]
        }
        return .answer([
            "status": "Accepted", "connectorId": .number(connector), "scheduleStart": .string(now.formatted(.iso8601)),
            "chargingSchedule": ["duration": .number(duration), "startSchedule": .string(now.formatted(.iso8601)),
                                 "chargingRateUnit": .string(watts ? "W" : "A"), "chargingSchedulePeriod": .array(periods)],
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
            state.profiles[key]?.removeAll { profile in
                (id == nil || profile.id == id) && (purpose == nil || profile.purpose.rawValue == purpose)
                    && (stackLevel == nil || profile.stackLevel == stackLevel)
            }
            cleared += before - (state.profiles[key]?.count ?? 0)
        }
        guard cleared > 0 else { return .answer(["status": "Unknown"]) }
        // The charger holds only what the gateway compiled: remove that where nothing is left,
        // re-install the rest; both after the answer has gone out.
        let emptied = state.profiles.filter { $0.value.isEmpty }.keys.sorted()
        for key in emptied {
            state.profiles[key] = nil
            state.resend.removeValue(forKey: key)?.cancel()
        }
        session.schedule(after: .zero) {
            for key in emptied {
                session.sendCall("ClearChargingProfile", payload: ["id": .number(Self.compiledProfileIdBase + key)], to: .charger) { _ in }
            }
            pushAll(state, session, reason: "profiles cleared")
        }
        return .answer(["status": "Accepted"])
    }

    // MARK: Capabilities

    private func discoverCapabilities(_ state: State, _ session: any SessionContext) {
        let keys: [JSONValue] = ["ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit", "ChargingScheduleMaxPeriods",
                                 "MaxChargingProfilesInstalled", "NumberOfConnectors"]
        session.sendCall("GetConfiguration", payload: ["key": .array(keys)], to: .charger) { outcome in
            guard case .result(let answer) = outcome else {
                pushAll(state, session, reason: "boot")
                return
            }
            for entry in answer["configurationKey"]?.arrayValue ?? [] {
                guard let key = entry["key"]?.stringValue, let value = entry["value"]?.stringValue else { continue }
                switch key {
                case "ChargeProfileMaxStackLevel": if let level = Int(value) { state.capabilities.maxStackLevel = level }
                case "ChargingScheduleMaxPeriods": if let periods = Int(value), periods > 0 { state.capabilities.maxPeriods = periods }
                case "MaxChargingProfilesInstalled": state.maxProfilesInstalled = Int(value)
                case "NumberOfConnectors": state.numberOfConnectors = Int(value)
                case "ChargingScheduleAllowedChargingRateUnit":
                    let units = Set(value.split(separator: ",").compactMap { part -> RateUnit? in
                        switch part.trimmingCharacters(in: .whitespaces) {
                        case "Current", "A": .amps
                        case "Power", "W": .watts
                        default: nil
                        }
                    })
                    if !units.isEmpty { state.capabilities.units = units }
                default: break
                }
            }
            pushAll(state, session, reason: "boot")
            session.logger.info("charger smart-charging capabilities", metadata: [
                "max_periods": "\(state.capabilities.maxPeriods)", "max_stack_level": "\(state.capabilities.maxStackLevel)",
                "units": "\(state.capabilities.units.map(\.rawValue).sorted())",
                "max_profiles_installed": "\(state.maxProfilesInstalled.map(String.init) ?? "?")",
                "connectors": "\(state.numberOfConnectors.map(String.init) ?? "?")",
            ])
        }
    }
}

struct SmartChargingError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The site limit's bookkeeping, shared by every session of one stage instance.
final class SiteLimit: Sendable {
    let amps: Double
    private struct Member {
        var handle: SessionHandle
        var charging: Bool
    }
    private let members = Mutex<[String: Member]>([:])

    init(amps: Double) { self.amps = amps }

    func join(_ chargerId: String, handle: SessionHandle) {
        members.withLock { $0[chargerId] = Member(handle: handle, charging: false) }
    }

    /// Removes a charger; true if it was charging (the others' shares grow).
    func leave(_ chargerId: String) -> Bool {
        members.withLock { $0.removeValue(forKey: chargerId)?.charging ?? false }
    }

    func setCharging(_ chargerId: String, _ charging: Bool) {
        members.withLock { $0[chargerId]?.charging = charging }
    }

    /// Equal shares among the chargers charging; one that is not yet charging is counted in, so
    /// that starting cannot overshoot the site before the re-division reaches the others.
    func share(for chargerId: String) -> Double {
        members.withLock { members in
            let charging = members.values.filter(\.charging).count
            let counted = charging + (members[chargerId]?.charging == true ? 0 : 1)
            return (amps / Double(max(1, counted)) * 10).rounded(.down) / 10
        }
    }

    func handles(except chargerId: String) -> [SessionHandle] {
        members.withLock { $0.filter { $0.key != chargerId }.map(\.value.handle) }
    }
}
