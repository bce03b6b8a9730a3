import Crypto
import Foundation
import Logging
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
    }

    public static let type = "mqtt_tap"
    public static let summary = "Health channel: routes telemetry and diagnostics to MQTT (PII hashed), keeps billing on the CSMS link."

    let publisher: any MessagePublisher
    let routes: [String: Route]
    let measurandRoutes: [String: Route]
    let piiFields: Set<String>
    /// The HMAC key's bytes (SymmetricKey is not Sendable).
    let secret: [UInt8]
    let healthInterval: Int?
    let healthMeasurands: [String]
    /// What each CSMS asked of its charger's sampling, kept across reconnects.
    let wishes = SamplingWishes()

    /// Defaults: value-channel actions to the CSMS with a copy on MQTT; status to both; vendor diagnostics to MQTT only.
    static let defaultRoutes: [String: Route] = [
        "Authorize": .both, "StartTransaction": .both, "StopTransaction": .both, "MeterValues": .both, "BootNotification": .both,
        "StatusNotification": .both, "DataTransfer": .mqtt, "DiagnosticsStatusNotification": .both, "FirmwareStatusNotification": .both,
        "Heartbeat": .csms,
    ]

    public init(configuration: Configuration, context: StageSetupContext) throws {
        guard let publisher = context.publisher else {
            throw TapError("the mqtt_tap stage needs the health channel: add an 'mqtt:' section to gateway.yaml")
        }
        self.publisher = publisher
        routes = Self.defaultRoutes.merging(configuration.routes ?? [:]) { $1 }
        for action in (configuration.routes ?? [:]).keys where MessageCatalogue.descriptor(for: action)?.sender.contains(.chargePoint) != true {
            throw TapError("'routes' names '\(action)', which is not an action a charger sends")
        }
        measurandRoutes = configuration.measurands ?? [:]
        piiFields = Set(configuration.piiFields ?? ["idTag", "parentIdTag"])
        secret = try Self.loadSecret(stateDirectory: context.stateDirectory)
        if let interval = configuration.healthInterval, interval <= 0 { throw TapError("'health_interval' must be positive") }
        healthInterval = configuration.healthInterval
        healthMeasurands = configuration.healthMeasurands
            ?? ["Voltage", "Current.Import", "Power.Active.Import", "Temperature", "Energy.Active.Import.Register"]
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
                publish(session, "status/\(connector)", retain: true, [
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
                publish(session, "events", retain: false, ["action": .string(action), "payload": strip(envelope.payload())])
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
        for meterValue in payload["meterValue"]?.arrayValue ?? [] {
            let timestamp = meterValue["timestamp"] ?? .null
            var samples: [JSONValue] = []
            for sample in meterValue["sampledValue"]?.arrayValue ?? [] {
                let measurand = sample["measurand"]?.stringValue ?? "Energy.Active.Import.Register"
                let phase = sample["phase"]?.stringValue
                let route = self.route(measurand: measurand, phase: phase)
                if route.toMQTT {
                    var message: JSONValue = ["connector": .number(connector), "timestamp": timestamp, "measurand": .string(measurand),
                                              "value": sample["value"] ?? .null]
                    for key in ["phase", "unit", "context", "location", "format"] { if let value = sample[key] { message[key] = value } }
                    if let transaction = payload["transactionId"] { message["transaction"] = transaction }
                    publishTelemetry(session, measurand: measurand, phase: phase, message: message)
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

    /// The CSMS's sampling wishes for one charger.
    struct Wish: Sendable {
        var interval: Int?
        var measurands: String?
        var lastForwarded: Double?
    }

    final class SamplingWishes: Sendable {
        private let wishes = Mutex<[String: Wish]>([:])
        func get(_ id: String) -> Wish { wishes.withLock { $0[id] ?? Wish() } }
        func update(_ id: String, _ change: (inout Wish) -> Void) { wishes.withLock { change(&$0[id, default: Wish()]) } }
    }

    static let samplingKeys: Set<String> = ["MeterValueSampleInterval", "MeterValuesSampledData"]

    /// Intercepts what the CSMS says and reads about sampling; the charger runs at the health interval.
    private func splitSampling(_ envelope: Envelope, _ session: any SessionContext) -> Verdict? {
        let id = session.chargerId
        switch (envelope.direction, envelope.messageType, envelope.action ?? "") {
        case (.fromCSMS, .callResult, "BootNotification") where envelope.payload()["status"]?.stringValue == "Accepted":
            session.schedule(after: .zero) { configureCharger(session) }
            return nil
        case (.fromCSMS, .call, "ChangeConfiguration"):
            let payload = envelope.payload()
            guard let key = payload["key"]?.stringValue, Self.samplingKeys.contains(key), let value = payload["value"]?.stringValue else { return nil }
            if key == "MeterValueSampleInterval" {
                guard let seconds = Int(value), seconds >= 0 else { return .answer(["status": "Rejected"]) }
                wishes.update(id) { $0.interval = seconds }
            } else {
                wishes.update(id) { $0.measurands = value }
                session.schedule(after: .zero) { configureCharger(session) }
            }
            // The charger keeps sampling at the health interval; the CSMS gets what it asked for.
            return .answer(["status": "Accepted"])
        case (.fromCSMS, .call, "GetConfiguration"):
            let keys = envelope.payload()["key"]?.arrayValue?.compactMap(\.stringValue) ?? []
            let wish = wishes.get(id)
            guard !keys.isEmpty, Set(keys).isSubset(of: Self.samplingKeys), wish.interval != nil || wish.measurands != nil else {
                if keys.isEmpty { session[PendingReads.self, default: []].insert(envelope.messageId) }
                return nil
            }
            return .answer(["configurationKey": .array(keys.compactMap { entry($0, wish) }), "unknownKey": []])
        case (.fromCharger, .callResult, "GetConfiguration"):
            guard session[PendingReads.self]?.remove(envelope.messageId) != nil else { return nil }
            var payload = envelope.payload()
            let wish = wishes.get(id)
            let rewritten = (payload["configurationKey"]?.arrayValue ?? []).map { current -> JSONValue in
                guard let key = current["key"]?.stringValue, Self.samplingKeys.contains(key), let mine = entry(key, wish) else { return current }
                return mine
            }
            payload["configurationKey"] = .array(rewritten)
            return .forward(modifiedPayload: payload)
        default:
            return nil
        }
    }

    enum PendingReads: SessionStateKey { typealias Value = Set<String> }

    private func entry(_ key: String, _ wish: Wish) -> JSONValue? {
        let value = key == "MeterValueSampleInterval" ? wish.interval.map(String.init) : wish.measurands
        return value.map { ["key": .string(key), "readonly": false, "value": .string($0)] }
    }

    /// Sets the charger to the health interval, sampling the union of what the CSMS and the health channel want.
    private func configureCharger(_ session: any SessionContext) {
        guard let healthInterval else { return }
        let wish = wishes.get(session.chargerId)
        var measurands = (wish.measurands ?? "").split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        for measurand in healthMeasurands where !measurands.contains(measurand) { measurands.append(measurand) }
        session.sendCall("ChangeConfiguration", payload: ["key": "MeterValueSampleInterval", "value": .string(String(healthInterval))],
                         to: .charger) { _ in }
        session.sendCall("ChangeConfiguration", payload: ["key": "MeterValuesSampledData", "value": .string(measurands.joined(separator: ","))],
                         to: .charger) { _ in }
    }

    /// Periodic samples reach the CSMS once per its interval (the first sample of each interval,
    /// boundaries aligned to the clock), with the measurands it asked for; transaction-related
    /// and triggered values always pass.
    private func thinForCSMS(_ entries: [JSONValue], _ session: any SessionContext) -> [JSONValue] {
        let wish = wishes.get(session.chargerId)
        guard let interval = wish.interval, interval > 0 else { return entries }
        let wanted = wish.measurands.map { Set($0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }) }
        var kept: [JSONValue] = []
        var periodicTime: Double?
        for meterValue in entries {
            let time = meterValue["timestamp"]?.stringValue.flatMap(parseISO)?.timeIntervalSince1970 ?? session.wallTime
            let last = periodicTime ?? wish.lastForwarded
            let due = last == nil || floor(time / Double(interval)) > floor(last! / Double(interval))
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

    /// Per-phase voltage and current, temperature and frequency are health data; registers, power and SoC are value data.
    func route(measurand: String, phase: String?) -> Route {
        if let phase, let route = measurandRoutes["\(measurand)/\(phase)"] { return route }
        if let route = measurandRoutes[measurand] { return route }
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
    private func publishTelemetry(_ session: any SessionContext, measurand: String, phase: String?, message: JSONValue) {
        let series = measurand + (phase.map { "/\($0)" } ?? "")
        let topic = Self.telemetryTopic(series)
        guard let filter = session[TelemetryFilterKey.self], Self.measurands.contains(measurand), phase.map(Self.phases.contains) ?? true,
              let text = message["value"]?.stringValue, let value = Double(text), value.isFinite,
              let time = message["timestamp"]?.stringValue.flatMap(parseISO)?.timeIntervalSince1970
        else {
            // Not a series the compressor can follow (no compressor, a name outside OCPP's lists, a value
            // that is no number): published as it came. Unknown names are never remembered.
            publish(session, topic, retain: false, message)
            return
        }
        let scale = Self.unitScale(message["unit"]?.stringValue)
        let memory = session[SeriesMemoryKey.self, default: SeriesMemory()]
        memory.remember(series: series, SeriesMemory.Reading(time: time, value: value * scale, scale: scale, message: message))
        session[SeriesMemoryKey.self] = memory
        publishPending(filter.takeRetiredPoints(), filter, session)
        for point in filter.filter(series: series, time: time, value: value * scale) {
            publish(session, topic, retain: false, memory.point(series: series, point.time, point.value, filter.descriptor(series: series)))
        }
    }

    static func telemetryTopic(_ series: String) -> String {
        "telemetry/" + series.split(separator: "/", omittingEmptySubsequences: false).map { topicSafe(String($0)) }.joined(separator: "/")
    }

    /// Values in kW, kWh, kvar… go to the compressor in W, Wh, var…, so one deviation holds for both spellings.
    static func unitScale(_ unit: String?) -> Double {
        switch unit {
        case "kW", "kWh", "kvar", "kvarh", "kVA": 1000
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
        private var series: [String: [Reading]] = [:]

        func remember(series name: String, _ reading: Reading) {
            var readings = series[name] ?? []
            readings.append(reading)
            if readings.count > Self.kept { readings.removeFirst(readings.count - Self.kept) }
            series[name] = readings
        }

        /// The message for an archived point: the charger's own sample when the compressor kept it
        /// unmoved, else that sample with its value rounded to the precision the charger used.
        func point(series name: String, _ time: Double, _ value: Double, _ descriptor: JSONValue?) -> JSONValue {
            let readings = series[name] ?? []
            var message: JSONValue
            if let reading = readings.last(where: { $0.time == time }) {
                message = reading.message
                if value != reading.value {
                    message["value"] = .string(Spelling.value(value / reading.scale, like: reading.message["value"]?.stringValue ?? ""))
                }
            } else {
                // Not one of the recent samples (the compressors never do this): the newest sample's fields.
                message = readings.last?.message ?? [:]
                let scale = readings.last?.scale ?? 1
                message["timestamp"] = .string(Spelling.timestamp(time, like: message["timestamp"]?.stringValue ?? ""))
                message["value"] = .string(Spelling.value(value / scale, like: message["value"]?.stringValue ?? ""))
            }
            if let descriptor { message["compression"] = descriptor }
            return message
        }
    }

    /// Every series ends on its true last value: at the end of a transaction and of a session.
    private func flushTelemetry(_ session: any SessionContext) {
        guard let filter = session[TelemetryFilterKey.self] else { return }
        publishPending(filter.takeRetiredPoints() + filter.flush(), filter, session)
    }

    private func publishPending(_ points: [(series: String, time: Double, value: Double)], _ filter: any TelemetryFilter,
                                _ session: any SessionContext) {
        guard !points.isEmpty, let memory = session[SeriesMemoryKey.self] else { return }
        for point in points {
            publish(session, Self.telemetryTopic(point.series), retain: false,
                    memory.point(series: point.series, point.time, point.value, filter.descriptor(series: point.series)))
        }
    }

    enum SeriesMemoryKey: SessionStateKey { typealias Value = SeriesMemory }

    public func sessionEnded(_ session: any SessionContext) {
        flushTelemetry(session)
    }

    private func publish(_ session: any SessionContext, _ subtopic: String, retain: Bool, _ body: JSONValue) {
        var message: JSONValue = ["v": 1, "gateway": .string(publisher.topicRoot), "charger": .string(session.chargerId)]
        for (key, value) in body.objectValue ?? [] { message[key] = value }
        publisher.publish(topic: "\(publisher.topicRoot)/\(Self.topicSafe(session.chargerId))/\(subtopic)", payload: message.serialized(),
                          retain: retain)
    }

    /// MQTT wildcards and separators cannot appear in a topic level.
    static func topicSafe(_ text: String) -> String {
        String(text.map { "+#/".contains($0) ? "_" : $0 })
    }

    /// The payload with every PII field replaced by `hmac-sha256:<hex>` (first 16 bytes), at any depth.
    func strip(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let members):
            return .object(members.map { key, member in
                if piiFields.contains(key), case .string(let text) = member { return (key, .string(hash(text))) }
                return (key, strip(member))
            })
        case .array(let elements):
            return .array(elements.map(strip))
        default:
            return value
        }
    }

    func hash(_ text: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Data(text.utf8), using: SymmetricKey(data: secret))
        return "hmac-sha256:" + mac.prefix(16).map { String(format: "%02x", $0) }.joined()
    }
}

func isoNow(_ session: any SessionContext) -> String {
    Date(timeIntervalSince1970: session.wallTime).formatted(.iso8601)
}

struct TapError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

func parseISO(_ text: String) -> Date? {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    if let date = formatter.date(from: text) { return date }
    formatter.formatOptions = [.withInternetDateTime]
    return formatter.date(from: text)
}
