public import OCPP
import Foundation

/// The value mappings between OCPP 1.6J and 2.0.1 (docs/ocpp201.md, "The mapping").
public enum Mapping201 {
    // MARK: Meter values

    static let measurands: Set<String> = [
        "Current.Export", "Current.Import", "Current.Offered", "Energy.Active.Export.Register", "Energy.Active.Import.Register",
        "Energy.Reactive.Export.Register", "Energy.Reactive.Import.Register", "Energy.Active.Export.Interval",
        "Energy.Active.Import.Interval", "Energy.Reactive.Export.Interval", "Energy.Reactive.Import.Interval", "Frequency",
        "Power.Active.Export", "Power.Active.Import", "Power.Factor", "Power.Offered", "Power.Reactive.Export",
        "Power.Reactive.Import", "SoC", "Voltage",
    ]
    static let contexts: Set<String> = [
        "Interruption.Begin", "Interruption.End", "Other", "Sample.Clock", "Sample.Periodic", "Transaction.Begin",
        "Transaction.End", "Trigger",
    ]
    static let phases: Set<String> = ["L1", "L2", "L3", "N", "L1-N", "L2-N", "L3-N", "L1-L2", "L2-L3", "L3-L1"]
    static let locations: Set<String> = ["Body", "Cable", "EV", "Inlet", "Outlet"]
    /// 1.6 units with a kilo prefix become the base unit with multiplier 3 (2.0.1 UnitOfMeasureType).
    static let kiloUnits: [String: String] = ["kWh": "Wh", "kW": "W", "kvarh": "varh", "kvar": "var", "kVA": "VA"]

    /// 1.6 `meterValue` items → 2.0.1 MeterValueType items. Samples whose measurand 2.0.1 does not have
    /// (Temperature, RPM) are left out; a sample in `SignedData` format is carried unchanged in
    /// `signedMeterValue.signedMeterData` (on the Raw sample of the same measurand, phase and location when
    /// there is one). Returns nil when nothing is left.
    public static func meterValues(_ items: [JSONValue]) -> [JSONValue]? {
        var out: [JSONValue] = []
        for item in items {
            guard let timestamp = item["timestamp"]?.stringValue, let samples = item["sampledValue"]?.arrayValue else { continue }
            var mapped: [(key: String, value: JSONValue)] = []
            var signed: [(key: String, value: JSONValue)] = []
            for sample in samples {
                let measurand = sample["measurand"]?.stringValue ?? "Energy.Active.Import.Register"
                guard measurands.contains(measurand) else { continue }
                let key = "\(measurand)|\(sample["phase"]?.stringValue ?? "")|\(sample["location"]?.stringValue ?? "")"
                if sample["format"]?.stringValue == "SignedData" {
                    signed.append((key, sample))
                    continue
                }
                guard let text = sample["value"]?.stringValue, let value = number(text) else { continue }
                mapped.append((key, sampledValue(sample, value: value)))
            }
            for (key, sample) in signed {
                let data = signedMeterValue(sample["value"]?.stringValue ?? "")
                if let index = mapped.firstIndex(where: { $0.key == key && $0.value["signedMeterValue"] == nil }) {
                    mapped[index].value["signedMeterValue"] = data
                } else {
                    var value = sampledValue(sample, value: 0)
                    value["signedMeterValue"] = data
                    mapped.append((key, value))
                }
            }
            guard !mapped.isEmpty else { continue }
            out.append(["timestamp": .string(timestamp), "sampledValue": .array(mapped.map(\.value))])
        }
        return out.isEmpty ? nil : out
    }

    /// A 1.6 sample's value (a string) as a 2.0.1 number, in the charger's own spelling when it is a JSON
    /// number (`230.0` stays `230.0`); other decimal forms are converted; anything else is no number.
    static func number(_ text: String) -> JSONValue? {
        if case .number(let spelled)? = try? JSONValue(parsing: text) { return .number(spelled) }
        guard let value = Double(text.trimmingCharacters(in: .whitespaces)), value.isFinite else { return nil }
        return .number(value)
    }

