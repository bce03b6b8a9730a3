import Crypto
import Foundation
import Logging
import Metrics
import Synchronization
public import OCPP
public import StageKit

/// Splits the charger's stream at the edge: the value channel (authorization, transactions,
/// billing) goes to the CSMS, the health channel (per-phase voltage and current, temperature,
/// frequency, vendor diagnostics, status) goes to the O&M broker over MQTT, with personal data
/// (idTag and configured fields) replaced by a keyed hash. Publishing never waits: a full MQTT
/// queue drops (and counts) health messages, never OCPP frames.
public struct MQTTTapStage: Stage {
    public enum Route: String, Decodable, Sendable {
        case csms, mqtt, both
        var toCSMS: Bool { self != .mqtt }
        var toMQTT: Bool { self != .csms }
    }

    public struct Configuration: Decodable, Sendable {
        /// Per action (charger → CSMS CALLs): csms, mqtt or both. See the defaults in docs/health-channel.md.
        public var routes: [String: Route]?
        /// Per MeterValues measurand (with `/phase` for one phase, e.g. `Voltage/L1-N`): csms, mqtt or both.
        public var measurands: [String: Route]?
        /// Payload fields replaced by a keyed hash before anything reaches MQTT.
        public var piiFields: [String]?
        /// Run the charger's sampling at this interval (seconds) for the health channel, while the CSMS
        /// keeps the MeterValueSampleInterval it set. Off when absent.
        public var healthInterval: Int?
        /// Measurands the health channel wants sampled, added to the CSMS's MeterValuesSampledData.
        public var healthMeasurands: [String]?
        /// OCPP 2.0.1: per `Component/Variable` (either may be `*`) of NotifyEvent, NotifyReport and
        /// NotifyMonitoringReport items: csms, mqtt or both. Unlisted: the action's route (both).
        public var components: [String: Route]?
        /// OCPP 2.0.1: `Component/Variable` patterns whose values are personal data (hashed on MQTT).
        public var piiVariables: [String]?
        /// Distinct topics a session may publish under peer-chosen names (components, measurands,
        /// connectors); beyond it, new ones are dropped and counted.
        public var maxSeries: Int?
    }

    public static let type = "mqtt_tap"
    public static let summary = "Health channel: routes telemetry and diagnostics to MQTT (PII hashed), keeps billing on the CSMS link."

    let publisher: any MessagePublisher
    let routes: [String: Route]
    let measurandRoutes: [String: Route]
    let piiFields: Set<String>
    /// The HMAC key, made once (building it per hash cost ~7,500 instructions a frame).
    let secret: HMACKey
    let healthInterval: Int?
    let healthMeasurands: [String]
    /// What each CSMS asked of its charger's sampling, kept across reconnects.
    let wishes = SamplingWishes()
    /// OCPP 2.0.1 device-model routing (`components`).
    let componentRules: PatternTable<Route>
    /// OCPP 2.0.1 variables whose values are personal data.
    let piiVariables: PatternTable<Bool>
    let maxSeries: Int
    let droppedSeriesCount = Count()
    /// This instance (a session's cached hash is only reused by the instance, and so the key, that made it).
    let identity = Identity()

    final class Identity: Sendable {}

    /// Defaults: value-channel actions to the CSMS with a copy on MQTT; status to both; vendor diagnostics to MQTT only.
    static let defaultRoutes: [String: Route] = [
        "Authorize": .both, "StartTransaction": .both, "StopTransaction": .both, "MeterValues": .both, "BootNotification": .both,
        "StatusNotification": .both, "DataTransfer": .mqtt, "DiagnosticsStatusNotification": .both, "FirmwareStatusNotification": .both,
        "Heartbeat": .csms,
        // OCPP 2.0.1: billing to the CSMS (always), device-model data by `components`.
        "TransactionEvent": .both, "NotifyEvent": .both, "NotifyReport": .both, "NotifyMonitoringReport": .both,
    ]

    /// What `pii_variables` is without configuration: EV and vehicle identifiers, token values.
    static let defaultPIIVariables = ["*/VehicleId", "*/Token", "VehicleIdSensor/*"]

    public init(configuration: Configuration, context: StageSetupContext) throws {
        guard let publisher = context.publisher else {
            throw TapError("the mqtt_tap stage needs the health channel: add an 'mqtt:' section to gateway.yaml")
        }
        self.publisher = publisher
        routes = Self.defaultRoutes.merging(configuration.routes ?? [:]) { $1 }
        for action in (configuration.routes ?? [:]).keys.sorted() where !OCPPVersion.allCases.contains(where: {
            MessageCatalogue.descriptor(for: action, version: $0)?.sender.contains(.chargePoint) == true
        }) {
            throw TapError("'routes' names '\(action)', which is not an action a charger sends")
        }
        if let route = configuration.routes?["TransactionEvent"], !route.toCSMS {
            throw ConfigurationKeyError(key: "routes.TransactionEvent", "must reach the CSMS (csms or both): it carries the billing")
        }
        componentRules = try PatternTable(configuration.components ?? [:], key: "components")
        piiVariables = try PatternTable(Dictionary((configuration.piiVariables ?? Self.defaultPIIVariables).map { ($0, true) },
                                                   uniquingKeysWith: { a, _ in a }), key: "pii_variables")
        maxSeries = configuration.maxSeries ?? 1000
        guard maxSeries >= 1 else { throw ConfigurationKeyError(key: "max_series", "must be at least 1, found \(maxSeries)") }
        measurandRoutes = configuration.measurands ?? [:]
        piiFields = Set(configuration.piiFields ?? ["idTag", "parentIdTag"])
        secret = HMACKey(bytes: try Self.loadSecret(stateDirectory: context.stateDirectory))
        if let interval = configuration.healthInterval, interval <= 0 { throw TapError("'health_interval' must be positive") }
        healthInterval = configuration.healthInterval
        healthMeasurands = configuration.healthMeasurands
            ?? ["Voltage", "Current.Import", "Power.Active.Import", "Temperature", "Energy.Active.Import.Register"]
        for measurand in healthMeasurands where !Self.measurands.contains(measurand) {
            throw TapError("'health_measurands' names '\(measurand)', which is not an OCPP 1.6 measurand")
        }
    }

