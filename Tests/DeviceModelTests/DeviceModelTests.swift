import North201
import OCPP
import Testing

@Suite struct DeviceModelTests {
    @Test func skeletonBuilds() {
        _ = DeviceModelMap()
    }
}
