/// What an operator gets without configuring anything: Swinging Door Trending with a deviation of
/// 0.5 % of each measurand's span, and a point at least every 900 s.
///
/// A measurand's span is the range of the instrument that measures it. Unless the operator gives
/// one, it is picked from the values: the smallest standard range (32 A, 63 A, 125 A … for current)
/// that the series has stayed within, starting from an 11 kW AC charger's (32 A, 250 V, 11.04 kW).
/// A 16 A series is compressed with 0.16 A, a 375 A DC series, once it is seen, with 2.5 A.
///
/// Deviations are in each measurand's base unit (W, Wh, var, varh, VA, A, V, Celsius, Percent, Hz);
/// the tap hands values in kW, kWh, kvar, kvarh, kVA to the compressor in the base unit.
public enum CompressionDefaults {
    public static let algorithm = "sdt"
    public static let deviationPercent = 0.5
    public static let maxTime = 900.0
    /// A series moves to the next range once a value exceeds its range by this factor (a 32 A
    /// charger's 32.4 A keeps the 32 A range).
    public static let rangeHeadroom = 1.25

    /// The standard instrument ranges of a measurand of OCPP 1.6 or 2.0.1, smallest first, in its base unit;
    /// empty for a name OCPP does not define. Registers keep one range (their value only grows).
    public static func ranges(measurand: String) -> [Double] {
        switch measurand {
        case "Current.Import", "Current.Export", "Current.Offered": [32, 63, 125, 250, 500, 1000]  // A
        case "Voltage": [250, 500, 1000]  // V
        case "Power.Active.Import", "Power.Active.Export", "Power.Offered", "Power.Reactive.Import", "Power.Reactive.Export":
            [11_040, 22_080, 50_000, 150_000, 350_000]  // W, var
        case "Energy.Active.Import.Register", "Energy.Active.Export.Register", "Energy.Reactive.Import.Register",
             "Energy.Reactive.Export.Register", "Energy.Active.Import.Interval", "Energy.Active.Export.Interval",
             "Energy.Reactive.Import.Interval", "Energy.Reactive.Export.Interval",
             // OCPP 2.0.1 adds net and apparent energy.
             "Energy.Active.Net", "Energy.Reactive.Net", "Energy.Apparent.Net", "Energy.Apparent.Import", "Energy.Apparent.Export":
            [11_040]  // Wh, varh, VAh: an hour at 11 kW
        case "Temperature": [140]  // Celsius, -40…100
        case "SoC": [100]  // Percent
        case "Frequency": [10]  // Hz, 45…55
        case "Power.Factor": [2]  // -1…1
        case "RPM": [10_000]
        default: []
        }
    }

    /// The smallest span of a measurand (where every series starts); nil for a name OCPP does not define.
    public static func span(measurand: String) -> Double? { ranges(measurand: measurand).first }

    /// The unit deviations of a measurand are in (its default unit in OCPP 1.6); nil when it has none.
    public static func baseUnit(measurand: String) -> String? {
        switch measurand {
        case "Current.Import", "Current.Export", "Current.Offered": "A"
        case "Voltage": "V"
        case "Power.Active.Import", "Power.Active.Export", "Power.Offered": "W"
        case "Power.Reactive.Import", "Power.Reactive.Export": "var"
        case "Energy.Active.Import.Register", "Energy.Active.Export.Register", "Energy.Active.Import.Interval",
             "Energy.Active.Export.Interval": "Wh"
        case "Energy.Reactive.Import.Register", "Energy.Reactive.Export.Register", "Energy.Reactive.Import.Interval",
             "Energy.Reactive.Export.Interval", "Energy.Reactive.Net": "varh"
        case "Energy.Active.Net": "Wh"
        case "Energy.Apparent.Net", "Energy.Apparent.Import", "Energy.Apparent.Export": "VAh"
        case "Temperature": "Celsius"
        case "SoC": "Percent"
        case "Frequency": "Hz"
        default: nil
        }
    }

    /// The measurand a series name starts with (`Voltage/L1-N` → `Voltage`).
    public static func measurand(ofSeries series: String) -> String {
        String(series.split(separator: "/", maxSplits: 1).first ?? "")
    }
}

/// One series' compressor as configured: deadband or SDT with an absolute deviation, a percentage
/// of a given span, or a percentage of the measurand's range picked from the values
/// (`CompressionDefaults.ranges`); or none.
public struct SeriesCompressor: Sendable {
    private enum Inner: Sendable {
        case none
        case deadband(DeadbandCompressor)
        case sdt(SwingingDoorCompressor)
    }

    public let algorithm: String
    private let percent: Double?
    /// The ranges to step through; one element when the deviation is fixed.
    private let ranges: [Double]
    private let fixedDeviation: Double?
    private let minTime: Double
    private let maxTime: Double
    private var range = 0
    private var inner: Inner
    private var lastTime: Double?

    /// - Parameters: `deviation` wins over `deviationPercent`; a percentage uses `span` when given,
    ///   else the measurand's ranges. Without either, or with algorithm `none`, nothing is compressed.
    public init(algorithm: String, deviation: Double?, deviationPercent: Double?, span: Double?, measurand: String,
                minTime: Double = 0, maxTime: Double = .infinity) {
        self.algorithm = algorithm
        self.minTime = minTime
        self.maxTime = maxTime
        percent = deviationPercent
        fixedDeviation = deviation
        ranges = deviation != nil ? [] : span.map { [$0] } ?? CompressionDefaults.ranges(measurand: measurand)
        inner = .none
        inner = make()
    }

    /// The deviation in use now; nil when the series is not compressed.
    public var deviation: Double? {
        guard algorithm != "none" else { return nil }
        if let fixedDeviation { return fixedDeviation }
        guard let percent, range < ranges.count else { return nil }
        return ranges[range] * percent / 100
    }

    private func make() -> Inner {
        guard let deviation else { return .none }
        switch algorithm {
        case "deadband": return .deadband(DeadbandCompressor(band: deviation, minTime: minTime, maxTime: maxTime))
        case "sdt": return .sdt(SwingingDoorCompressor(compDev: deviation, compMinTime: minTime, compMaxTime: maxTime))
        default: return .none
        }
    }

    /// The points to publish because of `sample`. When a value leaves the series' range, the series
    /// is closed on its last value and goes on in the next range (never back: one deviation per size).
    public mutating func add(_ sample: Sample) -> [Sample] {
        if let lastTime, sample.time <= lastTime { return [] }
        lastTime = sample.time
        var out: [Sample] = []
        if fixedDeviation == nil, range + 1 < ranges.count, abs(sample.value) > ranges[range] * CompressionDefaults.rangeHeadroom {
            out = flush()
            while range + 1 < ranges.count, abs(sample.value) > ranges[range] * CompressionDefaults.rangeHeadroom { range += 1 }
            inner = make()
        }
        switch inner {
        case .none: out.append(sample)
        case .deadband(var compressor):
            out += compressor.add(sample)
            inner = .deadband(compressor)
        case .sdt(var compressor):
            out += compressor.add(sample)
            inner = .sdt(compressor)
        }
        return out
    }

    /// The pending last point, so the series ends on its true last value.
    public mutating func flush() -> [Sample] {
        switch inner {
        case .none: return []
        case .deadband(var compressor):
            defer { inner = .deadband(compressor) }
            return compressor.flush()
        case .sdt(var compressor):
            defer { inner = .sdt(compressor) }
            return compressor.flush()
        }
    }
}
