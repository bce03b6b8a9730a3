public import Logging
public import NIOCore
public import Router
import Foundation
import HealthChannel
import Metrics
import North201
import NIOHTTP1
import NIOSSL
import NIOWebSocket
import OCPP
import StageKit
import Synchronization
import Transport

/// The running gateway: chargers in on `south`, one CSMS link per charger out on `north`,
/// every frame through the router's pipeline.
public final class GatewayRuntime: Sendable {
    public let configuration: ResolvedGatewayConfiguration
    let loader: PipelineLoader
    let pipelines: PipelineHolder
    let metrics = RouterMetrics()
    let group: any EventLoopGroup
    let logger: Logger
    let backoff: ReconnectBackoff
    /// The health channel, when `gateway.yaml` has an `mqtt:` section.
    let publisher: MQTTPublisher?
    private let sessions = Mutex<[String: ActiveSession]>([:])
    /// Sessions started and ended since the last heap trim (`HeapShrinkPolicy`, MemoryTuning.swift).
    let heapShrink = Mutex(HeapShrinkPolicy())
    private let listeners = Mutex<[any Channel]>([])
    private let refusedChargers = Counter(label: "ocpp_gateway_south_refused_total")
    /// What `/healthz` reports: the last reload and the last north connection attempt.
    private let healthState = Mutex(HealthState())
    struct HealthState {
        var lastReloadFailed = false
        var northFailedLast = false
        var northDetail = ""
    }
    /// South connections per source and not yet upgraded, counted from accept (docs/firewall.md).
    let connectionLimiter: ConnectionLimiter
    /// North attempts not yet completed, so a leaving charger or a shutdown can cancel them.
    private let pendingNorth = Mutex<[ObjectIdentifier: WebSocketConnectAttempt]>([:])
    /// Admissions (auth hooks + north connect) in progress; shutdown waits for them.
    private let admissions = Mutex(0)
    private let stopping = Mutex(false)
    /// Refusal lines per reason, so a flood of idle sockets does not flood the log.
    private let refusalLogs = Mutex<[String: LogThrottle]>([:])
    /// The last security events sent north, for the status page (StatusCollection.swift).
    let securityEvents = SecurityEventLog(capacity: 50)

    /// A session in service, reachable from any thread through its event loop.
    private struct ActiveSession: Sendable {
        let token: ObjectIdentifier
        let eventLoop: any EventLoop
        let link: NIOLoopBound<SessionLink>

        func close(reason: String) {
            let link = self.link
            eventLoop.execute { link.value.closeSession(reason: reason) }
        }

        /// Lets the session take the reloaded pipeline now (hooks of added and retired stages).
        func adoptPipeline() -> EventLoopFuture<Void> {
            let link = self.link
            return eventLoop.submit { link.value.session?.adoptCurrentPipeline() }.map { _ in }
        }

        /// Closes the session (1001 both ways) once no CALL is in flight or queued either way, or at `deadline`.
        func drain(until deadline: NIODeadline) {
            let link = self.link
            eventLoop.execute { link.value.drain(until: deadline) }
        }
    }

    /// Loads the pipeline; a broken one throws before anything listens.
    public init(configuration: ResolvedGatewayConfiguration, registry: StageRegistry, group: any EventLoopGroup,
                logger: Logger) throws(ConfigurationError) {
        self.configuration = configuration
        self.group = group
        self.logger = logger
        do {
            publisher = try configuration.mqtt.map { try MQTTPublisher(settings: MQTTSettings($0, configurationFile: configuration.file), logger: logger) }
        } catch {
            throw ConfigurationError([Diagnostic(file: configuration.file, line: 1, column: 1, message: "mqtt: \(error)")])
        }
        loader = PipelineLoader(registry: registry, southSettings: configuration.southSettings,
                                northSettings: configuration.northSettings, stateDirectory: configuration.stateDirectory,
                                logger: logger, publisher: publisher)
        pipelines = PipelineHolder(try loader.load(file: configuration.pipelineFile))
        backoff = ReconnectBackoff(initialDelay: configuration.reconnectInitialDelay, maxDelay: configuration.reconnectMaxDelay)
        connectionLimiter = ConnectionLimiter(maxPerSource: configuration.southMaxConnectionsPerSource,
                                              maxPending: configuration.southMaxPendingConnections)
    }

    public var pipeline: Pipeline { pipelines.pipeline }
    fileprivate func appendListener(_ server: any Channel) { listeners.withLock { $0.append(server) } }
    fileprivate var listenerAddresses: [SocketAddress] { listeners.withLock { $0.compactMap(\.localAddress) } }
    public var sessionCount: Int { sessions.withLock { $0.count } }
    public var connectedChargers: [String] { sessions.withLock { $0.keys.sorted() } }

    // MARK: Lifecycle

