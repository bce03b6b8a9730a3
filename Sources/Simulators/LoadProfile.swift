public import OCPP
import Foundation

/// What a simulated charger sends under load: a realistic mix of a charger's CALLs
/// (MeterValues most often, then status and heartbeats, the occasional transaction).
public enum LoadProfile {
    /// The n-th CALL of a charger.
    public static func message(_ n: Int, chargerId: String) -> (action: String, payload: JSONValue) {
        let timestamp = JSONValue.string(ocppTimestamp())
        switch n % 20 {
        case 0, 10:
            return ("Heartbeat", [:])
        case 1, 11, 15:
            return ("StatusNotification", ["connectorId": 1, "errorCode": "NoError", "status": "Charging", "timestamp": timestamp])
        case 2, 12, 17:
            return ("Authorize", ["idTag": "04A2B3C4D5E6F7"])
        case 3:
            return ("StartTransaction", ["connectorId": 1, "idTag": "04A2B3C4D5E6F7", "meterStart": .number(n), "timestamp": timestamp])
        case 4:
            return ("StopTransaction", ["transactionId": 1, "meterStop": .number(n + 1000), "timestamp": timestamp])
        default:
            return ("MeterValues", [
                "connectorId": 1, "transactionId": 1,
                "meterValue": [[
                    "timestamp": timestamp,
                    "sampledValue": [
                        ["value": .string("\(1000 + n)"), "measurand": "Energy.Active.Import.Register", "unit": "Wh"],
                        ["value": "16.0", "measurand": "Current.Import", "phase": "L1", "unit": "A"],
                        ["value": "230.1", "measurand": "Voltage", "phase": "L1-N", "unit": "V"],
                    ],
                ]],
            ])
        }
    }

    public static let bootNotification: JSONValue = ["chargePointVendor": "LoadCo", "chargePointModel": "L-1"]
}
