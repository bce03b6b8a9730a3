import Foundation
import Logging
import Metrics
import OCPP
import StageKit
import Synchronization

/// Delivers the core's changes: OCPI PUT/PATCH to the receiver (ordered per EVSE, retried with
/// back-off), the DATEX II file, the uptime gauges, and the offline-grace clock. One task; never
/// on a charger's event loop.
final class NapPublisher: Sendable {
    struct PushSettings: Sendable {
        var url: URL
        var token: String
        var toCountryCode: String?
        var toPartyId: String?
        var retryInitial: Double
        var retryMax: Double
        var requestTimeout: Double
    }

    let core: NapCore
    let push: PushSettings?
    let sender: (any HTTPSending)?
    let datexPath: String?
    let datexIdentifier: String
    let clock: @Sendable () -> Double
    private let pushes = Counter(label: "ocpp_gateway_nap_pushes_total", dimensions: [("result", "ok")])
    private let pushFailures = Counter(label: "ocpp_gateway_nap_pushes_total", dimensions: [("result", "failed")])
    private let uptimeGauges: [String: Gauge]
    private let stopped = Atomic<Bool>(false)
    /// Whether the receiver holds the Location (a PUT went through).
    private let locationPut = Atomic<Bool>(false)
    private let failures = Atomic<Int>(0)

