import Foundation
import OCPP

/// The OCPI 2.2.1 Location module's objects (mod_locations.asciidoc §1.3): Location, EVSE, Connector.
enum OCPIObjects {
    /// RFC 3339 in UTC with milliseconds (OCPI 2.2.1 types.asciidoc §16.2 DateTime).
    static func time(_ seconds: Double) -> String {
        Date(timeIntervalSince1970: seconds).formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
    }

    static func evse(_ definition: EVSEDefinition, status: OCPIStatus, lastUpdated: Double) -> JSONValue {
        var connector: [(key: String, value: JSONValue)] = [
            ("id", "1"),
            ("standard", .string(definition.standard)),
            ("format", .string(definition.format)),
            ("power_type", .string(definition.powerType)),
            ("max_voltage", .number(Double(definition.maxVoltage))),
            ("max_amperage", .number(Double(definition.maxAmperage))),
        ]
        if let power = definition.maxElectricPower { connector.append(("max_electric_power", .number(Double(power)))) }
        // A connector's static data changes only with the configuration: its time is the EVSE's.
        connector.append(("last_updated", .string(time(lastUpdated))))
        return .object([
            ("uid", .string(definition.uid)),
            ("evse_id", .string(definition.evseId)),
            ("status", .string(status.rawValue)),
            ("connectors", .array([.object(connector)])),
            ("last_updated", .string(time(lastUpdated))),
        ])
    }

    /// The Location with its EVSEs; its `last_updated` is the newest of its EVSEs'.
    static func location(_ site: Site, evses: [(definition: EVSEDefinition, status: OCPIStatus, lastUpdated: Double)], now: Double) -> JSONValue {
        let newest = evses.map(\.lastUpdated).max() ?? now
        var members: [(key: String, value: JSONValue)] = [
            ("country_code", .string(site.countryCode)),
            ("party_id", .string(site.partyId)),
            ("id", .string(site.locationId)),
            ("publish", .bool(site.publish)),
        ]
        if let name = site.name { members.append(("name", .string(name))) }
        members.append(("address", .string(site.address)))
        members.append(("city", .string(site.city)))
        if let postal = site.postalCode { members.append(("postal_code", .string(postal))) }
        if let state = site.state { members.append(("state", .string(state))) }
        members.append(("country", .string(site.country)))
        members.append(("coordinates", .object([("latitude", .string(site.latitude)), ("longitude", .string(site.longitude))])))
        if let parking = site.parkingType { members.append(("parking_type", .string(parking))) }
        members.append(("evses", .array(evses.map { evse($0.definition, status: $0.status, lastUpdated: $0.lastUpdated) })))
        if let operatorName = site.operatorName {
            var business: [(key: String, value: JSONValue)] = [("name", .string(operatorName))]
            if let website = site.operatorWebsite { business.append(("website", .string(website))) }
            members.append(("operator", .object(business)))
        }
        members.append(("time_zone", .string(site.timeZone)))
        members.append(("last_updated", .string(time(newest))))
        return .object(members)
    }

    /// An OCPI response envelope (transport_and_format.asciidoc §4.1.7).
    static func response(data: JSONValue?, statusCode: Int = 1000, message: String = "Success", now: Double) -> JSONValue {
        var members: [(key: String, value: JSONValue)] = []
        if let data { members.append(("data", data)) }
        members.append(("status_code", .number(Double(statusCode))))
        members.append(("status_message", .string(message)))
        members.append(("timestamp", .string(time(now))))
        return .object(members)
    }
}

/// The Locations module's sender interface for pull (OCPI 2.2.1 mod_locations §1.2.1.1): a pure
/// function, so the admin listener (or the stage's own `pull_listen` server) only routes to it.
public struct NapLocations: Sendable {
    let core: NapCore
    /// The URL prefix the interface is served under, for `Link` headers.
    public let basePath: String

    init(core: NapCore, basePath: String = "/ocpi/2.2.1/locations") {
        self.core = core
        self.basePath = basePath
    }

