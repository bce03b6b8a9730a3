import Foundation
import Logging
import Metrics
import OCPP
import Synchronization
import StageKit

// OCPP 2.0.1 on the health channel: the device model's NotifyEvent, NotifyReport and
// NotifyMonitoringReport items go to topics by component and variable (and EVSE and connector),
// routed by the `components` rules; MeterValues and TransactionEvent samples go to the same
// telemetry topics as 1.6's; personal data is hashed with the same key as 1.6's idTags.

/// Routing rules keyed `Component/Variable`, where either side may be `*`. The most specific rule
/// wins: `Component/Variable`, then `Component/*`, then `*/Variable`, then `*/*`.
struct PatternTable<Value: Sendable>: Sendable {
    private var exact: [String: Value] = [:]
    private var byComponent: [String: Value] = [:]
    private var byVariable: [String: Value] = [:]
    private var any: Value?

    /// Names are at most 50 characters (2.0.1's `identifierString`-like limit for component and
    /// variable names); a pattern is `Name/Name` with `*` standing alone for any name.
    init(_ rules: [String: Value], key: String) throws {
        var problems: [ConfigurationKeyError] = []
        for (pattern, value) in rules.sorted(by: { $0.key < $1.key }) {
            let parts = pattern.split(separator: "/", omittingEmptySubsequences: false).map(String.init)
            guard parts.count == 2, parts.allSatisfy({ !$0.isEmpty && $0.count <= 50 }) else {
                problems.append(ConfigurationKeyError(key: "\(key).\(pattern)",
                    "is not a rule: write 'Component/Variable' (names of 1 to 50 characters; '*' for any), e.g. 'EVSE/Temperature', '*/Power'"))
                continue
            }
            if let part = parts.first(where: { $0 != "*" && $0.contains("*") }) {
                problems.append(ConfigurationKeyError(key: "\(key).\(pattern)",
                    "has '\(part)': '*' stands alone for any name (no partial wildcards)"))
                continue
            }
            switch (parts[0] == "*", parts[1] == "*") {
            case (false, false): exact[pattern] = value
            case (false, true): byComponent[parts[0]] = value
            case (true, false): byVariable[parts[1]] = value
            case (true, true): any = value
            }
        }
        if problems.count == 1 { throw problems[0] }
        if !problems.isEmpty { throw ConfigurationKeyError.Many(problems) }
    }

    func value(component: String, variable: String) -> Value? {
        exact[component + "/" + variable] ?? byComponent[component] ?? byVariable[variable] ?? any
    }
}

extension MQTTTapStage {
    // MARK: Bounds

    /// The topics a session published under peer-chosen names; at most `max_series`.
    final class SeriesBudget {
        var seen: Set<String> = []
        var dropped = 0
        var log = LogThrottle(limit: 1, window: .seconds(60))
    }

    static let seriesDropped = Counter(label: "ocpp_gateway_mqtt_series_dropped_total")

    /// Whether `subtopic` may be published: it was before, or there is room for one more.
    func admitSeries(_ subtopic: String, _ session: any SessionContext, _ tap: TapSession? = nil) -> Bool {
        let budget = (tap ?? tapSession(session)).budget
        if budget.seen.contains(subtopic) { return true }
        guard budget.seen.count >= maxSeries else {
            budget.seen.insert(subtopic)
            return true
        }
        budget.dropped += 1
        droppedSeriesCount.increment()
        Self.seriesDropped.increment()
        let (log, suppressed) = budget.log.admit(now: session.now)
        if log {
            session.logger.warning("mqtt_tap: the charger's topics exceed max_series; new ones are dropped", metadata: [
                "max_series": "\(maxSeries)", "topic": "\(LogSafe.escape(String(subtopic.prefix(200))))",
                "similar_lines_left_out": "\(suppressed)",
            ])
        }
        return false
    }

    /// Messages this stage did not publish because of `max_series`, all sessions together.
    public var droppedSeries: Int { droppedSeriesCount.value }

    final class Count: Sendable {
        private let count = Mutex(0)
        var value: Int { count.withLock { $0 } }
        func increment() { count.withLock { $0 += 1 } }
    }

    /// One topic level for a device-model name: `Name[.instance]`, each cut to 50 characters, with
    /// `+ # /` and NUL (as everywhere) and `.` inside a name (so the instance stays unambiguous) as `_`.
    static func dmLevel(_ name: String?, _ instance: String?) -> String {
        func clean(_ text: String) -> String {
            let escaped = Topics.level(text.prefix(50)).replacingOccurrences(of: ".", with: "_")
            return escaped.isEmpty ? "_" : escaped
        }
        return clean(name ?? "") + (instance.map { "." + clean($0) } ?? "")
    }