    /// The per-gateway HMAC key, made on first use (`<state_dir>/health-channel.key`, 0600). Hashes stay
    /// stable across restarts, so an O&M platform can correlate sessions without learning the idTag.
    static func loadSecret(stateDirectory: String) throws -> [UInt8] {
        let path = stateDirectory + "/health-channel.key"
        if let data = try AtomicFile.read(path) {
            guard data.count == 32 else { throw TapError("\(path) holds \(data.count) bytes, not a 32-byte key; remove it to make a new one") }
            return Array(data)
        }
        let key = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        do {
            // 0600 from the first byte; fails if another process made the file first.
            try AtomicFile.create(Data(key), at: path)
        } catch {
            guard let data = try AtomicFile.read(path), data.count == 32 else { throw TapError("cannot make \(path): \(error)") }
            return Array(data)
        }
        return key
    }

    // MARK: Frames

    public func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        if envelope.version == .v201 { return process201(envelope, session) }
        if healthInterval != nil, let verdict = splitSampling(envelope, session) { return verdict }
        guard envelope.direction == .fromCharger, envelope.isCall, let action = envelope.action else { return .forward }
        let route = routes[action] ?? .csms
        switch action {
        case "MeterValues":
            return meterValues(envelope, session)
        case "StatusNotification":
            let payload = envelope.payload()
            if route.toMQTT {
                let connector = payload["connectorId"]?.intValue ?? 0
                publish(session, "status/\(connector)", retain: true, series: true, [
                    "connector": .number(connector), "status": payload["status"] ?? .null, "errorCode": payload["errorCode"] ?? .null,
                    "timestamp": payload["timestamp"] ?? .string(isoNow(session)),
                ])
            }
            return route.toCSMS ? .forward : .answer([:])
        case "DataTransfer" where route == .mqtt:
            publish(session, "diagnostics", retain: false, ["action": "DataTransfer", "payload": strip(envelope.payload())])
            // The CSMS never sees it: the gateway answers for it.
            return .answer(["status": "Accepted"])
        default:
            if action == "StopTransaction" { flushTelemetry(session) }
            if route.toMQTT {
                let tap = tapSession(session)
                publish(session, "events", retain: false, tap: tap,
                        ["action": .string(action), "payload": strip(envelope.payload(), fields: piiFields, tap: tap)])
            }
            guard route.toCSMS else { return .answer(Self.localAnswer(action, session)) }
            return .forward
        }
    }

    /// Each sample goes where its measurand's route says; the CSMS copy keeps only its samples,
    /// and stays byte for byte when it keeps them all.
    private func meterValues(_ envelope: Envelope, _ session: any SessionContext) -> Verdict {
        var payload = envelope.payload()
        let connector = payload["connectorId"]?.intValue ?? 0
        var removed = false
        var kept: [JSONValue] = []
        // Looked up once for the frame, not per sample.
        let objects = FrameObjects(tap: tapSession(session), filter: session[TelemetryFilterKey.self])
        let transaction = payload["transactionId"]
        for meterValue in payload["meterValue"]?.arrayValue ?? [] {
            let timestamp = meterValue["timestamp"] ?? .null
            var samples: [JSONValue] = []
            for sample in meterValue["sampledValue"]?.arrayValue ?? [] {
                let measurand = sample["measurand"]?.stringValue ?? "Energy.Active.Import.Register"
                let phase = sample["phase"]?.stringValue
                let route = self.route(measurand: measurand, phase: phase)
                if route.toMQTT {
                    // The members appended to one array: setting them one by one into a JSONValue copied
                    // the members each time. The same members in the same order.
                    var members: [(key: String, value: JSONValue)] = [
                        ("connector", .number(connector)), ("timestamp", timestamp), ("measurand", .string(measurand)),
                        ("value", sample["value"] ?? .null),
                    ]
                    members.reserveCapacity(10)
                    for key in Self.sampleFields { if let value = sample[key] { members.append((key, value)) } }
                    // A signed meter value (OCMF …) carries the driver's identification: flagged, never copied.
                    if sample["format"]?.stringValue == "SignedData" {
                        members.removeAll { $0.key == "value" }
                        members.append(("signed", true))
                    }
                    if let transaction { members.append(("transaction", transaction)) }
                    publishTelemetry(session, measurand: measurand, phase: phase, message: .object(members), objects: objects)
                }
                if route.toCSMS { samples.append(sample) } else { removed = true }
            }
            if !samples.isEmpty {
                var entry = meterValue
                entry["sampledValue"] = .array(samples)
                kept.append(entry)
            }
        }
        if healthInterval != nil {
            let thinned = thinForCSMS(kept, session)
            removed = removed || thinned != kept
            kept = thinned
        }
        guard removed else { return .forward }
        guard !kept.isEmpty else { return .answer([:]) }  // all health data: the CSMS has nothing to receive
        payload["meterValue"] = .array(kept)
        return .forward(modifiedPayload: payload)
    }

    // MARK: Splitting the sample interval

    /// The CSMS's sampling wishes for one charger, and what the charger made of the health channel's.
    struct Wish: Sendable {
        var interval: Int?
        var measurands: String?
        var lastForwarded: Double?
        /// The charger refused `MeterValueSampleInterval = health_interval`: it samples at the CSMS's
        /// interval, which the CSMS then sets on the charger itself.
        var intervalRefused = false
    }

    final class SamplingWishes: Sendable {
        private let wishes = Mutex<[String: Wish]>([:])
        func get(_ id: String) -> Wish { wishes.withLock { $0[id] ?? Wish() } }
        func update(_ id: String, _ change: (inout Wish) -> Void) { wishes.withLock { change(&$0[id, default: Wish()]) } }
    }

    static let samplingKeys: Set<String> = ["MeterValueSampleInterval", "MeterValuesSampledData"]

    /// This session's negotiation of the charger's sampling: one at a time, what the charger said.
    final class Negotiation {
        var busy = false
        /// Another round was asked for while one ran.
        var again = false
        /// The CSMS's held ChangeConfiguration of MeterValuesSampledData (it waits for the charger's truth).
        var request: (messageId: String, value: String)?
        /// Read from the charger this session: its configured list (known good) and its list's limit.
        var read = false
        var current: [String]?
        var maxLength: Int?
        var intervalDone = false
        /// Health measurands the charger refused this session (not asked for again until it boots).
        var refused: Set<String> = []
    }

    enum NegotiationKey: SessionStateKey { typealias Value = Negotiation }

    /// Intercepts what the CSMS says and reads about sampling; the charger runs at the health interval.
    private func splitSampling(_ envelope: Envelope, _ session: any SessionContext) -> Verdict? {
        let id = session.chargerId
        switch (envelope.direction, envelope.messageType, envelope.action ?? "") {
        case (.fromCSMS, .callResult, "BootNotification") where envelope.payload()["status"]?.stringValue == "Accepted":
            // A (re)booted charger: read it again, set the interval again, ask again for what it refused.
            let negotiation = session[NegotiationKey.self, default: Negotiation()]
            negotiation.read = false
            negotiation.intervalDone = false
            negotiation.refused = []
            session[NegotiationKey.self] = negotiation
            session.schedule(after: .zero) { negotiate(session) }
            return nil
        case (.fromCSMS, .call, "ChangeConfiguration"):
            let payload = envelope.payload()
            guard let key = payload["key"]?.stringValue, Self.samplingKeys.contains(key), let value = payload["value"]?.stringValue else { return nil }
            if key == "MeterValueSampleInterval" {
                // The charger refused the health interval: the CSMS's interval is the charger's business.
                guard !wishes.get(id).intervalRefused else { return nil }
                guard let seconds = Int(value), seconds >= 0 else { return .answer(["status": "Rejected"]) }
                // The charger samples at the health interval; the gateway forwards at the CSMS's.
                wishes.update(id) { $0.interval = seconds }
                return .answer(["status": "Accepted"])
            }
            // The charger decides: the CSMS hears its answer once it has given one.
            let negotiation = session[NegotiationKey.self, default: Negotiation()]
            session[NegotiationKey.self] = negotiation
            guard negotiation.request == nil else {
                return .answerError(.genericError, "a change of MeterValuesSampledData is already in progress")
            }
            negotiation.request = (envelope.messageId, value)
            negotiate(session)
            return .answerLater
        case (.fromCSMS, .call, "GetConfiguration"):
            let keys = envelope.payload()["key"]?.arrayValue?.compactMap(\.stringValue) ?? []
            let wish = wishes.get(id)
            if !keys.isEmpty, Set(keys).isSubset(of: Self.samplingKeys) {
                let entries = keys.compactMap { entry($0, wish) }
                if entries.count == keys.count { return .answer(["configurationKey": .array(entries), "unknownKey": []]) }
            }
            guard keys.isEmpty || keys.contains(where: Self.samplingKeys.contains) else { return nil }
            var pending = session[PendingReads.self, default: []]
            if pending.count >= 16 { pending.removeFirst() }  // answers that never came
            pending.append(envelope.messageId)
            session[PendingReads.self] = pending
            return nil
        case (.fromCharger, .callResult, "GetConfiguration"):
            guard var pending = session[PendingReads.self], let index = pending.firstIndex(of: envelope.messageId) else { return nil }
            pending.remove(at: index)
            session[PendingReads.self] = pending
            var payload = envelope.payload()
            let wish = wishes.get(id)
            var changed = false
            let rewritten = (payload["configurationKey"]?.arrayValue ?? []).map { current -> JSONValue in
                guard let key = current["key"]?.stringValue, Self.samplingKeys.contains(key), let mine = entry(key, wish), mine != current
                else { return current }
                changed = true
                return mine
            }
            guard changed else { return nil }
            payload["configurationKey"] = .array(rewritten)
            return .forward(modifiedPayload: payload)
        default:
            return nil
        }
    }

    /// CSMS reads the gateway forwarded, whose answers carry the CSMS's own sampling settings.
    enum PendingReads: SessionStateKey { typealias Value = [String] }

    /// What the CSMS set (or found), when the gateway knows it.
    private func entry(_ key: String, _ wish: Wish) -> JSONValue? {
        let value = key == "MeterValueSampleInterval" ? (wish.intervalRefused ? nil : wish.interval.map(String.init)) : wish.measurands
        return value.map { ["key": .string(key), "readonly": false, "value": .string($0)] }
    }

    static func list(_ text: String?) -> [String]? {
        text.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }
    }

    static func accepted(_ status: String?) -> Bool { status == "Accepted" || status == "RebootRequired" }

    /// Brings the charger's sampling to the CSMS's measurands plus the health channel's, asking only
    /// for what the charger takes: it reads the charger's list and its limit, sets the health
    /// interval, asks for the whole list, and when that is refused, for the CSMS's list and then each
    /// health measurand in turn. What the charger refuses is logged and counted; the CSMS's
    /// ChangeConfiguration is answered with the charger's verdict on the CSMS's list.
    private func negotiate(_ session: any SessionContext) {
        let negotiation = session[NegotiationKey.self, default: Negotiation()]
        session[NegotiationKey.self] = negotiation
        guard !negotiation.busy else {
            negotiation.again = true
            return
        }
        negotiation.busy = true
        let finish = {
            negotiation.busy = false
            if negotiation.again {
                negotiation.again = false
                negotiate(session)
            }
        }
        readCharger(session, negotiation) {
            setInterval(session, negotiation) {
                negotiateMeasurands(session, negotiation, finish)
            }
        }
    }

    private func readCharger(_ session: any SessionContext, _ negotiation: Negotiation, then next: @escaping () -> Void) {
        guard !negotiation.read else { return next() }
        let keys: JSONValue = ["MeterValuesSampledData", "MeterValuesSampledDataMaxLength", "MeterValueSampleInterval"]
        session.sendCall("GetConfiguration", payload: ["key": keys], to: .charger) { outcome in
            guard outcome != .connectionClosed else { return }
            negotiation.read = true
            if case .result(let payload) = outcome {
                var values: [String: String] = [:]
                for entry in payload["configurationKey"]?.arrayValue ?? [] {
                    if let key = entry["key"]?.stringValue, let value = entry["value"]?.stringValue { values[key] = value }
                }
                negotiation.current = Self.list(values["MeterValuesSampledData"])
                negotiation.maxLength = values["MeterValuesSampledDataMaxLength"].flatMap { Int($0) }.flatMap { $0 > 0 ? $0 : nil }
                // What the CSMS had before the gateway changed anything, unless it told the gateway since.
                wishes.update(session.chargerId) { wish in
                    if wish.measurands == nil, let list = values["MeterValuesSampledData"] { wish.measurands = list }
                    if wish.interval == nil, let seconds = values["MeterValueSampleInterval"].flatMap({ Int($0) }), seconds != healthInterval {
                        wish.interval = seconds
                    }
                }
            }
            next()
        }
    }

    private func setInterval(_ session: any SessionContext, _ negotiation: Negotiation, then next: @escaping () -> Void) {
        guard let healthInterval, !negotiation.intervalDone else { return next() }
        session.sendCall("ChangeConfiguration", payload: ["key": "MeterValueSampleInterval", "value": .string(String(healthInterval))],
                         to: .charger) { outcome in
            guard outcome != .connectionClosed else { return }
            negotiation.intervalDone = true
            let status = Self.status(outcome)
            let refused = status == "Rejected" || status == "NotSupported"
            wishes.update(session.chargerId) { $0.intervalRefused = refused }
            if refused {
                Self.intervalRefusals.increment()
                session.logger.warning("the charger refused the health channel's sample interval; it keeps the CSMS's",
                                       metadata: ["interval": "\(healthInterval)", "status": "\(status ?? "")"])
            }
            next()
        }
    }

    private func negotiateMeasurands(_ session: any SessionContext, _ negotiation: Negotiation, _ finish: @escaping () -> Void) {
        let request = negotiation.request
        let base = Self.list(request?.value) ?? Self.list(wishes.get(session.chargerId).measurands) ?? negotiation.current ?? []
        let extras = healthMeasurands.filter { !base.contains($0) && !negotiation.refused.contains($0) }
        // The whole list within the charger's limit; one at a time, every health measurand gets its chance.
        let whole = base + extras.prefix(max(0, (negotiation.maxLength ?? Int.max) - base.count))
        guard request != nil || whole != negotiation.current else { return finish() }
        change(session, to: whole) { outcome in
            let status = Self.status(outcome)
            if Self.accepted(status) {
                negotiation.current = whole
                return answerRequest(session, negotiation, request, outcome, then: finish)
            }
            guard status == "Rejected" || status == "NotSupported", whole.count > base.count else {
                // The CSMS's own list was refused (or the charger failed): the CSMS hears it as it is.
                return answerRequest(session, negotiation, request, outcome, then: finish)
            }
            guard request != nil else { return probe(session, negotiation, base: base, extras, then: finish) }
            change(session, to: base) { outcome in
                let accepted = Self.accepted(Self.status(outcome))
                if accepted { negotiation.current = base }
                answerRequest(session, negotiation, request, outcome) {
                    accepted ? probe(session, negotiation, base: base, extras, then: finish) : finish()
                }
            }
        }
    }

    /// Adds the health measurands one at a time; each refused one is logged and counted.
    private func probe(_ session: any SessionContext, _ negotiation: Negotiation, base: [String], _ extras: [String],
                       then finish: @escaping () -> Void) {
        guard let next = extras.first, base.count < negotiation.maxLength ?? Int.max else { return finish() }
        let candidate = base + [next]
        change(session, to: candidate) { outcome in
            let status = Self.status(outcome)
            if Self.accepted(status) {
                negotiation.current = candidate
                return probe(session, negotiation, base: candidate, Array(extras.dropFirst()), then: finish)
            }
            guard status == "Rejected" || status == "NotSupported" else { return finish() }  // an error: try again at the next boot
            negotiation.refused.insert(next)
            Self.countRefusal(of: next)
            session.logger.warning("the charger refused a measurand the health channel asked for",
                                   metadata: ["measurand": "\(LogSafe.escape(next))", "status": "\(status ?? "")"])
            probe(session, negotiation, base: base, Array(extras.dropFirst()), then: finish)
        }
    }

    private func change(_ session: any SessionContext, to measurands: [String], _ onOutcome: @escaping (CallOutcome) -> Void) {
        session.sendCall("ChangeConfiguration", payload: ["key": "MeterValuesSampledData", "value": .string(measurands.joined(separator: ","))],
                         to: .charger) { outcome in
            guard outcome != .connectionClosed else { return }
            onOutcome(outcome)
        }
    }

    /// Tells the CSMS what the charger said of its list, and remembers the list when the charger took it.
    private func answerRequest(_ session: any SessionContext, _ negotiation: Negotiation, _ request: (messageId: String, value: String)?,
                               _ outcome: CallOutcome, then next: @escaping () -> Void) {
        // Only the request this round was for; one that came during the round has the next.
        if let request {
            if negotiation.request?.messageId == request.messageId { negotiation.request = nil }
            switch outcome {
            case .result:
                let status = Self.status(outcome) ?? "Rejected"
                if Self.accepted(status) { wishes.update(session.chargerId) { $0.measurands = request.value } }
                session.answer(request.messageId, to: .csms, with: ["status": .string(status)], error: nil)
            case .error(let code, let description):
                session.answer(request.messageId, to: .csms, with: [:], error: (OCPPErrorCode(rawValue: code), description))
            case .timedOut, .rejected:
                session.answer(request.messageId, to: .csms, with: [:], error: (.genericError, "the charger did not answer"))
            case .connectionClosed:
                break
            }
        }
        next()
    }

    /// A ChangeConfiguration answer's status, checked against the four OCPP allows.
    static func status(_ outcome: CallOutcome) -> String? {
        guard case .result(let payload) = outcome, let status = payload["status"]?.stringValue,
              ["Accepted", "Rejected", "RebootRequired", "NotSupported"].contains(status) else { return nil }
        return status
    }

    static let intervalRefusals = Counter(label: "ocpp_gateway_health_interval_refused_total")

    /// One counter per OCPP measurand at most: `health_measurands` is checked against OCPP's list.
    static func countRefusal(of measurand: String) {
        Counter(label: "ocpp_gateway_health_measurands_refused_total", dimensions: [("measurand", measurand)]).increment()
    }

    /// Periodic samples reach the CSMS once per its interval (the first sample of each interval,
    /// boundaries aligned to the clock), with the measurands it asked for; transaction-related
    /// and triggered values always pass.
    private func thinForCSMS(_ entries: [JSONValue], _ session: any SessionContext) -> [JSONValue] {
        let wish = wishes.get(session.chargerId)
        // When the charger refused the health interval it samples at the CSMS's: no thinning in time.
        let interval = wish.intervalRefused ? nil : wish.interval
        let wanted = Self.list(wish.measurands).map(Set.init)
        guard interval != nil || wanted != nil else { return entries }
        var kept: [JSONValue] = []
        var periodicTime: Double?
        for meterValue in entries {
            let time = meterValue["timestamp"]?.stringValue.flatMap(parseOCPPDate)?.timeIntervalSince1970 ?? session.wallTime
            let last = periodicTime ?? wish.lastForwarded
            let due: Bool
            switch interval {
            case nil: due = true
            case 0: due = false  // 0: the CSMS wants no periodic samples
            case let seconds?: due = last == nil || floor(time / Double(seconds)) > floor(last! / Double(seconds))
            }
            let samples = (meterValue["sampledValue"]?.arrayValue ?? []).filter { sample in
                let context = sample["context"]?.stringValue ?? "Sample.Periodic"
                guard context == "Sample.Periodic" else { return true }
                let measurand = sample["measurand"]?.stringValue ?? "Energy.Active.Import.Register"
                return due && (wanted?.contains(measurand) ?? true)
            }
            if due, samples.contains(where: { ($0["context"]?.stringValue ?? "Sample.Periodic") == "Sample.Periodic" }) { periodicTime = time }
            if !samples.isEmpty {
                var entry = meterValue
                entry["sampledValue"] = .array(samples)
                kept.append(entry)
            }
        }
        if let periodicTime { wishes.update(session.chargerId) { $0.lastForwarded = periodicTime } }
        return kept
    }

    /// A sample's fields copied to its message after `connector`, `timestamp`, `measurand` and `value`.
    static let sampleFields = ["phase", "unit", "context", "location", "format"]

    /// Per-phase voltage and current, temperature and frequency are health data; registers, power and SoC are value data.
    func route(measurand: String, phase: String?) -> Route {
        // Without `measurands:` in the configuration (the usual case) no name is spelled or hashed.
        if !measurandRoutes.isEmpty {
            if let phase, let route = measurandRoutes["\(measurand)/\(phase)"] { return route }
            if let route = measurandRoutes[measurand] { return route }
        }
        switch measurand {
        case "Temperature", "Frequency", "RPM": return .mqtt
        case "Voltage", "Current.Import", "Current.Export", "Current.Offered": return phase == nil ? .both : .mqtt
        default: return .both
        }
    }

    /// What the gateway answers when an action is routed to MQTT only.
    static func localAnswer(_ action: String, _ session: any SessionContext) -> JSONValue {
        switch action {
        case "Heartbeat": ["currentTime": .string(isoNow(session))]
        case "DataTransfer": ["status": "Accepted"]
        default: [:]
        }
    }

    // MARK: Publishing

    /// Publishes one sample, through the session's compressor when there is one: it may hold the
    /// sample back, or publish archived points in its place (with how they were compressed).
    /// A point the compressor did not move is published as the charger wrote it (its value's and
    /// timestamp's spelling); a moved point is rounded to the precision of the charger's value.
    /// `scale` turns the sample's value into the measurand's base unit (kW → W; 2.0.1's multiplier).
    func publishTelemetry(_ session: any SessionContext, measurand: String, phase: String?, message: JSONValue, scale: Double? = nil,
                          objects: FrameObjects? = nil) {
        let objects = objects ?? FrameObjects(tap: tapSession(session), filter: session[TelemetryFilterKey.self])
        let tap = objects.tap
        let series = measurand + (phase.map { "/\($0)" } ?? "")
        let topic = Self.telemetryTopic(series)
        guard let filter = objects.filter, Self.compressible.contains(measurand), phase.map(Self.phases.contains) ?? true,
              let text = message["value"].flatMap(Self.numberText), let value = Double(text), value.isFinite,
              let time = message["timestamp"]?.stringValue.flatMap(objects.time)
        else {
            // Not a series the compressor can follow (no compressor, a name outside OCPP's lists, a value
            // that is no number): published as it came. Unknown names are never remembered.
            publish(session, topic, retain: false, series: true, tap: tap, message)
            return
        }
        guard admitSeries(topic, session, tap) else { return }
        let scale = scale ?? Self.unitScale(message["unit"]?.stringValue)
        let memory = tap.memory ?? SeriesMemory()
        tap.memory = memory
        memory.remember(series: series, SeriesMemory.Reading(time: time, value: value * scale, scale: scale, message: message))
        publishPending(filter.takeRetiredPoints(), filter, session, tap)
        for point in filter.filter(series: series, time: time, value: value * scale) {
            // Admitted above: not counted again.
            publish(session, topic, retain: false, tap: tap,
                    memory.point(series: series, point.time, point.value, filter.descriptor(series: series)))
        }
    }

    static func telemetryTopic(_ series: String) -> String {
        "telemetry/" + Topics.path(series)
    }

    /// Values in kW, kWh, kvar… go to the compressor in W, Wh, var…, so one deviation holds for both spellings.
    static func unitScale(_ unit: String?) -> Double {
        switch unit {
        case "kW", "kWh", "kvar", "kvarh", "kVA", "kVAh": 1000
        default: 1
        }
    }

    /// The last few samples of each series as the charger sent them: the compressor archives a
    /// recent sample (the one before the newest, or at a flush the last two), never an older one.
    final class SeriesMemory {
        struct Reading {
            var time: Double
            /// In the compressor's unit (`value * scale`).
            var value: Double
            var scale: Double
            var message: JSONValue
        }

        static let kept = 3
        private var series: [String: Recent] = [:]

        /// The last `kept` readings of a series in a ring: the newest overwrites the oldest (removing the
        /// oldest from the front of an array cost ~1,300 instructions a sample).
        struct Recent {
            private var readings: [Reading] = []
            /// Where the oldest is once the ring is full (0 before).
            private var oldest = 0

            mutating func append(_ reading: Reading) {
                if readings.count < SeriesMemory.kept {
                    readings.append(reading)
                } else {
                    readings[oldest] = reading
                    oldest = (oldest + 1) % readings.count
                }
            }

            /// The reading `back` places before the newest (0: the newest); `back < readings.count`.
            private func reading(back: Int) -> Reading { readings[(oldest + readings.count - 1 - back) % readings.count] }

            /// Newest first.
            var newestFirst: [Reading] { (0..<readings.count).map(reading(back:)) }

            var newest: Reading? { readings.isEmpty ? nil : reading(back: 0) }

            /// The newest reading at `time`.
            func newest(at time: Double) -> Reading? {
                (0..<readings.count).lazy.map(reading(back:)).first { $0.time == time }
            }
        }

        func remember(series name: String, _ reading: Reading) {
            // One lookup, then in place: a copy taken out of the dictionary would be copied again on append.
            guard let index = series.index(forKey: name) else {
                var recent = Recent()
                recent.append(reading)
                series[name] = recent
                return
            }
            series.values[index].append(reading)
        }

        /// The series' readings, oldest first.
        func readings(series name: String) -> [Reading] { (series[name]?.newestFirst ?? []).reversed() }

        /// The message for an archived point: the charger's own sample when the compressor kept it
        /// unmoved, else that sample with its value rounded to the precision the charger used.
        func point(series name: String, _ time: Double, _ value: Double, _ descriptor: JSONValue?) -> JSONValue {
            let readings = series[name] ?? Recent()
            var message: JSONValue
            if let reading = readings.newest(at: time) {
                message = reading.message
                if value != reading.value {
                    message["value"] = Spelling.json(value / reading.scale, like: reading.message["value"])
                }
            } else {
                // Not one of the recent samples (the compressors never do this): the newest sample's fields.
                message = readings.newest?.message ?? [:]
                let scale = readings.newest?.scale ?? 1
                message["timestamp"] = .string(Spelling.timestamp(time, like: message["timestamp"]?.stringValue ?? ""))
                message["value"] = Spelling.json(value / scale, like: message["value"])
            }
            if let descriptor { message["compression"] = descriptor }
            return message
        }
    }

    /// Every series ends on its true last value: at the end of a transaction and of a session.
    func flushTelemetry(_ session: any SessionContext) {
        guard let filter = session[TelemetryFilterKey.self] else { return }
        publishPending(filter.takeRetiredPoints() + filter.flush(), filter, session)
    }

    private func publishPending(_ points: [(series: String, time: Double, value: Double)], _ filter: any TelemetryFilter,
                                _ session: any SessionContext, _ tap: TapSession? = nil) {
        guard !points.isEmpty else { return }
        let tap = tap ?? tapSession(session)
        guard let memory = tap.memory else { return }
        for point in points {
            publish(session, Self.telemetryTopic(point.series), retain: false, series: true, tap: tap,
                    memory.point(series: point.series, point.time, point.value, filter.descriptor(series: point.series)))
        }
    }

    /// The tap's objects of one session, found with one lookup: a session lookup costs ~420 instructions,
    /// and a MeterValues frame made four for each of its samples.
    final class TapSession {
        /// The topics published under peer-chosen names (`max_series`).
        let budget = SeriesBudget()
        /// Made with the first sample the compressor follows.
        var memory: SeriesMemory?
        var heading: Heading?
        /// The last PII value hashed for this session and its hash.
        var lastHash: (hasher: ObjectIdentifier, text: String, hash: String)?
    }

    enum TapSessionKey: SessionStateKey { typealias Value = TapSession }

    func tapSession(_ session: any SessionContext) -> TapSession { Self.sessionObject(TapSessionKey.self, session, TapSession()) }

    /// What every sample of a frame needs from the session, looked up once for the frame, and the last
    /// timestamp read (the samples of a meter value share theirs).
    final class FrameObjects {
        let tap: TapSession
        let filter: (any TelemetryFilter)?
        private var stamp: (text: String, time: Double?)?

        init(tap: TapSession, filter: (any TelemetryFilter)?) {
            self.tap = tap
            self.filter = filter
        }

        /// `parseOCPPDate(text)` in seconds since 1970, read once for a run of samples with the same text.
        func time(_ text: String) -> Double? {
            if let stamp, stamp.text == text { return stamp.time }
            let time = parseOCPPDate(text)?.timeIntervalSince1970
            stamp = (text, time)
            return time
        }
    }

    /// The session's object under `key`, made and stored on first use. An object is stored once: writing
    /// it back on every sample cost a second lookup per sample.
    static func sessionObject<Key: SessionStateKey>(_ key: Key.Type, _ session: any SessionContext,
                                                    _ make: @autoclosure () -> Key.Value) -> Key.Value where Key.Value: AnyObject {
        if let object = session[key] { return object }
        let object = make()
        session[key] = object
        return object
    }

    public func sessionEnded(_ session: any SessionContext) {
        flushTelemetry(session)
    }

    /// `series`: the topic carries peer-chosen names or numbers, and counts against `max_series`.
    func publish(_ session: any SessionContext, _ subtopic: String, retain: Bool, series: Bool = false, tap: TapSession? = nil,
                 _ body: JSONValue) {
        let tap = tap ?? tapSession(session)
        if series, !admitSeries(subtopic, session, tap) { return }
        let heading = Self.heading(publisher.topicRoot, session, tap)
        publisher.publish(topic: heading.topic + subtopic, payload: Self.message(heading, body), retain: retain)
    }

    /// What every message of a session starts with, made once per session (escaping the charger's id for
    /// its topic level and spelling the envelope's three members cost ~1,500 instructions a message).
    final class Heading {
        /// The publisher's root it was made for (a reload may bring another).
        let root: String
        let charger: String
        /// `<root>/<charger level>/`.
        let topic: String
        /// `{"v":1,"gateway":…,"charger":…` without the closing brace.
        let opening: [UInt8]

        init(root: String, charger: String) {
            self.root = root
            self.charger = charger
            topic = root + "/" + Topics.level(charger) + "/"
            var opening = JSONValue.object([("v", 1), ("gateway", .string(root)), ("charger", .string(charger))]).serialized()
            opening.removeLast()
            self.opening = opening
        }
    }

    static func heading(_ root: String, _ session: any SessionContext, _ tap: TapSession) -> Heading {
        if let heading = tap.heading, heading.root == root { return heading }
        let heading = Heading(root: root, charger: session.chargerId)
        tap.heading = heading
        return heading
    }

    /// The message: the envelope (`v`, `gateway`, `charger`) and the body's members after it, written as
    /// bytes after the session's opening. A body that repeats a key (its own or the envelope's) is merged
    /// member by member as before: the later value in the earlier place.
    static func message(_ heading: Heading, _ body: JSONValue) -> [UInt8] {
        let members = body.objectValue ?? []
        // A handful of short keys: compared, not hashed.
        let repeats = members.indices.contains { index in
            let key = members[index].key
            return key == "v" || key == "gateway" || key == "charger" || members[..<index].contains { $0.key == key }
        }
        guard !repeats else {
            var message: JSONValue = ["v": 1, "gateway": .string(heading.root), "charger": .string(heading.charger)]
            for (key, value) in members { message[key] = value }
            return message.serialized()
        }
        var out = heading.opening
        out.reserveCapacity(out.count + 32 * members.count + 2)
        for (key, value) in members {
            out.append(UInt8(ascii: ","))
            JSONValue.string(key).write(to: &out)
            out.append(UInt8(ascii: ":"))
            value.write(to: &out)
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    /// The payload with every PII field replaced by `hmac-sha256:<hex>` (first 16 bytes), at any depth.
    func strip(_ value: JSONValue) -> JSONValue { strip(value, fields: piiFields) }

    /// A signed meter value (1.6 `format: SignedData`, e.g. an OCMF record) carries the driver's identification:
    /// its `value` is hashed like any PII field, wherever it appears.
    func strip(_ value: JSONValue, fields: Set<String>, tap: TapSession? = nil) -> JSONValue {
        switch value {
        case .object(let members):
            let signed = members.contains { $0.0 == "format" && $0.1.stringValue == "SignedData" }
            return .object(members.map { key, member in
                if signed, key == "value", case .string(let text) = member { return (key, .string(hash(text, tap))) }
                if fields.contains(key), case .string(let text) = member { return (key, .string(hash(text, tap))) }
                return (key, strip(member, fields: fields, tap: tap))
            })
        case .array(let elements):
            return .array(elements.map { strip($0, fields: fields, tap: tap) })
        default:
            return value
        }
    }

    /// `hmac-sha256:` and the first 16 bytes of the HMAC in hex (per PII value and frame: kept cheap —
    /// `String(format:)` per byte cost ~83,000 instructions a frame).
    func hash(_ text: String, _ tap: TapSession?) -> String {
        // A charger's Authorize, StartTransaction and StopTransaction carry the same idTag: hashed once.
        // The stage instance that hashed it (its key is read when the stage is made: a reload may bring another).
        let hasher = ObjectIdentifier(identity)
        if let last = tap?.lastHash, last.text == text, last.hasher == hasher { return last.hash }
        let hashed = hash(text)
        tap?.lastHash = (hasher, text, hashed)
        return hashed
    }

    func hash(_ text: String) -> String {
        // From the keyed state made once (the key's padding hashed once, not per value).
        var hmac = secret.keyed
        hmac.update(data: Array(text.utf8))
        let mac = hmac.finalize()
        let digits = Array("0123456789abcdef".utf8)
        var hex = Array("hmac-sha256:".utf8)
        hex.reserveCapacity(hex.count + 32)
        for byte in mac.prefix(16) {
            hex.append(digits[Int(byte >> 4)])
            hex.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: hex, as: UTF8.self)
    }
}

/// The gateway's HMAC key for PII. `HMAC` is not `Sendable`, but this one is never mutated after it is
/// made (each hash mutates its own copy), so sharing it between event loops is safe.
struct HMACKey: @unchecked Sendable {
    /// HMAC with this key before any data: copied per hash (a value type), so the key is processed once.
    let keyed: HMAC<SHA256>
    init(bytes: [UInt8]) { keyed = HMAC<SHA256>(key: SymmetricKey(data: bytes)) }
}

func isoNow(_ session: any SessionContext) -> String {
    Date(timeIntervalSince1970: session.wallTime).formatted(.iso8601)
}

struct TapError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

