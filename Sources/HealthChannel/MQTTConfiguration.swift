import Foundation
public import Router
public import StageKit

extension MQTTSettings {
    /// Reads `gateway.yaml`'s `mqtt:` section; relative TLS paths resolve against the config file's folder.
    public init(_ mqtt: GatewayConfiguration.MQTT, configurationFile: String) throws {
        guard let url = URL(string: mqtt.url), let scheme = url.scheme, scheme == "mqtt" || scheme == "mqtts", let host = url.host else {
            throw MQTTError("mqtt 'url' should be mqtt://host:port or mqtts://host:port, not '\(loggableURI(mqtt.url))'")
        }
        let folder = URL(fileURLWithPath: configurationFile).deletingLastPathComponent().path
        func absolute(_ path: String?) -> String? {
            path.map { $0.hasPrefix("/") ? $0 : folder + "/" + $0 }
        }
        let qos = mqtt.qos ?? 1
        guard (0...2).contains(qos) else { throw MQTTError("mqtt 'qos' must be 0, 1 or 2") }
        self.init(host: host, port: url.port ?? (scheme == "mqtts" ? 8883 : 1883), clientId: mqtt.clientId ?? "ocpp-gateway",
                  topicPrefix: mqtt.topicPrefix ?? "ocpp-gateway", qos: qos, queueLimit: max(1, mqtt.queueLimit ?? 10_000),
                  username: mqtt.username, password: mqtt.password,
                  caFile: absolute(mqtt.tls?.caFile) ?? (scheme == "mqtts" ? "/etc/ssl/certs/ca-certificates.crt" : nil),
                  certificateFile: absolute(mqtt.tls?.certFile), keyFile: absolute(mqtt.tls?.keyFile))
        switch mqtt.version ?? "3.1.1" {
        case "3.1.1": protocolVersion = 4
        case "5": protocolVersion = 5
        case let other: throw MQTTError("mqtt 'version' is \"3.1.1\" or \"5\", not '\(other)'")
        }
    }
}

/// What `validate` gives stages in place of a connection: the topic root, and nothing sent.
public struct OfflinePublisher: MessagePublisher {
    public let topicRoot: String
    public init(topicRoot: String) { self.topicRoot = topicRoot }
    public func publish(topic: String, payload: [UInt8], retain: Bool) -> Bool { false }
}