    /// Answers `GET <basePath>?offset=&limit=&date_from=&date_to=` (the paginated list; the gateway has
    /// one Location) and `GET <basePath>/<location_id>[/<evse_uid>]`. `query` is the raw query string.
    public func respond(path: String, query: String, host: String, now: Double) -> (status: Int, headers: [(String, String)], body: [UInt8]) {
        var parameters: [String: String] = [:]
        for pair in query.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
            let value = parts.count > 1 ? (parts[1].replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? parts[1]) : ""
            parameters[parts[0]] = value
        }
        if path == basePath || path == basePath + "/" {
            func number(_ key: String) -> Int?? {
                guard let text = parameters[key] else { return .some(nil) }
                guard let value = Int(text), value >= 0 else { return nil }
                return .some(value)
            }
            guard let offset = number("offset"), let limit = number("limit") else {
                return Self.error(400, 2001, "offset and limit must be whole numbers of 0 or more", now: now)
            }
            func date(_ key: String) -> Double?? {
                guard let text = parameters[key] else { return .some(nil) }
                guard let value = NapExportConfiguration.rfc3339(text) else { return nil }
                return .some(value)
            }
            guard let from = date("date_from"), let to = date("date_to") else {
                return Self.error(400, 2001, "date_from and date_to must be RFC 3339 times", now: now)
            }
            return page(offset: offset ?? 0, limit: limit, dateFrom: from, dateTo: to, host: host, now: now)
        }
        let rest = path.hasPrefix(basePath + "/") ? path.dropFirst(basePath.count + 1).split(separator: "/").map(String.init) : []
        let (evses, _) = core.snapshot()
        guard let first = rest.first, rest.count <= 2, first == core.site.locationId else {
            return Self.error(404, 2003, "unknown location", now: now)
        }
        if rest.count == 2 {
            guard let evse = evses.first(where: { $0.definition.uid == rest[1] }) else {
                return Self.error(404, 2003, "unknown EVSE", now: now)
            }
            let body = OCPIObjects.response(data: OCPIObjects.evse(evse.definition, status: evse.status, lastUpdated: evse.lastUpdated), now: now)
            return (200, [("Content-Type", "application/json")], body.serialized())
        }
        let body = OCPIObjects.response(data: OCPIObjects.location(core.site, evses: evses, now: now), now: now)
        return (200, [("Content-Type", "application/json")], body.serialized())
    }

    /// The paginated list (OCPI 2.2.1 transport_and_format §4.1.3): Locations whose `last_updated` is
    /// in `[dateFrom, dateTo)`, from `offset`, at most `limit` (capped at 100), with `X-Total-Count`,
    /// `X-Limit` and a `Link` to the next page when there is one.
    public func page(offset: Int, limit: Int?, dateFrom: Double?, dateTo: Double?, host: String = "localhost",
                     now: Double) -> (status: Int, headers: [(String, String)], body: [UInt8]) {
        let maximum = 100
        let limit = min(limit ?? maximum, maximum)
        let (evses, _) = core.snapshot()
        let location = OCPIObjects.location(core.site, evses: evses, now: now)
        let lastUpdated = evses.map(\.lastUpdated).max() ?? now
        var all: [JSONValue] = [location]
        if let dateFrom, lastUpdated < dateFrom { all = [] }
        if let dateTo, lastUpdated >= dateTo { all = [] }
        let slice = offset < all.count ? Array(all[offset..<min(all.count, offset + limit)]) : []
        var headers: [(String, String)] = [("Content-Type", "application/json"), ("X-Total-Count", "\(all.count)"),
                                           ("X-Limit", "\(maximum)")]
        if offset + limit < all.count {
            headers.append(("Link", "<http://\(host)\(basePath)?offset=\(offset + limit)&limit=\(limit)>; rel=\"next\""))
        }
        return (200, headers, OCPIObjects.response(data: .array(slice), now: now).serialized())
    }

    static func error(_ http: Int, _ code: Int, _ message: String, now: Double) -> (status: Int, headers: [(String, String)], body: [UInt8]) {
        (http, [("Content-Type", "application/json")], OCPIObjects.response(data: nil, statusCode: code, message: message, now: now).serialized())
    }
}

/// DATEX II v3 Energy Infrastructure status publication (namespace `http://datex2.eu/schema/3/energyInfrastructure`):
/// one site (the Location), one station per charger, one refill point per EVSE, referenced by EVSE id.
enum DatexPublication {
    static func xml(site: Site, evses: [(definition: EVSEDefinition, status: OCPIStatus, lastUpdated: Double)], nationalIdentifier: String,
                    now: Double) -> String {
        func escape(_ text: String) -> String {
            text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
        }
        let time = { (seconds: Double) in Date(timeIntervalSince1970: seconds).formatted(.iso8601) }
        var out = """
        <?xml version="1.0" encoding="UTF-8"?>
        <d2:payload xmlns:d2="http://datex2.eu/schema/3/d2Payload" xmlns:com="http://datex2.eu/schema/3/common" \
        xmlns:egi="http://datex2.eu/schema/3/energyInfrastructure" xmlns:fac="http://datex2.eu/schema/3/facilities" \
        xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xsi:type="egi:EnergyInfrastructureStatusPublication" \
        lang="en" modelBaseVersion="3">
          <com:publicationTime>\(time(now))</com:publicationTime>
          <com:publicationCreator>
            <com:country>\(escape(site.countryCode.lowercased()))</com:country>
            <com:nationalIdentifier>\(escape(nationalIdentifier))</com:nationalIdentifier>
          </com:publicationCreator>
          <egi:energyInfrastructureSiteStatus>
            <fac:reference targetClass="egi:EnergyInfrastructureSite" id="\(escape(site.locationId))" version="1"/>
            <fac:lastUpdated>\(time(evses.map(\.lastUpdated).max() ?? now))</fac:lastUpdated>

        """
        let chargers = evses.map(\.definition.chargerId).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
        for charger in chargers {
            out += """
                <egi:energyInfrastructureStationStatus>
                  <fac:reference targetClass="egi:EnergyInfrastructureStation" id="\(escape(site.locationId + "-" + charger))" version="1"/>

            """
            for evse in evses where evse.definition.chargerId == charger {
                out += """
                      <egi:refillPointStatus xsi:type="egi:ElectricChargingPointStatus">
                        <fac:reference targetClass="egi:ElectricChargingPoint" id="\(escape(evse.definition.evseId))" version="1"/>
                        <fac:lastUpdated>\(time(evse.lastUpdated))</fac:lastUpdated>
                        <egi:status>\(evse.status.datex)</egi:status>
                      </egi:refillPointStatus>

                """
            }
            out += "    </egi:energyInfrastructureStationStatus>\n"
        }
        out += "  </egi:energyInfrastructureSiteStatus>\n</d2:payload>\n"
        return out
    }
}
