import ChargingSchedules
import Foundation
import Logging
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
        /// After an accepted BootNotification, read ChargeProfileMaxStackLevel,
        /// ChargingScheduleAllowedChargingRateUnit and ChargingScheduleMaxPeriods from the charger.
        public var discover: Bool?
        /// How far ahead the composite schedule is computed, in hours.
        public var horizonHours: Double?
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
    let discover: Bool
    let horizon: TimeInterval
    /// The id of the profile the gateway installs on the charger (one per connector).
    static let compiledProfileIdBase = 9000

    public init(configuration: Configuration, context: StageSetupContext) throws {
        let settings = configuration.charger
        var units = Set<RateUnit>()
        for unit in settings?.units ?? ["A"] {
            guard let parsed = RateUnit(rawValue: unit) else { throw SmartChargingError("'units' takes A and/or W, not '\(unit)'") }
            units.insert(parsed)
        }
        let purpose = try settings?.purpose.map { name in
            guard let purpose = ProfilePurpose(rawValue: name), purpose != .tx else {
                throw SmartChargingError("'purpose' is TxDefaultProfile or ChargePointMaxProfile, not '\(name)'")
            }
            return purpose
        } ?? .txDefault
        defaults = ChargerCapabilities(
            maxPeriods: max(1, settings?.maxPeriods ?? 1), units: units, maxStackLevel: max(0, settings?.maxStackLevel ?? 0),
            purpose: purpose, minimumAmps: settings?.minimumAmps ?? 6, maximumAmps: settings?.maximumAmps ?? 32,
            supply: ElectricalSupply(voltage: settings?.voltage ?? 230, phases: settings?.phases ?? 3))
        guard defaults.minimumAmps < defaults.maximumAmps else { throw SmartChargingError("'minimum_amps' must be below 'maximum_amps'") }
        discover = configuration.discover ?? true
        horizon = (configuration.horizonHours ?? 48) * 3600
    }

    // MARK: Per-charger state

    final class State {
        var capabilities: ChargerCapabilities
        var profiles: [Int: [ChargingProfile]] = [:]  // by connector
        var transaction: TransactionContext?
        var pendingStart: [String: Date] = [:]  // StartTransaction message id → its timestamp
        var resend: [Int: any ScheduledWork] = [:]
        init(_ capabilities: ChargerCapabilities) { self.capabilities = capabilities }
    }

    enum Key: SessionStateKey { typealias Value = State }

    func state(_ session: any SessionContext) -> State {
        if let state = session[Key.self] { return state }
        let state = State(defaults)
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
        case (.fromCharger, .call, "StartTransaction"):
            state.pendingStart[envelope.messageId] = envelope.payload()["timestamp"]?.stringValue.flatMap(parseTimestamp)
                ?? Date(timeIntervalSince1970: session.wallTime)
        case (.fromCSMS, .callResult, "StartTransaction"):
            if let id = envelope.payload()["transactionId"]?.intValue {
                let start = state.pendingStart.removeValue(forKey: envelope.messageId) ?? Date(timeIntervalSince1970: session.wallTime)
                state.transaction = TransactionContext(id: id, start: start)
                pushAll(state, session, reason: "transaction \(id) started")
            }
        case (.fromCharger, .call, "StopTransaction"):
            state.transaction = nil
        case (.fromCSMS, .callResult, "BootNotification"):
            if discover, envelope.payload()["status"]?.stringValue == "Accepted" { discoverCapabilities(state, session) }
        default:
            break
        }
        return .forward
    }

    private func setChargingProfile(_ payload: JSONValue, _ state: State, _ session: any SessionContext) -> Verdict {
        guard let connector = payload["connectorId"]?.intValue, let json = payload["csChargingProfiles"] else { return .forward }
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

    func compile(_ connector: Int, _ state: State, _ session: any SessionContext) -> CompiledProfile? {
        let profiles = (state.profiles[connector] ?? []) + (connector == 0 ? [] : state.profiles[0] ?? [])
        guard !profiles.isEmpty else { return nil }
        let now = Date(timeIntervalSince1970: session.wallTime)
        let segments = CompositeSchedule.compute(profiles: profiles, from: now, until: now + horizon, transaction: state.transaction,
                                                 supply: state.capabilities.supply)
        // The highest stack level the charger honours, so a stale profile left on it cannot cap ours.
        return ProfileCompiler.compile(segments, now: now, capabilities: state.capabilities,
                                       profileId: Self.compiledProfileIdBase + connector, stackLevel: state.capabilities.maxStackLevel)
    }

    /// Sends the freshly compiled profile for `connector` when the charger's current one runs out.
    private func schedulePush(_ connector: Int, at date: Date?, _ state: State, _ session: any SessionContext) {
        state.resend.removeValue(forKey: connector)?.cancel()
        guard let date else { return }
        let delay = max(0, date.timeIntervalSince1970 - session.wallTime)
        state.resend[connector] = session.schedule(after: .milliseconds(Int64(delay * 1000))) {
            push(connector, state, session, reason: "schedule boundary")
        }
    }

    private func push(_ connector: Int, _ state: State, _ session: any SessionContext, reason: String) {
        guard let compiled = compile(connector, state, session) else { return }
        schedulePush(connector, at: compiled.resendAt, state, session)
        session.sendCall("SetChargingProfile", payload: ["connectorId": .number(connector), "csChargingProfiles": compiled.profile],
                         to: .charger) { outcome in
            if case .result(let answer) = outcome, answer["status"]?.stringValue == "Accepted" { return }
            session.logger.warning("the charger did not accept a compiled profile", metadata: ["reason": "\(reason)", "outcome": "\(outcome)"])
        }
    }

    private func pushAll(_ state: State, _ session: any SessionContext, reason: String) {
        for connector in state.profiles.keys.sorted() where !(state.profiles[connector] ?? []).isEmpty {
            push(connector, state, session, reason: reason)
        }
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
        let keys: [JSONValue] = ["ChargeProfileMaxStackLevel", "ChargingScheduleAllowedChargingRateUnit", "ChargingScheduleMaxPeriods"]
        session.sendCall("GetConfiguration", payload: ["key": .array(keys)], to: .charger) { outcome in
            guard case .result(let answer) = outcome else { return }
            for entry in answer["configurationKey"]?.arrayValue ?? [] {
                guard let key = entry["key"]?.stringValue, let value = entry["value"]?.stringValue else { continue }
                switch key {
                case "ChargeProfileMaxStackLevel": if let level = Int(value) { state.capabilities.maxStackLevel = level }
                case "ChargingScheduleMaxPeriods": if let periods = Int(value), periods > 0 { state.capabilities.maxPeriods = periods }
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
            session.logger.info("charger smart-charging capabilities", metadata: [
                "max_periods": "\(state.capabilities.maxPeriods)", "max_stack_level": "\(state.capabilities.maxStackLevel)",
                "units": "\(state.capabilities.units.map(\.rawValue).sorted())",
            ])
        }
    }
}

func parseTimestamp(_ text: String) -> Date? {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let date = formatter.date(from: text) { return date }
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.date(from: text)
}

struct SmartChargingError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
