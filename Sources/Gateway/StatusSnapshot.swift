import Foundation

/// What the admin status page shows, and `/api/status` returns as JSON (snake_case keys):
/// the chargers, the pipeline with its counters, recent security events, dashcam captures and
/// the health channel. Every string that came from a peer is already bounded in length here;
/// the HTML page escapes it. Nothing secret is in it: no keys, passwords or hashes.
public struct StatusSnapshot: Codable, Sendable, Equatable {
    public var generatedAt: String
    public var gateway: GatewayStatus
    public var chargers: [ChargerStatus]
    public var pipeline: PipelineStatus
    public var securityEvents: [SecurityEventEntry]
    public var captures: [CaptureEntry]
    public var healthChannel: HealthChannelStatus?

    enum CodingKeys: String, CodingKey {
        case generatedAt = "generated_at", gateway, chargers, pipeline
        case securityEvents = "security_events", captures, healthChannel = "health_channel"
    }

    public init(generatedAt: String, gateway: GatewayStatus, chargers: [ChargerStatus], pipeline: PipelineStatus,
                securityEvents: [SecurityEventEntry], captures: [CaptureEntry], healthChannel: HealthChannelStatus?) {
        self.generatedAt = generatedAt
        self.gateway = gateway
        self.chargers = chargers
        self.pipeline = pipeline
        self.securityEvents = securityEvents
        self.captures = captures
        self.healthChannel = healthChannel
    }

    /// Encoded for `/api/status` (sorted keys, so the output is stable).
    public func json() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return Array((try? encoder.encode(self)) ?? Data("{}".utf8)) + [UInt8(ascii: "\n")]
    }
}

public struct GatewayStatus: Codable, Sendable, Equatable {
    /// Listening, pipeline loaded, not draining (`/readyz`).
    public var ready: Bool
    /// What `/healthz` says (`ok` or `degraded`), and its checks by name.
    public var health: String
    public var checks: [String: HealthCheck]
    public var south: String
    public var north: String
    public var sessions: Int

    public struct HealthCheck: Codable, Sendable, Equatable {
        public var ok: Bool
        public var detail: String
        public init(ok: Bool, detail: String) {
            self.ok = ok
            self.detail = detail
        }
    }

    public init(ready: Bool, health: String, checks: [String: HealthCheck], south: String, north: String, sessions: Int) {
        self.ready = ready
        self.health = health
        self.checks = checks
        self.south = south
        self.north = north
        self.sessions = sessions
    }
}

/// One connected charger, collected on its session's event loop.
public struct ChargerStatus: Codable, Sendable, Equatable {
    public var id: String
    public var connectedSince: String
    public var remoteAddress: String
    /// The south security profile in force (0: none, 1: HTTP Basic auth).
    public var southSecurityProfile: Int
    /// 2 (TLS + Basic auth) or 3 (mutual TLS) on the current north link.
    public var northSecurityProfile: Int
    /// `up`, `reconnecting` (buffer mode, CSMS away) or `down`.
    public var northLink: String
    public var lastFromCharger: FrameSummary?
    public var lastFromCSMS: FrameSummary?
    /// From the `certs` stage (`certificate_expiry`), when it has a certificate for the charger.
    public var certificateExpiry: String?
    /// From the `smart_charging` stage (`current_limit`).
    public var currentLimit: String?
    /// CALLs waiting for their turn (not in flight), each way.
    public var queuedTowardsCharger: Int
    public var queuedTowardsCSMS: Int
    /// CALLs in flight or waiting, both ways.
    public var callsPending: Int
    /// Every stage's `Stage.status(in:)` fields, by stage id.
    public var stages: [String: [String: String]]

    enum CodingKeys: String, CodingKey {
        case id, connectedSince = "connected_since", remoteAddress = "remote_address"
        case southSecurityProfile = "south_security_profile"
        case northSecurityProfile = "north_security_profile", northLink = "north_link"
        case lastFromCharger = "last_from_charger", lastFromCSMS = "last_from_csms"
        case certificateExpiry = "certificate_expiry", currentLimit = "current_limit"
        case queuedTowardsCharger = "queued_towards_charger", queuedTowardsCSMS = "queued_towards_csms"
        case callsPending = "calls_pending", stages
    }

