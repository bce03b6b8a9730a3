/// HTTP Basic credentials (OCPP Security Profiles 1 and 2).
public struct BasicCredentials: Sendable, Equatable {
    public var username: String
    public var password: String
    public init(username: String, password: String) {
        self.username = username
        self.password = password
    }
}

/// A charger's WebSocket upgrade request, as the connection hooks see it.
public struct ChargerConnectRequest: Sendable {
    public var chargerId: String
    public var remoteAddress: String?
    /// Present when the charger sent an `Authorization: Basic` header that could be decoded.
    public var credentials: BasicCredentials?
    /// True when an `Authorization` header was present but was not valid Basic auth.
    public var hasMalformedAuthorization: Bool
    /// The security profile south this connection stands on (0–3), as its listener and the charger's
    /// configuration decide; for 3 the client certificate has already been checked (CN = charge point id).
    public var securityProfile: Int?

    public init(chargerId: String, remoteAddress: String? = nil, credentials: BasicCredentials? = nil,
                hasMalformedAuthorization: Bool = false) {
        self.chargerId = chargerId
        self.remoteAddress = remoteAddress
        self.credentials = credentials
        self.hasMalformedAuthorization = hasMalformedAuthorization
    }
}

/// What the gateway presents to the CSMS for a charger.
public struct NorthCredentials: Sendable, Equatable {
    /// 2: TLS + Basic auth; 3: mutual TLS.
    public var securityProfile: Int
    /// Basic auth for Security Profile 2 (user name = charge point id).
    public var basicAuth: BasicCredentials?
    /// Client certificate chain and key (PEM) for Security Profile 3.
    public var certificatePath: String?
    public var privateKeyPath: String?

    public init(securityProfile: Int, basicAuth: BasicCredentials? = nil, certificatePath: String? = nil,
                privateKeyPath: String? = nil) {
        self.securityProfile = securityProfile
        self.basicAuth = basicAuth
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
    }
}

/// A stage's answer to a charger that wants to connect.
public struct ConnectDecision: Sendable, Equatable {
    package enum Kind: Sendable, Equatable {
        case noOpinion
        case accept(NorthCredentials)
        case reject(status: Int, reason: String)
    }
    package let kind: Kind

    /// Leave the decision to a later stage.
    public static let noOpinion = ConnectDecision(kind: .noOpinion)
    /// Let the charger in and connect north with these credentials.
    public static func accept(north: NorthCredentials) -> ConnectDecision { ConnectDecision(kind: .accept(north)) }
    /// Refuse the upgrade with an HTTP status (401 bad credentials, 403 not allowed, 404 unknown charger).
    /// The reason is logged, never sent to the charger.
    public static func reject(status: Int, reason: String) -> ConnectDecision {
        ConnectDecision(kind: .reject(status: status, reason: reason))
    }
}
