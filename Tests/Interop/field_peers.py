"""Charger peers that behave like field firmware (shared/design/field-notes.md), built on the `ocpp`
package's ChargePoint: the friendly library alone accepts anything.

- `A_ONLY`: one period, amps only, stack level 0; refuses W with Rejected.
- `W_ONLY`: the MCU firmware seen in the field: W only (refuses A with Rejected, "unsupported charge
  rate unit"), at most 24 periods and stack levels 0-8, past which it answers CALLERROR
  PropertyConstraintViolation instead of Rejected.
- `reuse_message_ids(charger)`: message ids that start again from 1 after every restart, like that
  firmware's BootNotification id repeating in a day.
"""

import itertools
from dataclasses import dataclass

from ocpp.exceptions import PropertyConstraintViolationError
from ocpp.v16 import call_result
from ocpp.v16.enums import Action

VOLTAGE = 230


@dataclass(frozen=True)
class Personality:
    name: str
    unit: str  # "A" or "W"
    max_periods: int
    max_stack_level: int
    callerror_past_limits: bool

    def configuration(self):
        unit = "Current" if self.unit == "A" else "Power"
        return [
            {"key": "ChargingScheduleAllowedChargingRateUnit", "readonly": True, "value": unit},
            {"key": "ChargingScheduleMaxPeriods", "readonly": True, "value": str(self.max_periods)},
            {"key": "ChargeProfileMaxStackLevel", "readonly": True, "value": str(self.max_stack_level)},
            {"key": "NumberOfConnectors", "readonly": True, "value": "1"},
        ]


A_ONLY = Personality("A-only", "A", max_periods=1, max_stack_level=0, callerror_past_limits=False)
W_ONLY = Personality("W-only", "W", max_periods=24, max_stack_level=8, callerror_past_limits=True)
PERSONALITIES = [A_ONLY, W_ONLY]


class FieldFirmware:
    """Gives a `LegacyCharger` a personality: its GetConfiguration answer, and SetChargingProfile /
    ClearChargingProfile handlers that accept only what that firmware accepts. Every accepted profile
    is recorded (`profiles`, `connectors`); `amps()` gives their first limits in amps per phase."""

    def __init__(self, charger, personality: Personality):
        self.personality = personality
        self.profiles = []
        self.connectors = []
        self.refused = []
        self.cleared = []
        charger.route_map[Action.get_configuration]["_on_action"] = self.on_get_configuration
        charger.route_map[Action.set_charging_profile] = {"_on_action": self.on_set, "_skip_schema_validation": False}
        charger.route_map[Action.clear_charging_profile] = {"_on_action": self.on_clear, "_skip_schema_validation": False}

    def on_get_configuration(self, **_):
        return call_result.GetConfiguration(configuration_key=self.personality.configuration())

    def on_set(self, connector_id, cs_charging_profiles, **_):
        schedule = cs_charging_profiles["charging_schedule"]
        periods = schedule["charging_schedule_period"]
        p = self.personality
        if len(periods) > p.max_periods or cs_charging_profiles["stack_level"] > p.max_stack_level:
            self.refused.append(cs_charging_profiles)
            if p.callerror_past_limits:
                raise PropertyConstraintViolationError(description="past ChargingScheduleMaxPeriods or ChargeProfileMaxStackLevel")
            return call_result.SetChargingProfile(status="Rejected")
        if schedule["charging_rate_unit"] != p.unit:
            self.refused.append(cs_charging_profiles)  # "unsupported charge rate unit"
            return call_result.SetChargingProfile(status="Rejected")
        self.profiles.append(cs_charging_profiles)
        self.connectors.append(connector_id)
        return call_result.SetChargingProfile(status="Accepted")

    def on_clear(self, **kwargs):
        self.cleared.append(kwargs)
        return call_result.ClearChargingProfile(status="Accepted")

    @staticmethod
    def first_amps(profile):
        """A profile's first limit in amps per phase, whatever unit it came in."""
        schedule = profile["charging_schedule"]
        period = schedule["charging_schedule_period"][0]
        limit = float(period["limit"])
        if schedule["charging_rate_unit"] == "A":
            return limit
        return round(limit / (VOLTAGE * period.get("number_phases", 3)), 1)

    def amps(self):
        return [self.first_amps(profile) for profile in self.profiles]


def reuse_message_ids(charger):
    """Message ids 1, 2, 3 … from this (re)start on: a restarted firmware repeats earlier ids."""
    counter = itertools.count(1)
    charger._unique_id_generator = lambda: str(next(counter))
    return charger
