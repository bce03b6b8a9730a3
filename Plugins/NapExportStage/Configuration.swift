import Foundation
import OCPP
import StageKit

/// The `nap_export` stage's configuration, as the pipeline YAML writes it (keys snake_case).
public struct NapExportConfiguration: Decodable, Sendable {
    /// The CPO's OCPI party: ISO 3166-1 alpha-2 country code and 3-character party id (`DE`, `ABC`).
    public var countryCode: String
    public var partyId: String
    public var location: LocationConfiguration
    /// Per charge point id: its connectors (OCPP 1.6 connector id, or OCPP 2.0.1 EVSE id) as OCPI EVSEs.
    public var chargers: [String: ChargerConfiguration]
    /// Seconds a charger may be disconnected before its EVSEs are reported `offline_status` (default 300).
    public var offlineGrace: Double?
    /// What a disconnected charger's EVSEs become after the grace: UNKNOWN (default), OUTOFORDER or INOPERATIVE.
    public var offlineStatus: String?
    public var ocpi: OCPIPushConfiguration?
    /// `host:port` of the stage's own OCPI Locations sender interface for pull (e.g. `127.0.0.1:9410`).
    public var pullListen: String?
    /// File holding the token a puller must present (`Authorization: Token <base64>`); without it pull is open.
    public var pullTokenFile: String?
    public var datex: DatexConfiguration?
    public var uptime: UptimeConfiguration?

    public struct LocationConfiguration: Decodable, Sendable {
        public var id: String
        public var name: String?
        public var address: String
        public var city: String
        public var postalCode: String?
        public var state: String?
        /// ISO 3166-1 alpha-3 (OCPI 2.2.1 `Location.country`).
        public var country: String
        /// Decimal degrees as OCPI writes them: `-?[0-9]{1,2}\.[0-9]{5,7}` and `-?[0-9]{1,3}\.[0-9]{5,7}`.
        public var latitude: String
        public var longitude: String
        /// IANA time zone, e.g. `Europe/Berlin`.
        public var timeZone: String
        public var operatorName: String?
        public var operatorWebsite: String?
        public var parkingType: String?
        public var publish: Bool?
    }

    public struct ChargerConfiguration: Decodable, Sendable {
        public var connectors: [String: ConnectorConfiguration]
    }

    public struct ConnectorConfiguration: Decodable, Sendable {
        /// eMI3 EVSE id, e.g. `DE*ABC*E1234*1`.
        public var evseId: String
        /// OCPI `EVSE.uid` (max 36); defaults to the EVSE id.
        public var uid: String?
        public var standard: String
        public var format: String
        public var powerType: String
        public var maxVoltage: Int
        public var maxAmperage: Int
        public var maxElectricPower: Int?
    }

    public struct OCPIPushConfiguration: Decodable, Sendable {
        /// The receiver's Locations endpoint, e.g. `https://emsp.example/ocpi/2.2.1/receiver/locations`.
        public var url: String
        /// File holding the token (credentials token C) the receiver gave; sent as `Token <base64>`.
        public var tokenFile: String
        /// CA bundle for an https receiver; the system roots without it.
        public var caFile: String?
        /// OCPI routing headers towards the receiver (optional for a direct connection).
        public var toCountryCode: String?
        public var toPartyId: String?
        /// Back-off between failed attempts: from `retry_initial` doubling up to `retry_max` seconds (1 and 60).
        public var retryInitial: Double?
        public var retryMax: Double?
        /// Changes kept per EVSE while the receiver is away (default 100): beyond it the oldest are dropped.
        public var queueLimit: Int?
        /// Seconds one request may take (default 10).
        public var requestTimeout: Double?
    }

    public struct DatexConfiguration: Decodable, Sendable {
        /// Where the DATEX II v3 EnergyInfrastructureStatusPublication is written (atomically, on change).
        public var path: String
        /// `publicationCreator` national identifier; defaults to `<country_code>*<party_id>`.
        public var nationalIdentifier: String?
    }