    public init(id: String, connectedSince: String, remoteAddress: String, southSecurityProfile: Int,
                northSecurityProfile: Int, northLink: String, lastFromCharger: FrameSummary? = nil, lastFromCSMS: FrameSummary? = nil,
                certificateExpiry: String? = nil, currentLimit: String? = nil, queuedTowardsCharger: Int = 0,
                queuedTowardsCSMS: Int = 0, callsPending: Int = 0, stages: [String: [String: String]] = [:]) {
        self.id = id
        self.connectedSince = connectedSince
        self.remoteAddress = remoteAddress
        self.southSecurityProfile = southSecurityProfile
        self.northSecurityProfile = northSecurityProfile
        self.northLink = northLink
        self.lastFromCharger = lastFromCharger
        self.lastFromCSMS = lastFromCSMS
        self.certificateExpiry = certificateExpiry
        self.currentLimit = currentLimit
        self.queuedTowardsCharger = queuedTowardsCharger
        self.queuedTowardsCSMS = queuedTowardsCSMS
        self.callsPending = callsPending
        self.stages = stages
    }
}

/// The last frame received from one side: when, and what (`BootNotification`, `CALLRESULT`, …).
public struct FrameSummary: Codable, Sendable, Equatable {
    public var at: String
    public var message: String

    public init(at: String, message: String) {
        self.at = at
        self.message = message
    }
}

public struct PipelineStatus: Codable, Sendable, Equatable {
    public var file: String
    public var stages: [StageStatus]

    public init(file: String, stages: [StageStatus]) {
        self.file = file
        self.stages = stages
    }
}

/// A stage in service and what it decided since the gateway started.
public struct StageStatus: Codable, Sendable, Equatable {
    public var id: String
    public var type: String
    public var frames: Int
    /// By `Verdict.label`: forward, modify, drop, answer, error, held.
    public var verdicts: [String: Int]

    public init(id: String, type: String, frames: Int, verdicts: [String: Int]) {
        self.id = id
        self.type = type
        self.frames = frames
        self.verdicts = verdicts
    }
}

/// A `SecurityEventNotification` that went to the CSMS (raised by the gateway's stages or relayed from the charger).
public struct SecurityEventEntry: Codable, Sendable, Equatable {
    public var at: String
    public var charger: String
    public var type: String
    public var techInfo: String?

    enum CodingKeys: String, CodingKey { case at, charger, type, techInfo = "tech_info" }

    public init(at: String, charger: String, type: String, techInfo: String?) {
        self.at = at
        self.charger = charger
        self.type = type
        self.techInfo = techInfo
    }
}

/// A dashcam capture on disk (`<state_dir>/dashcam/<folder>/<file>`), downloadable at `path`.
public struct CaptureEntry: Codable, Sendable, Equatable {
    public var charger: String
    public var at: String
    public var trigger: String
    public var frames: Int?
    public var bytes: Int
    /// `/captures/<folder>/<file>`, percent-encoded.
    public var path: String

    public init(charger: String, at: String, trigger: String, frames: Int?, bytes: Int, path: String) {
        self.charger = charger
        self.at = at
        self.trigger = trigger
        self.frames = frames
        self.bytes = bytes
        self.path = path
    }
}

public struct HealthChannelStatus: Codable, Sendable, Equatable {
    public var broker: String
    public var connected: Bool
    /// Messages handed to the client and not yet acknowledged.
    public var queued: Int
    public var queueLimit: Int
    public var acknowledged: Int
    public var dropped: Int

    enum CodingKeys: String, CodingKey { case broker, connected, queued, queueLimit = "queue_limit", acknowledged, dropped }

    public init(broker: String, connected: Bool, queued: Int, queueLimit: Int, acknowledged: Int, dropped: Int) {
        self.broker = broker
        self.connected = connected
        self.queued = queued
        self.queueLimit = queueLimit
        self.acknowledged = acknowledged
        self.dropped = dropped
    }
}