    /// Starts listening for chargers; returns the bound address (useful with port 0).
    @discardableResult
    public func start() async throws -> SocketAddress {
        if let publisher {
            try publisher.start()
            logger.info("health channel", metadata: ["broker": "\(publisher.settings.host):\(publisher.settings.port)",
                                                     "topics": "\(publisher.settings.topicRoot)/#"])
        }
        let server = try await startSouthListener(host: configuration.southHost, port: configuration.southPort, tls: nil)
        listeners.withLock { $0.append(server) }
        try await startTLSListener()
        let buffering = configuration.offlineMode == .buffer || configuration.chargerOfflineModes.values.contains(.buffer)
        if buffering, !pipelines.pipeline.stages.contains(where: { $0.type == "outbox" }) {
            logger.warning("north.offline_mode is 'buffer' but the pipeline has no 'outbox' stage: while the CSMS is away chargers stay connected and every CALL is answered with a CALLERROR")
        }
        let address = server.localAddress!
        logger.info("listening for chargers", metadata: [
            "address": "ws://\(configuration.southHost):\(address.port ?? 0)\(configuration.southPath)/<chargeId>",
            "security_profile": "\(configuration.southSecurityProfile)",
            "north": "\(configuration.northURL.absoluteString)",
            "pipeline": "\(pipelines.pipeline.stages.map(\.id).joined(separator: " → "))",
        ])
        return address
    }

    /// Re-reads the pipeline file and swaps it in between frames. On any error the running
    /// pipeline stays in service and the error is returned (and logged with its positions).
    @discardableResult
    public func reload() async -> ConfigurationError? {
        let current = pipelines.pipeline
        let new: Pipeline
        do {
            new = try loader.load(file: configuration.pipelineFile, reusing: current)
        } catch {
            metrics.recordReload(succeeded: false)
            healthState.withLock { $0.lastReloadFailed = true }
            for diagnostic in error.diagnostics { logger.error("\(diagnostic.description)") }
            logger.error("reload failed; the previous pipeline keeps running", metadata: ["pipeline": "\(configuration.pipelineFile)"])
            return error
        }
        let old = pipelines.swap(to: new)
        metrics.recordReload(succeeded: true)
        healthState.withLock { $0.lastReloadFailed = false }
        // Live sessions take the new pipeline now, not at their next frame: added stages start on them
        // (a new site limit reaches running chargers), retired ones end on them before they shut down.
        let live = sessions.withLock { Array($0.values) }
        for session in live { try? await session.adoptPipeline().get() }
        let kept = Set(new.stages.map { "\($0.id)\u{0}\($0.type)\u{0}\($0.fingerprint)" })
        let retired = old.stages.filter { !kept.contains("\($0.id)\u{0}\($0.type)\u{0}\($0.fingerprint)") }
        logger.info("pipeline reloaded", metadata: [
            "stages": "\(new.stages.map(\.id).joined(separator: " → "))",
            "rebuilt": "\(new.stages.count - (old.stages.count - retired.count))",
            "retired": "\(retired.map(\.id).joined(separator: ","))",
        ])
        for stage in retired { await stage.instance.shutdown() }
        return nil
    }

    /// Stops accepting chargers, drains every session — each closes with 1001 once no CALL is in
    /// flight or queued either way (a StartTransaction already at the CSMS gets its answer to the
    /// charger), or when `grace` is over — and shuts the stages down.
    public func shutdown(grace: Duration? = nil) async {
        let grace = grace ?? configuration.drainTimeout
        let servers = listeners.withLock { servers in
            defer { servers = [] }
            return servers
        }
        for server in servers { try? await server.close() }
        await cancelPendingNorthConnects(until: ContinuousClock.now + grace)
        let active = sessions.withLock { Array($0.values) }
        logger.info("draining", metadata: ["sessions": "\(active.count)", "grace_s": "\(grace.components.seconds)"])
        let drainDeadline = NIODeadline.now() + grace.timeAmount
        for session in active { session.drain(until: drainDeadline) }
        let deadline = ContinuousClock.now + grace + .seconds(1)
        while sessionCount > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        await loader.store.flush()
        for stage in pipelines.pipeline.stages { await stage.instance.shutdown() }
        await publisher?.shutdown()
        logger.info("stopped")
    }