    public struct UptimeConfiguration: Decodable, Sendable {
        /// Rolling windows for the gauges: `24h`, `7d`, `30d`… (default `24h`, `30d`).
        public var windows: [String]?
        /// Status changes kept per EVSE per month in the history (default 5000).
        public var historyMaxChanges: Int?
        public var exemptions: [ExemptionConfiguration]?
    }

    public struct ExemptionConfiguration: Decodable, Sendable {
        /// RFC 3339 times, `from` < `to`.
        public var from: String
        public var to: String
        /// The EVSE ids it applies to; all when absent.
        public var evseIds: [String]?
        public var reason: String
    }
}

// MARK: The validated site

/// OCPI 2.2.1 enumerations the configuration may use (mod_locations.asciidoc §1.4).
enum OCPIEnums {
    static let connectorTypes: Set<String> = [
        "CHADEMO", "CHAOJI", "DOMESTIC_A", "DOMESTIC_B", "DOMESTIC_C", "DOMESTIC_D", "DOMESTIC_E", "DOMESTIC_F", "DOMESTIC_G",
        "DOMESTIC_H", "DOMESTIC_I", "DOMESTIC_J", "DOMESTIC_K", "DOMESTIC_L", "DOMESTIC_M", "DOMESTIC_N", "DOMESTIC_O", "GBT_AC",
        "GBT_DC", "IEC_60309_2_single_16", "IEC_60309_2_three_16", "IEC_60309_2_three_32", "IEC_60309_2_three_64", "IEC_62196_T1",
        "IEC_62196_T1_COMBO", "IEC_62196_T2", "IEC_62196_T2_COMBO", "IEC_62196_T3A", "IEC_62196_T3C", "NEMA_5_20", "NEMA_6_30",
        "NEMA_6_50", "NEMA_10_30", "NEMA_10_50", "NEMA_14_30", "NEMA_14_50", "PANTOGRAPH_BOTTOM_UP", "PANTOGRAPH_TOP_DOWN",
        "TESLA_R", "TESLA_S",
    ]
    static let connectorFormats: Set<String> = ["SOCKET", "CABLE"]
    static let powerTypes: Set<String> = ["AC_1_PHASE", "AC_2_PHASE", "AC_2_PHASE_SPLIT", "AC_3_PHASE", "DC"]
    static let parkingTypes: Set<String> = ["ALONG_MOTORWAY", "PARKING_GARAGE", "PARKING_LOT", "ON_DRIVEWAY", "ON_STREET",
                                            "UNDERGROUND_GARAGE"]
}

/// One configured EVSE (an OCPP 1.6 connector, or an OCPP 2.0.1 EVSE) with its static data.
struct EVSEDefinition: Sendable, Equatable {
    var chargerId: String
    /// OCPP 1.6 connector id, or OCPP 2.0.1 EVSE id.
    var ocppId: Int
    var uid: String
    var evseId: String
    var standard: String
    var format: String
    var powerType: String
    var maxVoltage: Int
    var maxAmperage: Int
    var maxElectricPower: Int?
}

/// The configuration, checked: everything the stage publishes that does not change at run time.
struct Site: Sendable {
    var countryCode: String
    var partyId: String
    var locationId: String
    var name: String?
    var address: String
    var city: String
    var postalCode: String?
    var state: String?
    var country: String
    var latitude: String
    var longitude: String
    var timeZone: String
    var operatorName: String?
    var operatorWebsite: String?
    var parkingType: String?
    var publish: Bool
    /// Sorted by charger id, then OCPP id: the order of the Location's `evses`.
    var evses: [EVSEDefinition]

    func evse(charger: String, ocppId: Int) -> EVSEDefinition? {
        evses.first { $0.chargerId == charger && $0.ocppId == ocppId }
    }
}

/// eMI3 / OCPI 2.2.1 EVSE id: `<country 2 letters>*<operator 3 alphanumerics>*E<power outlet id>` (the
/// `*` separators optional), e.g. `DE*ABC*E1234*1` (OCPI 2.2.1 mod_locations §1.3.2, eMI3 "Part 2").
enum EVSEIdSyntax {
    static func problem(with id: String) -> String? {
        let pattern = #"^[A-Z]{2}\*?[A-Z0-9]{3}\*?E[A-Z0-9][A-Z0-9*]{0,30}$"#
        guard id.range(of: pattern, options: .regularExpression) != nil, id.count <= 48 else {
            return "is not an eMI3 EVSE id like 'DE*ABC*E1234*1' (country, operator, 'E', outlet id; at most 48 characters)"
        }
        return nil
    }