    static func sampledValue(_ sample: JSONValue, value: JSONValue) -> JSONValue {
        var unit: JSONValue?
        if let text = sample["unit"]?.stringValue {
            if let base = kiloUnits[text] {
                unit = ["unit": .string(base), "multiplier": 3]
            } else {
                unit = ["unit": .string(text == "Celcius" ? "Celsius" : text)]
            }
        }
        let measurand = sample["measurand"]?.stringValue
        return .members([
            ("value", value),
            ("context", sample["context"].flatMap { contexts.contains($0.stringValue ?? "") ? $0 : nil }),
            ("measurand", measurand.map { .string($0) }),
            ("phase", sample["phase"].flatMap { phases.contains($0.stringValue ?? "") ? $0 : nil }),
            ("location", sample["location"].flatMap { locations.contains($0.stringValue ?? "") ? $0 : nil }),
            ("unitOfMeasure", unit),
        ])
    }

    /// The charger's signed data, unchanged. 1.6 does not say how it was signed: OCMF is recognised by its prefix.
    static func signedMeterValue(_ data: String) -> JSONValue {
        [
            "signedMeterData": .string(data),
            "signingMethod": "",
            "encodingMethod": .string(data.hasPrefix("OCMF|") ? "OCMF" : "Other"),
            "publicKey": "",
        ]
    }

    // MARK: Authorization

    /// 2.0.1 IdTokenInfoType → 1.6 IdTagInfo. Statuses 1.6 does not have become Invalid.
    public static func idTagInfo(_ info: JSONValue?) -> JSONValue {
        guard let info else { return ["status": "Accepted"] }
        let status = Map.enumValue(info["status"]?.stringValue, ["Accepted", "Blocked", "ConcurrentTx", "Expired", "Invalid"],
                                   fallback: "Invalid")
        return .members([
            ("status", .string(status)),
            ("expiryDate", info["cacheExpiryDateTime"]),
            ("parentIdTag", Map.clip(info["groupIdToken"]?["idToken"], 20)),
        ])
    }

    /// 1.6 IdTagInfo → 2.0.1 IdTokenInfoType (SendLocalList).
    static func idTokenInfo(_ info: JSONValue?, tokenType: String) -> JSONValue {
        .members([
            ("status", .string(info?["status"]?.stringValue ?? "Invalid")),
            ("cacheExpiryDateTime", info?["expiryDate"]),
            ("groupIdToken", info?["parentIdTag"].map { ["idToken": $0, "type": .string(tokenType)] }),
        ])
    }

    /// 2.0.1 IdTokenInfoType → 1.6 IdTagInfo for the local list (2.0.1 status → 1.6 status).
    static func localListEntry(_ entry: JSONValue) -> JSONValue? {
        guard let token = entry["idToken"]?["idToken"]?.stringValue else { return nil }
        return .members([
            ("idTag", .string(String(token.prefix(20)))),
            ("idTagInfo", entry["idTokenInfo"].map { idTagInfo($0) }),
        ])
    }

    // MARK: Status

    /// 1.6 ChargePointStatus → 2.0.1 ConnectorStatusEnumType.
    public static func connectorStatus(_ status16: String?) -> String {
        switch status16 {
        case "Available": "Available"
        case "Reserved": "Reserved"
        case "Unavailable": "Unavailable"
        case "Faulted": "Faulted"
        default: "Occupied"  // Preparing, Charging, SuspendedEV, SuspendedEVSE, Finishing
        }
    }

    /// The 2.0.1 chargingState for a 1.6 status during a transaction, when it says one.
    public static func chargingState(_ status16: String?) -> String? {
        switch status16 {
        case "Charging": "Charging"
        case "SuspendedEV": "SuspendedEV"
        case "SuspendedEVSE": "SuspendedEVSE"
        default: nil
        }
    }

    // MARK: Transactions

    /// 1.6 StopTransaction reason → 2.0.1 stoppedReason and triggerReason.
    public static func stopReason(_ reason16: String?) -> (stoppedReason: String, triggerReason: String) {
        switch reason16 ?? "Local" {
        case "DeAuthorized": ("DeAuthorized", "Deauthorized")
        case "EmergencyStop": ("EmergencyStop", "AbnormalCondition")
        case "EVDisconnected": ("EVDisconnected", "EVDeparted")
        case "HardReset": ("ImmediateReset", "ResetCommand")
        case "SoftReset": ("Reboot", "ResetCommand")
        case "Reboot": ("Reboot", "ResetCommand")
        case "PowerLoss": ("PowerLoss", "AbnormalCondition")
        case "Remote": ("Remote", "RemoteStop")
        case "UnlockCommand": ("Remote", "UnlockCommand")
        case "Local": ("Local", "StopAuthorized")
        default: ("Other", "AbnormalCondition")
        }
    }

