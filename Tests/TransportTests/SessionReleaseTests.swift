import Foundation
import Gateway
import NIOCore
import NIOPosix
import OCPP
import Simulators
import Testing
import Transport

/// Every connection object of an ended session is released — the gateway's two links and the
/// peers' — so nothing is kept per connect/disconnect cycle (the 10,000-cycle soak in `make bench`
/// shows the RSS; this shows the objects).
@Suite("sessions are released", .serialized)
struct SessionReleaseTests {
    @Test func connectDisconnectCyclesLeaveNoConnectionObjectBehind() async throws {
        let rig = try await Rig()
        for index in 0..<40 {
            let peer = try await rig.charger(index % 2 == 0 ? "CP001" : "CP|007").connect(on: rig.group.next())
            _ = try await peer.call("Heartbeat", [:]).get()
            peer.close()
            try await peer.connection.channel.closeFuture.get()
        }
        // South: the gateway's side and the chargers'; north: the gateway's client and the CSMS's side.
        func alive() -> (south: Int, north: Int) {
            (WebSocketConnection.liveObjects(port: rig.southPort), WebSocketConnection.liveObjects(port: rig.csmsPort))
        }
        let deadline = ContinuousClock.now + .seconds(3)
        while rig.gateway.sessionCount > 0 || alive() != (0, 0), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(rig.gateway.sessionCount == 0)
        #expect(alive().south == 0)
        #expect(alive().north == 0)
        await rig.stop()
    }
}