    /// An EVSE or connector number as a topic level: `0` when absent (the station, the whole EVSE).
    static func numberLevel(_ value: JSONValue?) -> String {
        guard let value, let number = value.intValue else { return "0" }
        return String(number)
    }

    // MARK: PII

    /// Field names hashed on 2.0.1 sessions whatever `pii_fields` says: tokens (idToken, groupIdToken,
    /// additionalIdToken), personal messages (`content`), customer data, contract certificates, and
    /// signed meter data (an OCMF record carries the driver's token).
    static let piiFields201: Set<String> = [
        "idToken", "groupIdToken", "additionalIdToken", "customerIdentifier", "content", "certificate", "exiRequest", "signedMeterData",
    ]

    func strip201(_ value: JSONValue, action: String) -> JSONValue {
        var fields = piiFields.union(Self.piiFields201)
        // NotifyCustomerInformation.data is the customer's data (a vendor DataTransfer's `data` is not).
        if action == "NotifyCustomerInformation" { fields.insert("data") }
        return strip(value, fields: fields)
    }

    func isPII(component: String, variable: String) -> Bool {
        piiVariables.value(component: component, variable: variable) ?? false
    }

    // MARK: Frames

    func process201(_ envelope: Envelope, _ session: any SessionContext) -> Verdict {
        guard envelope.direction == .fromCharger, envelope.isCall, let action = envelope.action else { return .forward }
        let route = routes[action] ?? .csms
        switch action {
        case "NotifyEvent", "NotifyReport", "NotifyMonitoringReport":
            guard route.toMQTT else { return .forward }
            return deviceModel(action, envelope, route, session)
        case "MeterValues":
            return meterValues201(envelope, session)
        case "TransactionEvent":
            let payload = envelope.payload()
            publishSamples201(payload["meterValue"], session, evse: payload["evse"]?["id"], connector: payload["evse"]?["connectorId"],
                              transaction: payload["transactionInfo"]?["transactionId"])
            if payload["eventType"]?.stringValue == "Ended" { flushTelemetry(session) }
            if route.toMQTT {
                publish(session, "events", retain: false, ["action": "TransactionEvent", "payload": strip201(payload, action: action)])
            }
            return .forward  // billing: always to the CSMS, byte for byte
        case "StatusNotification":
            let payload = envelope.payload()
            if route.toMQTT {
                publish(session, "status/\(Self.numberLevel(payload["evseId"]))/\(Self.numberLevel(payload["connectorId"]))", retain: true,
                        series: true, [
                            "evse": payload["evseId"] ?? .null, "connector": payload["connectorId"] ?? .null,
                            "status": payload["connectorStatus"] ?? .null, "timestamp": payload["timestamp"] ?? .string(isoNow(session)),
                        ])
            }
            return route.toCSMS ? .forward : .answer([:])
        case "DataTransfer" where route == .mqtt:
            publish(session, "diagnostics", retain: false, ["action": "DataTransfer", "payload": strip201(envelope.payload(), action: action)])
            return .answer(["status": "Accepted"])
        default:
            if route.toMQTT {
                publish(session, "events", retain: false, ["action": .string(action), "payload": strip201(envelope.payload(), action: action)])
            }
            guard !route.toCSMS else { return .forward }
            // MQTT only: the gateway answers, if it can give the answer a CSMS would (else the CSMS must).
            let answer = Self.localAnswer(action, session)
            guard let schema = PayloadSchema.ocpp201(action, response: true), schema.validate(answer) == nil else { return .forward }
            return .answer(answer)
        }
    }

