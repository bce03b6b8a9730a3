"""The transparent SP1 → SP3 relay, against the independent `ocpp` implementation on both sides."""

import asyncio
import json

from conftest import boot, connect_charger, hang_up, now_iso, start_csms_and_gateway, wait_for
from ocpp.v16 import call
from ocpp.v16.enums import AuthorizationStatus, RegistrationStatus, ResetType


def test_charger_session_reaches_csms_byte_for_byte_over_mutual_tls(gateway, pki, csms_port):
    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)

        boot_answer = await boot(charger)
        assert boot_answer.status == RegistrationStatus.accepted
        heartbeat = await charger.call(call.Heartbeat())
        assert heartbeat.current_time
        await charger.call(call.StatusNotification(connector_id=1, error_code="NoError", status="Available"))
        authorize = await charger.call(call.Authorize(id_tag="04A2B3C4"))
        assert authorize.id_tag_info["status"] == AuthorizationStatus.accepted
        start = await charger.call(
            call.StartTransaction(connector_id=1, id_tag="04A2B3C4", meter_start=1000, timestamp=now_iso())
        )
        assert start.transaction_id == 1
        # A signed-looking meter value with unusual number spelling must arrive untouched.
        await charger.call(
            call.MeterValues(
                connector_id=1,
                transaction_id=start.transaction_id,
                meter_value=[
                    {
                        "timestamp": now_iso(),
                        "sampledValue": [
                            {"value": "1250.0", "measurand": "Energy.Active.Import.Register", "unit": "Wh",
                             "format": "SignedData", "context": "Sample.Periodic"},
                        ],
                    }
                ],
            )
        )
        await charger.call(
            call.StopTransaction(meter_stop=1750, timestamp=now_iso(), transaction_id=start.transaction_id, reason="Local")
        )

        # CSMS-initiated CALLs reach the charger and their answers come back.
        csms_side = csms.charge_points["CP001"]
        remote = await csms_side.call(call.RemoteStartTransaction(id_tag="04A2B3C4", connector_id=1))
        assert remote.status == "Accepted"
        configuration = await csms_side.call(call.GetConfiguration(key=["HeartbeatInterval"]))
        assert configuration.configuration_key[0]["key"] == "HeartbeatInterval"
        change = await csms_side.call(call.ChangeConfiguration(key="HeartbeatInterval", value="120"))
        assert change.status == "Accepted"
        reset = await csms_side.call(call.Reset(type=ResetType.soft))
        assert reset.status == "Accepted"

        await wait_for(lambda: len(csms.frames_from("CP001")) == len(charger.sent), what="all frames at the CSMS")
        # Byte for byte: what the charger wrote is exactly what the CSMS read, in order.
        assert csms.frames_from("CP001") == charger.sent
        assert any('"1250.0"' in frame for frame in csms.frames_from("CP001"))
        # The CSMS saw the charger's own client certificate (Security Profile 3).
        assert csms.client_subjects == [{"commonName": "CP001", "organizationName": "Interop CPO"}]

        await connection.close()
        task.cancel()
        metrics = gateway.metrics()
        assert 'ocpp_gateway_frames_total{direction="from_charger",action="BootNotification",verdict="forward"} 1' in metrics
        csms.server.close()

    asyncio.run(scenario())
    assert gateway.stop() == 0


def test_gateway_serialises_csms_calls_towards_the_charger(gateway, pki, csms_port):
    """The CSMS may send CALLs back to back; the charger still sees one outstanding CALL at a time."""

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        await boot(charger)
        csms_connection = next(iter(csms.connections))
        # Three CALLs written at once, bypassing the library's own one-at-a-time lock.
        for n in range(3):
            await csms_connection.send(json.dumps([2, f"burst-{n}", "GetConfiguration", {}]))
        await wait_for(lambda: len([f for _, f in csms.received if f.startswith("[3")]) == 3, what="three answers")
        answers = [json.loads(f)[1] for _, f in csms.received if f.startswith("[3")]
        assert answers == ["burst-0", "burst-1", "burst-2"]
        # The charger answered each before it saw the next one.
        results = [json.loads(m)[1] for m in charger.sent if m.startswith("[3")]
        assert results == ["burst-0", "burst-1", "burst-2"]
        await hang_up(csms, (connection, task))

    asyncio.run(scenario())
