public import Foundation
public import StageKit
public import OCPP
import Yams

/// `gateway.yaml`: where the gateway listens, which CSMS it talks to, and with what.
/// The top-level keys are a stable interface; see docs/configuration.md.
public struct GatewayConfiguration: Decodable, Sendable {
    public var south: South
    public var north: North
    public var stateDir: Located<String>?
    public var pipeline: Located<String>
    public var admin: Admin?
    public var mqtt: MQTT?

    public struct South: Decodable, Sendable {
        /// `host:port` for chargers' `ws://` connections.
        public var listen: Located<String>
        /// URL path prefix; chargers connect to `<path>/<chargeId>`.
        public var path: String?
        /// 0 (no auth; only when set explicitly) or 1 (HTTP Basic auth).
        public var securityProfile: Located<Int>
        public var chargers: [String: Charger]?
        /// Largest frame accepted from a charger, in bytes.
        public var maxFrameBytes: FrameSize?
        /// Seconds to wait for the charger's answer to a CALL before giving up on it.
        public var callTimeout: Positive<Double>?
        /// CALLs waiting for their turn towards the charger before new ones are refused.
        public var maxQueuedCalls: Positive<Int>?
        /// Seconds between WebSocket pings to the charger (0 turns them off).
        public var pingInterval: NonNegative<Double>?
        /// Open connections (and upgrades in progress) allowed from one source address.
        public var maxConnectionsPerSource: Positive<Int>?
        /// Seconds SIGTERM waits for CALLs in flight (both ways) before closing a charger's session.
        public var drainTimeout: Positive<Double>?
        /// Seconds from accept until a complete upgrade request; slower connections are closed.
        public var handshakeTimeout: Positive<Double>?
        /// Connections accepted and not yet upgraded, from all sources together.
        public var maxPendingConnections: Positive<Int>?
        /// Bytes queued for one charger that does not read; see `OutboundLimits`.
        public var maxOutboundBytes: OutboundBytes?
        /// Seconds a charger may leave its queue full before it is disconnected.
        public var writeTimeout: Positive<Double>?
        /// Messages a charger may send per second, past `message_burst` (0: no budget); see `InboundBudget`.
        public var maxMessagesPerSecond: NonNegative<Double>?
        public var messageBurst: Positive<Double>?
        /// A second listener for chargers over `wss://` (Security Profile 2 or 3); see `SouthTLS`.
        public var tls: SouthTLS?
    }

    public struct Charger: Decodable, Sendable, Equatable {
        public var password: String?
        public var passwordHash: String?
        public var northPassword: String?
        /// Overrides `north.offline_mode` for this charger.
        public var offlineMode: OfflineMode?
        /// Overrides `north.ocpp_version` for this charger.
        public var northOcppVersion: NorthOCPPVersion?
        /// The charger's own security profile south (0–3): 0/1 only on the plain listener, 2/3 only on the TLS one.
        public var securityProfile: Located<Int>?
        /// The OCPP versions this charger may negotiate (`"1.6"`, `"2.0.1"`); default both.
        public var ocppVersions: Located<[String]>?
    }

    /// `south.tls`: the `wss://` listener for chargers that speak TLS themselves (OCPP 2.0.1 stations,
    /// newer 1.6 firmware). Security Profile 2 (TLS + Basic auth) or 3 (client certificate from
    /// `client_ca_file`, CN = charge point id).
    public struct SouthTLS: Decodable, Sendable {
        /// `host:port` of the TLS listener (the plain `south.listen` stays for legacy chargers).
        public var listen: Located<String>
        public var certFile: Located<String>
        public var keyFile: Located<String>
        /// The CA(s) that issue chargers' client certificates; required for Security Profile 3.
        public var clientCaFile: Located<String>?
        /// The profile of chargers on this listener without their own `security_profile`: 2 or 3 (default 3).
        public var securityProfile: Located<Int>?
    }

    /// The OCPP version spoken towards the CSMS (`north.ocpp_version`); the charger side is always 1.6J.
    public enum NorthOCPPVersion: String, Decodable, Sendable, Equatable {
        /// Frames are relayed as they are.
        case v16 = "1.6"
        /// The charger appears as an OCPP 2.0.1 charging station, translated at the session's north edge (docs/ocpp201.md).
        case v201 = "2.0.1"
    }

