"""Differential check of the OCPP 2.0.1 device model (docs/ocpp201-device-model.md): the payloads the
Swift model produces (Tests/DeviceModelTests/payloads.json, kept current by
PayloadFixtureTests.fixtureIsCurrent) validated with the `ocpp` package's own 2.0.1 JSON schemas,
and every standard component/variable name of the table checked against the `ocpp` package's
enumerations of the names in OCPP 2.0.1 part 2 (appendices, dm_components_vars.csv).
No gateway binary and no sockets."""

import json
from pathlib import Path

import pytest
from jsonschema import Draft6Validator
from ocpp.messages import MessageType, get_validator
from ocpp.v201 import enums

FIXTURE = Path(__file__).resolve().parents[1] / "DeviceModelTests" / "payloads.json"
PAYLOADS = json.loads(FIXTURE.read_text())


def cases():
    for name, values in PAYLOADS.items():
        if name == "table":
            continue
        for index, payload in enumerate(values):
            yield pytest.param(name, payload, id=f"{name}-{index}")


@pytest.mark.parametrize("name,payload", list(cases()))
def test_payload_validates_with_the_ocpp_package_schemas(name, payload):
    response = name.endswith("Response")
    action = name.removesuffix("Response").removesuffix("Request")
    message_type = MessageType.CallResult if response else MessageType.Call
    # What the package itself runs on every message (a Draft 4 validator on the OCA schema) ...
    validator = get_validator(message_type, action, "2.0.1")
    validator.validate(payload)
    # ... and the schema's own draft, 6.
    errors = list(Draft6Validator(validator.schema).iter_errors(payload))
    assert not errors, [e.message for e in errors]


def test_fixture_covers_every_message():
    assert len(PAYLOADS["GetVariablesResponse"][0]["getVariableResult"]) > 2 * len(PAYLOADS["table"])
    assert len(PAYLOADS["SetVariablesResponse"][0]["setVariableResult"]) > 5 * len(PAYLOADS["table"])
    seq = [page["seqNo"] for page in PAYLOADS["NotifyReportRequest"]]
    assert seq.count(0) == 4  # four reports, each numbered from 0
    assert "DEADBEEF" not in FIXTURE.read_text()  # AuthorizationKey never leaks
    assert "never-shown" not in FIXTURE.read_text()  # nor a WriteOnly gateway variable


def standard_names():
    """(component, variable) pairs the ocpp package knows: <Component>VariableName enums."""
    names = {}
    for attribute in dir(enums):
        if attribute.endswith("VariableName") and attribute != "StandardizedVariableName":
            component = attribute.removesuffix("VariableName")
            names[component] = {member.value for member in getattr(enums, attribute)}
    return names


@pytest.mark.parametrize("row", PAYLOADS["table"], ids=lambda r: f"{r['component']}.{r['variable']}")
def test_table_names_are_standard(row):
    names = standard_names()
    components = {c.value for c in enums.ControllerComponentName} | {c.value for c in enums.PhysicalComponentName}
    assert row["component"] in components
    assert row["variable"] in names[row["component"]]
    if row["instance"] is not None:
        instances = getattr(enums, row["component"] + "InstanceName")
        assert row["instance"] in {i.value for i in instances}


def test_topology_names_are_standard():
    names = standard_names()
    assert "Available" in names["ChargingStation"]
    assert {"Available"} <= names["EVSE"]
    assert {"Available", "ConnectorType"} <= names["Connector"]
