"""The Local Controller: a CSMS's 48-period day-ahead profile in watts reaches a legacy charger in
what it can execute; the CSMS gets the charger's own answer. Every scenario runs against an A-only
and a W-only charger (field_peers.py), the latter like the MCU firmware seen in the field."""

import asyncio
import datetime
import json
import signal
import time

import pytest
from conftest import CSMS, Gateway, boot, connect_charger, hang_up, now_iso, run_with, start_csms_and_gateway, wait_for
from field_peers import PERSONALITIES, FieldFirmware, reuse_message_ids
from ocpp.v16 import call

personality = pytest.mark.parametrize("peer", PERSONALITIES, ids=lambda p: p.name)

PIPELINE = """version: 1
stages:
  - id: identity
    type: auth
  - id: smart
    type: smart_charging
"""


def day_ahead_profile(period_seconds):
    """A day-ahead curve as a CSMS sends it: TxDefaultProfile, stack level 3, 48 periods in watts
    cycling 11 000 / 7 360 / 2 760 / 22 080 W, starting now."""
    start = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
    watts = [11000, 7360, 2760, 22080]
    return {
        "charging_profile_id": 17, "stack_level": 3, "charging_profile_purpose": "TxDefaultProfile",
        "charging_profile_kind": "Absolute",
        "charging_schedule": {
            "start_schedule": start.isoformat(), "charging_rate_unit": "W",
            "charging_schedule_period": [{"start_period": i * period_seconds, "limit": watts[i % 4]} for i in range(48)],
        },
    }


@personality
def test_a_48_period_watt_profile_becomes_what_the_charger_accepts(tmp_path, pki, csms_port, peer):
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        firmware = FieldFirmware(charger, peer)
        await boot(charger)
        await asyncio.sleep(0.3)  # the gateway reads the charger's limits after boot

        profile = day_ahead_profile(period_seconds=1800)
        answer = await csms.charge_points["CP001"].call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=profile))
        assert answer.status == "Accepted", firmware.refused
        compiled = firmware.profiles[-1]
        assert compiled["charging_schedule"]["charging_rate_unit"] == peer.unit
        limits = [float(p["limit"]) for p in compiled["charging_schedule"]["charging_schedule_period"]]
        if peer.unit == "A":
            assert limits == [15.9]
            assert compiled["charging_schedule"]["duration"] <= 1800
        else:
            assert limits[:4] == [11000, 7360, 0, 22080], "watts unchanged (2 760 W is under 6 A: pause)"
            assert len(limits) <= 24 and compiled["stack_level"] == 8

        composite = await csms.charge_points["CP001"].call(call.GetCompositeSchedule(connector_id=1, duration=3600, charging_rate_unit="A"))
        assert composite.status == "Accepted"
        assert [float(p["limit"]) for p in composite.charging_schedule["charging_schedule_period"]][:2] == [15.9, 10.6]

        await hang_up(csms, (connection, task))

    run_with(gateway, scenario)


SITE_PIPELINE = """version: 1
stages:
  - id: identity
    type: auth
  - id: smart
    type: smart_charging
    config:
      site_limit_amps: 32
"""


