"""Differential test: the gateway's payload validator against an independent oracle, the OCA
JSON schemas shipped in the `ocpp` package checked by `jsonschema` (Draft 4 with format checks,
as the `ocpp` package itself validates 1.6). A corpus of valid and broken payloads for every
action, both directions, goes through both; they must agree on valid/invalid, and the gateway's
CALLERROR code must match one of the oracle's findings."""

import copy
import json
import pathlib
import subprocess

import jsonschema
import ocpp
from conftest import REPO

SCHEMAS = pathlib.Path(ocpp.__file__).parent / "v16" / "schemas"
SIMULATOR = REPO / ".build" / "debug" / "ocpp-sim"

# How OCPP-J 1.6 §4.2.3 names each kind of schema violation (the gateway's documented mapping).
CODES = {
    "type": "TypeConstraintViolation",
    "maxLength": "TypeConstraintViolation",
    "format": "TypeConstraintViolation",
    "enum": "PropertyConstraintViolation",
    "multipleOf": "PropertyConstraintViolation",
    "required": "OccurrenceConstraintViolation",
    "minItems": "OccurrenceConstraintViolation",
    "additionalProperties": "FormationViolation",
}


def resolve(schema, root):
    if "$ref" in schema:
        name = schema["$ref"].split("/")[-1]
        merged = dict(root["definitions"][name])
        merged.update({k: v for k, v in schema.items() if k != "$ref"})
        return merged
    return schema


def sample(schema, root, full):
    """A valid value: only required fields (full=False) or every field (full=True)."""
    schema = resolve(schema, root)
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][-1 if full else 0]
    if kind == "object":
        names = schema.get("properties", {}).keys() if full else schema.get("required", [])
        return {name: sample(schema["properties"][name], root, full) for name in names}
    if kind == "array":
        return [sample(schema["items"], root, full)] * max(1, schema.get("minItems", 0))
    if kind == "string":
        if schema.get("format") == "date-time":
            return "2026-11-25T10:15:30.250Z"
        if schema.get("format") == "uri":
            return "https://example.com/firmware.bin"
        return "x" * min(schema.get("maxLength", 8), 8)
    if kind == "integer":
        return 7
    if kind == "number":
        return 16.5
    if kind == "boolean":
        return True
    raise AssertionError(f"no sample for {schema}")


def mutations(schema, root, value, path=()):
    """Broken variants of a valid value: (description, payload-transformer) pairs."""
    schema = resolve(schema, root)
    kind = schema.get("type")
    yield f"{path} wrong type", path, {"type": "string"} if kind != "string" else {"value": 12}
    if kind == "object":
        for name in schema.get("required", []):
            yield f"{path} missing {name}", path, {"delete": name}
        yield f"{path} extra field", path, {"add": ("unexpectedField", 1)}
        for name, sub in schema.get("properties", {}).items():
            if isinstance(value, dict) and name in value:
                yield from mutations(sub, root, value[name], path + (name,))
    elif kind == "array":
        if schema.get("minItems"):
            yield f"{path} empty list", path, {"value": []}
        if value:
            yield from mutations(schema["items"], root, value[0], path + (0,))
    elif kind == "string":
        if "enum" in schema:
            yield f"{path} not in enum", path, {"value": "NotAValue"}
        if "maxLength" in schema:
            yield f"{path} too long", path, {"value": "y" * (schema["maxLength"] + 1)}
        if schema.get("format") == "date-time":
            yield f"{path} bad date-time", path, {"value": "25/11/2026 10:15"}
            yield f"{path} date-time without zone", path, {"value": "2026-11-25T10:15:30"}
    elif kind == "integer":
        yield f"{path} fraction", path, {"value": 1.5}
        yield f"{path} null", path, {"value": None}
    elif kind == "number" and schema.get("multipleOf"):
        yield f"{path} not a multiple", path, {"value": 16.55}


def apply(payload, path, change):
    result = copy.deepcopy(payload)
    if not path and "value" in change:
        return change["value"]
    if not path and change.get("type") == "string":
        return "not an object"
    parent = result
    for step in path[:-1]:
        parent = parent[step]
    target_key = path[-1] if path else None
    target = parent[target_key] if path else result
    if "delete" in change:
        del target[change["delete"]]
    elif "add" in change:
        target[change["add"][0]] = change["add"][1]
    elif "value" in change:
        parent[target_key] = change["value"]
    elif change.get("type") == "string":
        parent[target_key] = "not the right type"
    return result


def corpus():
    for file in sorted(SCHEMAS.glob("*.json")):
        schema = json.loads(file.read_text(encoding="utf-8-sig"))
        response = file.stem.endswith("Response")
        action = file.stem.removesuffix("Response")
        for full in (False, True):
            valid = sample(schema, schema, full)
            yield action, response, f"{'full' if full else 'minimal'} valid", valid, schema
            if full:
                for description, path, change in mutations(schema, schema, valid):
                    yield action, response, description, apply(valid, path, change), schema


def oracle(schema, payload):
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
    return {CODES.get(error.validator, error.validator) for error in validator.iter_errors(payload)}


def test_gateway_validator_agrees_with_the_ocpp_schemas():
    cases = list(corpus())
    lines = "\n".join(json.dumps({"action": a, "response": r, "payload": p}) for a, r, _, p, _ in cases)
    run = subprocess.run([str(SIMULATOR), "validate-payloads"], input=lines, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    verdicts = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(verdicts) == len(cases)

    disagreements = []
    invalid = 0
    for (action, response, description, payload, schema), verdict in zip(cases, verdicts):
        expected = oracle(schema, payload)
        if expected:
            invalid += 1
        if verdict["valid"] != (not expected):
            disagreements.append(f"{action}{'Response' if response else ''} {description}: gateway {verdict}, schemas {expected or 'valid'}")
        elif expected and verdict["code"] not in expected:
            disagreements.append(f"{action}{'Response' if response else ''} {description}: code {verdict['code']} not in {expected}")
    assert len(cases) > 1000 and invalid > 800, f"the corpus is too small: {len(cases)} cases, {invalid} invalid"
    assert disagreements == [], "\n".join(disagreements[:40])