    /// Each item to its topic, and to the CSMS or not, by the `components` rules. A frame left whole
    /// goes on byte for byte; a frame with items removed goes on with the rest; a frame with nothing
    /// left is answered by the gateway, except a report's last page (tbc false), which reaches the CSMS
    /// without items so its report ends. A NotifyEvent cannot go without items (eventData has at least
    /// one), so when the CSMS has seen earlier pages of its sequence (tbc true) the last page goes to it
    /// whole: the CSMS's sequence always ends. Later pages of a sequence are renumbered (seqNo) so the
    /// CSMS sees no gap.
    private func deviceModel(_ action: String, _ envelope: Envelope, _ route: Route, _ session: any SessionContext) -> Verdict {
        let payload = envelope.payload()
        let listKey = switch action {
        case "NotifyEvent": "eventData"
        case "NotifyReport": "reportData"
        default: "monitor"
        }
        let items = payload[listKey]?.arrayValue ?? []
        var kept: [JSONValue] = []
        for item in items {
            let component = item["component"] ?? [:]
            let variable = item["variable"] ?? [:]
            let componentName = component["name"]?.stringValue ?? ""
            let variableName = variable["name"]?.stringValue ?? ""
            let itemRoute = componentRules.value(component: componentName, variable: variableName) ?? route
            if itemRoute.toMQTT { publishItem(action, item, payload, session) }
            if itemRoute.toCSMS { kept.append(item) }
        }

        let seqNo = payload["seqNo"]?.intValue ?? 0
        let tbc = payload["tbc"]?.boolValue ?? false
        let sequence = action + "/" + (payload["requestId"].map(\.jsonText) ?? "")
        let sequences = session[SequencesKey.self, default: Sequences()]
        session[SequencesKey.self] = sequences
        if seqNo == 0 { sequences.skipped(sequence, set: nil) }
        let skipped = sequences.skipped(sequence)
        if kept.isEmpty, action == "NotifyEvent", !tbc, sequences.isOpen(sequence) {
            kept = items  // the last page of a sequence the CSMS has seen begin: it must see it end
        } else if kept.isEmpty, action == "NotifyEvent" || tbc {
            // Nothing for the CSMS: the gateway answers (the response a CSMS gives is empty).
            sequences.skipped(sequence, set: tbc ? skipped + 1 : nil)
            return .answer([:])
        }
        if tbc { sequences.opened(sequence) } else { sequences.skipped(sequence, set: nil) }
        guard kept.count != items.count || skipped > 0 else { return .forward }
        var modified = payload
        modified[listKey] = kept.isEmpty ? nil : .array(kept)
        if skipped > 0 { modified["seqNo"] = .number(Double(max(0, seqNo - skipped))) }
        return .forward(modifiedPayload: modified)
    }

    /// Per sequence (NotifyEvent, or a report by requestId): the pages the gateway answered itself, and
    /// whether the CSMS has been sent a page with tbc true (so it waits for the sequence's end).
    /// At most 16 sequences per session are followed; the oldest is forgotten first.
    final class Sequences {
        private var entries: [(key: String, skipped: Int, open: Bool)] = []

        func skipped(_ key: String) -> Int { entries.first { $0.key == key }?.skipped ?? 0 }

        func isOpen(_ key: String) -> Bool { entries.first { $0.key == key }?.open ?? false }

        /// Sets the pages answered by the gateway; nil ends the sequence.
        func skipped(_ key: String, set value: Int?) {
            let open = isOpen(key)
            entries.removeAll { $0.key == key }
            guard let value, value > 0 else { return }
            append((key, value, open))
        }

        /// The CSMS was sent a page with tbc true.
        func opened(_ key: String) {
            let skipped = skipped(key)
            entries.removeAll { $0.key == key }
            append((key, skipped, true))
        }

        private func append(_ entry: (key: String, skipped: Int, open: Bool)) {
            entries.append(entry)
            if entries.count > 16 { entries.removeFirst(entries.count - 16) }
        }
    }

    enum SequencesKey: SessionStateKey { typealias Value = Sequences }

    /// One MQTT message for one device-model item, on `dm/<Component>[.<instance>]/<evse>/<connector>/<Variable>[.<instance>]`.
    private func publishItem(_ action: String, _ item: JSONValue, _ payload: JSONValue, _ session: any SessionContext) {
        let component = item["component"] ?? [:]
        let variable = item["variable"] ?? [:]
        let componentName = component["name"]?.stringValue ?? ""
        let variableName = variable["name"]?.stringValue ?? ""
        let evse = component["evse"]?["id"]
        let connector = component["evse"]?["connectorId"]
        let topic = "dm/" + [Self.dmLevel(componentName, component["instance"]?.stringValue), Self.numberLevel(evse),
                             Self.numberLevel(connector), Self.dmLevel(variableName, variable["instance"]?.stringValue)].joined(separator: "/")
        let pii = isPII(component: componentName, variable: variableName)
        func value(_ text: JSONValue?) -> JSONValue? {
            guard let text else { return nil }
            guard pii, case .string(let clear) = text else { return text }
            return .string(hash(clear))
        }
        var message: JSONValue = ["action": .string(action), "component": .string(componentName)]
        if let instance = component["instance"] { message["componentInstance"] = instance }
        if let evse { message["evse"] = evse }
        if let connector { message["connector"] = connector }
        message["variable"] = .string(variableName)
        if let instance = variable["instance"] { message["variableInstance"] = instance }
        switch action {
        case "NotifyEvent":
            message["value"] = value(item["actualValue"]) ?? .null
            for key in ["timestamp", "trigger", "eventId", "eventNotificationType", "cause", "techCode", "techInfo", "cleared", "transactionId",
                        "variableMonitoringId"] {
                if let field = item[key] { message[key] = field }
            }
        case "NotifyReport":
            message["requestId"] = payload["requestId"] ?? .null
            message["generatedAt"] = payload["generatedAt"] ?? .null
            message["attributes"] = .array((item["variableAttribute"]?.arrayValue ?? []).map { attribute in
                var attribute = attribute
                if let text = attribute["value"] { attribute["value"] = value(text) }
                return attribute
            })
            if let characteristics = item["variableCharacteristics"] { message["characteristics"] = characteristics }
        default:
            message["requestId"] = payload["requestId"] ?? .null
            message["generatedAt"] = payload["generatedAt"] ?? .null
            message["monitors"] = item["variableMonitoring"] ?? .array([])
        }
        publish(session, topic, retain: false, series: true, strip201(message, action: action))
    }