@personality
def test_the_site_limit_is_shared_and_a_201_profile_arrives_by_data_transfer(tmp_path, pki, csms_port, peer):
    gateway = Gateway(tmp_path, pki, csms_port, chargers=("CP001", "CP002"), pipeline=SITE_PIPELINE)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        first, first_connection, first_task = await connect_charger(gateway, "CP001")
        first_profiles = FieldFirmware(first, peer)
        second, second_connection, second_task = await connect_charger(gateway, "CP002")
        second_profiles = FieldFirmware(second, peer)
        await boot(first)
        await boot(second)
        await wait_for(lambda: first_profiles.profiles and second_profiles.profiles, what="the site shares after boot")

        one = await first.call(call.StartTransaction(connector_id=1, id_tag="A", meter_start=0, timestamp=now_iso()))
        await wait_for(lambda: first_profiles.amps()[-1] == 32, what="the whole site for the only charger charging")
        two = await second.call(call.StartTransaction(connector_id=1, id_tag="B", meter_start=0, timestamp=now_iso()))
        await wait_for(lambda: second_profiles.amps()[-1] == 16 and first_profiles.amps()[-1] == 16, what="16 A each")
        await second.call(call.StopTransaction(meter_stop=10, timestamp=now_iso(), transaction_id=two.transaction_id))
        await wait_for(lambda: first_profiles.amps()[-1] == 32, what="32 A for the one left")

        # A 2.0.1 ChargingStationMaxProfile inside DataTransfer, answered with the charger's verdict.
        data = json.dumps({"evseId": 0, "chargingProfile": {
            "id": 5, "stackLevel": 1, "chargingProfilePurpose": "ChargingStationMaxProfile", "chargingProfileKind": "Absolute",
            "chargingSchedule": [{"id": 1, "startSchedule": now_iso(), "chargingRateUnit": "W",
                                  "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 13800.0}]}]}})
        answer = await csms.charge_points["CP001"].call(call.DataTransfer(vendor_id="ocpp-gateway", message_id="SetChargingProfile201", data=data))
        assert answer.status == "Accepted"
        await wait_for(lambda: first_profiles.amps()[-1] == 20, what="13.8 kW on three phases: 20 A, below the 32 A share")
        assert one.transaction_id

        for connection in (first_connection, second_connection):
            await connection.close()
        second_task.cancel()
        first_task.cancel()
        csms.server.close()

    run_with(gateway, scenario)


@personality
def test_the_charger_gets_the_next_period_at_each_boundary(tmp_path, pki, csms_port, peer):
    """The 48-period curve scaled to 2-second periods, so real time can show the re-sends."""
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        profiles = FieldFirmware(charger, peer)
        await boot(charger)
        await asyncio.sleep(0.3)
        profile = day_ahead_profile(period_seconds=2)
        answer = await csms.charge_points["CP001"].call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=profile))
        assert answer.status == "Accepted"
        cycle = [15.9, 10.6, 0.0, 32.0]
        if peer.max_periods == 1:
            await wait_for(lambda: len(profiles.profiles) >= 5, timeout=15, what="four boundaries")
            # Whatever period the first one landed in, each next one follows the curve.
            limits = profiles.amps()
            offset = cycle.index(limits[0])
            assert limits[:5] == [cycle[(offset + i) % 4] for i in range(5)]
        else:
            # 24 periods at once; the next 24 when they run out (48 s later).
            first = profiles.profiles[0]["charging_schedule"]
            watts = [float(p["limit"]) for p in first["charging_schedule_period"]]
            assert len(watts) == 24 and first["charging_rate_unit"] == "W"
            assert set(watts) <= {11000.0, 7360.0, 0.0, 22080.0}
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario)


@personality
def test_a_time_of_use_policy_in_the_pipeline_reaches_the_charger_after_boot(tmp_path, pki, csms_port, peer):
    pipeline = """version: 1
stages:
  - id: identity
    type: auth
  - id: smart
    type: smart_charging
    config:
      time_of_use:
        time_zone: UTC
        windows:
          - { days: [mon, tue, wed, thu, fri, sat, sun], from: "00:00", to: "24:00", kw: 6.9 }
"""
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=pipeline)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        profiles = FieldFirmware(charger, peer)
        await boot(charger)
        await wait_for(lambda: profiles.profiles, what="the policy's profile")
        assert profiles.amps()[0] == 10.0 and profiles.connectors[0] == 0, "6.9 kW on three phases at 230 V, whole charger"
        assert csms.charge_points["CP001"] is not None
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario)


# ---------------------------------------------------------------------------------------------
# Field scenarios (issue 13): state that outlives the WebSocket, the process and a reload.


def amps_profile(profile_id, amps, stack_level=0, purpose="TxDefaultProfile", transaction_id=None):
    profile = {
        "charging_profile_id": profile_id, "stack_level": stack_level, "charging_profile_purpose": purpose,
        "charging_profile_kind": "Absolute",
        "charging_schedule": {"start_schedule": now_iso(), "charging_rate_unit": "A",
                              "charging_schedule_period": [{"start_period": 0, "limit": amps}]},
    }
    if transaction_id is not None:
        profile["transaction_id"] = transaction_id
    return profile


async def reconnect(gateway, peer, charger_id="CP001", timeout=20):
    """The charger comes back without a BootNotification (field behaviour), retrying while refused with 502."""
    import websockets

    deadline = time.time() + timeout
    while True:
        try:
            charger, connection, task = await connect_charger(gateway, charger_id)
            break
        except (websockets.exceptions.InvalidStatus, OSError):
            assert time.time() < deadline, "charger never served again"
            await asyncio.sleep(0.2)
    reuse_message_ids(charger)  # a restarted firmware repeats its message ids
    return charger, connection, task, FieldFirmware(charger, peer)


async def booted(gateway, peer, charger_id="CP001"):
    charger, connection, task = await connect_charger(gateway, charger_id)
    reuse_message_ids(charger)
    firmware = FieldFirmware(charger, peer)
    assert (await boot(charger)).status == "Accepted"
    await wait_for(lambda: any('"GetConfiguration"' in frame for frame in charger.received), what="discovery")
    await asyncio.sleep(0.2)
    return charger, connection, task, firmware


