import Foundation
import TelemetryCompression

/// Realistic 1 Hz charging traces, made here, deterministic.
enum Traces {
    struct Trace {
        var name: String
        var series: [(name: String, unit: String, samples: [Sample])]
        /// Each measurand's instrument span (the range it is configured for), which CompDev is a share of.
        var spans: [String: Double]
    }

    /// A noise source that gives the same trace on every run.
    struct Noise {
        var state: UInt64
        mutating func gaussian(_ sigma: Double) -> Double {
            func uniform() -> Double {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                return Double(state >> 11) / Double(1 << 53) + 1e-12
            }
            return sigma * sqrt(-2 * log(uniform())) * cos(2 * .pi * uniform())
        }
    }

    /// AC, three phases, 11 kW: a 60 s ramp to 16 A, a noisy plateau, a 15-minute taper to 2 A.
    static func ac() -> Trace {
        var noise = Noise(state: 11)
        var currents: [[Sample]] = [[], [], []], voltages: [[Sample]] = [[], [], []]
        var power: [Sample] = [], energy: [Sample] = [], temperature: [Sample] = []
        var wh = 12_000.0
        for second in 0..<3600 {
            let t = Double(second)
            let target = t < 60 ? 16 * t / 60 : t < 2700 ? 16 : 16 - 14 * (t - 2700) / 900
            var total = 0.0
            for phase in 0..<3 {
                let current = max(0, target + noise.gaussian(0.05))
                let voltage = 230 + 2 * sin(t / 900 + Double(phase)) + noise.gaussian(0.3)
                currents[phase].append(Sample(time: t, value: (current * 100).rounded() / 100))
                voltages[phase].append(Sample(time: t, value: (voltage * 10).rounded() / 10))
                total += current * voltage
            }
            wh += total / 3600
            power.append(Sample(time: t, value: total.rounded()))
            energy.append(Sample(time: t, value: wh.rounded()))
            temperature.append(Sample(time: t, value: ((25 + 15 * (1 - exp(-t / 1200)) + noise.gaussian(0.1)) * 10).rounded() / 10))
        }
        return Trace(name: "AC 3-phase 11 kW", series: [
            ("Current.Import/L1", "A", currents[0]), ("Current.Import/L2", "A", currents[1]), ("Current.Import/L3", "A", currents[2]),
            ("Voltage/L1-N", "V", voltages[0]), ("Voltage/L2-N", "V", voltages[1]), ("Voltage/L3-N", "V", voltages[2]),
            ("Power.Active.Import", "W", power), ("Energy.Active.Import.Register", "Wh", energy), ("Temperature", "Celsius", temperature),
        ], spans: ["Current.Import": 32, "Voltage": 250, "Power.Active.Import": 11_040, "Energy.Active.Import.Register": 11_040,
                   "Temperature": 140])
    }

    /// DC 150 kW: constant current to 80 % state of charge, then a constant-voltage taper.
    static func dc() -> Trace {
        var noise = Noise(state: 150)
        var current: [Sample] = [], voltage: [Sample] = [], power: [Sample] = [], energy: [Sample] = [], soc: [Sample] = []
        var wh = 0.0
        for second in 0..<3600 {
            let t = Double(second)
            let cc = t < 1500
            let amps = cc ? 375 + noise.gaussian(1.0) : 50 + 325 * exp(-(t - 1500) / 600) + noise.gaussian(0.5)
            let volts = cc ? 380 + 20 * t / 1500 + noise.gaussian(0.4) : 400 + noise.gaussian(0.2)
            wh += amps * volts / 3600
            current.append(Sample(time: t, value: (amps * 10).rounded() / 10))
            voltage.append(Sample(time: t, value: (volts * 10).rounded() / 10))
            power.append(Sample(time: t, value: (amps * volts).rounded()))
            energy.append(Sample(time: t, value: wh.rounded()))
            soc.append(Sample(time: t, value: min(100, (20 + wh / 75_000 * 100).rounded())))
        }
        return Trace(name: "DC 150 kW", series: [
            ("Current.Import", "A", current), ("Voltage", "V", voltage), ("Power.Active.Import", "W", power),
            ("Energy.Active.Import.Register", "Wh", energy), ("SoC", "Percent", soc),
        ], spans: ["Current.Import": 500, "Voltage": 1000, "Power.Active.Import": 150_000, "Energy.Active.Import.Register": 150_000,
                   "SoC": 100])
    }
}

