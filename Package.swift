// swift-tools-version:6.1
import PackageDescription

/// One set of settings for every target, so no module drifts from Swift 6 strictness.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

// Products used by many targets, named once.
let logging: Target.Dependency = .product(name: "Logging", package: "swift-log")
let metrics: Target.Dependency = .product(name: "Metrics", package: "swift-metrics")
let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")
/// SwiftNIO with HTTP/1, WebSocket and TLS: what every networking target needs.
let nio: [Target.Dependency] = [
    .product(name: "NIOCore", package: "swift-nio"),
    .product(name: "NIOPosix", package: "swift-nio"),
    .product(name: "NIOHTTP1", package: "swift-nio"),
    .product(name: "NIOWebSocket", package: "swift-nio"),
    .product(name: "NIOSSL", package: "swift-nio-ssl"),
]

let package = Package(
    name: "ocpp-gateway",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "ocpp-gateway", targets: ["ocpp-gateway"]),
        .executable(name: "ocpp-sim", targets: ["ocpp-sim"]),
        .library(name: "StageKit", targets: ["StageKit"]),
        .library(name: "StageTesting", targets: ["StageTesting"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "3.12.3"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    ],
    targets: [
        // OCPP-J frames, the envelope and the message catalogue. No networking.
        .target(name: "OCPP", swiftSettings: swiftSettings),

        // The only API a stage author needs.
        .target(
            name: "StageKit",
            dependencies: [
                "OCPP",
                logging,
                metrics,
            ],
            swiftSettings: swiftSettings
        ),

        // Registry, pipeline loader, sessions, correlation, queues.
        .target(
            name: "Router",
            dependencies: [
                "OCPP", "StageKit",
                .product(name: "Yams", package: "Yams"),
                logging,
                metrics,
                .product(name: "CoreMetrics", package: "swift-metrics"),
            ],
            swiftSettings: swiftSettings
        ),

        // libmosquitto from Debian (libmosquitto-dev), and the health channel's MQTT publisher on it.
        .systemLibrary(name: "CMosquitto", pkgConfig: "libmosquitto", providers: [.apt(["libmosquitto-dev"])]),
        .target(name: "HealthChannel", dependencies: ["CMosquitto", "StageKit", "Router", logging, metrics], swiftSettings: swiftSettings),

        // Deadband and Swinging Door Trending for the health channel's telemetry.
        .target(name: "TelemetryCompression", swiftSettings: swiftSettings),

        // Charging-profile arithmetic for the smart-charging stage: composite schedules, TOU, compiling for a charger.
        .target(name: "ChargingSchedules", dependencies: ["OCPP"], swiftSettings: swiftSettings),

        // OCPP 2.0.1 towards the CSMS for a 1.6J charger: the translator at the session's north edge and the device model.
        .target(name: "North201", dependencies: ["OCPP", "StageKit", "Router", logging, metrics], path: "Sources/North201",
                swiftSettings: swiftSettings),

        // Drives a stage (or a whole pipeline) with envelopes and a fake clock; no sockets.
        .target(
            name: "StageTesting",
            dependencies: ["OCPP", "StageKit", "Router", logging],
            swiftSettings: swiftSettings
        ),

        // SwiftNIO WebSocket server (south), client (north), TLS, admin HTTP.
        .target(
            name: "Transport",
            dependencies: nio,
            swiftSettings: swiftSettings
        ),

        // The running gateway: south server, north links, sessions, reload, drain, admin endpoint.
        .target(
            name: "Gateway",
            dependencies: [
                "OCPP", "StageKit", "Router", "Transport", "HealthChannel", "North201",
                logging,
                metrics,
            ] + nio,
            swiftSettings: swiftSettings
        ),

        // Development PKI: a CA, a CSMS server certificate and charger client certificates.
        .target(
            name: "DevPKI",
            dependencies: [
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
            ],
            swiftSettings: swiftSettings
        ),

        // Stage modules. `Plugins/` holds stages, not SwiftPM package plugins.
        .target(
            name: "AuthStage",
            dependencies: [
                "OCPP", "StageKit",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
            ],
            path: "Plugins/AuthStage",
            swiftSettings: swiftSettings
        ),

        .target(
            name: "CertsStage",
            dependencies: [
                "OCPP", "StageKit",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "_CryptoExtras", package: "swift-crypto"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                logging,
            ],
            path: "Plugins/CertsStage",
            swiftSettings: swiftSettings
        ),

        .target(
            name: "FirewallStage",
            dependencies: [
                "OCPP", "StageKit",
                logging,
                metrics,
            ],
            path: "Plugins/FirewallStage",
            swiftSettings: swiftSettings
        ),

        .target(
            name: "SmartChargingStage",
            dependencies: ["OCPP", "StageKit", "ChargingSchedules", logging],
            path: "Plugins/SmartChargingStage",
            swiftSettings: swiftSettings
        ),

        .target(
            name: "MQTTTapStage",
            dependencies: ["OCPP", "StageKit", logging, metrics, .product(name: "Crypto", package: "swift-crypto")],
            path: "Plugins/MQTTTapStage",
            swiftSettings: swiftSettings
        ),

        // The durable per-charger outbox (SQLite through GRDB; Debian's libsqlite3-dev) and the `outbox` stage.
        .target(name: "Outbox", dependencies: ["OCPP", .product(name: "GRDB", package: "GRDB.swift"), logging, metrics],
                swiftSettings: swiftSettings),
        .target(name: "OutboxStage", dependencies: ["OCPP", "StageKit", "Outbox", logging, metrics], path: "Plugins/OutboxStage",
                swiftSettings: swiftSettings),

        .target(name: "DashcamStage", dependencies: ["OCPP", "StageKit", logging, metrics], path: "Plugins/DashcamStage", swiftSettings: swiftSettings),

        .target(name: "CompressorStage", dependencies: ["OCPP", "StageKit", "TelemetryCompression"], path: "Plugins/CompressorStage",
                swiftSettings: swiftSettings),

        // `nap_export`: EVSE status to National Access Points (OCPI 2.2.1, DATEX II) and NEVI uptime (docs/regulatory.md).
        .target(name: "NapExportStage", dependencies: ["OCPP", "StageKit", logging, metrics] + nio, path: "Plugins/NapExportStage",
                swiftSettings: swiftSettings),

        // Wires the stage modules into a registry; the one line a stage author adds lives here.
        .target(
            name: "GatewayStages",
            dependencies: ["Router", "AuthStage", "CertsStage", "FirewallStage", "SmartChargingStage", "MQTTTapStage", "DashcamStage", "CompressorStage", "OutboxStage", "NapExportStage"],
            swiftSettings: swiftSettings
        ),

        .executableTarget(
            name: "ocpp-gateway",
            dependencies: [
                "OCPP", "StageKit", "Router", "Gateway", "GatewayStages", "AuthStage", "CertsStage", "HealthChannel", "Outbox", "NapExportStage",
                .product(name: "Prometheus", package: "swift-prometheus"),
                argumentParser,
                logging,
                metrics,
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // Simulators: a development CSMS and legacy 1.6J chargers, for `make run`, tests and benchmarks.
        .target(
            name: "Simulators",
            dependencies: [
                "OCPP", "Transport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "ocpp-sim",
            dependencies: [
                "Simulators", "DevPKI", "OCPP", "Transport",
                argumentParser,
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        // Benchmarks: the gateway side by side with no proxy and with nginx (`make bench`).
        .executableTarget(
            name: "ocpp-bench",
            dependencies: [
                "Simulators", "DevPKI", "OCPP", "Transport", "TelemetryCompression", "Outbox",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "NIOWebSocket", package: "swift-nio"),
                argumentParser,
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),

        .testTarget(
            name: "SmartChargingStageTests",
            dependencies: ["SmartChargingStage", "StageTesting", "StageKit", "OCPP", "Router"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "MQTTTapStageTests",
            dependencies: ["MQTTTapStage", "StageTesting", "StageKit", "OCPP", "Router", .product(name: "Crypto", package: "swift-crypto")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DashcamStageTests",
            dependencies: ["DashcamStage", "StageTesting", "StageKit", "OCPP", "Router"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "CompressorStageTests",
            dependencies: ["CompressorStage", "MQTTTapStage", "StageTesting", "StageKit", "OCPP"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "OutboxStageTests",
            dependencies: ["OutboxStage", "Outbox", "StageTesting", "StageKit", "OCPP", "Router"],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "NapExportStageTests", dependencies: ["NapExportStage", "StageTesting", "StageKit", "OCPP", "Router"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "TelemetryCompressionTests", dependencies: ["TelemetryCompression"], swiftSettings: swiftSettings),
        .testTarget(name: "ChargingSchedulesTests", dependencies: ["ChargingSchedules", "OCPP"], swiftSettings: swiftSettings),
        .testTarget(name: "OCPPTests", dependencies: ["OCPP"], swiftSettings: swiftSettings),
        .testTarget(
            name: "North201Tests",
            dependencies: ["North201", "Router", "StageTesting", "StageKit", "OCPP", "OutboxStage", "SmartChargingStage", logging],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "DeviceModelTests", dependencies: ["North201", "OCPP"], path: "Tests/DeviceModelTests", exclude: ["payloads.json"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "RouterTests", dependencies: ["Router", "StageKit", "StageTesting", "OCPP", logging], swiftSettings: swiftSettings),
        .testTarget(
            name: "CertsStageTests",
            dependencies: [
                "CertsStage", "StageTesting", "StageKit", "OCPP", "Router", "DevPKI",
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                logging,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "FirewallStageTests",
            dependencies: ["FirewallStage", "StageTesting", "StageKit", "OCPP", "Router"],
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "HealthChannelTests", dependencies: ["HealthChannel", logging], swiftSettings: swiftSettings),
        .testTarget(name: "AuthStageTests", dependencies: ["AuthStage", "StageTesting", "StageKit", "OCPP", "Router"], swiftSettings: swiftSettings),
        .testTarget(
            name: "TransportTests",
            dependencies: [
                "Transport", "Gateway", "Router", "GatewayStages", "Simulators", "DevPKI", "OCPP", "StageKit",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                logging,
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
