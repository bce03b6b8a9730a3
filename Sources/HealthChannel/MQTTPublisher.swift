import CMosquitto
import Foundation
public import Logging
import Metrics
public import StageKit
import Synchronization

/// Where the health channel goes: `gateway.yaml`'s `mqtt:` section, resolved.
public struct MQTTSettings: Sendable {
    public var host: String
    public var port: Int
    public var clientId: String
    public var topicPrefix: String
    public var qos: Int
    /// Messages handed to libmosquitto and not yet acknowledged; beyond it new ones are dropped (and counted).
    public var queueLimit: Int
    public var username: String?
    public var password: String?
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?
    /// 4 (MQTT 3.1.1) or 5.
    public var protocolVersion: Int = 4

    public init(host: String, port: Int, clientId: String, topicPrefix: String, qos: Int = 1, queueLimit: Int = 10_000,
                username: String? = nil, password: String? = nil, caFile: String? = nil, certificateFile: String? = nil,
                keyFile: String? = nil) {
        self.host = host
        self.port = port
        self.clientId = clientId
        self.topicPrefix = topicPrefix
        self.qos = qos
        self.queueLimit = queueLimit
        self.username = username
        self.password = password
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }

    /// `<prefix>/<client id>`: the root of every topic this gateway publishes.
    public var topicRoot: String { "\(topicPrefix)/\(clientId)" }
    /// "online" while connected, the last will "offline" otherwise (retained).
    public var statusTopic: String { topicRoot + "/status" }
}

/// The gateway's MQTT client on libmosquitto, with the bound libmosquitto lacks.
///
/// libmosquitto queues without limit and reports a message as sent when it is only queued, so the
/// publisher counts what it handed over and what the broker acknowledged (PUBACK, `on_publish`),
/// refuses beyond `queueLimit` and counts those drops. libmosquitto's own thread does the network
/// I/O and reconnects with back-off; `publish` only copies the message into its queue, so it never
/// blocks an event loop for long.
public final class MQTTPublisher: MessagePublisher, @unchecked Sendable {
    // @unchecked: `handle` is used through libmosquitto's thread-safe API only; all Swift state is in Mutexes.
    private let handle: OpaquePointer
    public let settings: MQTTSettings
    private let state: Mutex<State>
    private let logger: Logger
    private let published = Counter(label: "ocpp_gateway_mqtt_messages_total", dimensions: [("result", "acknowledged")])
    private let dropped = Counter(label: "ocpp_gateway_mqtt_messages_total", dimensions: [("result", "dropped")])
    /// Messages handed to libmosquitto and not yet acknowledged by the broker (at most `queue_limit`).
    private let depth = Gauge(label: "ocpp_gateway_mqtt_queue_depth")
    private var context: Unmanaged<MQTTPublisher>?

    struct State {
        var queue: MQTTQueueAccounting
        var connected = false
    }

    public init(settings: MQTTSettings, logger: Logger) throws {
        mosquitto_lib_init()
        guard let handle = mosquitto_new(settings.clientId, true, nil) else { throw MQTTError("cannot create an MQTT client") }
        self.handle = handle
        self.settings = settings
        topicRoot = settings.topicRoot
        state = Mutex(State(queue: MQTTQueueAccounting(limit: settings.queueLimit, tracksAcknowledgements: settings.qos > 0)))
        self.logger = logger
        let box = Unmanaged.passUnretained(self)
        context = box
        mosquitto_user_data_set(handle, box.toOpaque())
        mosquitto_int_option(handle, MOSQ_OPT_PROTOCOL_VERSION, Int32(settings.protocolVersion == 5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311))
        mosquitto_reconnect_delay_set(handle, 1, 10, true)
        mosquitto_max_inflight_messages_set(handle, 100)
        if let username = settings.username { try check(mosquitto_username_pw_set(handle, username, settings.password), "credentials") }
        if settings.caFile != nil || settings.certificateFile != nil {
            try check(mosquitto_tls_set(handle, settings.caFile, nil, settings.certificateFile, settings.keyFile, nil), "TLS")
        }
        try check(mosquitto_will_set(handle, settings.statusTopic, 7, "offline", 1, true), "last will")
        mosquitto_connect_callback_set(handle) { handle, userdata, code in
            guard let userdata else { return }
            Unmanaged<MQTTPublisher>.fromOpaque(userdata).takeUnretainedValue().connected(code)
        }
        mosquitto_disconnect_callback_set(handle) { _, userdata, code in
            guard let userdata else { return }
            Unmanaged<MQTTPublisher>.fromOpaque(userdata).takeUnretainedValue().disconnected(code)
        }
        mosquitto_publish_callback_set(handle) { _, userdata, mid in
            guard let userdata else { return }
            Unmanaged<MQTTPublisher>.fromOpaque(userdata).takeUnretainedValue().acknowledged(mid)
        }
    }

