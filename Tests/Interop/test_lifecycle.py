"""Lifecycle promises: SIGTERM drains CALLs already at the CSMS; the gateway's own CALLs wait for the boot,
also across a gateway restart (a charger that reconnects without booting again is served at once)."""

import asyncio
import json
import signal

from conftest import CSMSChargePoint, boot, connect_charger, hang_up, now_iso, run_with, start_csms_and_gateway, wait_for
from ocpp.routing import on
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action, AuthorizationStatus


def test_sigterm_answers_a_start_transaction_already_at_the_csms(gateway, pki, csms_port, monkeypatch):
    """A StartTransaction the CSMS answers slowly: SIGTERM arrives while it is in flight, the charger still gets
    its transactionId before the gateway closes the link with 1001 and exits 0."""

    class SlowStart(CSMSChargePoint):
        @on(Action.start_transaction)
        async def on_start(self, **_):
            await asyncio.sleep(1.5)
            return call_result.StartTransaction(transaction_id=77, id_tag_info={"status": AuthorizationStatus.accepted})

    monkeypatch.setattr("conftest.CSMSChargePoint", SlowStart)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        await boot(charger)
        start = asyncio.create_task(
            charger.call(call.StartTransaction(connector_id=1, id_tag="04A2B3C4", meter_start=0, timestamp=now_iso()))
        )
        await wait_for(lambda: any("StartTransaction" in raw for raw in csms.frames_from("CP001")), what="StartTransaction at the CSMS")
        gateway.signal(signal.SIGTERM)
        answer = await asyncio.wait_for(start, 10)
        assert answer.transaction_id == 77
        await asyncio.wait_for(connection.wait_closed(), 10)
        assert connection.close_code == 1001
        csms.server.close()

    try:
        asyncio.run(scenario())
        assert gateway.process.wait(timeout=15) == 0
    finally:
        gateway.stop()


def test_gateway_calls_wait_for_the_boot_which_is_remembered(tmp_path, pki, csms_port):
    """With smart charging in the pipeline the gateway reads the charger's capabilities (GetConfiguration).
    It must not do so before the charger's BootNotification was accepted (OCPP 1.6 §4.2)."""
    from conftest import Gateway

    gateway = Gateway(tmp_path, pki, csms_port, pipeline="""version: 1
stages:
  - id: identity
    type: auth
  - id: limits
    type: smart_charging
""")

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        await asyncio.sleep(1.0)
        early = [json.loads(raw) for raw in charger.received]
        assert not [frame for frame in early if frame[0] == 2], f"gateway CALLs before the boot: {early}"
        await boot(charger)
        await wait_for(lambda: any('"GetConfiguration"' in raw for raw in charger.received), what="discovery after the boot")

        # The acceptance is remembered on disk, so a charger that reconnects without booting (after a CSMS
        # outage or a gateway restart) is known to have booted.
        record = gateway.state / "chargers" / "CP001" / "boot.json"
        await wait_for(record.exists, what="boot.json")
        assert json.loads(record.read_text())["accepted"] is True
        assert (record.stat().st_mode & 0o777) == 0o600
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario)
