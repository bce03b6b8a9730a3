import Foundation
import Logging
import OCPP
import StageKit
import SwiftASN1
import X509

/// OCPP 2.0.1 stations hold their own keys and certificates and run their own flows with the CSMS
/// (A02/A03 SignCertificate → CertificateSigned, M01–M05 Install/Delete/GetInstalledCertificateIds,
/// M06 Get15118EVCertificate, M06 GetCertificateStatus). The stage never answers or changes these:
/// it parses what it can — the CSR's subject, the chain's subjects and expiry and whether it leads
/// to a root the gateway knows — and logs it, so an operator sees a station's certificate life in
/// the gateway's log. Nothing here blocks a frame: an unparseable CSR or chain is logged and relayed.
extension CertsStage {
    /// Log lines a station (or its CSMS) can provoke per frame: at most 10 a minute per session.
    enum Observation201Log: SessionStateKey { typealias Value = LogThrottle }

    func observe201(_ envelope: Envelope, _ session: any SessionContext) -> Verdict {
        guard envelope.isCall else { return .forward }
        let payload = envelope.payload()
        switch (envelope.direction, envelope.action ?? "") {
        case (.fromCharger, "SignCertificate"):
            let type = payload["certificateType"]?.stringValue ?? "ChargingStationCertificate"
            guard let pem = payload["csr"]?.stringValue, let csr = try? CertificateSigningRequest(pemEncoded: pem) else {
                log201(.warning, "2.0.1 SignCertificate: the CSR cannot be parsed; relayed as is", ["certificate_type": type], session)
                break
            }
            let cn = CertificateTools.commonName(csr.subject)
            log201(.info, "2.0.1 SignCertificate (relayed)", [
                "certificate_type": type, "subject": LogSafe.escape("\(csr.subject)", limit: 200),
                "cn_is_charge_point_id": "\(cn == session.chargerId)",
            ], session)
        case (.fromCSMS, "CertificateSigned"):
            let chain = CertificateTools.parseChain(payload["certificateChain"]?.stringValue ?? "")
            var fields = describe(chain, session)
            fields["certificate_type"] = LogSafe.escape(payload["certificateType"]?.stringValue ?? "ChargingStationCertificate", limit: 40)
            if !chain.isEmpty {
                let problem = CertificateTools.chainProblem(chain, anchors: provisionedRoots + chargerAnchors, now: Date())
                fields["chain"] = problem.map { LogSafe.escape($0, limit: 200) } ?? "leads to a known root"
            }
            log201(chain.isEmpty ? .warning : .info, chain.isEmpty
                ? "2.0.1 CertificateSigned: no certificate could be parsed; relayed as is" : "2.0.1 CertificateSigned (relayed)", fields, session)
        case (.fromCSMS, "InstallCertificate"):
            let chain = CertificateTools.parseChain(payload["certificate"]?.stringValue ?? "")
            var fields = describe(chain, session)
            fields["certificate_type"] = LogSafe.escape(payload["certificateType"]?.stringValue ?? "?", limit: 40)
            log201(chain.isEmpty ? .warning : .info, chain.isEmpty
                ? "2.0.1 InstallCertificate: the certificate cannot be parsed; relayed as is" : "2.0.1 InstallCertificate (relayed)", fields, session)
        case (.fromCSMS, "DeleteCertificate"), (.fromCSMS, "GetInstalledCertificateIds"),
             (.fromCharger, "Get15118EVCertificate"), (.fromCharger, "GetCertificateStatus"):
            log201(.info, "2.0.1 certificate message (relayed)", ["action": envelope.action ?? ""], session)
        default:
            break
        }
        return .forward
    }

    private func describe(_ chain: [Certificate], _ session: any SessionContext) -> [String: String] {
        guard let leaf = chain.first else { return [:] }
        return [
            "subject": LogSafe.escape("\(leaf.subject)", limit: 200),
            "issuer": LogSafe.escape("\(leaf.issuer)", limit: 200),
            "not_after": leaf.notValidAfter.formatted(.iso8601),
            "expired": "\(leaf.notValidAfter < Date())",
            "certificates": "\(chain.count)",
            "cn_is_charge_point_id": "\(CertificateTools.commonName(leaf.subject) == session.chargerId)",
        ]
    }

    private func log201(_ level: Logger.Level, _ message: String, _ fields: [String: String], _ session: any SessionContext) {
        var throttle = session[Observation201Log.self] ?? LogThrottle()
        let (log, suppressed) = throttle.admit(now: session.now)
        session[Observation201Log.self] = throttle
        guard log else { return }
        var metadata = Logger.Metadata()
        for (key, value) in fields { metadata[key] = "\(value)" }
        if suppressed > 0 { metadata["similar_lines_left_out"] = "\(suppressed)" }
        session.logger.log(level: level, "\(message)", metadata: metadata)
    }
}
