public import Logging
public import OCPP

/// A filter in the gateway's pipeline.
///
/// A stage sees every frame of every charger, in the order the pipeline YAML lists the stages
/// for frames from the charger, and in reverse order for frames from the CSMS (like a
/// SwiftNIO `ChannelPipeline`). `process` runs on the charger's event loop for every frame:
/// it must return quickly and never block. Hand slow work (disk, key generation, network) to
/// a task and come back with `SessionContext.sendCall`.
///
/// A stage instance is shared by all chargers: keep per-charger state in the session
/// (`session[MyKey.self]`), and shared state behind a lock.
public protocol Stage: Sendable {
    /// The stage's typed configuration, decoded from the `config:` mapping of the pipeline YAML.
    /// YAML keys are snake_case (`frames_per_second` fills `framesPerSecond`); unknown keys are rejected.
    associatedtype Configuration: Decodable & Sendable = NoConfiguration

    /// The name operators write after `type:` in the pipeline YAML.
    static var type: String { get }
    /// One line for `ocpp-gateway stages`.
    static var summary: String { get }

    /// Builds the stage; throwing here makes `validate` and reload fail with the stage's position.
    init(configuration: Configuration, context: StageSetupContext) throws

    /// Decides what happens to one frame.
    func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict

    /// A charger asks to connect: accept it (and say what to present north), reject it, or pass.
    /// The first stage with an opinion decides; if none has one, the charger is refused.
    func chargerConnecting(_ request: ChargerConnectRequest) async -> ConnectDecision

    /// A charger's upgrade was refused (by any stage); the firewall counts failed logins here.
    func chargerRefused(_ request: ChargerConnectRequest, status: Int)

    /// Once a charger is accepted, every stage in turn may adjust what is presented north
    /// (the certificate stage swaps in the charger's current identity and security profile).
    func amendNorthCredentials(_ credentials: NorthCredentials, for chargerId: String) -> NorthCredentials

    /// A north connection for a charger could not be made (the charger was refused with 502).
    func northConnectionFailed(chargerId: String, failure: NorthFailure)

    /// The charger's session has started (both links are up).
    func sessionStarted(_ session: any SessionContext)
    /// Something went wrong in this session that no frame shows: a CALL timed out, the firewall
    /// refused something. The dashcam records around it.
    func incidentReported(_ description: String, in session: any SessionContext)

    /// The session is over; gateway calls still pending have already been answered `.connectionClosed`.
    func sessionEnded(_ session: any SessionContext)

    /// `north.offline_mode: buffer`: the CSMS link went down (`up == false`) or came back while the
    /// charger stayed connected. On the way down, the charger's CALLs that were at the CSMS or waiting
    /// for it are handed over in `orphaned` (oldest first). Return the message ids of those you take
    /// over (you answer them, e.g. the outbox as the offline rules say); the router answers every other
    /// one with a `GenericError` CALLERROR once each stage has been told. While the link is down the
    /// router answers a charger CALL that all stages forward with that CALLERROR too, and holds the
    /// gateway's own CALLs to the CSMS until the link is back.
    func northLinkChanged(up: Bool, orphaned: [Envelope], in session: any SessionContext) -> Set<String>

    /// The stage is leaving service (reload with a changed config, or shutdown). Flush and release.
    func shutdown() async

    /// A few stage-specific facts about this charger for the admin status page (`/`, `/api/status`),
    /// e.g. `["certificate_expiry": "2027-01-01T00:00:00Z"]`. Runs on the session's event loop, as this
    /// stage (its per-charger state), once per page request: keep it cheap (memory, or at most one small
    /// file of `StageStore`) and never block. Values are shown
    /// HTML-escaped; never return keys, passwords or other secrets. Default: nothing.
    func status(in session: any SessionContext) -> [String: String]
}

extension Stage {
    public func chargerConnecting(_ request: ChargerConnectRequest) async -> ConnectDecision { .noOpinion }
    public func amendNorthCredentials(_ credentials: NorthCredentials, for chargerId: String) -> NorthCredentials { credentials }
    public func chargerRefused(_ request: ChargerConnectRequest, status: Int) {}
    public func northConnectionFailed(chargerId: String, failure: NorthFailure) {}
    public func sessionStarted(_ session: any SessionContext) {}
    public func sessionEnded(_ session: any SessionContext) {}
    public func northLinkChanged(up: Bool, orphaned: [Envelope], in session: any SessionContext) -> Set<String> { [] }
    public func incidentReported(_ description: String, in session: any SessionContext) {}
    public func shutdown() async {}
    public func status(in session: any SessionContext) -> [String: String] { [:] }
}

