import Foundation
import TelemetryCompression

/// Realistic 1 Hz charging traces, made here, deterministic.
enum Traces {
    struct Trace {
        var name: String
        /// Each series with its unit and the decimals the charger writes its values with.
        var series: [(name: String, unit: String, decimals: Int, samples: [Sample])]
        /// The charger's own instrument spans, for the row where an operator configured them
        /// (`span` per measurand); the shipped defaults use `CompressionDefaults.span(measurand:)`.
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
            ("Current.Import/L1", "A", 2, currents[0]), ("Current.Import/L2", "A", 2, currents[1]), ("Current.Import/L3", "A", 2, currents[2]),
            ("Voltage/L1-N", "V", 1, voltages[0]), ("Voltage/L2-N", "V", 1, voltages[1]), ("Voltage/L3-N", "V", 1, voltages[2]),
            ("Power.Active.Import", "W", 0, power), ("Energy.Active.Import.Register", "Wh", 0, energy),
            ("Temperature", "Celsius", 1, temperature),
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
            ("Current.Import", "A", 1, current), ("Voltage", "V", 1, voltage), ("Power.Active.Import", "W", 0, power),
            ("Energy.Active.Import.Register", "Wh", 0, energy), ("SoC", "Percent", 0, soc),
        ], spans: ["Current.Import": 500, "Voltage": 1000, "Power.Active.Import": 150_000, "Energy.Active.Import.Register": 150_000,
                   "SoC": 100])
    }
}

struct CompressionRow: Codable {
    var trace: String
    var series: String
    /// Which setting: `default` (what an operator gets), or a variation of it.
    var setting: String
    var algorithm: String
    var deviationPercentOfSpan: Double
    var span: Double
    var deviation: Double
    var pointsBefore: Int
    var pointsAfter: Int
    var bytesBefore: Int
    var bytesAfter: Int
    /// Of the values as published (rounded to the charger's decimals), against every original sample.
    var maxError: Double
    /// Half the charger's last digit: what rounding a moved point to its precision may add.
    var halfDigit: Double
}

enum CompressionBench {
    /// One setting of the compressor for a whole trace.
    struct Setting {
        var name: String
        var algorithm: String
        var percent: Double
        /// nil: the shipped per-measurand spans.
        var configuredSpans: Bool = false
    }

    /// The shipped defaults first, then variations an operator may choose.
    static let settings: [Setting] = [
        Setting(name: "default", algorithm: CompressionDefaults.algorithm, percent: CompressionDefaults.deviationPercent),
        Setting(name: "deadband 0.5 %", algorithm: "deadband", percent: 0.5),
        Setting(name: "sdt 1 %", algorithm: "sdt", percent: 1),
        Setting(name: "sdt 2 %", algorithm: "sdt", percent: 2),
        Setting(name: "sdt 0.5 %, spans configured", algorithm: "sdt", percent: 0.5, configuredSpans: true),
    ]

    /// The value as the tap publishes it: the charger's spelling (`decimals`).
    static func spelled(_ value: Double, decimals: Int) -> String {
        let text = String(format: "%.\(decimals)f", value)
        return text.hasPrefix("-") && Double(text) == 0 ? String(text.dropFirst()) : text
    }

