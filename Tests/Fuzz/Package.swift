// swift-tools-version:6.1
import PackageDescription

// A libFuzzer harness for the frame parser, the envelope and the payload validator.
// Not part of the main build (it needs -sanitize=fuzzer); run it with `make fuzz SECONDS=600`.
// Sources/OCPP is a link to the gateway's own module, so the fuzzer exercises exactly that code.
let package = Package(
    name: "ocpp-fuzz",
    targets: [
        .target(name: "OCPP", swiftSettings: [.swiftLanguageMode(.v6)]),
        .executableTarget(name: "ocpp-fuzz", dependencies: ["OCPP"], swiftSettings: [.swiftLanguageMode(.v6)]),
    ]
)
