"""SIGHUP reloads the pipeline between frames: nothing lost, nobody disconnected."""

import asyncio
import signal

from conftest import boot, connect_charger, hang_up, start_csms_and_gateway, wait_for
from ocpp.v16 import call

VALID_CHANGED = """version: 1
stages:
  - id: identity
    type: auth
    config: { certificate_file: "chargers/{id}/cert.pem" }
"""

BROKEN = """version: 1
stages:
  - id: identity
    type: auht
"""


def test_sighup_with_valid_and_broken_pipelines_keeps_every_frame_and_connection(gateway, pki, csms_port):
    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        await boot(charger)

        async def traffic(count):
            for _ in range(count):
                await charger.call(call.Heartbeat())

        flow = asyncio.create_task(traffic(200))
        await asyncio.sleep(0.05)
        gateway.pipeline_file.write_text(VALID_CHANGED)
        gateway.signal(signal.SIGHUP)
        await wait_for(lambda: "pipeline reloaded" in gateway.log(), what="the reload")
        await asyncio.sleep(0.05)
        gateway.pipeline_file.write_text(BROKEN)
        gateway.signal(signal.SIGHUP)
        await wait_for(lambda: "reload failed" in gateway.log(), what="the failed reload")
        await flow
        # Still the same connection, and every heartbeat answered.
        await charger.call(call.Heartbeat())
        heartbeats = [f for f in csms.frames_from("CP001") if '"Heartbeat"' in f]
        assert len(heartbeats) == 201
        assert connection.state.name == "OPEN"
        await hang_up(csms, (connection, task))

    asyncio.run(scenario())
    log = gateway.log()
    assert "unknown stage type 'auht' (did you mean 'auth'?)" in log
    assert "pipeline.yaml:4:11: error:" in log
    metrics = gateway.metrics() if gateway.process.poll() is None else ""
    assert 'ocpp_gateway_reloads_total{result="ok"} 1' in metrics
    assert 'ocpp_gateway_reloads_total{result="failed"} 1' in metrics