    /// IdTokenEnumType values of OCPP 2.0.1 (`north.id_token_type`).
    public static let idTokenTypes = ["Central", "eMAID", "ISO14443", "ISO15693", "KeyCode", "Local", "MacAddress", "NoAuthorization"]

    /// What happens to a charger while its CSMS link is down.
    public enum OfflineMode: String, Decodable, Sendable, Equatable {
        /// Close the charger's link too (OCPP 2.0.1 part 4 §6.3); its own offline queue takes over.
        case mirror
        /// Keep the charger connected; the `outbox` stage answers and queues durably, and replays.
        case buffer
    }

    public struct North: Decodable, Sendable {
        /// `wss://host:port/path`; the charger's id is appended.
        public var url: Located<String>
        /// 2 (TLS + Basic auth) or 3 (mutual TLS).
        public var securityProfile: Located<Int>
        public var caFile: Located<String>?
        /// The name to verify in the CSMS certificate, when it differs from the URL's host.
        public var serverName: String?
        /// Allows `ws://` north (no TLS). For development against a local CSMS only.
        public var allowInsecure: Bool?
        public var connectTimeout: Positive<Double>?
        public var callTimeout: Positive<Double>?
        public var maxQueuedCalls: Positive<Int>?
        public var pingInterval: NonNegative<Double>?
        public var maxFrameBytes: FrameSize?
        public var reconnect: Reconnect?
        /// `mirror` (default) or `buffer`.
        public var offlineMode: OfflineMode?
        /// Bytes queued for a CSMS link that does not read.
        public var maxOutboundBytes: OutboundBytes?
        /// Seconds a CSMS link may leave its queue full before it is closed.
        public var writeTimeout: Positive<Double>?
        /// Accept a CSMS certificate that names its host only in the common name (no SAN).
        public var allowCommonName: Bool?
        /// `"1.6"` (default) or `"2.0.1"`.
        public var ocppVersion: NorthOCPPVersion?
        /// With 2.0.1: the IdTokenEnumType given to the charger's idTags (default ISO14443).
        public var idTokenType: Located<String>?
    }

    public struct Reconnect: Decodable, Sendable {
        public var initialDelay: Positive<Double>?
        public var maxDelay: Positive<Double>?
    }

    public struct Admin: Decodable, Sendable {
        public var listen: Located<String>
        /// A bearer token (`Authorization: Bearer …`) for admin clients beyond loopback; ≥ 16 characters.
        public var token: Located<String>?
        /// HTTP Basic auth for admin clients beyond loopback, with a `hash-password` hash.
        public var basicAuth: Located<AdminBasicAuth>?
    }

    public struct AdminBasicAuth: Decodable, Sendable {
        public var username: String
        /// `ocpp-gateway hash-password` output (`pbkdf2-sha256$…`), never the password itself.
        public var passwordHash: Located<String>
    }

    /// The O&M broker, for the MQTT tap (health channel).
    public struct MQTT: Decodable, Sendable {
        /// `mqtt://host[:1883]` or `mqtts://host[:8883]`.
        public var url: String
        public var clientId: String?
        public var topicPrefix: String?
        public var qos: Int?
        public var queueLimit: Int?
        public var username: String?
        public var password: String?
        public var tls: MQTTTLS?
        /// "3.1.1" (default) or "5".
        public var version: String?
    }

    public struct MQTTTLS: Decodable, Sendable {
        public var caFile: String?
        public var certFile: String?
        public var keyFile: String?
    }
}

/// A `gateway.yaml` read, checked and resolved: absolute paths, defaults filled in.
public struct ResolvedGatewayConfiguration: Sendable {
    public var file: String
    public var southHost: String
    public var southPort: Int
    public var southPath: String
    public var southSecurityProfile: Int
    public var chargers: [String: ChargerCredentials]
    public var southMaxFrameBytes: Int
    public var southCallTimeout: Duration
    public var southMaxQueuedCalls: Int
    public var southPingInterval: Duration?
    public var southMaxConnectionsPerSource: Int
    /// How long SIGTERM waits for a session's CALLs in flight before closing it (`south.drain_timeout`).
    public var drainTimeout: Duration
    public var southHandshakeTimeout: Duration = .seconds(10)
    public var southMaxPendingConnections: Int = 256
    public var southMaxOutboundBytes: Int = 1 << 20
    public var southWriteTimeout: Duration = .seconds(30)
    /// `south.max_messages_per_second` (0: no budget) and `south.message_burst`.
    public var southMessagesPerSecond: Double = 100
    public var southMessageBurst: Double = 200

