public import OCPP
public import StageKit
import TelemetryCompression

/// Compresses what the health channel publishes, per measurand (and phase): deadband
/// (report-by-exception) or Swinging Door Trending, with time taken from the meter values'
/// timestamps. Put it in the pipeline with `mqtt_tap`; the tap asks it about every sample.
public struct CompressorStage: Stage {
    public struct Configuration: Decodable, Sendable {
        /// For every measurand without its own setting.
        public var `default`: Setting?
        /// By measurand, or `measurand/phase`.
        public var measurands: [String: Setting]?
    }

    public struct Setting: Decodable, Sendable, Equatable {
        /// `none`, `deadband` or `sdt`.
        public var algorithm: String
        /// Absolute deviation (CompDev, or the band), in the measurand's base unit (A, V, W, Wh…)…
        public var deviation: Double?
        /// …or a percentage of the measurand's `span`; without one, of the measurand's standard range
        /// the series' values stay within (`CompressionDefaults.ranges(measurand:)`: 32 A, 63 A, 125 A …).
        public var deviationPercent: Double?
        public var span: Double?
        /// Seconds: no point sooner than this after the last one (deadband and SDT).
        public var minTime: Double?
        /// Seconds: a point at least this often, whatever the values do.
        public var maxTime: Double?
    }

    public static let type = "compressor"
    public static let summary = "Deadband or Swinging Door Trending per measurand for the health channel's telemetry."

    /// SDT, 0.5 % of each measurand's span, a point at least every 900 s.
    static let shippedDefault = Setting(algorithm: CompressionDefaults.algorithm, deviationPercent: CompressionDefaults.deviationPercent,
                                        maxTime: CompressionDefaults.maxTime)

    let settings: [String: Setting]
    let fallback: Setting
    /// This instance, so a frame can tell its own compressors without comparing every setting.
    let identity = Identity()

    final class Identity: Sendable {}

    public init(configuration: Configuration, context: StageSetupContext) throws {
        fallback = configuration.default ?? Self.shippedDefault
        settings = configuration.measurands ?? [:]
        for (name, setting) in [("default", fallback)] + settings.sorted(by: { $0.key < $1.key }) {
            guard ["none", "deadband", "sdt"].contains(setting.algorithm) else {
                throw CompressorError("'\(name)': algorithm is none, deadband or sdt, not '\(setting.algorithm)'")
            }
            if name != "default" {
                let parts = name.split(separator: "/", maxSplits: 1).map(String.init)
                guard CompressionDefaults.span(measurand: parts[0]) != nil else {
                    throw CompressorError("'\(name)': '\(parts[0])' is not an OCPP measurand (1.6 or 2.0.1)")
                }
                if parts.count > 1, !Self.phases.contains(parts[1]) {
                    throw CompressorError("'\(name)': '\(parts[1])' is not a phase; phases: \(Self.phases.sorted().joined(separator: ", "))")
                }
            }
            if let span = setting.span, !(span > 0) { throw CompressorError("'\(name)': 'span' must be positive") }
            if let deviation = setting.deviation, !(deviation > 0) { throw CompressorError("'\(name)': 'deviation' must be positive") }
            if let percent = setting.deviationPercent, !(percent > 0) {
                throw CompressorError("'\(name)': 'deviation_percent' must be positive")
            }
            if setting.algorithm != "none", setting.deviation == nil, setting.deviationPercent == nil {
                throw CompressorError("'\(name)': give 'deviation' (in the measurand's unit) or 'deviation_percent' (of its span)")
            }
        }
    }

    static let phases: Set<String> = ["L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1"]

    /// The deviation `series` starts with under `setting`, in the measurand's base unit; nil: not compressed.
    static func deviation(_ setting: Setting, series: String) -> Double? {
        if let deviation = setting.deviation { return deviation }
        guard let percent = setting.deviationPercent,
              let span = setting.span ?? CompressionDefaults.span(measurand: CompressionDefaults.measurand(ofSeries: series))
        else { return nil }
        return span * percent / 100
    }

    func setting(for series: String) -> Setting {
        settings[series] ?? settings[CompressionDefaults.measurand(ofSeries: series)] ?? fallback
    }

