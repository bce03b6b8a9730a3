"""The Local Controller: a CSMS's 48-period day-ahead profile in watts reaches a legacy charger that
takes one period in amps at stack level 0; the CSMS gets the charger's own answer."""

import asyncio
import datetime
import json

from conftest import Gateway, boot, connect_charger, hang_up, run_with, start_csms_and_gateway
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

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


def test_a_48_period_watt_profile_becomes_one_amp_period_the_charger_accepts(tmp_path, pki, csms_port):
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE)

    async def scenario():
        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        received_profiles = []

        # The legacy charger: one period, amps only, stack level 0; it accepts what fits.
        async def on_get_configuration(**_):
            return call_result.GetConfiguration(configuration_key=[
                {"key": "ChargingScheduleMaxPeriods", "readonly": True, "value": "1"},
                {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": "Current"},
                {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": "0"},
            ])

        def on_set_charging_profile(connector_id, cs_charging_profiles, **_):
            received_profiles.append(cs_charging_profiles)
            schedule = cs_charging_profiles["charging_schedule"]
            fits = (len(schedule["charging_schedule_period"]) == 1 and schedule["charging_rate_unit"] == "A"
                    and cs_charging_profiles["stack_level"] == 0)
            return call_result.SetChargingProfile(status="Accepted" if fits else "Rejected")

        charger.route_map[Action.get_configuration]["_on_action"] = on_get_configuration
        charger.route_map[Action.set_charging_profile] = {"_on_action": on_set_charging_profile, "_skip_schema_validation": False}
        await boot(charger)
        await asyncio.sleep(0.3)  # the gateway reads the charger's limits after boot

        profile = day_ahead_profile(period_seconds=1800)
        answer = await csms.charge_points["CP001"].call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=profile))
        assert answer.status == "Accepted"
        compiled = received_profiles[-1]
        assert compiled["charging_schedule"]["charging_rate_unit"] == "A"
        assert [float(p["limit"]) for p in compiled["charging_schedule"]["charging_schedule_period"]] == [15.9]
        assert compiled["charging_schedule"]["duration"] <= 1800

        composite = await csms.charge_points["CP001"].call(call.GetCompositeSchedule(connector_id=1, duration=3600))
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
      discover: false
      site_limit_amps: 32
"""


class ProfileRecorder:
    """A legacy charger's SetChargingProfile handler that accepts one amp period and records it."""

    def __init__(self, charger):
        self.limits = []
        self.connectors = []
        charger.route_map[Action.set_charging_profile] = {"_on_action": self.on_set, "_skip_schema_validation": False}
        charger.route_map[Action.clear_charging_profile] = {"_on_action": self.on_clear, "_skip_schema_validation": False}

    def on_set(self, connector_id, cs_charging_profiles, **_):
        periods = cs_charging_profiles["charging_schedule"]["charging_schedule_period"]
        self.limits.append(float(periods[0]["limit"]))
        self.connectors.append(connector_id)
        return call_result.SetChargingProfile(status="Accepted")

    def on_clear(self, **_):
        return call_result.ClearChargingProfile(status="Accepted")


def test_the_site_limit_is_shared_and_a_201_profile_arrives_by_data_transfer(tmp_path, pki, csms_port):
    gateway = Gateway(tmp_path, pki, csms_port, chargers=("CP001", "CP002"), pipeline=SITE_PIPELINE)

    async def scenario():
        from conftest import now_iso, wait_for

        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        first, first_connection, first_task = await connect_charger(gateway, "CP001")
        second, second_connection, second_task = await connect_charger(gateway, "CP002")
        first_profiles, second_profiles = ProfileRecorder(first), ProfileRecorder(second)
        await boot(first)
        await boot(second)
        await wait_for(lambda: first_profiles.limits and second_profiles.limits, what="the site shares after boot")

        one = await first.call(call.StartTransaction(connector_id=1, id_tag="A", meter_start=0, timestamp=now_iso()))
        await wait_for(lambda: first_profiles.limits[-1] == 32, what="the whole site for the only charger charging")
        two = await second.call(call.StartTransaction(connector_id=1, id_tag="B", meter_start=0, timestamp=now_iso()))
        await wait_for(lambda: second_profiles.limits[-1] == 16 and first_profiles.limits[-1] == 16, what="16 A each")
        await second.call(call.StopTransaction(meter_stop=10, timestamp=now_iso(), transaction_id=two.transaction_id))
        await wait_for(lambda: first_profiles.limits[-1] == 32, what="32 A for the one left")

        # A 2.0.1 ChargingStationMaxProfile inside DataTransfer, answered with the charger's verdict.
        data = json.dumps({"evseId": 0, "chargingProfile": {
            "id": 5, "stackLevel": 1, "chargingProfilePurpose": "ChargingStationMaxProfile", "chargingProfileKind": "Absolute",
            "chargingSchedule": [{"id": 1, "startSchedule": now_iso(), "chargingRateUnit": "W",
                                  "chargingSchedulePeriod": [{"startPeriod": 0, "limit": 13800.0}]}]}})
        answer = await csms.charge_points["CP001"].call(call.DataTransfer(vendor_id="ocpp-gateway", message_id="SetChargingProfile201", data=data))
        assert answer.status == "Accepted"
        await wait_for(lambda: first_profiles.limits[-1] == 20, what="13.8 kW on three phases: 20 A, below the 32 A share")
        assert one.transaction_id

        for connection in (first_connection, second_connection):
            await connection.close()
        second_task.cancel()
        first_task.cancel()
        csms.server.close()

    run_with(gateway, scenario)


def test_the_charger_gets_the_next_period_at_each_boundary(tmp_path, pki, csms_port):
    """The 48-period curve scaled to 2-second periods, so real time can show the re-sends."""
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=PIPELINE)

    async def scenario():
        from conftest import wait_for

        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        profiles = ProfileRecorder(charger)
        await boot(charger)
        profile = day_ahead_profile(period_seconds=2)
        answer = await csms.charge_points["CP001"].call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=profile))
        assert answer.status == "Accepted"
        await wait_for(lambda: len(profiles.limits) >= 5, timeout=15, what="four boundaries")
        # Whatever period the first one landed in, each next one follows the curve.
        cycle = [15.9, 10.6, 0.0, 32.0]
        offset = cycle.index(profiles.limits[0])
        assert profiles.limits[:5] == [cycle[(offset + i) % 4] for i in range(5)]
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario)


def test_a_time_of_use_policy_in_the_pipeline_reaches_the_charger_after_boot(tmp_path, pki, csms_port):
    pipeline = """version: 1
stages:
  - id: identity
    type: auth
  - id: smart
    type: smart_charging
    config:
      discover: false
      time_of_use:
        time_zone: UTC
        windows:
          - { days: [mon, tue, wed, thu, fri, sat, sun], from: "00:00", to: "24:00", kw: 6.9 }
"""
    gateway = Gateway(tmp_path, pki, csms_port, pipeline=pipeline)

    async def scenario():
        from conftest import wait_for

        csms = await start_csms_and_gateway(gateway, pki, csms_port)
        charger, connection, task = await connect_charger(gateway)
        profiles = ProfileRecorder(charger)
        await boot(charger)
        await wait_for(lambda: profiles.limits, what="the policy's profile")
        assert profiles.limits[0] == 10.0 and profiles.connectors[0] == 0, "6.9 kW on three phases at 230 V, whole charger"
        assert csms.charge_points["CP001"] is not None
        await hang_up(csms, (connection, task))

    run_with(gateway, scenario)