    // MARK: Smart charging

    /// 2.0.1 ChargingProfileType → 1.6 ChargingProfile, or why it cannot be one.
    /// `transactionId`: the 1.6 id of the 2.0.1 transaction the profile names.
    public static func chargingProfile16(_ profile: JSONValue, transactionId: Int?) -> Result<JSONValue, MappingRefusal> {
        let purpose: String
        switch profile["chargingProfilePurpose"]?.stringValue {
        case "ChargingStationMaxProfile": purpose = "ChargePointMaxProfile"
        case "TxDefaultProfile": purpose = "TxDefaultProfile"
        case "TxProfile": purpose = "TxProfile"
        default: return .failure(MappingRefusal("a 1.6 charger has no ChargingStationExternalConstraints profiles"))
        }
        guard let schedules = profile["chargingSchedule"]?.arrayValue, schedules.count == 1, let schedule = schedules.first else {
            return .failure(MappingRefusal("a 1.6 charger takes exactly one charging schedule per profile"))
        }
        if profile["transactionId"] != nil, transactionId == nil {
            return .failure(MappingRefusal("the profile names a transaction the gateway does not know"))
        }
        let periods: [JSONValue] = (schedule["chargingSchedulePeriod"]?.arrayValue ?? []).map { period in
            .members([("startPeriod", period["startPeriod"]), ("limit", period["limit"]), ("numberPhases", period["numberPhases"])])
        }
        let schedule16 = JSONValue.members([
            ("duration", schedule["duration"]),
            ("startSchedule", schedule["startSchedule"]),
            ("chargingRateUnit", schedule["chargingRateUnit"]),
            ("chargingSchedulePeriod", .array(periods)),
            ("minChargingRate", schedule["minChargingRate"]),
        ])
        return .success(.members([
            ("chargingProfileId", profile["id"]),
            ("transactionId", transactionId.map { .number($0) }),
            ("stackLevel", profile["stackLevel"]),
            ("chargingProfilePurpose", .string(purpose)),
            ("chargingProfileKind", profile["chargingProfileKind"]),
            ("recurrencyKind", profile["recurrencyKind"]),
            ("validFrom", profile["validFrom"]),
            ("validTo", profile["validTo"]),
            ("chargingSchedule", schedule16),
        ]))
    }

    static func purpose16(_ purpose201: String?) -> String? {
        switch purpose201 {
        case "ChargingStationMaxProfile": "ChargePointMaxProfile"
        case "TxDefaultProfile", "TxProfile": purpose201
        default: nil
        }
    }

    // MARK: Firmware, logs

    static let firmwareStatuses: Set<String> = [
        "Downloaded", "DownloadFailed", "Downloading", "DownloadScheduled", "DownloadPaused", "Idle", "InstallationFailed",
        "Installing", "Installed", "InstallRebooting", "InstallScheduled", "InstallVerificationFailed", "InvalidSignature",
        "SignatureVerified",
    ]

    /// 1.6 DiagnosticsStatus (or the whitepaper's UploadLogStatus) → 2.0.1 UploadLogStatusEnumType.
    static func uploadStatus(_ status16: String?) -> String {
        switch status16 {
        case "UploadFailed", "UploadFailure": "UploadFailure"
        case "Uploaded": "Uploaded"
        case "Uploading": "Uploading"
        case "BadMessage": "BadMessage"
        case "NotSupportedOperation": "NotSupportedOperation"
        case "PermissionDenied": "PermissionDenied"
        default: "Idle"
        }
    }
}

/// Why a CSMS request has no 1.6 form; the CSMS gets Rejected (or the action's refusal status).
public struct MappingRefusal: Error, Equatable, CustomStringConvertible {
    public let description: String
    init(_ description: String) { self.description = description }
}
