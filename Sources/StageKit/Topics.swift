/// MQTT topic helpers for stages that publish on the health channel.
public enum Topics {
    /// `text` made safe as one MQTT topic level: the wildcards `+` and `#`, the level separator `/`
    /// and U+0000 (forbidden in a topic) become `_`, so a peer-supplied name (a charge point id)
    /// can never address other levels or subscriptions. The same escaping the `mqtt_tap` stage uses.
    public static func level(_ text: some StringProtocol) -> String {
        // The usual name has none of those bytes, so no Character of it is one: returned as it is, without
        // walking its Characters (~45,000 instructions for a telemetry series, once per sample).
        guard mayNeedEscaping(text.utf8, slash: true) else { return String(text) }
        return String(text.map { "+#/\u{0}".contains($0) ? "_" : $0 })
    }

    /// A `/`-separated path (a telemetry series such as `Voltage/L1-N`) with each of its levels escaped
    /// as `level` escapes it; the separators stay.
    public static func path(_ text: String) -> String {
        guard mayNeedEscaping(text.utf8, slash: false) else { return text }
        return text.split(separator: "/", omittingEmptySubsequences: false).map { level($0) }.joined(separator: "/")
    }

    /// Whether `bytes` hold one `level` may replace (`+`, `#`, NUL and, with `slash`, `/`). Without one, no
    /// Character is one of those (a Character equal to `+` is the byte `+` alone), so nothing is replaced.
    private static func mayNeedEscaping(_ bytes: some Sequence<UInt8>, slash: Bool) -> Bool {
        bytes.contains { $0 == 0x2B || $0 == 0x23 || $0 == 0 || (slash && $0 == 0x2F) }
    }
}