    public var northURL: URL
    public var northSecurityProfile: Int
    public var northCAFile: String?
    public var northServerName: String?
    public var northConnectTimeout: Duration
    public var northCallTimeout: Duration
    public var northMaxQueuedCalls: Int
    public var northPingInterval: Duration?
    public var northMaxFrameBytes: Int
    public var reconnectInitialDelay: Duration
    public var reconnectMaxDelay: Duration
    /// `north.offline_mode`, and the chargers that override it.
    public var offlineMode: GatewayConfiguration.OfflineMode
    public var chargerOfflineModes: [String: GatewayConfiguration.OfflineMode]
    public var northMaxOutboundBytes: Int = 1 << 20
    public var northWriteTimeout: Duration = .seconds(30)
    public var northAllowCommonName = false
    /// `north.ocpp_version`, and the chargers that override it.
    public var northOCPPVersion: GatewayConfiguration.NorthOCPPVersion = .v16
    public var chargerNorthVersions: [String: GatewayConfiguration.NorthOCPPVersion] = [:]
    /// `north.id_token_type` (2.0.1).
    public var northIdTokenType = "ISO14443"
    /// `south.tls`, resolved (nil: no TLS listener).
    public var southTLS: ResolvedSouthTLS?
    /// `south.chargers.<id>.security_profile`, where given.
    public var chargerSecurityProfiles: [String: Int] = [:]
    /// `south.chargers.<id>.ocpp_versions`, where given (in the operator's order).
    public var chargerOCPPVersions: [String: [OCPPVersion]] = [:]

    public var stateDirectory: String
    public var pipelineFile: String
    public var adminHost: String?
    public var adminPort: Int?
    /// Who may see the status page from beyond loopback (`admin.token`, `admin.basic_auth`).
    public var adminCredentials = AdminCredentials()
    public var mqtt: GatewayConfiguration.MQTT?

    /// Problems that are not errors but an operator should see (plain passwords).
    public var warnings: [String]

    /// The OCPP version spoken to the CSMS for a charger.
    public func northOCPPVersion(for chargerId: String) -> GatewayConfiguration.NorthOCPPVersion {
        chargerNorthVersions[chargerId] ?? northOCPPVersion
    }

    /// The offline mode in force for a charger.
    public func offlineMode(for chargerId: String) -> GatewayConfiguration.OfflineMode {
        chargerOfflineModes[chargerId] ?? offlineMode
    }

    public var southSettings: SouthSettings { SouthSettings(securityProfile: southSecurityProfile, chargers: chargers) }
    public var northSettings: NorthSettings { NorthSettings(securityProfile: northSecurityProfile, caFile: northCAFile) }

    /// Reads and checks `gateway.yaml`; every problem is reported as `file:line:col: error: …`.
    public static func load(file: String) throws(ConfigurationError) -> ResolvedGatewayConfiguration {
        let raw = try NodeDecoder(file: file).decode(GatewayConfiguration.self, from: try composeYAML(file: file))
        return try resolve(raw, file: file)
    }