    /// Samples go where their measurand's route says (as for 1.6); the CSMS gets the frame byte for
    /// byte when it keeps every sample, else the frame with its samples, or nothing (the gateway answers).
    private func meterValues201(_ envelope: Envelope, _ session: any SessionContext) -> Verdict {
        var payload = envelope.payload()
        var removed = false
        var kept: [JSONValue] = []
        for meterValue in payload["meterValue"]?.arrayValue ?? [] {
            var samples: [JSONValue] = []
            for sample in meterValue["sampledValue"]?.arrayValue ?? [] {
                let measurand = sample["measurand"]?.stringValue ?? "Energy.Active.Import.Register"
                let route = self.route(measurand: measurand, phase: sample["phase"]?.stringValue)
                if route.toMQTT { publishSample201(sample, timestamp: meterValue["timestamp"], session, evse: payload["evseId"], connector: nil,
                                                   transaction: nil) }
                if route.toCSMS { samples.append(sample) } else { removed = true }
            }
            if !samples.isEmpty {
                var entry = meterValue
                entry["sampledValue"] = .array(samples)
                kept.append(entry)
            }
        }
        guard removed else { return .forward }
        guard !kept.isEmpty else { return .answer([:]) }
        payload["meterValue"] = .array(kept)
        return .forward(modifiedPayload: payload)
    }

    private func publishSamples201(_ meterValues: JSONValue?, _ session: any SessionContext, evse: JSONValue?, connector: JSONValue?,
                                   transaction: JSONValue?) {
        for meterValue in meterValues?.arrayValue ?? [] {
            for sample in meterValue["sampledValue"]?.arrayValue ?? [] {
                publishSample201(sample, timestamp: meterValue["timestamp"], session, evse: evse, connector: connector, transaction: transaction)
            }
        }
    }

    /// A 2.0.1 sample on the 1.6 telemetry topic of its measurand (and phase); its value is the
    /// charger's JSON number as spelled. A signed meter value is flagged, never copied: OCMF data can
    /// carry the driver's token.
    private func publishSample201(_ sample: JSONValue, timestamp: JSONValue?, _ session: any SessionContext, evse: JSONValue?,
                                  connector: JSONValue?, transaction: JSONValue?) {
        let measurand = sample["measurand"]?.stringValue ?? "Energy.Active.Import.Register"
        let phase = sample["phase"]?.stringValue
        var message: JSONValue = ["evse": evse ?? .null]
        if let connector { message["connector"] = connector }
        message["timestamp"] = timestamp ?? .null
        message["measurand"] = .string(measurand)
        message["value"] = sample["value"] ?? .null
        for key in ["phase", "context", "location"] { if let value = sample[key] { message[key] = value } }
        let unit = sample["unitOfMeasure"]?["unit"]?.stringValue
        let multiplier = sample["unitOfMeasure"]?["multiplier"]?.intValue ?? 0
        if let unit { message["unit"] = .string(unit) }
        if multiplier != 0 { message["multiplier"] = .number(Double(multiplier)) }
        if sample["signedMeterValue"] != nil { message["signed"] = true }
        if let transaction { message["transaction"] = transaction }
        let scale = Self.unitScale(unit) * pow(10, Double(max(-12, min(12, multiplier))))
        publishTelemetry(session, measurand: measurand, phase: phase, message: message, scale: scale)
    }
}
