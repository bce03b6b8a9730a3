import AuthStage
import OCPP
import Router
import StageKit
import StageTesting
import Testing

@Suite("auth stage")
struct AuthStageTests {
    static let chargers = SouthSettings(securityProfile: 1, chargers: [
        "CP001": ChargerCredentials(password: "0123456789abcdef"),
        "CP002": ChargerCredentials(passwordHash: try! PasswordHash.make(password: "hashed-secret", rounds: 1000)),
    ])

    func tester(south: SouthSettings = chargers, north: Int = 3, config: String = "") throws -> StageTester {
        try StageTester(AuthStage.self, config: config, south: south, north: NorthSettings(securityProfile: north),
                        stateDirectory: "/var/lib/ocpp-gateway")
    }

    func request(_ id: String, _ user: String? = nil, _ password: String? = nil) -> ChargerConnectRequest {
        ChargerConnectRequest(chargerId: id, credentials: password.map { BasicCredentials(username: user ?? id, password: $0) })
    }

    @Test func theRightPasswordIsAcceptedAndTheChargersCertificateIsPresentedNorth() async throws {
        let decision = try await tester().connect(request("CP001", nil, "0123456789abcdef"))
        #expect(decision == .accept(north: NorthCredentials(
            securityProfile: 3,
            certificatePath: "/var/lib/ocpp-gateway/chargers/CP001/cert.pem",
            privateKeyPath: "/var/lib/ocpp-gateway/chargers/CP001/key.pem")))
    }

    @Test func hashedPasswordsVerify() async throws {
        let tester = try tester()
        #expect(await tester.connect(request("CP002", nil, "hashed-secret")) != .reject(status: 401, reason: "wrong password"))
        #expect(await tester.connect(request("CP002", nil, "hashed-secret")) == .accept(north: NorthCredentials(
            securityProfile: 3, certificatePath: "/var/lib/ocpp-gateway/chargers/CP002/cert.pem",
            privateKeyPath: "/var/lib/ocpp-gateway/chargers/CP002/key.pem")))
        #expect(await tester.connect(request("CP002", nil, "wrong")) == .reject(status: 401, reason: "wrong password"))
    }

    @Test func refusals() async throws {
        let tester = try tester()
        #expect(await tester.connect(request("CP001", nil, "wrong")) == .reject(status: 401, reason: "wrong password"))
        #expect(await tester.connect(request("CP001")) == .reject(status: 401, reason: "no Basic auth credentials"))
        #expect(await tester.connect(request("CP001", "CP002", "0123456789abcdef"))
            == .reject(status: 401, reason: "Basic auth user is not the charge point id (user name not logged)"))
        #expect(await tester.connect(request("CP999", nil, "0123456789abcdef"))
            == .reject(status: 401, reason: "charger 'CP999' is not in south.chargers"))
        var malformed = request("CP001")
        malformed.hasMalformedAuthorization = true
        #expect(await tester.connect(malformed) == .reject(status: 401, reason: "malformed Authorization header"))
    }

    @Test func securityProfile0ChecksOnlyTheAllowList() async throws {
        let open = SouthSettings(securityProfile: 0, chargers: ["CP001": ChargerCredentials()])
        let strict = try tester(south: open)
        #expect(await strict.connect(request("CP001")) != .reject(status: 404, reason: "charger 'CP001' is not in south.chargers"))
        #expect(await strict.connect(request("CP404")) == .reject(status: 404, reason: "charger 'CP404' is not in south.chargers"))
        let lenient = try tester(south: open, config: "allow_unlisted: true")
        #expect(await lenient.connect(request("CP404")) == .accept(north: NorthCredentials(
            securityProfile: 3, certificatePath: "/var/lib/ocpp-gateway/chargers/CP404/cert.pem",
            privateKeyPath: "/var/lib/ocpp-gateway/chargers/CP404/key.pem")))
    }

    @Test func securityProfile2PresentsTheNorthPassword() async throws {
        let south = SouthSettings(securityProfile: 1, chargers: [
            "CP001": ChargerCredentials(password: "south-secret", northPassword: "north-secret-0123"),
        ])
        let decision = try await tester(south: south, north: 2).connect(request("CP001", nil, "south-secret"))
        #expect(decision == .accept(north: NorthCredentials(
            securityProfile: 2, basicAuth: BasicCredentials(username: "CP001", password: "north-secret-0123"))))
    }

    @Test func configurationMistakesAreCaughtAtLoad() {
        #expect(throws: (any Error).self) { try tester(config: "allow_unlisted: true") }
        let hashOnly = SouthSettings(securityProfile: 1, chargers: ["CP001": ChargerCredentials(passwordHash: try! PasswordHash.make(password: "x", rounds: 1000))])
        #expect(throws: (any Error).self) { try tester(south: hashOnly, north: 2) }
        let badHash = SouthSettings(securityProfile: 1, chargers: ["CP001": ChargerCredentials(passwordHash: "md5:abc")])
        #expect(throws: (any Error).self) { try tester(south: badHash) }
        #expect(throws: ConfigurationError.self) { try tester(config: "certificate_fil: x") }
    }

    @Test func framesAuthorizeIncludedPassUntouched() throws {
        let tester = try tester()
        let text = #"[2,"a1","Authorize",{"idTag":"04A2B3C4"}]"#
        tester.chargerSends(text)
        #expect(tester.takeSentToCSMS().map(\.text) == [text])
    }

    @Test func passwordHashesRoundTripAndAreSalted() throws {
        let first = try PasswordHash.make(password: "secret", rounds: 1000)
        let second = try PasswordHash.make(password: "secret", rounds: 1000)
        #expect(first != second)
        #expect(first.hasPrefix("pbkdf2-sha256$1000$"))
        #expect(PasswordHash.verify(password: "secret", hash: first))
        #expect(!PasswordHash.verify(password: "Secret", hash: first))
        #expect(!PasswordHash.verify(password: "secret", hash: "pbkdf2-sha256$1000$!!$!!"))
    }
}