    static func resolve(_ raw: GatewayConfiguration, file: String) throws(ConfigurationError) -> ResolvedGatewayConfiguration {
        var diagnostics: [Diagnostic] = []
        var warnings: [String] = []
        let folder = URL(fileURLWithPath: file).deletingLastPathComponent().path
        func error<V>(_ located: Located<V>?, _ message: String) {
            diagnostics.append(Diagnostic(file: file, mark: located?.mark, message: message))
        }
        func absolute(_ path: String) -> String {
            path.hasPrefix("/") ? path : URL(fileURLWithPath: path, relativeTo: URL(fileURLWithPath: folder + "/")).standardizedFileURL.path
        }
        // Ranges (timeouts > 0, frame sizes ≥ 1024, …) were checked while decoding (`Checked`), with their positions.
        func seconds(_ value: Double?, default fallback: Double) -> Duration {
            .milliseconds(Int64((value ?? fallback) * 1000))
        }
        /// A ping interval; 0 turns pings off.
        func interval(_ value: Double?) -> Duration? {
            (value ?? 30) > 0 ? seconds(value, default: 30) : nil
        }

        let south = raw.south
        let (southHost, southPort) = parseHostPort(south.listen.value) ?? {
            error(south.listen, "'listen' should be host:port, e.g. \"127.0.0.1:9000\"")
            return ("", 0)
        }()
        if !(0...1).contains(south.securityProfile.value) {
            error(south.securityProfile, "south 'security_profile' must be 0 or 1 (the gateway terminates TLS north, not south)")
        }
        var chargers: [String: ChargerCredentials] = [:]
        for (id, entry) in south.chargers ?? [:] {
            if entry.password != nil, entry.passwordHash != nil {
                error(south.securityProfile, "charger '\(id)': give 'password' or 'password_hash', not both")
            }
            let ownProfile = entry.securityProfile?.value ?? south.securityProfile.value
            if (1...2).contains(ownProfile), entry.password == nil, entry.passwordHash == nil {
                error(entry.securityProfile ?? south.securityProfile,
                      "charger '\(id)': security profile \(ownProfile) needs a 'password' or 'password_hash'")
            }
            if entry.password != nil {
                warnings.append("charger '\(id)' has a plain 'password' in \(file); prefer 'password_hash' (ocpp-gateway hash-password)")
            }
            chargers[id] = ChargerCredentials(password: entry.password, passwordHash: entry.passwordHash, northPassword: entry.northPassword)
        }
        var path = south.path ?? "/ocpp"
        if !path.hasPrefix("/") { path = "/" + path }
        while path.count > 1, path.hasSuffix("/") { path.removeLast() }

        let north = raw.north
        var northURL = URL(string: "wss://invalid")!
        if let url = URL(string: north.url.value), let scheme = url.scheme, url.host != nil {
            northURL = url
            if scheme == "ws", north.allowInsecure != true {
                error(north.url, "north 'url' is ws:// (no TLS); use wss://, or set 'allow_insecure: true' for a development CSMS")
            } else if scheme != "ws", scheme != "wss" {
                error(north.url, "north 'url' must start with wss://")
            }
        } else {
            error(north.url, "north 'url' is not a URL, e.g. \"wss://csms.example.com/ocpp\"")
        }
        let insecure = northURL.scheme == "ws"
        if insecure ? !(0...1).contains(north.securityProfile.value) : !(2...3).contains(north.securityProfile.value) {
            error(north.securityProfile, insecure
                ? "north 'security_profile' over ws:// must be 0 or 1"
                : "north 'security_profile' must be 2 (TLS + Basic auth) or 3 (mutual TLS)")
        }
        if let type = north.idTokenType, !GatewayConfiguration.idTokenTypes.contains(type.value) {
            error(type, "north 'id_token_type' must be one of \(GatewayConfiguration.idTokenTypes.joined(separator: ", "))")
        }
        var caFile: String?
        if let ca = north.caFile {
            let path = absolute(ca.value)
            if !FileManager.default.isReadableFile(atPath: path) {
                error(ca, "'ca_file' \(path) does not exist or cannot be read")
            }
            caFile = path
        }

        let stateDirectory = absolute(raw.stateDir?.value ?? "state")
        let pipelineFile = absolute(raw.pipeline.value)
        if !FileManager.default.isReadableFile(atPath: pipelineFile) {
            error(raw.pipeline, "'pipeline' \(pipelineFile) does not exist or cannot be read")
        }

        var adminHost: String?
        var adminPort: Int?
        var adminCredentials = AdminCredentials()
        if let admin = raw.admin {
            if let (host, port) = parseHostPort(admin.listen.value) {
                adminHost = host
                adminPort = port
            } else {
                error(admin.listen, "admin 'listen' should be host:port, e.g. \"127.0.0.1:9100\"")
            }
            if let token = admin.token {
                if token.value.count < 16 || token.value.contains(where: { $0.isWhitespace || !$0.isASCII }) {
                    error(token, "admin 'token' must be at least 16 printable ASCII characters without spaces (e.g. openssl rand -hex 24)")
                }
                adminCredentials.token = token.value
            }
            if let basic = admin.basicAuth {
                if basic.value.username.isEmpty || basic.value.username.contains(":") {
                    error(basic, "admin 'basic_auth' 'username' must be non-empty and contain no ':'")
                }
                if !AdminCredentials.isPasswordHash(basic.value.passwordHash.value) {
                    error(basic.value.passwordHash, "admin 'basic_auth' 'password_hash' is not a hash from 'ocpp-gateway hash-password' (pbkdf2-sha256$…)")
                }
                adminCredentials.basicUsername = basic.value.username
                adminCredentials.basicPasswordHash = basic.value.passwordHash.value
            }
            if let host = adminHost, !AdminCredentials.isLoopback(host: host), !adminCredentials.isConfigured {
                warnings.append("admin 'listen' \(admin.listen.value) is not a loopback address and neither 'token' nor 'basic_auth' is set: "
                    + "clients beyond loopback get only /healthz, /readyz and /metrics, never the status page")
            }
        }

        guard diagnostics.isEmpty else { throw ConfigurationError(diagnostics) }
        var resolved = ResolvedGatewayConfiguration(
            file: file,
            southHost: southHost, southPort: southPort, southPath: path,
            southSecurityProfile: south.securityProfile.value,
            chargers: chargers,
            southMaxFrameBytes: south.maxFrameBytes?.value ?? 65_536,
            southCallTimeout: seconds(south.callTimeout?.value, default: 30),
            southMaxQueuedCalls: south.maxQueuedCalls?.value ?? 32,
            southPingInterval: interval(south.pingInterval?.value),
            southMaxConnectionsPerSource: south.maxConnectionsPerSource?.value ?? 8,
            drainTimeout: seconds(south.drainTimeout?.value, default: 10),
            northURL: northURL,
            northSecurityProfile: north.securityProfile.value,
            northCAFile: caFile,
            northServerName: north.serverName,
            northConnectTimeout: seconds(north.connectTimeout?.value, default: 10),
            northCallTimeout: seconds(north.callTimeout?.value, default: 30),
            northMaxQueuedCalls: north.maxQueuedCalls?.value ?? 32,
            northPingInterval: interval(north.pingInterval?.value),
            northMaxFrameBytes: north.maxFrameBytes?.value ?? 1_048_576,
            reconnectInitialDelay: seconds(north.reconnect?.initialDelay?.value, default: 1),
            reconnectMaxDelay: seconds(north.reconnect?.maxDelay?.value, default: 60),
            offlineMode: north.offlineMode ?? .mirror,
            chargerOfflineModes: (south.chargers ?? [:]).compactMapValues(\.offlineMode),
            stateDirectory: stateDirectory,
            pipelineFile: pipelineFile,
            adminHost: adminHost, adminPort: adminPort,
            mqtt: raw.mqtt,
            warnings: warnings
        )
        // Connection limits (docs/firewall.md "Connection limits").
        resolved.southHandshakeTimeout = seconds(south.handshakeTimeout?.value, default: 10)
        resolved.southMaxPendingConnections = south.maxPendingConnections?.value ?? 256
        resolved.southMaxOutboundBytes = south.maxOutboundBytes?.value ?? 1 << 20
        resolved.southWriteTimeout = seconds(south.writeTimeout?.value, default: 30)
        resolved.southMessagesPerSecond = south.maxMessagesPerSecond?.value ?? 100
        resolved.southMessageBurst = south.messageBurst?.value ?? 200
        resolved.northMaxOutboundBytes = north.maxOutboundBytes?.value ?? 1 << 20
        resolved.northWriteTimeout = seconds(north.writeTimeout?.value, default: 30)
        resolved.northAllowCommonName = north.allowCommonName ?? false
        resolved.northOCPPVersion = north.ocppVersion ?? .v16
        resolved.chargerNorthVersions = (south.chargers ?? [:]).compactMapValues(\.northOcppVersion)
        resolved.northIdTokenType = north.idTokenType?.value ?? "ISO14443"
        resolved.adminCredentials = adminCredentials
        try resolveSouthTLSAndVersions(raw.south, file: file, absolute: absolute, into: &resolved)
        return resolved
    }
}

