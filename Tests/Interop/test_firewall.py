"""The ids stage in the real gateway, between the `ocpp` package's charger and CSMS."""

import asyncio
import json
import time

import websockets

from conftest import PASSWORD, Gateway, boot, connect_charger, run_with, start_csms_and_gateway, wait_for
from ocpp.v16 import call

PIPELINE = """version: 1
stages:
  - id: guard
    type: ids
    config:
      rate_limits: { default: { per_second: 2, burst: 5 } }
      csms_actions: { deny: [UpdateFirmware] }
      csms_call_interval: 0.3
  - id: identity
    type: auth
"""


def test_firewall_rules_hold_end_to_end(tmp_path, pki, csms_port):
    gateway = Gateway(tmp_path, pki, csms_port, chargers=("CP001", "CP002"), pipeline=PIPELINE)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        flooder, flood_connection, flood_task = await connect_charger(gateway, "CP001")
        victim, victim_connection, victim_task = await connect_charger(gateway, "CP002")
        await boot(flooder)
        await boot(victim)

        # A flood of heartbeats from one charger is refused beyond its bucket…
        flood_task.cancel()
        for n in range(60):
            await flood_connection.send(json.dumps([2, f"flood-{n}", "Heartbeat", {}]))
        answers = [json.loads(await asyncio.wait_for(flood_connection.recv(), 5)) for _ in range(60)]
        refused = [a for a in answers if a[0] == 4]
        assert len(refused) >= 50 and refused[0][2] == "GenericError"
        # …while the other charger's Authorize goes through at once.
        started = time.monotonic()
        authorized = await victim.call(call.Authorize(id_tag="04A2B3C4"))
        assert authorized.id_tag_info["status"] == "Accepted" and time.monotonic() - started < 1

        # An invalid payload is answered with the right code and never reaches the CSMS
        # (once the flooder's bucket has refilled: the rate limit is checked first, it is cheaper).
        await asyncio.sleep(1.0)
        await flood_connection.send(json.dumps([2, "bad-status", "StatusNotification", {"connectorId": 1, "errorCode": "Melted", "status": "Charging"}]))
        answer = json.loads(await asyncio.wait_for(flood_connection.recv(), 5))
        assert answer[:3] == [4, "bad-status", "PropertyConstraintViolation"]
        assert all("Melted" not in frame for _, frame in csms.received)

        # A denied CSMS action is refused; the charger sees nothing of it.
        victim_received = len(victim.received)
        csms_connection = [c for c in csms.connections if c.request.path.endswith("CP002")][0]
        await csms_connection.send(json.dumps([2, "fw-1", "UpdateFirmware", {"location": "https://example.com/fw.bin", "retrieveDate": "2026-11-25T10:00:00Z"}]))
        await wait_for(lambda: any('"fw-1"' in f for _, f in csms.received), what="the refusal")
        refusal = json.loads([f for _, f in csms.received if '"fw-1"' in f][0])
        assert refusal[:3] == [4, "fw-1", "SecurityError"]
        assert len(victim.received) == victim_received

        # CSMS CALLs reach the charger paced and in order.
        arrivals = []
        original = victim.route_message

        async def timed(raw):
            if raw.startswith("[2"):
                arrivals.append((time.monotonic(), json.loads(raw)[1]))
            await original(raw)

        victim.route_message = timed
        for n in range(3):
            await csms_connection.send(json.dumps([2, f"cfg-{n}", "GetConfiguration", {}]))
        await wait_for(lambda: len(arrivals) == 3, what="three paced CALLs")
        assert [name for _, name in arrivals] == ["cfg-0", "cfg-1", "cfg-2"]
        assert all(b[0] - a[0] >= 0.25 for a, b in zip(arrivals, arrivals[1:]))

        metrics = gateway.metrics()
        assert 'ocpp_gateway_firewall_decisions_total{rule="rate_limit"}' in metrics
        assert 'ocpp_gateway_firewall_decisions_total{rule="csms_policy"} 1' in metrics
        await flood_connection.close()
        await victim_connection.close()
        victim_task.cancel()
        csms.server.close()

    run_with(gateway, scenario)


LOCKOUT_PIPELINE = """version: 1
stages:
  - id: guard
    type: ids
    config:
      connections: { attempts_per_second: 100, attempts_burst: 100, max_failed_logins: 5, lockout: 60 }
  - id: identity
    type: auth
"""


async def refused_status(gateway, charger_id, password, source):
    """The HTTP status an upgrade from `source` (a loopback address) gets, or 101."""
    try:
        _, connection, task = await connect_charger(gateway, charger_id, password=password, local_addr=(source, 0))
    except websockets.exceptions.InvalidStatus as refusal:
        return refusal.response.status_code
    task.cancel()
    await connection.close()
    return 101


def test_wrong_passwords_lock_the_source_not_the_charger(tmp_path, pki, csms_port):
    """Five wrong passwords from a neighbour on the LAN must not lock the real charger out (issue 11.11)."""
    gateway = Gateway(tmp_path, pki, csms_port, chargers=("CP001", "CP002"), pipeline=LOCKOUT_PIPELINE)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        for _ in range(5):
            assert await refused_status(gateway, "CP001", "wrong", "127.0.0.2") == 401
        assert await refused_status(gateway, "CP001", "wrong", "127.0.0.2") == 429, "the guessing source is locked out"
        assert await refused_status(gateway, "CP002", PASSWORD, "127.0.0.2") == 429, "for every charger id"
        assert await refused_status(gateway, "CP001", PASSWORD, "127.0.0.1") == 101, "the charger itself still gets in"

        # Failures from many sources (max_failing_sources: 10 by default) lock the id.
        for n in range(3, 13):
            assert await refused_status(gateway, "CP002", "wrong", f"127.0.0.{n}") == 401
        assert await refused_status(gateway, "CP002", PASSWORD, "127.0.0.20") == 429, "a distributed guess locks the id"
        metrics = gateway.metrics()
        assert 'ocpp_gateway_firewall_decisions_total{rule="login_lockout"}' in metrics
        csms.server.close()

    run_with(gateway, scenario)