    /// The truth for `/healthz`: 200 when everything the gateway depends on works, 503 otherwise,
    /// with each check in the JSON body. Checks: listening for chargers, the last north connection
    /// attempt, the health channel's broker (when configured), `state_dir` writable with ≥ 16 MiB free,
    /// and the last reload.
    public func health() -> (healthy: Bool, body: String) {
        let listening = listeners.withLock { !$0.isEmpty }
        let state = healthState.withLock { $0 }
        let mqttUp = publisher.map(\.isConnected)
        var disk = "ok"
        var stats = statvfs()
        let directory = configuration.stateDirectory
        try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if access(directory, W_OK) != 0 {
            disk = "state_dir not writable"
        } else if statvfs(directory, &stats) == 0, UInt64(stats.f_bavail) * UInt64(stats.f_frsize) < 16 << 20 {
            disk = "less than 16 MiB free"
        }
        let checks: [(String, Bool, String)] = [
            ("south", listening, listening ? "listening" : "not listening"),
            ("north", !state.northFailedLast, state.northFailedLast ? "last connection failed: \(state.northDetail)" : "ok"),
            ("mqtt", mqttUp ?? true, mqttUp.map { $0 ? "connected" : "disconnected" } ?? "not configured"),
            ("disk", disk == "ok", disk),
            ("reload", !state.lastReloadFailed, state.lastReloadFailed ? "last reload failed; the previous pipeline runs" : "ok"),
        ]
        let healthy = checks.allSatisfy(\.1)
        func quoted(_ text: String) -> String { "\"" + text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
        let chargers = connectedChargers.map(quoted).joined(separator: ",")
        let body = "{\"status\":\(quoted(healthy ? "ok" : "degraded")),\"checks\":{"
            + checks.map { "\(quoted($0.0)):{\"ok\":\($0.1),\"detail\":\(quoted($0.2))}" }.joined(separator: ",")
            + "},\"sessions\":\(sessionCount),\"chargers\":[\(chargers)]}\n"
        return (healthy, body)
    }

    /// Before the event loops go: cancels every north attempt still in its handshake and waits
    /// (until `deadline`) for the admissions waiting on them, so nothing completes a promise on a
    /// loop that has shut down.
    private func cancelPendingNorthConnects(until deadline: ContinuousClock.Instant) async {
        stopping.withLock { $0 = true }
        let attempts = pendingNorth.withLock { Array($0.values) }
        if !attempts.isEmpty { logger.info("cancelling pending north connections", metadata: ["count": "\(attempts.count)"]) }
        for attempt in attempts { attempt.cancel(reason: "gateway shutting down") }
        while admissionsInProgress > 0, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    var admissionsInProgress: Int { admissions.withLock { $0 } }
    var pendingNorthConnects: Int { pendingNorth.withLock { $0.count } }

    /// A south connection closed before its upgrade by a limit or a timeout: counted, and logged
    /// at most 10 times a minute per reason.
    private func connectionRefused(_ refusal: ConnectionRefusal) {
        if refusal.reason == .tlsHandshakeFailed { return southTLSHandshakeFailed(refusal) }
        Counter(label: "ocpp_gateway_south_connection_limits_total", dimensions: [("reason", refusal.reason.rawValue)]).increment()
        if refusal.reason == .tooManyFromSource || refusal.reason == .tooManyPending { refusedChargers.increment() }
        let now = Duration.nanoseconds(Int64(clamping: NIODeadline.now().uptimeNanoseconds))
        let (log, suppressed) = refusalLogs.withLock { $0[refusal.reason.rawValue, default: LogThrottle()].admit(now: now) }
        guard log else { return }
        var metadata: Logger.Metadata = ["reason": "\(refusal.reason.rawValue)", "source": "\(refusal.source ?? "?")"]
        switch refusal.reason {
        case .tooManyFromSource: metadata["limit"] = "\(configuration.southMaxConnectionsPerSource)"
        case .tooManyPending: metadata["limit"] = "\(configuration.southMaxPendingConnections)"
        case .handshakeTimeout: metadata["timeout_s"] = "\(configuration.southHandshakeTimeout.components.seconds)"
        case .decisionTimeout, .requestTooLarge: break
        case .tlsHandshakeFailed: break
        }
        if suppressed > 0 { metadata["suppressed"] = "\(suppressed)" }
        logger.warning("south connection closed before its upgrade", metadata: metadata)
    }

    // MARK: Admission

    /// Decides a charger's upgrade: path, subprotocol, the listener's security profile (docs/certificates.md),
    /// the pipeline's connection hooks, then the north link.
    func decide(_ request: UpgradeRequest, channel: any Channel) -> EventLoopFuture<UpgradeAnswer> {
        let loop = channel.eventLoop
        let remote = request.remoteAddress.map { "\($0)" } ?? "?"
        // Per-source and pending limits are counted at accept (WebSocketServer, `connectionLimiter`).
        // A query string or user info may carry credentials: never logged.
        let path = loggableURI(request.uri)
        guard let chargerId = chargerId(fromURI: request.uri) else {
            refusedChargers.increment()
            logger.warning("upgrade refused: path is not \(configuration.southPath)/<chargeId>", metadata: ["uri": "\(path)", "remote": "\(remote)"])
            return loop.makeSucceededFuture(.reject(.notFound))
        }
        if let problem = ChargerIdentity.problem(with: chargerId) {
            // Checked once, here: everything after (state files, topics, URLs, logs) relies on it.
            refusedChargers.increment()
            logger.warning("upgrade refused: invalid charge point id", metadata: ["uri": "\(path)", "remote": "\(remote)", "problem": "\(problem)"])
            return loop.makeSucceededFuture(.reject(.badRequest))
        }
        if let refusal = southSecurityRefusal(request, chargerId: chargerId) {
            // Before the auth hooks: a charger that fails its listener's profile never reaches a stage.
            return loop.makeSucceededFuture(refuseSouth(refusal, chargerId: chargerId, remote: remote,
                                                        version: negotiatedVersion(request, chargerId: chargerId)))
        }
        guard let version = negotiatedVersion(request, chargerId: chargerId) else {
            // OCPP-J 1.6 §3.1.2 / 2.0.1 part 4 §3.2: complete the handshake without a subprotocol, then close.
            logger.warning("charger offered no supported subprotocol; closing after the handshake", metadata: [
                "charger": "\(chargerId)", "offered": "\(LogSafe.escape(request.offeredSubprotocols.joined(separator: ",")))",
            ])
            return loop.makeSucceededFuture(.accept(subprotocol: nil, onUpgrade: { connection in
                connection.close(code: .protocolError, reason: "no supported OCPP subprotocol offered")
            }))
        }
        var connectRequest = ChargerConnectRequest(chargerId: chargerId, remoteAddress: request.remoteAddress?.ipAddress)
        connectRequest.securityProfile = configuration.southSecurityProfile(for: chargerId, on: request.isTLS ? .tls : .plain)
        switch request.basicAuth {
        case .absent: break
        case .malformed: connectRequest.hasMalformedAuthorization = true
        case .present(let username, let password): connectRequest.credentials = BasicCredentials(username: username, password: password)
        }
        let promise = loop.makePromise(of: UpgradeAnswer.self)
        let request = connectRequest
        admissions.withLock { $0 += 1 }
        promise.completeWithTask {
            defer { self.admissions.withLock { $0 -= 1 } }
            return await self.admit(request, version: version, remote: remote, southChannel: channel)
        }
        return promise.futureResult
    }

    private func admit(_ request: ChargerConnectRequest, version: OCPPVersion, remote: String, southChannel: any Channel) async -> UpgradeAnswer {
        let chargerId = request.chargerId
        let credentials: NorthCredentials
        switch await ConnectionGate.outcome(request, pipeline: pipelines.pipeline) {
        case .reject(let status, let reason):
            refusedChargers.increment()
            logger.warning("charger refused", metadata: ["charger": "\(chargerId)", "remote": "\(remote)", "status": "\(status)", "reason": "\(reason)"])
            var headers = HTTPHeaders()
            if status == 401 { headers.add(name: "WWW-Authenticate", value: "Basic realm=\"ocpp-gateway\", charset=\"UTF-8\"") }
            return .reject(HTTPResponseStatus(statusCode: status), headers: headers)
        case .accept(let north, _):
            credentials = north
        }
        let buffered = configuration.offlineMode(for: chargerId) == .buffer
        if !buffered, let wait = backoff.waitRemaining(for: chargerId, now: NIODeadline.now().uptimeNanoseconds) {
            let seconds = max(1, Int((Double(wait) / 1e9).rounded(.up)))
            logger.info("north link in back-off; charger asked to retry", metadata: ["charger": "\(chargerId)", "retry_after_s": "\(seconds)"])
            return .reject(.badGateway, headers: ["Retry-After": "\(seconds)"])
        }
        if stopping.withLock({ $0 }) { return .reject(.serviceUnavailable, headers: ["Retry-After": "5"]) }
        let north: WebSocketConnection?
        do {
            if buffered, backoff.waitRemaining(for: chargerId, now: NIODeadline.now().uptimeNanoseconds) != nil {
                north = nil  // the CSMS failed a moment ago: serve the charger now, retry in the background
            } else {
                let attempt = connectNorth(chargerId: chargerId, credentials: credentials, version: version, on: southChannel.eventLoop)
                // A charger that leaves before its north link is up takes the attempt with it.
                southChannel.closeFuture.whenComplete { _ in attempt.cancel(reason: "the charger left during the north handshake") }
                north = try await attempt.futureResult.get()
            }
        } catch {
            if case WebSocketConnectError.cancelled(let reason) = error {
                // Nobody waits for an answer: no back-off, no security event.
                logger.info("north connection abandoned", metadata: ["charger": "\(LogSafe.escape(chargerId))", "reason": "\(reason)"])
                return .reject(.serviceUnavailable, headers: ["Retry-After": "5"])
            }
            healthState.withLock {
                $0.northFailedLast = true
                $0.northDetail = LogSafe.escape("\(error)", limit: 160)
            }
            let failure = NorthFailureClassifier.failure(for: error)
            guard !buffered else {
                for stage in pipelines.pipeline.stages { stage.instance.northConnectionFailed(chargerId: chargerId, failure: failure) }
                logger.warning("north connection failed; buffer mode keeps the charger connected", metadata: [
                    "charger": "\(chargerId)", "error": "\(LogSafe.escape("\(error)", limit: 200))",
                ])
                return acceptCharger(request, north: nil, credentials: credentials, version: version)
            }
            for stage in pipelines.pipeline.stages { stage.instance.northConnectionFailed(chargerId: chargerId, failure: failure) }
            let delay = backoff.recordFailure(for: chargerId, now: NIODeadline.now().uptimeNanoseconds)
            logger.error("north connection failed; charger refused with 502", metadata: [
                "charger": "\(chargerId)", "north": "\(northURL(for: chargerId).absoluteString)", "error": "\(error)",
                "next_attempt_in_s": "\(delay.components.seconds)",
            ])
            return .reject(.badGateway, headers: ["Retry-After": "\(max(1, delay.components.seconds))"])
        }
        // If the charger goes away before its upgrade completes, nobody will use this north link.
        if let north {
            healthState.withLock { $0.northFailedLast = false }
            backoff.recordSuccess(for: chargerId)
            southChannel.closeFuture.whenComplete { _ in
                if !north.isRelaying { north.close(code: .normalClosure, reason: "charger left during the handshake") }
            }
        }
        return acceptCharger(request, north: north, credentials: credentials, version: version)
    }

    /// The upgrade answer that starts the charger's session (with its north link, or without one in buffer mode).
    /// The version is the one negotiated with the charger; its north link was opened with the same one.
    private func acceptCharger(_ request: ChargerConnectRequest, north: WebSocketConnection?, credentials: NorthCredentials,
                               version: OCPPVersion) -> UpgradeAnswer {
        let chargerId = request.chargerId
        let booted = bootRecord(for: chargerId)?.accepted ?? false
        let southProfile = request.securityProfile ?? configuration.southSecurityProfile
        return .accept(subprotocol: version.subprotocol, onUpgrade: { [self] south in
            startSession(chargerId: chargerId, south: south, north: north, credentials: credentials, booted: booted, version: version,
                         southProfile: southProfile)
        })
    }

    static func classify(_ error: any Error) -> NorthFailure.Kind { NorthFailureClassifier.kind(of: error) }

    /// The charge point id from `<south.path>/<id>`, percent-decoded; nil if the path does not fit.
    func chargerId(fromURI uri: String) -> String? {
        let path = String(uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? "")
        let prefix = configuration.southPath == "/" ? "/" : configuration.southPath + "/"
        guard path.hasPrefix(prefix) else { return nil }
        let encoded = path.dropFirst(prefix.count)
        guard !encoded.isEmpty, !encoded.contains("/"), let id = String(encoded).removingPercentEncoding, !id.isEmpty,
              id.count <= 48, !id.contains("/")
        else { return nil }
        return id
    }

    func northURL(for chargerId: String) -> URL {
        let base = configuration.northURL.absoluteString
        return URL(string: (base.hasSuffix("/") ? base : base + "/") + Self.pathSegment(chargerId))!
    }

    /// `id` as one URL path segment: what `addingPercentEncoding(withAllowedCharacters:)` makes of it with
    /// `CharacterSet.urlPathAllowed` minus `/;?#`, by hand over the UTF-8 bytes. The `CharacterSet` way built
    /// an 8 KiB bitmap per north connect (`CFCharacterSetRemoveCharactersInString`) and touched ≈ 0.9 MiB of
    /// ICU during a connect storm (docs/scaling.md, "Memory").
    static func pathSegment(_ id: String) -> String {
        func allowed(_ byte: UInt8) -> Bool {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"): true
            case UInt8(ascii: "!"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"),
                 UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: ":"),
                 UInt8(ascii: "="), UInt8(ascii: "@"), UInt8(ascii: "_"), UInt8(ascii: "~"): true
            default: false
            }
        }
        let utf8 = id.utf8
        if utf8.allSatisfy(allowed) { return id }
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(utf8.count * 3)
        for byte in utf8 {
            if allowed(byte) {
                out.append(byte)
            } else {
                out.append(contentsOf: [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 0x0F)]])
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// North TLS contexts by charger identity (CA, certificate and key files), shared by every runtime in
    /// the process: keyed by the files' paths and checked against their current state on every connect.
    static let northTLSContexts = TLSContextCache(capacity: 1024)

    /// Starts a north attempt, bounded by `north.connect_timeout` as a whole (TCP + TLS + upgrade)
    /// and registered until it completes, so a leaving charger or a shutdown can cancel it.
    /// Every attempt (admission, buffer-mode reconnect, re-link) is counted here once, by outcome.
    /// `version`: the charger's; the CSMS hears `northVersion(for:chargerVersion:)`.
    private func connectNorth(chargerId: String, credentials: NorthCredentials, version: OCPPVersion = .v16,
                              on loop: any EventLoop) -> WebSocketConnectAttempt {
        let attempt = openNorth(chargerId: chargerId, credentials: credentials, version: version, on: loop)
        attempt.futureResult.whenComplete { result in
            let label = switch result {
            case .success: "ok"
            case .failure(let error): NorthFailureClassifier.resultLabel(for: error)
            }
            Counter(label: "ocpp_gateway_north_connects_total", dimensions: [("result", label)]).increment()
        }
        return attempt
    }

    private func openNorth(chargerId: String, credentials: NorthCredentials, version: OCPPVersion,
                           on loop: any EventLoop) -> WebSocketConnectAttempt {
        if stopping.withLock({ $0 }) {
            return WebSocketClient.failed(WebSocketConnectError.cancelled("gateway shutting down"), on: loop)
        }
        let url = northURL(for: chargerId)
        var tls: TLSConfiguration?
        var tlsContext: NIOSSLContext?
        if url.scheme == "wss" {
            do {
                if credentials.securityProfile == 3 {
                    for path in [credentials.certificatePath, credentials.privateKeyPath] {
                        guard let path, FileManager.default.isReadableFile(atPath: path) else {
                            throw NorthSetupError("security profile 3 needs the charger's client certificate and key; missing \(path ?? "(no path)")")
                        }
                    }
                    // Whichever stage chose the key: one that others can read is never used.
                    if let key = credentials.privateKeyPath, let problem = privateKeyFileProblem(key) { throw NorthSetupError(problem) }
                }
                let caFile = configuration.northCAFile
                let certificateFile = credentials.securityProfile == 3 ? credentials.certificatePath : nil
                let keyFile = credentials.securityProfile == 3 ? credentials.privateKeyPath : nil
                // One context per client identity, reused while its files are unchanged (a reconnect storm
                // does not parse a thousand keys again).
                // The CA certificates are parsed once for all identities (TrustRootCache).
                let context = try Self.northTLSContexts.context(caFile: caFile, certificateFile: certificateFile, keyFile: keyFile) {
                    try Self.northTLSConfiguration(caFile: caFile, certificateFile: certificateFile, keyFile: keyFile)
                }
                tls = context.configuration
                tlsContext = context
            } catch {
                return WebSocketClient.failed(error, on: loop)
            }
        }
        let basic = credentials.basicAuth.map { (username: $0.username, password: $0.password) }
        var options = WebSocketClientOptions(url: url, tls: tls, serverName: configuration.northServerName,
                                             subprotocol: northVersion(for: chargerId, chargerVersion: version).subprotocol,
                                             basicAuth: basic,
                                             maxMessageBytes: configuration.northMaxFrameBytes,
                                             pingInterval: configuration.northPingInterval?.timeAmount,
                                             connectTimeout: configuration.northConnectTimeout.timeAmount,
                                             allowCommonNameMatch: configuration.northAllowCommonName,
                                             outboundLimits: OutboundLimits(maxBytes: configuration.northMaxOutboundBytes,
                                                                            writeTimeout: configuration.northWriteTimeout.timeAmount))
        options.tlsContext = tlsContext
        let attempt = WebSocketClient.start(options, on: loop)
        let key = ObjectIdentifier(attempt)
        pendingNorth.withLock { $0[key] = attempt }
        attempt.futureResult.whenComplete { [self] _ in pendingNorth.withLock { $0[key] = nil } }
        return attempt
    }

    /// The OCPP version spoken to the CSMS for a charger speaking `chargerVersion`: a 2.0.1 station is
    /// relayed as it is; a 1.6J charger as `north.ocpp_version` (per charger `north_ocpp_version`) says,
    /// translated at the session's north edge when that is 2.0.1.
    func northVersion(for chargerId: String, chargerVersion: OCPPVersion) -> OCPPVersion {
        guard chargerVersion == .v16 else { return chargerVersion }
        return configuration.northOCPPVersion(for: chargerId) == .v201 ? .v201 : .v16
    }

    // MARK: Sessions

    /// Buffer mode: the CSMS link of a connected charger went down or came back. Counted, logged by the
    /// link, and announced on the health channel (`<prefix>/<gateway>/<charger>/north`, retained
    /// `online` / `offline`).
    private func northLinkChanged(chargerId: String, up: Bool, detail: String) {
        if up {
            backoff.recordSuccess(for: chargerId)
            healthState.withLock { $0.northFailedLast = false }
        } else {
            healthState.withLock {
                $0.northFailedLast = true
                $0.northDetail = LogSafe.escape(detail, limit: 160)
            }
        }
        if let publisher {
            publisher.publish(topic: "\(publisher.topicRoot)/\(chargerId)/north", payload: Array((up ? "online" : "offline").utf8), retain: true)
        }
    }

    /// The charger's last BootNotification answer; nil if none is known or the record cannot be read
    /// (then the gateway waits for a BootNotification before sending anything of its own).
    func bootRecord(for chargerId: String) -> BootRecord? {
        try? loader.store.load(BootRecord.self, charger: chargerId, name: BootRecord.name)
    }

    private func startSession(chargerId: String, south: WebSocketConnection, north: WebSocketConnection?,
                              credentials: NorthCredentials, booted: Bool, version: OCPPVersion = .v16, southProfile: Int) {
        let profile = credentials.securityProfile
        let loop = south.channel.eventLoop
        let replaced = sessions.withLock { $0[chargerId] }
        if let replaced {
            logger.warning("charger reconnected; closing its previous session", metadata: ["charger": "\(chargerId)"])
            replaced.close(reason: "replaced by a new connection of the same charger")
        }
        let link = SessionLink(chargerId: chargerId, south: south, north: north, credentials: credentials, eventLoop: loop) {
            [self] credentials in connectNorth(chargerId: chargerId, credentials: credentials, version: version, on: loop)
        }
        link.southSecurityProfile = southProfile
        if configuration.offlineMode(for: chargerId) == .buffer {
            link.buffer = SessionLink.BufferMode(
                nextDelay: { [self] in backoff.recordFailure(for: chargerId, now: NIODeadline.now().uptimeNanoseconds) },
                linkChanged: { [self] up, detail in northLinkChanged(chargerId: chargerId, up: up, detail: detail) })
            if north == nil { northLinkChanged(chargerId: chargerId, up: false, detail: "unreachable at connect") }
        }
        let limits = SessionLimits(chargerCallTimeout: configuration.southCallTimeout,
                                   chargerMaxQueuedCalls: configuration.southMaxQueuedCalls,
                                   csmsCallTimeout: configuration.northCallTimeout,
                                   csmsMaxQueuedCalls: configuration.northMaxQueuedCalls)
        let session = Session(chargerId: chargerId, version: version, pipelines: pipelines, limits: limits, metrics: metrics, driver: link, logger: logger,
                              bootAccepted: booted)
        let store = loader.store
        if version == .v16, northVersion(for: chargerId, chargerVersion: version) == .v201 {
            // Translation at the session's north edge, after every stage (docs/ocpp201.md). It lives as long as
            // the session, so a north reconnect in buffer mode keeps its state; what must outlive it is in `store`.
            // The gateway's own variables (SecurityCtrlr belongs to the gateway, not to the charger).
            let variables = [
                GatewayVariable(component: "SecurityCtrlr", variable: "SecurityProfile", value: String(profile), mutability: "ReadOnly"),
                GatewayVariable(component: "SecurityCtrlr", variable: "Identity", value: chargerId, mutability: "ReadOnly"),
            ]
            session.northAdapter = North201Adapter(
                chargerId: chargerId, store: store,
                options: North201Options(idTokenType: configuration.northIdTokenType, deviceModel: DeviceModelMap(gatewayVariables: variables)),
                logger: logger)
        }
        session.onBootAnswered = { [wallTime = link.wallTime] accepted, payload in
            store.save(BootRecord(accepted: accepted, interval: payload["interval"]?.intValue, answeredAt: wallTime),
                       charger: chargerId, name: BootRecord.name)
        }
        link.activity.securityEvents = securityEvents
        let token = ObjectIdentifier(link)
        sessions.withLock { $0[chargerId] = ActiveSession(token: token, eventLoop: loop, link: NIOLoopBound(link, eventLoop: loop)) }
        noteSessionChurn(on: loop)
        link.onEnded = { [self] side, reason in
            sessions.withLock { active in
                if active[chargerId]?.token == token { active[chargerId] = nil }
            }
            noteSessionChurn(on: loop)
            if side == .csms, configuration.offlineMode(for: chargerId) == .mirror {
                // Treat a lost CSMS link as a failure so the charger's immediate reconnect backs off.
                backoff.recordFailure(for: chargerId, now: NIODeadline.now().uptimeNanoseconds)
            }
        }
        link.activate(session)
        logger.info("session started", metadata: [
            "charger": "\(chargerId)", "remote": "\(south.channel.remoteAddress.map { "\($0)" } ?? "?")",
            "north_security_profile": "\(profile)", "ocpp": "\(version.subprotocol)",
            "north_ocpp": "\(northVersion(for: chargerId, chargerVersion: version).subprotocol)",
        ])
    }
}

// MARK: Status page (the rest is in StatusCollection.swift)

extension GatewayRuntime {
    var isListening: Bool { listeners.withLock { !$0.isEmpty } }
    var isDraining: Bool { stopping.withLock { $0 } }

    /// Each live session's status row (all, or only charger `id`), collected on the session's own loop.
    func liveSessionStatuses(only id: String?) -> [EventLoopFuture<ChargerStatus>] {
        let live = sessions.withLock { sessions in id.map { sessions[$0].map { [$0] } ?? [] } ?? Array(sessions.values) }
        return live.map { session in
            let link = session.link
            return session.eventLoop.submit { link.value.status() }
        }
    }
}

// MARK: South TLS (Security Profiles 2 and 3) and the OCPP version per connection

/// Why a charger was refused by its listener's security profile (docs/certificates.md, "Chargers over TLS").
enum SouthSecurityRefusal: Equatable {
    /// A charger configured for Security Profile 2 or 3 came over plain `ws://`.
    case tlsRequired(profile: Int)
    /// A charger configured for 0 or 1 came over TLS (its configuration says it has none: a mistake or an impostor).
    case plainRequired(profile: Int)
    /// Security Profile 3 without a client certificate.
    case noClientCertificate
    /// The certificate's subject CN is not the charge point id in the URL (or there is not exactly one CN).
    case commonNameMismatch(presented: String?)

    /// The `reason` label of `ocpp_gateway_south_security_refusals_total` (a closed set).
    var label: String {
        switch self {
        case .tlsRequired: "tls_required"
        case .plainRequired: "plain_required"
        case .noClientCertificate: "no_client_certificate"
        case .commonNameMismatch: "cn_mismatch"
        }
    }

    var description: String {
        switch self {
        case .tlsRequired(let profile): "the charger is configured for security profile \(profile) and must connect over wss://"
        case .plainRequired(let profile): "the charger is configured for security profile \(profile) (ws://) but came over TLS"
        case .noClientCertificate: "security profile 3 needs a client certificate; none was presented"
        case .commonNameMismatch(let presented):
            "the client certificate's CN \(presented.map { "'\(LogSafe.escape($0, limit: 64))'" } ?? "(none or several)") is not the charge point id"
        }
    }
}

extension GatewayRuntime {
    /// A listener for chargers (plain, or TLS with `tls`): the south limits and timeouts, one shared
    /// connection limiter, every upgrade decided by `decide`.
    func startSouthListener(host: String, port: Int, tls: TLSConfiguration?) async throws -> any Channel {
        var options = WebSocketServerOptions(host: host, port: port, tls: tls,
                                   maxMessageBytes: configuration.southMaxFrameBytes,
                                   pingInterval: configuration.southPingInterval?.timeAmount,
                                   handshakeTimeout: configuration.southHandshakeTimeout.timeAmount,
                                   // Auth hooks and the north connect; a little slack for the hash.
                                   decisionTimeout: (configuration.northConnectTimeout + .seconds(5)).timeAmount,
                                   outboundLimits: OutboundLimits(maxBytes: configuration.southMaxOutboundBytes,
                                                                  writeTimeout: configuration.southWriteTimeout.timeAmount),
                                   onRefusal: { [self] refusal in connectionRefused(refusal) })
        if configuration.southMessagesPerSecond > 0 {
            options.inboundBudget = InboundBudget(messagesPerSecond: configuration.southMessagesPerSecond,
                                                  burst: configuration.southMessageBurst)
        }
        return try await WebSocketServer.start(options, group: group, limiter: connectionLimiter) { [self] request, channel in
            decide(request, channel: channel)
        }
    }

    /// Starts `south.tls.listen` (wss://) when configured: same limits, same decision, its own TLS.
    func startTLSListener() async throws {
        guard let tls = configuration.southTLS else { return }
        let settings = try SouthTLS.serverConfiguration(certificateFile: tls.certificateFile, keyFile: tls.keyFile,
                                                        clientCAFile: tls.clientCAFile)
        let server = try await startSouthListener(host: tls.host, port: tls.port, tls: settings)
        appendListener(server)
        logger.info("listening for chargers over TLS", metadata: [
            "address": "wss://\(tls.host):\(server.localAddress?.port ?? 0)\(configuration.southPath)/<chargeId>",
            "security_profile": "\(tls.securityProfile)", "client_ca_file": "\(tls.clientCAFile ?? "(none)")",
        ])
    }

    /// The bound address of the TLS listener (tests with port 0).
    public var tlsListenerAddress: SocketAddress? { listenerAddresses.dropFirst().first }

    /// The version for this connection: the first subprotocol the charger offered that it may speak
    /// (`south.chargers.<id>.ocpp_versions`, default both).
    func negotiatedVersion(_ request: UpgradeRequest, chargerId: String) -> OCPPVersion? {
        configuration.negotiateVersion(offered: request.offeredSubprotocols, chargerId: chargerId)
    }

    /// The listener's security profile, checked before any stage runs: TLS for a charger configured
    /// for 2 or 3 (deny by default over ws://), and for profile 3 a client certificate (verified by the
    /// TLS handshake against `client_ca_file`) whose CN is the charge point id.
    func southSecurityRefusal(_ request: UpgradeRequest, chargerId: String) -> SouthSecurityRefusal? {
        let listener: SouthListener = request.isTLS ? .tls : .plain
        guard let profile = configuration.southSecurityProfile(for: chargerId, on: listener) else {
            let own = configuration.chargerSecurityProfiles[chargerId] ?? 0
            return listener == .plain ? .tlsRequired(profile: own) : .plainRequired(profile: own)
        }
        guard profile == 3 else { return nil }
        guard let certificate = request.peerCertificate else { return .noClientCertificate }
        guard certificate.commonName == chargerId else {
            return .commonNameMismatch(presented: certificate.commonName ?? certificate.commonNames.first)
        }
        return nil
    }

    /// Refuses a charger that failed its listener's profile: 403, logged (throttled per reason),
    /// counted, and kept as a security event for the status page (it has no session to send one in).
    func refuseSouth(_ refusal: SouthSecurityRefusal, chargerId: String, remote: String, version: OCPPVersion?) -> UpgradeAnswer {
        refusedChargers.increment()
        Counter(label: "ocpp_gateway_south_security_refusals_total", dimensions: [("reason", refusal.label)]).increment()
        let type = version == .v16 ? "FailedToAuthenticateAtCentralSystem" : "FailedToAuthenticateAtCsms"
        securityEvents.record(SecurityEventEntry(at: Date().formatted(.iso8601), charger: displaySafe(chargerId, limit: 48), type: type,
                                                 techInfo: displaySafe("refused by the gateway: \(refusal.description)", limit: 255)))
        let (log, suppressed) = throttle("south_security_\(refusal.label)")
        if log {
            var metadata: Logger.Metadata = ["charger": "\(LogSafe.escape(chargerId))", "remote": "\(remote)", "reason": "\(refusal.label)",
                                             "detail": "\(refusal.description)", "security_event": "\(type)"]
            if suppressed > 0 { metadata["suppressed"] = "\(suppressed)" }
            logger.warning("charger refused by its security profile", metadata: metadata)
        }
        return .reject(.forbidden)
    }

    /// A TLS handshake on the TLS listener failed. With a client certificate that got as far as the
    /// handshake (wrong CA, expired, not yet valid) it is logged with the certificate's CN (what the
    /// charger claims to be: escaped) and kept as an `InvalidChargingStationCertificate` security event;
    /// without one (no common version or suite, not TLS at all) it is only counted and logged.
    func southTLSHandshakeFailed(_ refusal: ConnectionRefusal) {
        let certificate = refusal.peerCertificate
        let now = Int(Date().timeIntervalSince1970)
        let reason: String
        switch certificate {
        case nil: reason = "handshake"
        case let certificate? where certificate.notValidAfter < now: reason = "certificate_expired"
        case let certificate? where certificate.notValidBefore > now: reason = "certificate_not_yet_valid"
        case _?: reason = "certificate_untrusted"
        }
        Counter(label: "ocpp_gateway_south_tls_refusals_total", dimensions: [("reason", reason)]).increment()
        let claimed = certificate.map { $0.commonName ?? $0.commonNames.first ?? "?" }
        let detail = LogSafe.escape(refusal.detail ?? "", limit: 200)
        if let claimed {
            refusedChargers.increment()
            securityEvents.record(SecurityEventEntry(
                at: Date().formatted(.iso8601), charger: displaySafe(claimed, limit: 48), type: "InvalidChargingStationCertificate",
                techInfo: displaySafe("TLS handshake refused (\(reason)) from \(refusal.source ?? "?"); CN as presented", limit: 255)))
        }
        let (log, suppressed) = throttle("south_tls_\(reason)")
        guard log else { return }
        var metadata: Logger.Metadata = ["reason": "\(reason)", "source": "\(refusal.source ?? "?")", "error": "\(detail)"]
        if let claimed { metadata["certificate_cn"] = "\(LogSafe.escape(claimed, limit: 64))" }
        if let certificate {
            metadata["not_after"] = "\(Date(timeIntervalSince1970: Double(certificate.notValidAfter)).formatted(.iso8601))"
        }
        if suppressed > 0 { metadata["suppressed"] = "\(suppressed)" }
        logger.warning("charger refused in the TLS handshake", metadata: metadata)
    }

    private func throttle(_ key: String) -> (log: Bool, suppressed: Int) {
        let now = Duration.nanoseconds(Int64(clamping: NIODeadline.now().uptimeNanoseconds))
        return refusalLogs.withLock { $0[key, default: LogThrottle()].admit(now: now) }
    }
}

struct NorthSetupError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