/// The credentials admin clients beyond loopback must present (docs/operations.md). Secrets: never
/// logged, never shown on a page.
public struct AdminCredentials: Sendable, Equatable {
    public var token: String?
    public var basicUsername: String?
    public var basicPasswordHash: String?

    public init(token: String? = nil, basicUsername: String? = nil, basicPasswordHash: String? = nil) {
        self.token = token
        self.basicUsername = basicUsername
        self.basicPasswordHash = basicPasswordHash
    }

    public var isConfigured: Bool { token != nil || basicPasswordHash != nil }

    /// The shape of `PasswordHash` (AuthStage): `pbkdf2-sha256$<rounds ≥ 1000>$<salt>$<32-byte hash>`, base64.
    public static func isPasswordHash(_ text: String) -> Bool {
        let parts = text.split(separator: "$", omittingEmptySubsequences: false)
        guard parts.count == 4, parts[0] == "pbkdf2-sha256", let rounds = Int(parts[1]), rounds >= 1000,
              Data(base64Encoded: String(parts[2])) != nil, Data(base64Encoded: String(parts[3]))?.count == 32
        else { return false }
        return true
    }

    /// `127.0.0.0/8`, `::1`, `localhost` (an IPv4-mapped loopback too).
    public static func isLoopback(host: String) -> Bool {
        var host = host.lowercased()
        if host.hasPrefix("::ffff:") { host.removeFirst(7) }
        if host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }
}

