import ArgumentParser
import Foundation
import Gateway
import Router

/// `ocpp-gateway status`: what the status page shows, in the terminal, from `/api/status`.
struct StatusCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "What the running gateway is doing: chargers, pipeline, security events, captures (from admin.listen's /api/status).")

    @Option(name: .long, help: "Path to gateway.yaml: its admin.listen (and admin.token) say where to ask.")
    var config: String?

    @Option(name: .long, help: "The admin endpoint instead of --config, e.g. http://127.0.0.1:9100.")
    var url: String?

    @Option(name: .long, help: "A bearer token (admin.token) for a gateway beyond loopback; default: admin.token of --config.")
    var token: String?

    @Flag(name: .long, help: "Print the JSON of /api/status as it came.")
    var json = false

    func run() throws {
        var base = url
        var bearer = token
        if base == nil {
            let file = config ?? "gateway.yaml"
            let configuration = try loadConfiguration(file)
            guard var host = configuration.adminHost, let port = configuration.adminPort else {
                throw failure("\(file) has no admin.listen: the gateway serves no status (add admin: { listen: \"127.0.0.1:9100\" })")
            }
            if host == "0.0.0.0" || host == "::" { host = "127.0.0.1" }
            base = "http://\(host.contains(":") ? "[\(host)]" : host):\(port)"
            bearer = bearer ?? configuration.adminCredentials.token
        }
        guard let base, let endpoint = URL(string: base), endpoint.scheme == "http", let host = endpoint.host else {
            throw failure("--url must look like http://127.0.0.1:9100")
        }
        let (status, body): (Int, [UInt8])
        do {
            (status, body) = try PlainHTTP.get(host: host, port: endpoint.port ?? 80, path: "/api/status",
                                               headers: bearer.map { ["Authorization": "Bearer \($0)"] } ?? [:])
        } catch {
            throw failure("cannot reach the gateway at \(base) (\(error)): is it running? (ocpp-gateway run --config …)")
        }
        guard status == 200 else {
            let text = String(decoding: body.prefix(300), as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            throw failure("\(base)/api/status answered \(status): \(text)")
        }
        if json {
            FileHandle.standardOutput.write(Data(body))
            return
        }
        let decoder = JSONDecoder()
        guard let snapshot = try? decoder.decode(StatusSnapshot.self, from: Data(body)) else {
            throw failure("\(base)/api/status did not answer with a status snapshot (is it an ocpp-gateway?)")
        }
        print(StatusText.render(snapshot), terminator: "")
    }

    private func failure(_ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("error: \(message)\n".utf8))
        return ExitCode.failure
    }
}

