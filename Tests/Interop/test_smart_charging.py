"""The Local Controller: a CSMS's 48-period day-ahead profile in watts reaches a legacy charger that
takes one period in amps at stack level 0; the CSMS gets the charger's own answer."""

import asyncio
import datetime

from conftest import Gateway, boot, connect_charger, start_csms_and_gateway
from ocpp.v16 import call, call_result
from ocpp.v16.enums import Action

PIPELINE = """version: 1
stages:
  - id: identity
    type: auth
  - id: smart
    type: smart_charging
"""


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

        start = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        watts = [11000, 7360, 2760, 22080]
        profile = {
            "charging_profile_id": 17, "stack_level": 3, "charging_profile_purpose": "TxDefaultProfile",
            "charging_profile_kind": "Absolute",
            "charging_schedule": {
                "start_schedule": start.isoformat(), "charging_rate_unit": "W",
                "charging_schedule_period": [{"start_period": i * 1800, "limit": watts[i % 4]} for i in range(48)],
            },
        }
        answer = await csms.charge_points["CP001"].call(call.SetChargingProfile(connector_id=1, cs_charging_profiles=profile))
        assert answer.status == "Accepted"
        compiled = received_profiles[-1]
        assert compiled["charging_schedule"]["charging_rate_unit"] == "A"
        assert [float(p["limit"]) for p in compiled["charging_schedule"]["charging_schedule_period"]] == [15.9]
        assert compiled["charging_schedule"]["duration"] <= 1800

        composite = await csms.charge_points["CP001"].call(call.GetCompositeSchedule(connector_id=1, duration=3600))
        assert composite.status == "Accepted"
        assert [float(p["limit"]) for p in composite.charging_schedule["charging_schedule_period"]][:2] == [15.9, 10.6]

        await connection.close()
        task.cancel()
        csms.server.close()

    try:
        asyncio.run(scenario())
    finally:
        gateway.stop()