/// Splits `host:port` (or `[v6]:port`).
func parseHostPort(_ text: String) -> (String, Int)? {
    guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
        return nil
    }
    var host = String(text[..<colon])
    if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
    guard !host.isEmpty else { return nil }
    return (host, port)
}

/// A request URI as it may appear in a log line: no query or fragment (`?password=…`), no user
/// info (`ws://user:pass@host/…`), control characters escaped, length bounded.
/// For the gateway's "upgrade refused" lines, which log what a peer sent.
public func loggableURI(_ uri: String) -> String {
    var text = Substring(uri)
    var hidden: [String] = []
    if let end = text.firstIndex(where: { $0 == "?" || $0 == "#" }) {
        text = text[..<end]
        hidden.append("query")
    }
    if let scheme = text.range(of: "://") {
        let authority = text[scheme.upperBound...].prefix { $0 != "/" }
        if let at = authority.lastIndex(of: "@") {
            text = text[..<scheme.upperBound] + text[text.index(after: at)...]
            hidden.append("user info")
        }
    }
    let shown = LogSafe.escape(text, limit: 200)
    return hidden.isEmpty ? shown : shown + " (\(hidden.joined(separator: " and ")) not logged)"
}

/// Why a private key file must not be used, or nil: a key readable or writable by group or others
/// (any of the mode bits 0o077) is refused. For every place that hands a key file to TLS (the
/// north link's client key, whichever stage chose it).
public func privateKeyFileProblem(_ path: String) -> String? {
    guard let exposed = AtomicFile.exposedModeBits(path) else { return nil }
    return "private key \(path) is readable or writable by group or others (bits \(String(exposed, radix: 8))); run chmod 600 on it"
}

// MARK: South TLS and OCPP versions per charger (docs/configuration.md, docs/certificates.md)

/// `south.tls`, checked: absolute paths, the key file's mode checked.
public struct ResolvedSouthTLS: Sendable, Equatable {
    public var host: String
    public var port: Int
    public var certificateFile: String
    public var keyFile: String
    public var clientCAFile: String?
    /// The profile of chargers on the TLS listener that have none of their own (2 or 3).
    public var securityProfile: Int
}

/// Which listener a charger came in on.
public enum SouthListener: String, Sendable {
    /// `south.listen`: `ws://`, Security Profile 0 or 1.
    case plain
    /// `south.tls.listen`: `wss://`, Security Profile 2 or 3.
    case tls
}

extension ResolvedGatewayConfiguration {
    /// The security profile a charger must connect with on `listener`, or nil if it may not use that
    /// listener at all: a charger configured for 2 or 3 is never served over plain `ws://` (deny by
    /// default), one configured for 0 or 1 never over TLS (its profile says it has no TLS).
    public func southSecurityProfile(for chargerId: String, on listener: SouthListener) -> Int? {
        let own = chargerSecurityProfiles[chargerId]
        switch listener {
        case .plain:
            guard let own else { return southSecurityProfile }
            return own <= 1 ? own : nil
        case .tls:
            guard let tls = southTLS else { return nil }
            guard let own else { return tls.securityProfile }
            return own >= 2 ? own : nil
        }
    }

    /// The OCPP versions a charger may negotiate, in the operator's order (default: both).
    public func ocppVersions(for chargerId: String) -> [OCPPVersion] {
        chargerOCPPVersions[chargerId] ?? [.v201, .v16]
    }

