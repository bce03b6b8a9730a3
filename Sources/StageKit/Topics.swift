/// MQTT topic helpers for stages that publish on the health channel.
public enum Topics {
    /// `text` made safe as one MQTT topic level: the wildcards `+` and `#`, the level separator `/`
    /// and U+0000 (forbidden in a topic) become `_`, so a peer-supplied name (a charge point id)
    /// can never address other levels or subscriptions. The same escaping the `mqtt_tap` stage uses.
    public static func level(_ text: some StringProtocol) -> String {
        String(text.map { "+#/\u{0}".contains($0) ? "_" : $0 })
    }
}