    /// The bytes the tap would publish for one point of `series` (its JSON payload).
    static func messageBytes(_ series: String, _ unit: String, _ value: String, compressed: (String, Double)?) -> Int {
        let parts = series.split(separator: "/")
        var text = #"{"v":1,"gateway":"ocpp/site-42","charger":"CP001","connector":1,"timestamp":"2026-11-25T10:15:30.752Z","measurand":""#
        text += parts[0] + "\""
        if parts.count > 1 { text += #","phase":""# + parts[1] + "\"" }
        text += #","value":""# + value + #"","unit":""# + unit + #"","transaction":42"#
        if let (algorithm, deviation) = compressed {
            text += #","compression":{"algorithm":""# + algorithm + #"","deviation":"# + String(deviation)
            if let base = CompressionDefaults.baseUnit(measurand: String(parts[0])) { text += #","deviation_unit":""# + base + "\"" }
            text += #","max_time":"# + String(Int(CompressionDefaults.maxTime)) + "}"
        }
        return text.utf8.count + "}".utf8.count
    }

    /// Compresses one series as the compressor stage does with `setting` (the same `SeriesCompressor`);
    /// returns the points and the largest deviation used (the ranges step up with the values).
    static func run(_ samples: [Sample], _ setting: Setting, measurand: String, configuredSpan: Double?) -> ([Sample], Double) {
        var compressor = SeriesCompressor(algorithm: setting.algorithm, deviation: nil, deviationPercent: setting.percent,
                                          span: setting.configuredSpans ? configuredSpan : nil, measurand: measurand,
                                          maxTime: CompressionDefaults.maxTime)
        var archived: [Sample] = []
        var deviation = compressor.deviation ?? 0
        for sample in samples {
            archived += compressor.add(sample)
            deviation = max(deviation, compressor.deviation ?? 0)
        }
        archived += compressor.flush()
        return (archived, deviation)
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
        var picture = ""
        for trace in [Traces.ac(), Traces.dc()] {
            for (name, unit, decimals, samples) in trace.series {
                let measurand = CompressionDefaults.measurand(ofSeries: name)
                let before = samples.reduce(0) { $0 + messageBytes(name, unit, spelled($1.value, decimals: decimals), compressed: nil) }
                for setting in settings {
                    let (points, deviation) = run(samples, setting, measurand: measurand, configuredSpan: trace.spans[measurand])
                    let span = deviation * 100 / setting.percent
                    // What a consumer receives: each point as published, in the charger's decimals.
                    let archived = points.map { Sample(time: $0.time, value: Double(spelled($0.value, decimals: decimals))!) }
                    let after = archived.reduce(0) {
                        $0 + messageBytes(name, unit, spelled($1.value, decimals: decimals), compressed: (setting.algorithm, deviation))
                    }
                    rows.append(CompressionRow(trace: trace.name, series: name, setting: setting.name, algorithm: setting.algorithm,
                                               deviationPercentOfSpan: setting.percent, span: span, deviation: deviation,
                                               pointsBefore: samples.count, pointsAfter: archived.count, bytesBefore: before, bytesAfter: after,
                                               maxError: maxError(samples, archived, algorithm: setting.algorithm),
                                               halfDigit: pow(10, Double(-decimals)) / 2))
                    if trace.name.hasPrefix("AC"), name == "Current.Import/L1", setting.name == "default" {
                        picture = svg(samples, archived, title: "AC Current.Import L1: 3600 samples (grey) and \(archived.count) SDT points (blue), shipped defaults: CompDev \(String(format: "%.2f", deviation)) A")
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
        func within(_ row: CompressionRow) -> Bool { row.maxError <= row.deviation + row.halfDigit + 1e-9 }
        var summary = ""
        for trace in ["AC 3-phase 11 kW", "DC 150 kW"] {
            for setting in settings {
                let selected = rows.filter { $0.trace == trace && $0.setting == setting.name }
                let (pb, pa) = (selected.reduce(0) { $0 + $1.pointsBefore }, selected.reduce(0) { $0 + $1.pointsAfter })
                let (bb, ba) = (selected.reduce(0) { $0 + $1.bytesBefore }, selected.reduce(0) { $0 + $1.bytesAfter })
                let label = setting.name == "default" ? "**shipped defaults** (sdt 0.5 %)" : setting.name
                summary += "| \(trace) | \(label) | \(pb) → \(pa) | \(bb / 1024) KiB → \(ba / 1024) KiB | "
                    + String(format: "%.1f %%", 100 * (1 - Double(ba) / Double(bb))) + " | \(selected.allSatisfy(within) ? "yes" : "no") |\n"
            }
        }
        func number(_ value: Double) -> String { String(format: "%.6g", value) }
        var detail = ""
        for row in rows where row.setting == "default" {
            detail += "| \(row.trace) | \(row.series) | \(number(row.span)) | \(number(row.deviation)) | \(row.pointsBefore) → \(row.pointsAfter) | "
                + String(format: "%.1f %%", 100 * (1 - Double(row.bytesAfter) / Double(row.bytesBefore)))
                + " | \(number(row.maxError)) ≤ \(number(row.deviation)) + \(number(row.halfDigit)) |\n"
        }
        var spans = ""
        for (measurands, key, unit) in [("Current.Import, Current.Export, Current.Offered", "Current.Import", "A"),
                                        ("Voltage", "Voltage", "V"),
                                        ("Power.Active.Import/Export, Power.Offered, Power.Reactive.Import/Export", "Power.Active.Import", "W, var"),
                                        ("Energy.* (registers and intervals)", "Energy.Active.Import.Register", "Wh, varh"),
                                        ("Temperature", "Temperature", "Celsius"), ("SoC", "SoC", "Percent"), ("Frequency", "Frequency", "Hz"),
                                        ("Power.Factor", "Power.Factor", ""), ("RPM", "RPM", "")] {
            let ranges = CompressionDefaults.ranges(measurand: key)
            spans += "| \(measurands) | \(unit) | " + ranges.map(number).joined(separator: ", ") + " | "
                + ranges.map { number($0 * CompressionDefaults.deviationPercent / 100) }.joined(separator: ", ") + " |\n"
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
                type: compressor          # no config: the shipped defaults below
              - id: telemetry
                type: mqtt_tap
            ```

            ## The shipped defaults

            Without configuration every measurand is compressed with **Swinging Door Trending, a
            deviation of 0.5 % of the measurand's span, and a point at least every 900 s**
            (`default: { algorithm: sdt, deviation_percent: 0.5, max_time: 900 }`), so one setting means
            the same thing in every unit. A series' span is the smallest standard instrument range its
            values have stayed within (by more than 25 %, a value moves the series up one range: it is
            closed on its last value and goes on with the larger deviation; it never moves down). An
            11 kW AC charger's 16 A is compressed with 0.16 A, a 150 kW DC charger's 375 A with 2.5 A:

            | measurands | unit | ranges (span) | deviation at 0.5 % |
            |---|---|---|---|
            \(spans)
            Deviations are in each measurand's base unit; values a charger sends in kW, kWh, kvar, kvarh
            or kVA are compressed in W, Wh, var, varh or VA, so the same setting holds for both spellings.
            Registers keep one range (their value only grows). Give `span` (or an absolute `deviation`)
            to fix a measurand's deviation from the first sample:

            ```yaml
              - id: compress
                type: compressor
                config:
                  default: { algorithm: sdt, deviation_percent: 0.5, max_time: 900 }   # the shipped default
                  measurands:
                    Current.Import: { algorithm: sdt, deviation_percent: 0.5, span: 500 }
                    Voltage: { algorithm: deadband, deviation: 1.0, max_time: 300 }    # absolute, in V
                    Power.Active.Import: { algorithm: sdt, deviation_percent: 0.5, span: 150000 }
                    Energy.Active.Import.Register: { algorithm: none }
            ```

            ## What is published

            Each point is one of the charger's samples. A point the compressor kept as it was is
            published exactly as the charger sent it: its `value` string (`"15.00"` stays `"15.00"`) and
            its `timestamp` (milliseconds kept). A point SDT moved (see below) keeps its sample's
            timestamp and has its value rounded to the decimals the charger used, so a moved value is at
            most half a last digit further from the sample than the algorithm's bound. Each point carries
            `compression: {algorithm, deviation, deviation_unit, max_time}` so a consumer knows how to
            reconstruct the series.

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
              removed). A sample the doors allow is archived unmoved. `min_time` suppresses, `max_time`
              forces archiving.
            - Both: the first sample is reported, samples out of order or repeated are ignored, and at a
              transaction's end, a disconnect or a reload the pending last sample is reported, so every
              series ends on its true last value.

            ## Choosing settings

            Set the deviation to what the consumer can tolerate, in the measurand's base unit
            (`deviation`) or as a share of its span (`deviation_percent`, with `span` or the default
            span above): 0.5 % of span keeps a charging curve's shape and all its steps (a 15 → 16 A
            step on a 32 A span is six deviations); 2 % is enough for dashboards. Use SDT for slopes
            (ramps, tapers, SoC, energy): it archives only where the slope changes. Use deadband for
            values that hold then jump (status-like measurands) or when consumers cannot interpolate.
            Keep `max_time` (e.g. 900 s) so a quiet series still shows it is alive. Use `none` for the
            values the CSMS bills on if the O&M side needs every one.

            ## Measured

            `make bench` (or `ocpp-bench --compression-only`) generates two one-hour 1 Hz traces (AC
            three-phase 11 kW: ramp, noisy plateau, taper; DC 150 kW: constant current, constant-voltage
            taper) and compresses every measurand with the **shipped defaults** and with variations of
            them (other percentages of the same ranges; the last row configures each series' `span`: AC
            32 A, 250 V, 11.04 kW, 11.04 kWh, 140 °C; DC 500 A, 1000 V, 150 kW, 150 kWh, 100 %). Bytes are the JSON payloads the tap publishes (values in the
            charger's decimals, millisecond timestamps, the `compression` object); errors are of the
            published values against every original sample. Figures:
            [`bench/results/compression.json`](../bench/results/compression.json).

            | trace | setting | points | MQTT bytes | saved | error within CompDev (+ ½ last digit) |
            |---|---|---|---|---|---|
            \(summary)
            The shipped defaults, per series:

            | trace | series | span reached | CompDev | points | bytes saved | max error ≤ CompDev + ½ digit |
            |---|---|---|---|---|---|---|
            \(detail)
            ![AC current, original and SDT with the shipped defaults](compression-ac-current.svg)

            """
        try page.write(toFile: markdown, atomically: true, encoding: .utf8)
    }
}