/// The configuration of a stage that takes none: any key under `config:` is an error.
public struct NoConfiguration: Decodable, Sendable, Equatable {
    public init() {}

    /// Asks for a (keyless) mapping, so that any key an operator wrote is reported as unknown.
    public init(from decoder: any Decoder) throws {
        _ = try decoder.container(keyedBy: NoKeys.self)
    }

    private enum NoKeys: CodingKey {}
}

/// What a stage may know about the gateway when it is built.
public struct StageSetupContext: Sendable {
    /// The stage's `id` in the pipeline file.
    public var stageId: String
    /// The health channel (MQTT), when `gateway.yaml` configures one.
    public var publisher: (any MessagePublisher)?
    public var logger: Logger
    /// The gateway's `state_dir`, absolute.
    public var stateDirectory: String
    public var south: SouthSettings
    public var north: NorthSettings
    /// Per-charger state on disk (`<state_dir>/chargers/<id>/…`), shared by every stage of the gateway.
    public var store: StageStore

    public init(stageId: String, logger: Logger, stateDirectory: String, south: SouthSettings, north: NorthSettings,
                publisher: (any MessagePublisher)? = nil, store: StageStore? = nil) {
        self.stageId = stageId
        self.publisher = publisher
        self.logger = logger
        self.stateDirectory = stateDirectory
        self.south = south
        self.north = north
        self.store = store ?? StageStore(stateDirectory: stateDirectory, logger: logger)
    }
}

/// The charger-facing settings of `gateway.yaml` that stages may rely on.
public struct SouthSettings: Sendable {
    /// 0 (no authentication) or 1 (HTTP Basic auth).
    public var securityProfile: Int
    /// The allow-list, keyed by charge point id.
    public var chargers: [String: ChargerCredentials]

    public init(securityProfile: Int, chargers: [String: ChargerCredentials]) {
        self.securityProfile = securityProfile
        self.chargers = chargers
    }
}

/// One entry of `south.chargers`.
public struct ChargerCredentials: Sendable, Equatable {
    /// A plain password (discouraged: the gateway warns at start).
    public var password: String?
    /// A `hash-password` hash of the password.
    public var passwordHash: String?
    /// The password presented north with Security Profile 2; defaults to the charger's own.
    public var northPassword: String?

    public init(password: String? = nil, passwordHash: String? = nil, northPassword: String? = nil) {
        self.password = password
        self.passwordHash = passwordHash
        self.northPassword = northPassword
    }
}

/// The CSMS-facing settings of `gateway.yaml` that stages may rely on.
public struct NorthSettings: Sendable {
    /// 2 (TLS + Basic auth) or 3 (mutual TLS); 0/1 only with `allow_insecure`.
    public var securityProfile: Int
    /// The operator's CA file for the CSMS certificate (`north.ca_file`), absolute; nil = system roots.
    public var caFile: String?
    public init(securityProfile: Int, caFile: String? = nil) {
        self.securityProfile = securityProfile
        self.caFile = caFile
    }
}

/// Why a north connection failed, as far as the Security Whitepaper's events care.
public struct NorthFailure: Sendable, Equatable {
    public enum Kind: Sendable, Equatable {
        /// The CSMS certificate did not verify (chain, name or validity): InvalidCentralSystemCertificate.
        case untrustedCentralSystemCertificate
        /// The CSMS offered only an older TLS version: InvalidTLSVersion.
        case tlsVersion
        /// Anything else (refused, unreachable, timed out).
        case other
    }
    public var kind: Kind
    public var detail: String

    public init(kind: Kind, detail: String) {
        self.kind = kind
        self.detail = detail
    }
}

/// Publishes messages on the health channel. `publish` must not block: it hands the message over
/// (or refuses it, counted, when the channel's queue is full) and returns.
public protocol MessagePublisher: Sendable {
    /// The topic prefix and gateway name every topic starts with: `<prefix>/<gateway>`.
    var topicRoot: String { get }
    @discardableResult
    func publish(topic: String, payload: [UInt8], retain: Bool) -> Bool
}
