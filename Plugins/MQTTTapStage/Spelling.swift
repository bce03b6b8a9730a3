import Foundation
import OCPP

/// Writing a number or a time the way the charger wrote its own: the same number of decimals (or
/// the same resolution, for `1.50E+3`), the same fractional seconds. No float noise.
enum Spelling {
    /// `value` rounded to the resolution of `source` (a number as the charger spelled it).
    static func value(_ value: Double, like source: String) -> String {
        let exponent = resolutionExponent(source)
        if exponent >= 0 {
            let unit = pow(10, Double(exponent))
            let rounded = (value / unit).rounded() * unit
            if abs(rounded) < 1e15 { return String(Int64(rounded)) }
            return String(rounded)
        }
        let text = String(format: "%.\(-exponent)f", value)
        // -0.00 is 0.00.
        if text.hasPrefix("-"), text.dropFirst().allSatisfy({ $0 == "0" || $0 == "." }) { return String(text.dropFirst()) }
        return text
    }

    /// `value` spelled like `source`: a JSON string for a 1.6 sample (`"15.00"`), a JSON number for a
    /// 2.0.1 one (`15.00`), with the charger's resolution either way.
    static func json(_ value: Double, like source: JSONValue?) -> JSONValue {
        if case .number(let text)? = source { return .number(Self.value(value, like: text)) }
        return .string(Self.value(value, like: source?.stringValue ?? ""))
    }

    /// The power of ten of the last digit `source` gives: -2 for "15.00", 0 for "15", 1 for "1.50E+3".
    static func resolutionExponent(_ source: String) -> Int {
        let parts = source.split(whereSeparator: { $0 == "e" || $0 == "E" })
        let mantissa = parts.first ?? ""
        let exponent = parts.count > 1 ? Int(parts[1]) ?? 0 : 0
        let decimals = mantissa.split(separator: ".", omittingEmptySubsequences: false).dropFirst().first?.count ?? 0
        return max(-12, min(15, exponent - decimals))
    }

    /// `time` in ISO 8601 (UTC) with as many fractional digits as `source` has (at most 6).
    static func timestamp(_ time: Double, like source: String) -> String {
        var digits = 0
        if let dot = source.firstIndex(of: ".") {
            digits = min(6, source[source.index(after: dot)...].prefix { $0.isNumber }.count)
        }
        let whole = floor(time)
        var fraction = ((time - whole) * pow(10, Double(digits))).rounded()
        var seconds = whole
        if fraction >= pow(10, Double(digits)) {
            seconds += 1
            fraction = 0
        }
        let base = Date(timeIntervalSince1970: seconds).formatted(.iso8601)  // yyyy-MM-ddTHH:mm:ssZ
        guard digits > 0 else { return base }
        return String(base.dropLast()) + "." + String(format: "%0\(digits)d", Int(fraction)) + "Z"
    }
}

extension MQTTTapStage {
    /// OCPP 1.6's measurands and phases: the only series the tap remembers (a peer cannot grow it).
    static let measurands: Set<String> = [
        "Energy.Active.Export.Register", "Energy.Active.Import.Register", "Energy.Reactive.Export.Register",
        "Energy.Reactive.Import.Register", "Energy.Active.Export.Interval", "Energy.Active.Import.Interval",
        "Energy.Reactive.Export.Interval", "Energy.Reactive.Import.Interval", "Power.Active.Export", "Power.Active.Import",
        "Power.Offered", "Power.Reactive.Export", "Power.Reactive.Import", "Power.Factor", "Current.Import", "Current.Export",
        "Current.Offered", "Voltage", "Frequency", "Temperature", "SoC", "RPM",
    ]
    static let phases: Set<String> = ["L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1"]
    /// The series the compressor follows: OCPP 1.6's measurands and those 2.0.1 added (net and apparent energy).
    static let compressible: Set<String> = measurands.union([
        "Energy.Active.Net", "Energy.Reactive.Net", "Energy.Apparent.Net", "Energy.Apparent.Import", "Energy.Apparent.Export",
    ])

    /// A sample's value as text: a 1.6 string (`"15.00"`) or a 2.0.1 number as the charger spelled it.
    static func numberText(_ value: JSONValue) -> String? {
        switch value {
        case .string(let text): text
        case .number(let text): text
        default: nil
        }
    }
}
