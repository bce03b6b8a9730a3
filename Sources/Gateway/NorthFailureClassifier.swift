import NIOSSL
import StageKit
import Transport

/// Why a north connection failed, for the Security Whitepaper's events: from the transport's typed
/// errors (`WebSocketConnectError.tls` with the check that failed, NIOSSL's errors), never from
/// error text.
enum NorthFailureClassifier {
    static func failure(for error: any Error) -> NorthFailure {
        NorthFailure(kind: kind(of: error), detail: "\(error)")
    }

    static func kind(of error: any Error) -> NorthFailure.Kind {
        switch error {
        case WebSocketConnectError.tls(let failure):
            return kind(of: failure.check)
        case let failure as TLSHandshakeFailure:
            return kind(of: failure.check)
        case let extra as NIOSSLExtraError where extra == .failedToValidateHostname:
            return .untrustedCentralSystemCertificate
        case NIOSSLError.noCertificateToValidate, NIOSSLError.unableToValidateCertificate:
            return .untrustedCentralSystemCertificate
        default:
            return .other
        }
    }

    static func kind(of check: TLSHandshakeFailure.Check) -> NorthFailure.Kind {
        switch check {
        case .expired, .notYetValid, .wrongExtendedKeyUsage, .untrustedChain, .hostname, .commonNameOnly:
            .untrustedCentralSystemCertificate
        case .protocolVersion:
            .tlsVersion
        case .other:
            .other
        }
    }

    /// The `result` label of `ocpp_gateway_north_connects_total` for a failed attempt (a fixed set).
    static func resultLabel(for error: any Error) -> String {
        switch error {
        case WebSocketConnectError.timedOut: "timeout"
        case WebSocketConnectError.cancelled: "abandoned"
        default: "failed"
        }
    }
}