    init(core: NapCore, push: PushSettings?, sender: (any HTTPSending)?, datexPath: String?, datexIdentifier: String,
         clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }) {
        self.core = core
        self.push = push
        self.sender = sender
        self.datexPath = datexPath
        self.datexIdentifier = datexIdentifier
        self.clock = clock
        var gauges: [String: Gauge] = [:]
        for evse in core.site.evses {
            for window in core.settings.windows {
                gauges[evse.evseId + "|" + window.label] = Gauge(label: "ocpp_gateway_nap_evse_uptime_ratio",
                                                                 dimensions: [("evse_id", evse.evseId), ("window", window.label)])
            }
        }
        uptimeGauges = gauges
    }

    var isLocationPut: Bool { locationPut.load(ordering: .relaxed) }

    func stop() {
        stopped.store(true, ordering: .relaxed)
        core.wakeUp()
    }

    /// The loop: wait for a change or a second, then tick, write DATEX, deliver what waits.
    func run() async {
        var lastGauges = -Double.infinity
        var retryAt = -Double.infinity
        while !stopped.load(ordering: .relaxed) {
            let now = clock()
            core.tick(at: now)
            core.flushHistory()
            writeDatexIfChanged(now: now)
            if now - lastGauges >= 10 {
                updateGauges(now: now)
                lastGauges = now
            }
            if push != nil, now >= retryAt {
                if await deliverAll() {
                    let failed = failures.exchange(0, ordering: .relaxed)
                    if failed > 0 {
                        core.logger.notice("OCPI receiver reachable again", metadata: ["failed_attempts": "\(failed)"])
                    }
                    retryAt = -Double.infinity
                } else {
                    let count = failures.add(1, ordering: .relaxed).newValue
                    retryAt = clock() + backoff(afterFailures: count)
                }
            }
            await nextWake()
        }
    }

    /// Waits for a change, at most a second (polling the core's flag every 50 ms).
    private func nextWake() async {
        let deadline = ContinuousClock.now + .seconds(1)
        while ContinuousClock.now < deadline, !stopped.load(ordering: .relaxed) {
            if core.consumeSignal() { return }
            try? await Task.sleep(for: .milliseconds(50))
        }
    }

    /// The delay after `failures` failed attempts: `retry_initial` doubling up to `retry_max`.
    func backoff(afterFailures failures: Int) -> Double {
        guard let push else { return 1 }
        return min(push.retryMax, push.retryInitial * pow(2, Double(max(0, failures - 1))))
    }

    /// PUTs the Location if the receiver does not have it yet, then PATCHes each EVSE's changes in order.
    /// Returns false at the first failure (the rest waits for the back-off).
    func deliverAll() async -> Bool {
        guard let push, let sender else { return true }
        if !locationPut.load(ordering: .relaxed) {
            let (location, delivered) = core.locationForPut(at: clock())
            let url = push.url.appendingPathComponent(core.site.countryCode).appendingPathComponent(core.site.partyId)
                .appendingPathComponent(core.site.locationId)
            guard await send("PUT", url: url, body: location, push: push, sender: sender) else { return false }
            for (evse, change) in delivered { core.delivered(change, evse: evse) }
            locationPut.store(true, ordering: .relaxed)
        }
        while !stopped.load(ordering: .relaxed) {
            let heads = core.pendingHeads()
            if heads.isEmpty { return true }
            for (evse, change) in heads {
                let url = push.url.appendingPathComponent(core.site.countryCode).appendingPathComponent(core.site.partyId)
                    .appendingPathComponent(core.site.locationId).appendingPathComponent(evse.uid)
                let body: JSONValue = [
                    "status": .string(change.status.rawValue),
                    "last_updated": .string(OCPIObjects.time(change.lastUpdated)),
                ]
                guard await send("PATCH", url: url, body: body, push: push, sender: sender) else { return false }
                core.delivered(change, evse: evse)
            }
        }
        return true
    }

    private func send(_ method: String, url: URL, body: JSONValue, push: PushSettings, sender: any HTTPSending) async -> Bool {
        let requestId = UUID().uuidString.lowercased()
        var headers: [(String, String)] = [
            ("Authorization", "Token " + Data(push.token.utf8).base64EncodedString()),
            ("Content-Type", "application/json"),
            ("X-Request-ID", requestId),
            ("X-Correlation-ID", requestId),
            ("OCPI-from-country-code", core.site.countryCode),
            ("OCPI-from-party-id", core.site.partyId),
        ]
        if let to = push.toCountryCode { headers.append(("OCPI-to-country-code", to)) }
        if let to = push.toPartyId { headers.append(("OCPI-to-party-id", to)) }
        let request = OutgoingRequest(method: method, url: url, headers: headers, body: body.serialized())
        do {
            let response = try await sender.send(request, timeout: .milliseconds(Int(push.requestTimeout * 1000)))
            let statusCode = (try? JSONValue(parsing: response.body))?["status_code"]?.intValue
            if (200..<300).contains(response.status), statusCode == nil || (1000..<2000).contains(statusCode!) {
                pushes.increment()
                return true
            }
            pushFailures.increment()
            // The receiver lost the Location: PUT it again before the next PATCH.
            if response.status == 404 || statusCode == 2003 { locationPut.store(false, ordering: .relaxed) }
            guard failures.load(ordering: .relaxed) == 0 else { return false }  // one line per outage, not per retry
            core.logger.warning("OCPI receiver refused a push", metadata: [
                "method": "\(method)", "http_status": "\(response.status)", "ocpi_status": "\(statusCode.map(String.init) ?? "-")",
                "request_id": "\(requestId)",
            ])
        } catch {
            pushFailures.increment()
            guard failures.load(ordering: .relaxed) == 0 else { return false }
            core.logger.notice("OCPI receiver unreachable; retrying with back-off", metadata: [
                "method": "\(method)", "error": "\(LogSafe.escape(String(describing: error)))", "request_id": "\(requestId)",
            ])
        }
        return false
    }

    func writeDatexIfChanged(now: Double) {
        guard let datexPath, core.takeDatexDirty() else { return }
        let (evses, _) = core.snapshot()
        let xml = DatexPublication.xml(site: core.site, evses: evses, nationalIdentifier: datexIdentifier, now: now)
        do {
            // Public data: readable by the uploader that passes it to the access point.
            try AtomicFile.write(Data(xml.utf8), to: datexPath, mode: 0o644)
        } catch {
            core.logger.error("cannot write the DATEX II publication", metadata: ["error": "\(error)"])
            core.markDatexDirty()
        }
    }

    func updateGauges(now: Double) {
        for window in core.settings.windows {
            for (evse, figures) in core.uptime(window: window.seconds, at: now) {
                guard let percent = figures.percent else { continue }
                uptimeGauges[evse.evseId + "|" + window.label]?.record(percent / 100)
            }
        }
    }
}
