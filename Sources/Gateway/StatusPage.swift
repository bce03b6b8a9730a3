import Foundation

/// The status page at `/`: one server-rendered HTML document, no JavaScript, no external resource,
/// refreshed by `<meta http-equiv="refresh">`, readable on a phone. Every value is HTML-escaped.
public enum StatusPage {
    /// Escapes text for HTML element content and quoted attribute values.
    public static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for character in text.unicodeScalars {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    public static func render(_ snapshot: StatusSnapshot, refreshSeconds: Int = 10) -> String {
        let e = escape
        var html = """
        <!DOCTYPE html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <meta http-equiv="refresh" content="\(refreshSeconds)">
        <title>ocpp-gateway status</title>
        <style>
        body{font-family:system-ui,sans-serif;margin:0.8rem;color:#1b1f23;background:#fafbfc;font-size:15px}
        h1{font-size:1.3rem;margin:0 0 .3rem}h2{font-size:1.1rem;margin:1.2rem 0 .4rem}
        .scroll{overflow-x:auto}table{border-collapse:collapse;width:100%;background:#fff}
        th,td{border:1px solid #d0d7de;padding:.3rem .45rem;text-align:left;vertical-align:top;white-space:nowrap}
        td.wrap{white-space:normal;word-break:break-word;min-width:12rem}th{background:#eef1f4}
        .ok{color:#1a7f37;font-weight:600}.bad{color:#cf222e;font-weight:600}.warn{color:#9a6700;font-weight:600}
        .muted{color:#57606a}.pill{display:inline-block;padding:0 .4rem;border-radius:.6rem;border:1px solid currentColor;font-size:.85rem}
        .cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(min(100%,24rem),1fr));gap:.6rem}
        .card{background:#fff;border:1px solid #d0d7de;border-radius:.4rem;padding:.5rem .7rem}
        .card h3{font-size:1.05rem;margin:0 0 .3rem}dl{display:grid;grid-template-columns:9.5rem minmax(0,1fr);gap:.15rem .7rem;margin:0}
        dt{color:#57606a}dd{margin:0;word-break:break-word}
        </style>
        </head>
        <body>
        <h1>ocpp-gateway</h1>

        """
        let gateway = snapshot.gateway
        html += "<p id=\"summary\"><span class=\"pill \(gateway.ready ? "ok" : "bad")\">\(gateway.ready ? "ready" : "not ready")</span> "
        html += "<span class=\"pill \(gateway.health == "ok" ? "ok" : "bad")\">health: \(e(gateway.health))</span> "
        html += "\(gateway.sessions) charger\(gateway.sessions == 1 ? "" : "s") connected · "
        html += "<span class=\"muted\">\(e(snapshot.generatedAt)), refreshes every \(refreshSeconds) s</span></p>\n"
        let failing = gateway.checks.filter { !$0.value.ok }.sorted { $0.key < $1.key }
        if !failing.isEmpty {
            html += "<ul id=\"checks\">" + failing.map { "<li class=\"bad\">\(e($0.key)): \(e($0.value.detail))</li>" }.joined() + "</ul>\n"
        }
        html += "<p class=\"muted\">south \(e(gateway.south)) → north \(e(gateway.north))</p>\n"

        html += "<h2>Chargers</h2>\n"
        if snapshot.chargers.isEmpty {
            html += "<p class=\"muted\" id=\"chargers\">No charger connected.</p>\n"
        } else {
            // One card per charger: readable on a phone, several side by side on a laptop.
            html += "<div class=\"cards\" id=\"chargers\">\n"
            for charger in snapshot.chargers {
                let link = charger.northLink == "up" ? "ok" : charger.northLink == "reconnecting" ? "warn" : "bad"
                html += "<section class=\"card\" id=\"charger-\(e(charger.id))\"><h3><a href=\"/api/chargers/\(CaptureFolder.encode(charger.id))\">"
                html += "\(e(charger.id))</a> <span class=\"pill \(link)\">north \(e(charger.northLink))</span></h3><dl>"
                var rows: [(String, String)] = [
                    ("connected since", e(short(charger.connectedSince))),
                    ("from", e(charger.remoteAddress)),
                    ("security profile", "south \(charger.southSecurityProfile) → north \(charger.northSecurityProfile)"),
                    ("last from charger", frame(charger.lastFromCharger)),
                    ("last from CSMS", frame(charger.lastFromCSMS)),
                    ("certificate expires", e(charger.certificateExpiry.map(short) ?? "—")),
                    ("current limit", e(charger.currentLimit ?? "—")),
                    ("queued CALLs", "\(charger.queuedTowardsCharger) → charger, \(charger.queuedTowardsCSMS) → CSMS"),
                ]
                let shown: Set<String> = ["certificate_expiry", "current_limit"]
                for (stage, fields) in charger.stages.sorted(by: { $0.key < $1.key }) {
                    for (key, value) in fields.sorted(by: { $0.key < $1.key }) where !shown.contains(key) {
                        rows.append(("\(e(stage)): \(e(key.replacingOccurrences(of: "_", with: " ")))", e(value)))
                    }
                }
                html += rows.map { "<dt>\($0.0)</dt><dd>\($0.1)</dd>" }.joined() + "</dl></section>\n"
            }
            html += "</div>\n"
        }

        html += "<h2>Pipeline</h2>\n<p class=\"muted\">\(e(snapshot.pipeline.file))</p>\n"
        html += "<div class=\"scroll\"><table id=\"pipeline\"><tr><th>#</th><th>stage</th><th>type</th><th>frames</th><th>verdicts</th></tr>\n"
        for (index, stage) in snapshot.pipeline.stages.enumerated() {
            let verdicts = stage.verdicts.sorted { $0.key < $1.key }.map { "\(e($0.key)) \($0.value)" }.joined(separator: ", ")
            html += "<tr><td>\(index + 1)</td><td>\(e(stage.id))</td><td>\(e(stage.type))</td><td>\(stage.frames)</td>"
            html += "<td>\(verdicts.isEmpty ? "—" : verdicts)</td></tr>\n"
        }
        html += "</table></div>\n"

        html += "<h2>Security events</h2>\n"
        if snapshot.securityEvents.isEmpty {
            html += "<p class=\"muted\" id=\"security-events\">None since the gateway started.</p>\n"
        } else {
            html += "<div class=\"scroll\"><table id=\"security-events\"><tr><th>time</th><th>charger</th><th>type</th><th>details</th></tr>\n"
            for event in snapshot.securityEvents {
                html += "<tr><td>\(e(short(event.at)))</td><td>\(e(event.charger))</td><td>\(e(event.type))</td>"
                html += "<td class=\"wrap\">\(e(event.techInfo ?? ""))</td></tr>\n"
            }
            html += "</table></div>\n"
        }

        html += "<h2>Dashcam captures</h2>\n"
        if snapshot.captures.isEmpty {
            html += "<p class=\"muted\" id=\"captures\">No capture on disk.</p>\n"
        } else {
            html += "<div class=\"scroll\"><table id=\"captures\"><tr><th>time</th><th>charger</th><th>trigger</th><th>frames</th><th>size</th></tr>\n"
            for capture in snapshot.captures {
                html += "<tr><td><a href=\"\(e(capture.path))\">\(e(short(capture.at)))</a></td><td>\(e(capture.charger))</td>"
                html += "<td class=\"wrap\">\(e(capture.trigger))</td><td>\(capture.frames.map(String.init) ?? "?")</td>"
                html += "<td>\(byteCount(capture.bytes))</td></tr>\n"
            }
            html += "</table></div>\n"
        }

        html += "<h2>Health channel</h2>\n"
        if let channel = snapshot.healthChannel {
            html += "<p id=\"health-channel\">broker \(e(channel.broker)): <span class=\"\(channel.connected ? "ok" : "bad")\">"
            html += "\(channel.connected ? "connected" : "disconnected")</span> · queued \(channel.queued) of \(channel.queueLimit)"
            html += " · acknowledged \(channel.acknowledged) · <span class=\"\(channel.dropped > 0 ? "warn" : "")\">dropped \(channel.dropped)</span></p>\n"
        } else {
            html += "<p class=\"muted\" id=\"health-channel\">Not configured (no <code>mqtt:</code> in gateway.yaml).</p>\n"
        }
        html += "<p class=\"muted\">JSON: <a href=\"/api/status\">/api/status</a> · <a href=\"/metrics\">/metrics</a> · "
        html += "<a href=\"/healthz\">/healthz</a> · <a href=\"/readyz\">/readyz</a></p>\n</body>\n</html>\n"
        return html

        func frame(_ summary: FrameSummary?) -> String {
            guard let summary else { return "—" }
            return "\(e(summary.message)) <span class=\"muted\">\(e(short(summary.at)))</span>"
        }

        /// `2026-11-25T09:23:36Z` as `2026-11-25 09:23:36Z`; fractions of a second left out.
        func short(_ time: String) -> String {
            guard time.count >= 19, time.dropFirst(10).first == "T" else { return time }
            let zone = time.hasSuffix("Z") ? "Z" : ""
            return String(time.prefix(10)) + " " + String(time.dropFirst(11).prefix(8)) + zone
        }
    }

    static func byteCount(_ bytes: Int) -> String {
        bytes < 10_240 ? "\(bytes) B" : bytes < 10 << 20 ? "\(bytes >> 10) KiB" : "\(bytes >> 20) MiB"
    }
}
