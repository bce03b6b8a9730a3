@testable import CertsStage
import DevPKI
import Foundation
import Logging
import OCPP
import Router
import StageKit
import StageTesting
import Testing
import Crypto
import X509

/// Keeps what a 2.0.1 session sends (StageTester's sessions are 1.6 ones).
final class Recorder201: SessionDriver {
    var sent: [(side: Side, frame: Frame)] = []
    func send(_ bytes: [UInt8], to side: Side) { sent.append((side, try! Frame.parse(bytes))) }
    func closeSession(reason: String) {}
    func schedule(after delay: Duration, _ body: @escaping () -> Void) -> any ScheduledWork { Never201() }
    var now: Duration { .zero }
    var wallTime: Double { Date().timeIntervalSince1970 }
    var northPeerCertificate: [UInt8]? { nil }
    func execute(_ body: @escaping @Sendable () -> Void) { body() }
    func relinkNorth(with credentials: NorthCredentials, isIdle: @escaping () -> Bool, completion: @escaping (Result<Void, any Error>) -> Void) {}
}

struct Never201: ScheduledWork { func cancel() {} }

@Suite("certs stage with an OCPP 2.0.1 station")
struct Certs201Tests {
    func session(_ rig: CertsRig) -> (Session, Recorder201) {
        let driver = Recorder201()
        let session = Session(chargerId: "CS201", version: .v201,
                              pipelines: PipelineHolder(Pipeline(stages: [LoadedStage.forTesting(id: "certs", instance: rig.stage)], file: "<test>")),
                              limits: SessionLimits(), metrics: RouterMetrics(), driver: driver,
                              logger: Logger(label: "certs-201", factory: { _ in rig.logs }), bootAccepted: true)
        session.start()
        return (session, driver)
    }

    @Test func theStationsOwnCertificateFlowIsRelayedUntouchedAndLogged() throws {
        let rig = try CertsRig()
        let (session, driver) = session(rig)
        #expect(driver.sent.isEmpty, "no events, no renewal of the gateway's own for a 2.0.1 station")
        // The station's CSR goes to the CSMS as sent.
        try rig.pki.issueChargerCertificate("CS201")
        let csr = try CertificateTools.makeCSR(commonName: "CS201", organization: "Station CPO", key: Certificate.PrivateKey(P256.Signing.PrivateKey()), type: .ecP256)
        let sign = FrameEncoder.call(id: "s1", action: "SignCertificate", payload: ["csr": .string(csr), "certificateType": "ChargingStationCertificate"])
        session.receive(sign, from: .charger)
        #expect(driver.sent.map(\.side) == [.csms] && driver.sent.last?.frame.bytes == sign)
        // The CSMS's CertificateSigned reaches the station untouched (for a 1.6 charger the gateway would answer it).
        let chain = try String(contentsOfFile: rig.pki.chargerCertificate("CS201"), encoding: .utf8)
        let signed = FrameEncoder.call(id: "c1", action: "CertificateSigned", payload: ["certificateChain": .string(chain)])
        session.receive(signed, from: .csms)
        #expect(driver.sent.last?.side == .charger && driver.sent.last?.frame.bytes == signed)
        session.receive(FrameEncoder.callResult(id: "c1", payload: ["status": "Accepted"]), from: .charger)
        #expect(driver.sent.last?.side == .csms && driver.sent.last?.frame.messageId == "c1", "the station's own answer")
        // A chain that cannot be parsed is relayed too, with a warning.
        let garbage = FrameEncoder.call(id: "c2", action: "CertificateSigned", payload: ["certificateChain": "not a certificate"])
        session.receive(garbage, from: .csms)
        #expect(driver.sent.last?.frame.bytes == garbage)
        let log = rig.logs.text
        #expect(log.contains("2.0.1 SignCertificate (relayed)") && log.contains("cn_is_charge_point_id=true"))
        #expect(log.contains("2.0.1 CertificateSigned (relayed)") && log.contains("CN=CS201") && log.contains("leads to a known root"))
        #expect(log.contains("no certificate could be parsed"))
    }
}
