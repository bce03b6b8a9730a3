import DevPKI
import Foundation
import NIOCore
import NIOPosix

func freePort() throws -> Int {
    let channel = try ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton).bind(host: "127.0.0.1", port: 0).wait()
    defer { try? channel.close().wait() }
    return channel.localAddress?.port ?? 0
}

func waitForPort(_ port: Int, seconds: Double = 30) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while Date() < deadline {
        if (try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).get().close().get()) != nil {
            return
        }
        try await Task.sleep(for: .milliseconds(50))
    }
    throw BenchError("nothing listens on \(port)")
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// nginx as an operator would set it up instead of the gateway: ws:// in, wss:// out with each
/// charger's own client certificate (chosen from the URL), TLS ≥ 1.2, the CSMS certificate verified.
final class Nginx {
    let port: Int
    let process = Process()
    let folder: String

    /// - Parameter prefix: e.g. `taskset -c 0`; a pinned nginx runs one worker (all of them would share that CPU).
    init(work: String, csmsPort: Int, pki: DevPKI, prefix: [String] = []) throws {
        port = try freePort()
        folder = work + "/nginx"
        try FileManager.default.createDirectory(atPath: folder + "/logs", withIntermediateDirectories: true)
        let conf = """
            user root;
            worker_processes \(prefix.isEmpty ? "auto" : "1");
            error_log \(folder)/logs/error.log warn;
            pid \(folder)/nginx.pid;
            worker_rlimit_nofile 65536;
            events { worker_connections 16384; }
            http {
                access_log off;
                client_body_temp_path \(folder)/body;
                proxy_temp_path \(folder)/proxy;
                fastcgi_temp_path \(folder)/fastcgi;
                uwsgi_temp_path \(folder)/uwsgi;
                scgi_temp_path \(folder)/scgi;
                map $uri $charger { ~^/ocpp/(?<id>[^/]+)$ $id; }
                map $http_upgrade $connection_upgrade { default upgrade; '' close; }
                server {
                    listen 127.0.0.1:\(port) backlog=4096;
                    location /ocpp/ {
                        proxy_pass https://127.0.0.1:\(csmsPort);
                        proxy_http_version 1.1;
                        proxy_set_header Upgrade $http_upgrade;
                        proxy_set_header Connection $connection_upgrade;
                        proxy_ssl_certificate \(pki.directory)/chargers/$charger/cert.pem;
                        proxy_ssl_certificate_key \(pki.directory)/chargers/$charger/key.pem;
                        proxy_ssl_trusted_certificate \(pki.caCertificate);
                        proxy_ssl_verify on;
                        proxy_ssl_name localhost;
                        proxy_ssl_protocols TLSv1.2 TLSv1.3;
                        proxy_ssl_session_reuse on;
                        proxy_read_timeout 3600s;
                    }
                }
            }
            """
        try conf.write(toFile: folder + "/nginx.conf", atomically: true, encoding: .utf8)
        process.executableURL = URL(fileURLWithPath: prefix.first ?? "/usr/sbin/nginx")
        process.arguments = (prefix.isEmpty ? [] : Array(prefix.dropFirst()) + ["/usr/sbin/nginx"])
            + ["-p", folder, "-c", folder + "/nginx.conf", "-g", "daemon off;"]
    }

    func start() throws {
        try process.run()
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline, (try? ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(host: "127.0.0.1", port: port).wait().close().wait()) == nil {
            Thread.sleep(forTimeInterval: 0.05)
        }
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}

enum Pipelines {
    static let minimal = """
        version: 1
        stages:
          - id: identity
            type: auth
        """
    /// The default pipeline with the firewall in front; its limits are raised so that it inspects
    /// every frame but refuses none (all simulated chargers share one source address and run flat out).
    static let full = """
        version: 1
        stages:
          - id: guard
            type: ids
            config:
              rate_limits: { default: { per_second: 100000, burst: 100000 } }
              connections: { attempts_per_second: 100000, attempts_burst: 100000 }
          - id: identity
            type: auth
          - id: certificates
            type: certs
            config: { cpo_name: "Bench CPO" }
        """
}

extension Pipelines {
    /// The health channel at its defaults.
    static let healthChannel = """
        version: 1
        stages:
          - id: identity
            type: auth
          - id: telemetry
            type: mqtt_tap
        """

    /// The firewall with its default limits, in front of auth: what a site would run.
    static let firewall = """
        version: 1
        stages:
          - id: guard
            type: ids
          - id: identity
            type: auth
        """
}

/// The gateway under test, as its own process.
final class GatewayProcess {
    let port: Int
    let process = Process()

    /// - Parameter messageBudget: keep `south.max_messages_per_second` at its default; off elsewhere, where
    ///   one connection drives the gateway to saturation to measure the relay's own cost.
    init(binary: String, work: String, name: String, csmsPort: Int, pki: DevPKI, chargers: [String], pipeline: String,
         extraConfiguration: String = "", prefix: [String] = [], messageBudget: Bool = false) throws {
        port = try freePort()
        let folder = work + "/gateway-\(name)"
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try pipeline.write(toFile: folder + "/pipeline.yaml", atomically: true, encoding: .utf8)
        let chargerLines = chargers.map { "    \($0): { password: \"bench-\($0)\" }" }.joined(separator: "\n")
        try """
            south:
              listen: "127.0.0.1:\(port)"
              security_profile: 1
              max_connections_per_source: 100000
              max_pending_connections: 100000
              max_queued_calls: 1000
            \(messageBudget ? "" : "  max_messages_per_second: 0")
              chargers:
            \(chargerLines)
            north:
              url: "wss://127.0.0.1:\(csmsPort)/ocpp"
              security_profile: 3
              ca_file: "\(pki.caCertificate)"
              server_name: localhost
            state_dir: "\(pki.directory)"
            pipeline: pipeline.yaml

            """.appending(extraConfiguration).write(toFile: folder + "/gateway.yaml", atomically: true, encoding: .utf8)
        guard FileManager.default.isExecutableFile(atPath: binary) else { throw BenchError("no gateway binary at \(binary)") }
        // `prefix`: a command the gateway runs under (valgrind, taskset); its pid is the gateway's.
        process.executableURL = URL(fileURLWithPath: prefix.first ?? binary)
        process.arguments = (prefix.isEmpty ? [] : Array(prefix.dropFirst()) + [binary])
            + ["run", "--config", folder + "/gateway.yaml", "--log-level", "warning"]
        guard FileManager.default.createFile(atPath: folder + "/gateway.log", contents: nil) else { throw BenchError("cannot create \(folder)/gateway.log") }
        let logHandle = try FileHandle(forWritingTo: URL(fileURLWithPath: folder + "/gateway.log"))
        process.standardOutput = logHandle
        process.standardError = logHandle
    }

    func start() async throws {
        try process.run()
        try await waitForPort(port)
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
    }
}