    /// The subprotocol for a charger that offered `offered` (in its order of preference): the first
    /// it offered that this charger may speak; nil when there is none (OCPP-J: the handshake completes
    /// without a subprotocol and the link is closed).
    public func negotiateVersion(offered: [String], chargerId: String) -> OCPPVersion? {
        let allowed = ocppVersions(for: chargerId)
        return offered.lazy.compactMap { OCPPVersion(subprotocol: $0) }.first { allowed.contains($0) }
    }

    static func resolveSouthTLSAndVersions(_ south: GatewayConfiguration.South, file: String, absolute: (String) -> String,
                                           into resolved: inout ResolvedGatewayConfiguration) throws(ConfigurationError) {
        var diagnostics: [Diagnostic] = []
        func error<V>(_ located: Located<V>?, _ message: String) {
            diagnostics.append(Diagnostic(file: file, mark: located?.mark, message: message))
        }
        if let tls = south.tls {
            let hostPort = parseHostPort(tls.listen.value)
            if hostPort == nil { error(tls.listen, "south 'tls' 'listen' should be host:port, e.g. \"0.0.0.0:9443\"") }
            if let (host, port) = hostPort, host == resolved.southHost, port == resolved.southPort, port != 0 {
                error(tls.listen, "south 'tls' 'listen' must differ from south 'listen' (one port per listener)")
            }
            func readable(_ located: Located<String>, _ key: String) -> String {
                let path = absolute(located.value)
                if !FileManager.default.isReadableFile(atPath: path) {
                    error(located, "south 'tls' '\(key)' \(path) does not exist or cannot be read")
                }
                return path
            }
            let certificate = readable(tls.certFile, "cert_file")
            let key = readable(tls.keyFile, "key_file")
            if FileManager.default.isReadableFile(atPath: key), let problem = privateKeyFileProblem(key) {
                error(tls.keyFile, "south 'tls' 'key_file': \(problem)")
            }
            let clientCA = tls.clientCaFile.map { readable($0, "client_ca_file") }
            let profile = tls.securityProfile?.value ?? 3
            if !(2...3).contains(profile) {
                error(tls.securityProfile, "south 'tls' 'security_profile' must be 2 (TLS + Basic auth) or 3 (client certificate)")
            }
            if profile == 2, south.securityProfile.value == 0 {
                error(tls.securityProfile, "south 'tls' security profile 2 (TLS + Basic auth) needs south 'security_profile: 1' (the auth stage checks passwords only then)")
            }
            if profile == 3, clientCA == nil {
                error(tls.listen, "south 'tls' needs 'client_ca_file' for security profile 3 (the CA of the chargers' certificates)")
            }
            resolved.southTLS = ResolvedSouthTLS(host: hostPort?.0 ?? "", port: hostPort?.1 ?? 0, certificateFile: certificate,
                                                 keyFile: key, clientCAFile: clientCA, securityProfile: profile)
        }
        for (id, entry) in (south.chargers ?? [:]).sorted(by: { $0.key < $1.key }) {
            if let profile = entry.securityProfile {
                if !(0...3).contains(profile.value) {
                    error(profile, "charger '\(id)': 'security_profile' must be 0, 1 (ws://), 2 or 3 (wss://)")
                } else if profile.value >= 2, south.tls == nil {
                    error(profile, "charger '\(id)': security profile \(profile.value) needs the TLS listener ('south.tls')")
                } else if profile.value == 3, south.tls != nil, south.tls?.clientCaFile == nil {
                    error(profile, "charger '\(id)': security profile 3 needs 'south.tls.client_ca_file'")
                } else if profile.value == 2, south.securityProfile.value == 0 {
                    error(profile, "charger '\(id)': security profile 2 (TLS + Basic auth) needs south 'security_profile: 1' (the auth stage checks passwords only then)")
                } else {
                    resolved.chargerSecurityProfiles[id] = profile.value
                }
            }
            if let versions = entry.ocppVersions {
                var parsed: [OCPPVersion] = []
                for name in versions.value {
                    switch name {
                    case "1.6": parsed.append(.v16)
                    case "2.0.1": parsed.append(.v201)
                    default: error(versions, "charger '\(id)': unknown OCPP version '\(name)' in 'ocpp_versions'; use \"1.6\", \"2.0.1\"")
                    }
                }
                if versions.value.isEmpty { error(versions, "charger '\(id)': 'ocpp_versions' must name at least one version") }
                resolved.chargerOCPPVersions[id] = parsed
            }
        }
        guard diagnostics.isEmpty else { throw ConfigurationError(diagnostics) }
    }
}