    /// The country and operator parts (`DE`, `ABC`).
    static func operatorPrefix(of id: String) -> (country: String, party: String) {
        let compact = id.replacingOccurrences(of: "*", with: "")
        return (String(compact.prefix(2)), String(compact.dropFirst(2).prefix(3)))
    }
}

extension NapExportConfiguration {
    /// Checks every rule, collecting the problems with the key each belongs to.
    func validatedSite() throws -> Site {
        var problems: [ConfigurationKeyError] = []
        func fail(_ key: String, _ message: String) { problems.append(ConfigurationKeyError(key: key, message)) }
        func printable(_ key: String, _ value: String?, max: Int, required: Bool = false) {
            guard let value else { return }
            if required && value.isEmpty { fail(key, "must not be empty") }
            if value.count > max { fail(key, "is \(value.count) characters; OCPI allows at most \(max)") }
            if value.unicodeScalars.contains(where: { $0.properties.generalCategory == .control }) {
                fail(key, "must not contain control characters")
            }
        }
        if countryCode.range(of: "^[A-Z]{2}$", options: .regularExpression) == nil || !ISO3166.alpha2.contains(countryCode) {
            fail("country_code", "must be an ISO 3166-1 alpha-2 country code (e.g. DE), found '\(LogSafe.escape(countryCode))'")
        }
        if partyId.range(of: "^[A-Z0-9]{3}$", options: .regularExpression) == nil {
            fail("party_id", "must be 3 characters A-Z 0-9 (ISO 15118 operator id), found '\(LogSafe.escape(partyId))'")
        }
        let l = location
        if l.id.isEmpty || l.id.count > 36 || !l.id.allSatisfy({ $0.isASCII && !$0.isWhitespace }) {
            fail("location.id", "must be 1-36 printable ASCII characters without spaces (OCPI CiString(36))")
        }
        printable("location.name", l.name, max: 255)
        printable("location.address", l.address, max: 45, required: true)
        printable("location.city", l.city, max: 45, required: true)
        printable("location.postal_code", l.postalCode, max: 10)
        printable("location.state", l.state, max: 20)
        printable("location.operator_name", l.operatorName, max: 100)
        if !ISO3166.alpha3.contains(l.country) {
            fail("location.country", "must be an ISO 3166-1 alpha-3 country code (e.g. DEU), found '\(LogSafe.escape(l.country))'")
        }
        if l.latitude.range(of: #"^-?[0-9]{1,2}\.[0-9]{5,7}$"#, options: .regularExpression) == nil {
            fail("location.latitude", "must be written like 52.520008 (OCPI: -?[0-9]{1,2}.[0-9]{5,7}; quote it in YAML)")
        } else if let value = Double(l.latitude), abs(value) > 90 {
            fail("location.latitude", "must be between -90 and 90, found \(l.latitude)")
        }
        if l.longitude.range(of: #"^-?[0-9]{1,3}\.[0-9]{5,7}$"#, options: .regularExpression) == nil {
            fail("location.longitude", "must be written like 13.404954 (OCPI: -?[0-9]{1,3}.[0-9]{5,7}; quote it in YAML)")
        } else if let value = Double(l.longitude), abs(value) > 180 {
            fail("location.longitude", "must be between -180 and 180, found \(l.longitude)")
        }
        if TimeZone(identifier: l.timeZone) == nil || !l.timeZone.contains("/") && l.timeZone != "UTC" {
            fail("location.time_zone", "must be an IANA time zone like Europe/Berlin, found '\(LogSafe.escape(l.timeZone))'")
        }
        if let parking = l.parkingType, !OCPIEnums.parkingTypes.contains(parking) {
            fail("location.parking_type", "must be one of \(OCPIEnums.parkingTypes.sorted().joined(separator: ", "))")
        }
        if let website = l.operatorWebsite, URL(string: website)?.scheme?.hasPrefix("http") != true {
            fail("location.operator_website", "must be an http(s) URL")
        }

        var evses: [EVSEDefinition] = []
        var seenEVSEIds: [String: String] = [:]
        var seenUIDs: [String: String] = [:]
        if chargers.isEmpty { fail("chargers", "must list at least one charger with its connectors") }
        for (chargerId, charger) in chargers.sorted(by: { $0.key < $1.key }) {
            let base = "chargers.\(chargerId)"
            if let problem = ChargerIdentity.problem(with: chargerId) { fail(base, "is not a valid charge point id: \(problem)") }
            if charger.connectors.isEmpty { fail(base + ".connectors", "must list at least one connector") }
            for (key, connector) in charger.connectors.sorted(by: { (Int($0.key) ?? 0) < (Int($1.key) ?? 0) }) {
                let at = "\(base).connectors.\(key)"
                guard let ocppId = Int(key), ocppId >= 1 else {
                    fail(at, "connector keys are OCPP connector (1.6) or EVSE (2.0.1) ids: whole numbers from 1")
                    continue
                }
                if let problem = EVSEIdSyntax.problem(with: connector.evseId) {
                    fail(at + ".evse_id", problem)
                } else {
                    let prefix = EVSEIdSyntax.operatorPrefix(of: connector.evseId)
                    if prefix.country != countryCode || prefix.party != partyId {
                        fail(at + ".evse_id", "starts with \(prefix.country)*\(prefix.party) but the party is \(countryCode)*\(partyId)")
                    }
                }
                if let other = seenEVSEIds[connector.evseId] { fail(at + ".evse_id", "is also used by \(other)") }
                seenEVSEIds[connector.evseId] = at
                let uid = connector.uid ?? connector.evseId
                if uid.isEmpty || uid.count > 36 || !uid.allSatisfy({ $0.isASCII && !$0.isWhitespace }) {
                    fail(at + (connector.uid == nil ? ".evse_id" : ".uid"),
                         "OCPI EVSE uid must be 1-36 printable ASCII characters\(connector.uid == nil ? "; set 'uid'" : "")")
                }
                if let other = seenUIDs[uid] { fail(at + ".uid", "uid '\(uid)' is also used by \(other)") }
                seenUIDs[uid] = at
                if !OCPIEnums.connectorTypes.contains(connector.standard) {
                    fail(at + ".standard", "must be an OCPI 2.2.1 ConnectorType, e.g. IEC_62196_T2, IEC_62196_T2_COMBO, CHADEMO; found '\(LogSafe.escape(connector.standard))'")
                }
                if !OCPIEnums.connectorFormats.contains(connector.format) { fail(at + ".format", "must be SOCKET or CABLE") }
                if !OCPIEnums.powerTypes.contains(connector.powerType) {
                    fail(at + ".power_type", "must be one of \(OCPIEnums.powerTypes.sorted().joined(separator: ", "))")
                }
                if connector.maxVoltage <= 0 || connector.maxVoltage > 2000 { fail(at + ".max_voltage", "must be 1-2000 V") }
                if connector.maxAmperage <= 0 || connector.maxAmperage > 1000 { fail(at + ".max_amperage", "must be 1-1000 A") }
                if let power = connector.maxElectricPower, power <= 0 || power > 2_000_000 {
                    fail(at + ".max_electric_power", "must be 1-2000000 W")
                }
                evses.append(EVSEDefinition(chargerId: chargerId, ocppId: ocppId, uid: uid, evseId: connector.evseId,
                                            standard: connector.standard, format: connector.format, powerType: connector.powerType,
                                            maxVoltage: connector.maxVoltage, maxAmperage: connector.maxAmperage,
                                            maxElectricPower: connector.maxElectricPower))
            }
        }
        if let status = offlineStatus, !["UNKNOWN", "OUTOFORDER", "INOPERATIVE"].contains(status) {
            fail("offline_status", "must be UNKNOWN, OUTOFORDER or INOPERATIVE")
        }
        if let grace = offlineGrace, grace < 0 { fail("offline_grace", "must be 0 or more seconds") }
        if let ocpi {
            if let url = URL(string: ocpi.url), ["http", "https"].contains(url.scheme ?? ""), url.host != nil {} else {
                fail("ocpi.url", "must be an http:// or https:// URL of the receiver's Locations endpoint")
            }
            if (ocpi.retryInitial ?? 1) <= 0 { fail("ocpi.retry_initial", "must be greater than 0") }
            if (ocpi.retryMax ?? 60) < (ocpi.retryInitial ?? 1) { fail("ocpi.retry_max", "must be at least retry_initial") }
            if (ocpi.queueLimit ?? 100) < 1 { fail("ocpi.queue_limit", "must be at least 1") }
            if (ocpi.requestTimeout ?? 10) <= 0 { fail("ocpi.request_timeout", "must be greater than 0") }
            if let to = ocpi.toCountryCode, !ISO3166.alpha2.contains(to) { fail("ocpi.to_country_code", "must be ISO 3166-1 alpha-2") }
            if let to = ocpi.toPartyId, to.range(of: "^[A-Z0-9]{3}$", options: .regularExpression) == nil {
                fail("ocpi.to_party_id", "must be 3 characters A-Z 0-9")
            }
        }
        if let listen = pullListen, Self.hostPort(listen) == nil { fail("pull_listen", "must be host:port, e.g. 127.0.0.1:9410") }
        if let uptime {
            for (index, window) in (uptime.windows ?? []).enumerated() {
                if let seconds = Self.seconds(window) {
                    if seconds > 60 * 86400 { fail("uptime.windows", "entry \(index + 1) '\(window)' is longer than 60d (the months kept in memory)") }
                } else {
                    fail("uptime.windows", "entry \(index + 1) '\(LogSafe.escape(window))' must be a number with m, h or d, e.g. 24h, 30d")
                }
            }
            if (uptime.historyMaxChanges ?? 5000) < 10 { fail("uptime.history_max_changes", "must be at least 10") }
            for (index, exemption) in (uptime.exemptions ?? []).enumerated() {
                let from = Self.rfc3339(exemption.from), to = Self.rfc3339(exemption.to)
                if from == nil || to == nil {
                    fail("uptime.exemptions", "entry \(index + 1): 'from' and 'to' must be RFC 3339 times like 2026-11-03T01:00:00Z")
                } else if let from, let to, from >= to {
                    fail("uptime.exemptions", "entry \(index + 1): 'from' must be before 'to'")
                }
                for id in exemption.evseIds ?? [] where seenEVSEIds[id] == nil {
                    fail("uptime.exemptions", "entry \(index + 1): unknown EVSE id '\(LogSafe.escape(id))'")
                }
            }
        }
        if !problems.isEmpty { throw ConfigurationKeyError.Many(problems) }
        return Site(countryCode: countryCode, partyId: partyId, locationId: l.id, name: l.name, address: l.address, city: l.city,
                    postalCode: l.postalCode, state: l.state, country: l.country, latitude: l.latitude, longitude: l.longitude,
                    timeZone: l.timeZone, operatorName: l.operatorName, operatorWebsite: l.operatorWebsite,
                    parkingType: l.parkingType, publish: l.publish ?? true, evses: evses)
    }

    static func hostPort(_ text: String) -> (host: String, port: Int)? {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            return nil
        }
        let host = String(text[..<colon]).trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
        return host.isEmpty ? nil : (host, port)
    }

    /// `24h`, `7d`, `90m` in seconds.
    static func seconds(_ text: String) -> Double? {
        guard let unit = text.last, let number = Double(text.dropLast()), number > 0 else { return nil }
        switch unit {
        case "m": return number * 60
        case "h": return number * 3600
        case "d": return number * 86400
        default: return nil
        }
    }

    static func rfc3339(_ text: String) -> Double? {
        if let date = try? Date(text, strategy: .iso8601) { return date.timeIntervalSince1970 }
        if let date = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) {
            return date.timeIntervalSince1970
        }
        return nil
    }
}