    public func sessionStarted(_ session: any SessionContext) { adopt(session) }

    public func process(_ envelope: Envelope, in session: any SessionContext) -> Verdict {
        adopt(session)
        return .forward
    }

    /// Makes the session's compressors this instance's. Every frame passes here: its own are recognised
    /// by identity (one lookup, no comparison of the settings). After a reload (this instance is new, and
    /// `sessionStarted` comes before any frame) compressors with the same settings go on as they are;
    /// with other settings they are replaced, and the tap flushes the old ones' pending points when it
    /// sees the change, so every series ends on its true last value.
    private func adopt(_ session: any SessionContext) {
        let filter = session[TelemetryFilterKey.self]
        if let current = filter as? SeriesCompressors {
            guard current.stage.identity !== identity else { return }
            if current.stage.settings == settings, current.stage.fallback == fallback {
                current.stage = self
            } else {
                current.retired = true
                session[TelemetryFilterKey.self] = SeriesCompressors(stage: self, flushing: current)
            }
        } else if filter == nil {
            session[TelemetryFilterKey.self] = SeriesCompressors(stage: self)
        }
    }
}

/// One charger's compressors, one per series, made on first sight.
final class SeriesCompressors: TelemetryFilter {
    /// The instance whose settings these follow (a reload to the same settings hands them over).
    var stage: CompressorStage
    var retired = false
    private var compressors: [String: SeriesCompressor] = [:]
    /// `descriptor(series:)`'s answers, with the deviation each was made for.
    private var descriptors: [String: (deviation: Double?, descriptor: JSONValue?)] = [:]
    /// The compressors this one replaced, flushed on the next flush.
    private var predecessor: SeriesCompressors?

    init(stage: CompressorStage, flushing predecessor: SeriesCompressors? = nil) {
        self.stage = stage
        self.predecessor = predecessor
    }

    func filter(series: String, time: Double, value: Double) -> [(time: Double, value: Double)] {
        // In place: one lookup, no copy of the compressor out of the dictionary and back.
        compressors[series, default: make(series)].add(Sample(time: time, value: value)).map { ($0.time, $0.value) }
    }

    func flush() -> [(series: String, time: Double, value: Double)] {
        var out = predecessor?.flush() ?? []
        predecessor = nil
        for series in compressors.keys.sorted() {
            out += compressors[series]!.flush().map { (series, $0.time, $0.value) }
        }
        return out
    }

    func takeRetiredPoints() -> [(series: String, time: Double, value: Double)] {
        defer { predecessor = nil }
        return predecessor?.flush() ?? []
    }

    func descriptor(series: String) -> JSONValue? {
        // Per published point: made once per series and deviation (a series' deviation changes only
        // when its values move it to another range).
        let current = compressors[series]?.deviation
        if let cached = descriptors[series], cached.deviation == current { return cached.descriptor }
        let setting = stage.setting(for: series)
        var descriptor: JSONValue?
        if let deviation = current ?? CompressorStage.deviation(setting, series: series), setting.algorithm != "none" {
            var made: JSONValue = ["algorithm": .string(setting.algorithm), "deviation": .number(deviation)]
            if let unit = CompressionDefaults.baseUnit(measurand: CompressionDefaults.measurand(ofSeries: series)) {
                made["deviation_unit"] = .string(unit)
            }
            if let maxTime = setting.maxTime { made["max_time"] = .number(maxTime) }
            descriptor = made
        }
        // Kept only for series with a compressor: as bounded as `compressors` (OCPP's measurands and phases).
        if compressors[series] != nil { descriptors[series] = (current, descriptor) }
        return descriptor
    }

    private func make(_ series: String) -> SeriesCompressor {
        let setting = stage.setting(for: series)
        return SeriesCompressor(algorithm: setting.algorithm, deviation: setting.deviation, deviationPercent: setting.deviationPercent,
                                span: setting.span, measurand: CompressionDefaults.measurand(ofSeries: series),
                                minTime: setting.minTime ?? 0, maxTime: setting.maxTime ?? .infinity)
    }
}

struct CompressorError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