@personality
def test_the_csms_is_down_20_s_then_sends_a_new_profile(tmp_path, pki, csms_port, peer):
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task, firmware = await booted(gateway, peer)
        profile = day_ahead_profile(period_seconds=1800)
        assert (await csms.charge_points["CP001"].call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=profile))).status == "Accepted"

        await csms.kill()
        await asyncio.wait_for(connection.wait_closed(), 10)
        task.cancel()
        await asyncio.sleep(20)
        csms = CSMS(pki, csms_port)
        await csms.start()
        charger, connection, task, firmware = await reconnect(gateway, peer)
        await wait_for(lambda: "CP001" in csms.charge_points, what="the north link")
        await asyncio.sleep(0.3)

        answer = await csms.charge_points["CP001"].call(
            call.SetChargingProfile(connector_id=1, cs_charging_profiles=amps_profile(30, 12, stack_level=5)))
        assert answer.status == "Accepted", f"refused by the charger: {firmware.refused}"
        assert firmware.profiles[-1]["charging_schedule"]["charging_rate_unit"] == peer.unit
        composite = await csms.charge_points["CP001"].call(call.GetCompositeSchedule(connector_id=1, duration=600, charging_rate_unit="A"))
        assert composite.status == "Accepted"
        assert float(composite.charging_schedule["charging_schedule_period"][0]["limit"]) == 12
        cleared = await csms.charge_points["CP001"].call(call.ClearChargingProfile(id=17))
        assert cleared.status == "Accepted", "the profile from before the outage is still known"
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario)


@personality
def test_the_gateway_restarts_mid_transaction_then_get_composite_schedule(tmp_path, pki, csms_port, peer):
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task, firmware = await booted(gateway, peer)
        started = await charger.call(call.StartTransaction(connector_id=1, id_tag="A", meter_start=0, timestamp=now_iso()))
        tx = amps_profile(40, 8, purpose="TxProfile", transaction_id=started.transaction_id)
        assert (await csms.charge_points["CP001"].call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=tx))).status == "Accepted"

        assert gateway.stop() == 0
        await asyncio.wait_for(connection.wait_closed(), 10)
        task.cancel()
        gateway.start()
        charger, connection, task, firmware = await reconnect(gateway, peer)
        await wait_for(lambda: "CP001" in csms.charge_points and not csms.charge_points["CP001"]._connection.state.name == "CLOSED",
                       what="the north link")
        await asyncio.sleep(0.5)
        composite = await csms.charge_points["CP001"].call(call.GetCompositeSchedule(connector_id=1, duration=600))
        assert composite.status == "Accepted"
        assert composite.charging_schedule["charging_rate_unit"] == peer.unit
        first = float(composite.charging_schedule["charging_schedule_period"][0]["limit"])
        assert first == (8 if peer.unit == "A" else 5520), "the transaction's TxProfile, restored from disk"
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario)


@personality
def test_a_sighup_adding_a_site_limit_puts_two_charging_chargers_under_it_within_a_second(tmp_path, pki, csms_port, peer):
    gateway = Gateway(tmp_path, pki, csms_port, chargers=("CP001", "CP002"), pipeline=PIPELINE)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        links, firmwares = [], []
        for charger_id in ("CP001", "CP002"):
            charger, connection, task, firmware = await booted(gateway, peer, charger_id)
            await charger.call(call.StartTransaction(connector_id=1, id_tag=charger_id, meter_start=0, timestamp=now_iso()))
            answer = await csms.charge_points[charger_id].call(
                call.SetChargingProfile(connector_id=1, cs_charging_profiles=amps_profile(1, 20)))
            assert answer.status == "Accepted"
            links.append((connection, task))
            firmwares.append(firmware)
        assert [f.amps()[-1] for f in firmwares] == [20, 20], "40 A together"

        gateway.pipeline_file.write_text(PIPELINE + "    config:\n      site_limit_amps: 20\n")
        reloaded_at = time.time()
        gateway.signal(signal.SIGHUP)
        await wait_for(lambda: all(f.amps()[-1] <= 10 for f in firmwares), timeout=5, what="both under the site limit")
        elapsed = time.time() - reloaded_at
        assert elapsed < 1.0, f"took {elapsed:.2f} s"
        assert sum(f.amps()[-1] for f in firmwares) <= 20
        await hang_up(csms, *links)

    run_with(gateway, scenario)
