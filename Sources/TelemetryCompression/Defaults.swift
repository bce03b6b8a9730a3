/// What an operator gets without configuring anything: Swinging Door Trending with a deviation of
/// 0.5 % of each measurand's span, and a point at least every 900 s. The spans are those of an
/// 11 kW AC charger (32 A, 250 V, 11.04 kW); a charger with larger ranges (DC) gets a tighter
/// deviation than it needs, never a looser one: set `span` per measurand for it.
///
/// Deviations are in each measurand's base unit (W, Wh, var, varh, VA, A, V, Celsius, Percent, Hz);
/// the tap hands values in kW, kWh, kvar, kvarh, kVA to the compressor in the base unit.
public enum CompressionDefaults {
    public static let algorithm = "sdt"
    public static let deviationPercent = 0.5
    public static let maxTime = 900.0

    /// The span (full range) of a measurand of OCPP 1.6, in its base unit; nil for a name OCPP does not define.
    public static func span(measurand: String) -> Double? {
        switch measurand {
        case "Current.Import", "Current.Export", "Current.Offered": 32  // A
        case "Voltage": 250  // V
        case "Power.Active.Import", "Power.Active.Export", "Power.Offered", "Power.Reactive.Import", "Power.Reactive.Export":
            11_040  // W, var
        case "Energy.Active.Import.Register", "Energy.Active.Export.Register", "Energy.Reactive.Import.Register",
             "Energy.Reactive.Export.Register", "Energy.Active.Import.Interval", "Energy.Active.Export.Interval",
             "Energy.Reactive.Import.Interval", "Energy.Reactive.Export.Interval":
            11_040  // Wh, varh: an hour at full power
        case "Temperature": 140  // Celsius, -40…100
        case "SoC": 100  // Percent
        case "Frequency": 10  // Hz, 45…55
        case "Power.Factor": 2  // -1…1
        case "RPM": 10_000
        default: nil
        }
    }

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
             "Energy.Reactive.Export.Interval": "varh"
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

    /// The deviation for `series` with the shipped defaults (nil: not compressed).
    public static func deviation(series: String) -> Double? {
        span(measurand: measurand(ofSeries: series)).map { $0 * deviationPercent / 100 }
    }
}