    private func check(_ code: Int32, _ what: String) throws {
        guard code == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError("MQTT \(what): \(String(cString: mosquitto_strerror(code)))") }
    }

    /// Connects in the background; libmosquitto keeps reconnecting while the broker is away.
    public func start() throws {
        try check(mosquitto_connect_async(handle, settings.host, Int32(settings.port), 30), "connect to \(settings.host):\(settings.port)")
        try check(mosquitto_loop_start(handle), "network thread")
    }

    /// Whether the broker connection is up (for `/healthz`).
    public var isConnected: Bool { state.withLock { $0.connected } }

    private func connected(_ code: Int32) {
        guard code == 0 else {
            logger.warning("MQTT broker refused the connection", metadata: ["code": "\(code)"])
            return
        }
        state.withLock { $0.connected = true }
        logger.info("MQTT connected", metadata: ["broker": "\(settings.host):\(settings.port)"])
        _ = publish(topic: settings.statusTopic, payload: Array("online".utf8), retain: true)
    }

    private func disconnected(_ code: Int32) {
        state.withLock { $0.connected = false }
        if code != 0 { logger.warning("MQTT connection lost; reconnecting", metadata: ["code": "\(code)"]) }
    }

    private func acknowledged(_ mid: Int32) {
        let (settled, waiting) = state.withLock { ($0.queue.acknowledge(mid: mid), $0.queue.awaitingAcknowledgement) }
        if settled { published.increment() }
        depth.record(waiting)
    }

    /// Hands a message to libmosquitto; false (and counted) when the bound is reached.
    @discardableResult
    public func publish(topic: String, payload: [UInt8], retain: Bool) -> Bool {
        // Reserve a place before publishing, so the bound holds even when publishers and callbacks race.
        guard state.withLock({ $0.queue.reserve() }) else {
            dropped.increment()
            return false
        }
        var mid: Int32 = 0
        let code = payload.withUnsafeBytes { bytes in
            mosquitto_publish(handle, &mid, topic, Int32(bytes.count), bytes.baseAddress, Int32(settings.qos), retain)
        }
        guard code == MOSQ_ERR_SUCCESS.rawValue else {
            state.withLock { $0.queue.cancel() }
            dropped.increment()
            return false
        }
        // The PUBACK may already have come (network thread): the accounting settles it here then.
        // QoS 0 is never acknowledged: it leaves no place taken.
        let (acknowledgedEarly, waiting) = state.withLock { state -> (Bool, Int) in
            let before = state.queue.acknowledged
            state.queue.commit(mid: mid)
            return (state.queue.acknowledged > before, state.queue.awaitingAcknowledgement)
        }
        if acknowledgedEarly { published.increment() }
        depth.record(waiting)
        return true
    }

    /// Made once: every message's topic starts with it.
    public let topicRoot: String

    public var statistics: (inFlight: Int, acknowledged: Int, dropped: Int, connected: Bool) {
        state.withLock { ($0.queue.awaitingAcknowledgement, $0.queue.acknowledged, $0.queue.dropped, $0.connected) }
    }

    /// The most messages ever held at once (never above `queueLimit`).
    package var peakQueued: Int { state.withLock { $0.queue.peak } }

    /// Waits (up to `timeout`) for the broker to acknowledge what is queued, then says goodbye.
    public func shutdown(timeout: Duration = .seconds(5)) async {
        let deadline = ContinuousClock.now + timeout
        while statistics.inFlight > 0, statistics.connected, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        _ = publish(topic: settings.statusTopic, payload: Array("offline".utf8), retain: true)
        try? await Task.sleep(for: .milliseconds(100))
        mosquitto_disconnect(handle)
        mosquitto_loop_stop(handle, false)
        mosquitto_destroy(handle)
    }
}

public struct MQTTError: Error, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