/// The snapshot as aligned text.
enum StatusText {
    static func render(_ snapshot: StatusSnapshot) -> String {
        var out = ""
        let gateway = snapshot.gateway
        out += "gateway  \(gateway.ready ? "ready" : "NOT READY"), health \(gateway.health), \(gateway.sessions) charger\(gateway.sessions == 1 ? "" : "s") connected (\(snapshot.generatedAt))\n"
        for (name, check) in gateway.checks.sorted(by: { $0.key < $1.key }) where !check.ok {
            out += "  ! \(name): \(check.detail)\n"
        }
        out += "         south \(gateway.south) → north \(gateway.north)\n"

        out += "\nCHARGERS\n"
        out += table(["CHARGER", "SINCE", "FROM", "SP S/N", "NORTH", "LAST FROM CHARGER", "LAST FROM CSMS", "CERT EXPIRES", "LIMIT", "QUEUED →CP/→CSMS"],
                     snapshot.chargers.map { charger in
                         [charger.id, charger.connectedSince, charger.remoteAddress,
                          "\(charger.southSecurityProfile)/\(charger.northSecurityProfile)", charger.northLink,
                          charger.lastFromCharger.map { "\($0.message) \($0.at)" } ?? "-",
                          charger.lastFromCSMS.map { "\($0.message) \($0.at)" } ?? "-",
                          charger.certificateExpiry ?? "-", charger.currentLimit ?? "-",
                          "\(charger.queuedTowardsCharger)/\(charger.queuedTowardsCSMS)"]
                     }, empty: "(no charger connected)")

        out += "\nPIPELINE  \(snapshot.pipeline.file)\n"
        out += table(["#", "STAGE", "TYPE", "FRAMES", "VERDICTS"], snapshot.pipeline.stages.enumerated().map { index, stage in
            ["\(index + 1)", stage.id, stage.type, "\(stage.frames)",
             stage.verdicts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")]
        }, empty: "(no stage)")

        out += "\nSECURITY EVENTS\n"
        out += table(["TIME", "CHARGER", "TYPE", "DETAILS"], snapshot.securityEvents.map { [$0.at, $0.charger, $0.type, $0.techInfo ?? ""] },
                     empty: "(none since the gateway started)")

        out += "\nDASHCAM CAPTURES\n"
        out += table(["TIME", "CHARGER", "TRIGGER", "FRAMES", "DOWNLOAD"], snapshot.captures.map {
            [$0.at, $0.charger, $0.trigger, $0.frames.map(String.init) ?? "?", $0.path]
        }, empty: "(none)")

        out += "\nHEALTH CHANNEL\n"
        if let channel = snapshot.healthChannel {
            out += "  broker \(channel.broker) \(channel.connected ? "connected" : "DISCONNECTED"), queued \(channel.queued)/\(channel.queueLimit), acknowledged \(channel.acknowledged), dropped \(channel.dropped)\n"
        } else {
            out += "  (not configured)\n"
        }
        return out
    }

    /// Columns padded to their widest cell, two spaces apart.
    static func table(_ header: [String], _ rows: [[String]], empty: String) -> String {
        guard !rows.isEmpty else { return "  \(empty)\n" }
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            "  " + row.enumerated().map { index, cell in
                index == row.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
            }.joined(separator: "  ")
        }.joined(separator: "\n") + "\n"
    }
}

/// A blocking HTTP/1.0 GET over a plain TCP socket (the admin endpoint is plain HTTP), with a 10 s timeout.
enum PlainHTTP {
    struct Failure: Error, CustomStringConvertible {
        let description: String
    }

    static func get(host: String, port: Int, path: String, headers: [String: String]) throws -> (status: Int, body: [UInt8]) {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var results: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &results) == 0, let first = results else {
            throw Failure(description: "cannot resolve \(host)")
        }
        defer { freeaddrinfo(results) }
        var lastError = "connection refused"
        var candidate: UnsafeMutablePointer<addrinfo>? = first
        while let info = candidate {
            candidate = info.pointee.ai_next
            let fd = socket(info.pointee.ai_family, info.pointee.ai_socktype, info.pointee.ai_protocol)
            guard fd >= 0 else { continue }
            var timeout = timeval(tv_sec: 10, tv_usec: 0)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            guard connect(fd, info.pointee.ai_addr, info.pointee.ai_addrlen) == 0 else {
                lastError = String(cString: strerror(errno))
                close(fd)
                continue
            }
            defer { close(fd) }
            var request = "GET \(path) HTTP/1.0\r\nHost: \(host):\(port)\r\nAccept: application/json\r\n"
            for (name, value) in headers { request += "\(name): \(value)\r\n" }
            request += "\r\n"
            let bytes = Array(request.utf8)
            guard bytes.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, 0) }) == bytes.count else {
                throw Failure(description: String(cString: strerror(errno)))
            }
            var response: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 65_536)
            while response.count < 64 << 20 {
                let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                if count < 0 { throw Failure(description: "reading: \(String(cString: strerror(errno)))") }
                if count == 0 { break }
                response += buffer[0 ..< count]
            }
            guard let split = response.firstRange(of: Array("\r\n\r\n".utf8)) else { throw Failure(description: "no HTTP answer") }
            let statusLine = String(decoding: response[..<split.lowerBound], as: UTF8.self).split(separator: "\r\n").first ?? ""
            let parts = statusLine.split(separator: " ")
            guard parts.count >= 2, let status = Int(parts[1]) else { throw Failure(description: "no HTTP answer") }
            return (status, Array(response[split.upperBound...]))
        }
        throw Failure(description: lastError.lowercased())
    }
}