struct CompressionRow: Codable {
    var trace: String
    var series: String
    var algorithm: String
    var deviationPercentOfSpan: Double
    var deviation: Double
    var pointsBefore: Int
    var pointsAfter: Int
    var bytesBefore: Int
    var bytesAfter: Int
    var maxError: Double
}

enum CompressionBench {
    /// The bytes the tap would publish for one point of `series` (its JSON payload).
    static func messageBytes(_ series: String, _ unit: String, _ sample: Sample, compressed: (String, Double)?) -> Int {
        let parts = series.split(separator: "/")
        var text = #"{"v":1,"gateway":"ocpp/site-42","charger":"CP001","connector":1,"timestamp":"2026-11-25T10:15:30Z","measurand":""#
        text += parts[0] + "\""
        if parts.count > 1 { text += #","phase":""# + parts[1] + "\"" }
        text += #","value":""# + String(sample.value) + #"","unit":""# + unit + #"","transaction":42"#
        if let (algorithm, deviation) = compressed { text += #","compression":{"algorithm":""# + algorithm + #"","deviation":"# + String(deviation) + "}" }
        return text.utf8.count + "}".utf8.count
    }

    static func run(_ samples: [Sample], algorithm: String, deviation: Double, maxTime: Double) -> [Sample] {
        var archived: [Sample] = []
        switch algorithm {
        case "deadband":
            var compressor = DeadbandCompressor(band: deviation, maxTime: maxTime)
            for sample in samples { archived += compressor.add(sample) }
            archived += compressor.flush()
        default:
            var compressor = SwingingDoorCompressor(compDev: deviation, compMaxTime: maxTime)
            for sample in samples { archived += compressor.add(sample) }
            archived += compressor.flush()
        }
        return archived
    }

    /// Max error of the reconstruction a consumer makes: linear for SDT, holding the last value for deadband.
    static func maxError(_ samples: [Sample], _ archived: [Sample], algorithm: String) -> Double {
        var worst = 0.0
        var index = 0
        for sample in samples {
            while index + 1 < archived.count, archived[index + 1].time <= sample.time { index += 1 }
            let reconstructed = algorithm == "deadband" ? archived[index].value : (interpolate(archived, at: sample.time) ?? archived[index].value)
            worst = max(worst, abs(reconstructed - sample.value))
        }
        return worst
    }

    static func measure() -> (rows: [CompressionRow], picture: String) {
        var rows: [CompressionRow] = []
        let settings: [(String, Double)] = [("deadband", 0.5), ("sdt", 0.5), ("sdt", 1.0), ("sdt", 2.0)]
        var picture = ""
        for trace in [Traces.ac(), Traces.dc()] {
            for (name, unit, samples) in trace.series {
                let span = trace.spans[String(name.split(separator: "/")[0])] ?? 1
                let before = samples.reduce(0) { $0 + messageBytes(name, unit, $1, compressed: nil) }
                for (algorithm, percent) in settings {
                    let deviation = span * percent / 100
                    let archived = run(samples, algorithm: algorithm, deviation: deviation, maxTime: 900)
                    let after = archived.reduce(0) { $0 + messageBytes(name, unit, $1, compressed: (algorithm, deviation)) }
                    rows.append(CompressionRow(trace: trace.name, series: name, algorithm: algorithm, deviationPercentOfSpan: percent,
                                               deviation: deviation, pointsBefore: samples.count, pointsAfter: archived.count,
                                               bytesBefore: before, bytesAfter: after,
                                               maxError: maxError(samples, archived, algorithm: algorithm)))
                    if trace.name.hasPrefix("AC"), name == "Current.Import/L1", algorithm == "sdt", percent == 0.5 {
                        picture = svg(samples, archived, title: "AC Current.Import L1: 3600 samples (grey) and \(archived.count) SDT points (blue), CompDev \(String(format: "%.3f", deviation)) A")
                    }
                }
            }
        }
        return (rows, picture)
    }

    static func svg(_ samples: [Sample], _ archived: [Sample], title: String) -> String {
        let width = 760.0, height = 360.0, left = 50.0, right = 30.0, top = 30.0, bottom = 35.0
        let minValue = samples.map(\.value).min()! - 0.5, maxValue = samples.map(\.value).max()! + 0.5
        func x(_ t: Double) -> Double { left + t / 3600 * (width - left - right) }
        func y(_ v: Double) -> Double { height - bottom - (v - minValue) / (maxValue - minValue) * (height - top - bottom) }
        let original = samples.map { String(format: "%.1f,%.1f", x($0.time), y($0.value)) }.joined(separator: " ")
        let reconstructed = archived.map { String(format: "%.1f,%.1f", x($0.time), y($0.value)) }.joined(separator: " ")
        let dots = archived.map { String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"2.5\" fill=\"#1f77b4\"/>", x($0.time), y($0.value)) }.joined(separator: "\n")
        var ticks = ""
        for minute in stride(from: 0, through: 60, by: 10) {
            ticks += "<text x=\"\(x(Double(minute * 60)))\" y=\"\(height - 12)\" font-size=\"11\" text-anchor=\"middle\">\(minute) min</text>\n"
        }
        for amps in stride(from: 0, through: 16, by: 4) {
            ticks += "<text x=\"\(left - 6)\" y=\"\(y(Double(amps)) + 4)\" font-size=\"11\" text-anchor=\"end\">\(amps) A</text>\n"
        }
        return """
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))" font-family="sans-serif">
            <rect width="100%" height="100%" fill="white"/>
            <text x="\(left)" y="18" font-size="13">\(title)</text>
            <polyline fill="none" stroke="#bbbbbb" stroke-width="1" points="\(original)"/>
            <polyline fill="none" stroke="#1f77b4" stroke-width="1.5" points="\(reconstructed)"/>
            \(dots)
            \(ticks)</svg>

            """
    }

    static func write(out: String, markdown: String) throws {
        let (rows, picture) = measure()
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try FileManager.default.createDirectory(atPath: (out as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        try encoder.encode(rows).write(to: URL(fileURLWithPath: out))
        let folder = (markdown as NSString).deletingLastPathComponent
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try picture.write(toFile: folder + "/compression-ac-current.svg", atomically: true, encoding: .utf8)
        func totals(_ trace: String, _ algorithm: String, _ percent: Double) -> (Int, Int, Int, Int, Bool) {
            let selected = rows.filter { $0.trace == trace && $0.algorithm == algorithm && $0.deviationPercentOfSpan == percent }
            let within = selected.allSatisfy { $0.maxError <= $0.deviation + 1e-9 }
            return (selected.reduce(0) { $0 + $1.pointsBefore }, selected.reduce(0) { $0 + $1.pointsAfter },
                    selected.reduce(0) { $0 + $1.bytesBefore }, selected.reduce(0) { $0 + $1.bytesAfter }, within)
        }
        var summary = ""
        for trace in ["AC 3-phase 11 kW", "DC 150 kW"] {
            for (algorithm, percent) in [("deadband", 0.5), ("sdt", 0.5), ("sdt", 1.0), ("sdt", 2.0)] {
                let (pb, pa, bb, ba, within) = totals(trace, algorithm, percent)
                summary += "| \(trace) | \(algorithm) | \(percent) % | \(pb) → \(pa) | \(bb / 1024) KiB → \(ba / 1024) KiB | "
                    + String(format: "%.1f %%", 100 * (1 - Double(ba) / Double(bb))) + " | \(within ? "yes" : "no") |\n"
            }
        }
        var detail = ""
        for row in rows where row.algorithm == "sdt" && row.deviationPercentOfSpan == 0.5 {
            detail += "| \(row.trace) | \(row.series) | \(row.pointsBefore) → \(row.pointsAfter) | "
                + String(format: "%.1f %%", 100 * (1 - Double(row.bytesAfter) / Double(row.bytesBefore)))
                + " | " + String(format: "%.6g", row.maxError) + " ≤ " + String(format: "%.6g", row.deviation) + " |\n"
        }
        let page = """
            # Compressing the health channel

            The `compressor` stage thins the telemetry the `mqtt_tap` stage publishes, per measurand (and
            phase), with time taken from the meter values' own timestamps.

            ```yaml
            stages:
              - id: identity
                type: auth
              - id: compress
                type: compressor
                config:
                  default: { algorithm: sdt, deviation_percent: 0.5, span: 400, max_time: 900 }
                  measurands:
                    Voltage: { algorithm: deadband, deviation: 1.0, max_time: 300 }
                    "Current.Import/L1": { algorithm: sdt, deviation: 0.08 }
                    Energy.Active.Import.Register: { algorithm: none }
              - id: telemetry
                type: mqtt_tap
            ```

            ## The algorithms

            - **Deadband** (report by exception): a value is reported when it moved more than the band
              from the last reported value, or `max_time` passed. A consumer that holds the last
              reported value is never more than the band off.
            - **Swinging Door Trending** (Bristol, 1987): from the last archived point, the two "doors"
              are the highest and lowest slopes that keep a straight line within ±CompDev of every sample
              since; each sample narrows them; when they cross, the previous sample is archived and the
              doors start again from it. The gateway places that archived value on a slope both doors
              allow (it moves by at most CompDev), so linear interpolation between archived points is
              within CompDev of **every** original sample: archiving the raw previous value, as most
              implementations do, can exceed CompDev by up to the same amount again (the property test
              in `Tests/TelemetryCompressionTests` finds thousands of such samples when the placement is
              removed). `min_time` suppresses, `max_time` forces archiving.
            - Both: the first sample is reported, samples out of order or repeated are ignored, and at a
              transaction's end, a disconnect or a reload the pending last sample is reported, so every
              series ends on its true last value. Each point carries `compression: {algorithm,
              deviation, max_time}` so a consumer knows how to reconstruct.

            ## Choosing settings

            Set the deviation to what the consumer can tolerate, in the measurand's unit (`deviation`)
            or as a share of its range (`deviation_percent` with `span`): 0.5 % of span keeps a
            charging curve's shape and all its steps; 2 % is enough for dashboards. Use SDT for
            slopes (ramps, tapers, SoC, energy): it archives only where the slope changes. Use deadband
            for values that hold then jump (status-like measurands) or when consumers cannot
            interpolate. Keep `max_time` (e.g. 900 s) so a quiet series still shows it is alive. Use
            `none` for the values the CSMS bills on if the O&M side needs every one.

            ## Measured

            `make bench` generates two one-hour 1 Hz traces (AC three-phase 11 kW: ramp, noisy
            plateau, taper; DC 150 kW: constant current, constant-voltage taper) and compresses every
            measurand; bytes are the JSON payloads the tap publishes; CompDev is a percentage of each
            measurand's instrument span (AC: 32 A, 250 V, 11.04 kW, 11.04 kWh, 140 °C; DC: 500 A, 1000 V,
            150 kW, 150 kWh, 100 % SoC); `max_time` 900 s. Figures: [`bench/results/compression.json`](../bench/results/compression.json).

            | trace | algorithm | CompDev | points | MQTT bytes | saved | error within CompDev |
            |---|---|---|---|---|---|---|
            \(summary)
            SDT at 0.5 % of span, per series:

            | trace | series | points | bytes saved | max error ≤ CompDev |
            |---|---|---|---|---|
            \(detail)
            ![AC current, original and SDT](compression-ac-current.svg)

            """
        try page.write(toFile: markdown, atomically: true, encoding: .utf8)
    }
}
