"""Differential test: the gateway's payload validator against an independent oracle, the OCA
JSON schemas shipped in the `ocpp` package checked by `jsonschema` (Draft 4 with format checks
for 1.6, Draft 6 for 2.0.1, as the schemas declare and the `ocpp` package itself validates). A
corpus of valid and broken payloads for every action, both directions, goes through both; they
must agree on valid/invalid, and the gateway's CALLERROR code must match one of the oracle's findings.

Both versions' payloads go through `ocpp-sim validate-payloads` (2.0.1 ones with `"version": "ocpp2.0.1"`), one
JSON object a line on stdin and one verdict a line on stdout."""

import copy
import json
import os
import pathlib
import subprocess

import jsonschema
import ocpp
from conftest import REPO

SCHEMAS = pathlib.Path(ocpp.__file__).parent / "v16" / "schemas"
SCHEMAS_201 = pathlib.Path(ocpp.__file__).parent / "v201" / "schemas"
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

# OCPP 2.0.1 part 4 §4.3: the same, with 2.0.1's spelling and the keywords only its schemas use.
CODES_201 = dict(CODES) | {
    "additionalProperties": "FormatViolation",
    "maxItems": "OccurrenceConstraintViolation",
    "minimum": "PropertyConstraintViolation",
    "maximum": "PropertyConstraintViolation",
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
        return min(max(7, schema.get("minimum", 7)), schema.get("maximum", 7))
    if kind is None:
        return {"free": ["form", 1, None]}
    if kind == "number":
        return 16.5
    if kind == "boolean":
        return True
    raise AssertionError(f"no sample for {schema}")


def mutations(schema, root, value, path=(), v201=False):
    """Variants of a valid value, mostly broken: (description, path, change) triples. With
    v201, also the cases only 2.0.1's schemas (draft 6, maxItems, bounds, open customData) raise;
    some of those are valid on purpose (an integral 7.0, a leap day, customData's own fields)."""
    schema = resolve(schema, root)
    kind = schema.get("type")
    if kind is None and v201:
        return  # DataTransfer's `data`: anything goes
    yield f"{path} wrong type", path, {"type": "string"} if kind != "string" else {"value": 12}
    if kind == "object":
        for name in schema.get("required", []):
            yield f"{path} missing {name}", path, {"delete": name}
        yield f"{path} extra field", path, {"add": ("unexpectedField", 1)}
        for name, sub in schema.get("properties", {}).items():
            if isinstance(value, dict) and name in value:
                yield from mutations(sub, root, value[name], path + (name,), v201)
        if v201:
            for name in schema.get("required", []):
                yield f"{path} {name} null", path + (name,), {"value": None}
            if "customData" in schema.get("properties", {}):
                # customData is open: vendor fields are allowed, its vendorId is not optional.
                yield f"{path} customData with vendor fields", path + ("customData",), {"value": {"vendorId": "acme", "x": [1, {"y": 2}]}}
                yield f"{path} customData without vendorId", path + ("customData",), {"value": {"x": 1}}
                yield f"{path} customData not an object", path + ("customData",), {"value": ["acme"]}
    elif kind == "array":
        if schema.get("minItems"):
            yield f"{path} empty list", path, {"value": []}
        if v201 and value:
            if "maxItems" in schema:
                yield f"{path} full list", path, {"value": [value[0]] * schema["maxItems"]}
                yield f"{path} too many items", path, {"value": [value[0]] * (schema["maxItems"] + 1)}
            yield f"{path} object for a list", path, {"value": {"0": value[0]}}
        if value:
            yield from mutations(schema["items"], root, value[0], path + (0,), v201)
    elif kind == "string":
        if "enum" in schema:
            yield f"{path} not in enum", path, {"value": "NotAValue"}
            if v201:
                yield f"{path} enum in the wrong case", path, {"value": schema["enum"][0].lower() if schema["enum"][0].lower() != schema["enum"][0] else schema["enum"][0].upper()}
                yield f"{path} enum with a space", path, {"value": schema["enum"][0] + " "}
        if "maxLength" in schema:
            yield f"{path} too long", path, {"value": "y" * (schema["maxLength"] + 1)}
            if v201:
                # Lengths count characters (code points), not UTF-8 bytes.
                yield f"{path} longest in accents", path, {"value": "é" * schema["maxLength"]}
                yield f"{path} too long in accents", path, {"value": "é" * (schema["maxLength"] + 1)}
                yield f"{path} too long in emoji", path, {"value": "\U0001F50C" * (schema["maxLength"] + 1)}
        if schema.get("format") == "date-time":
            yield f"{path} bad date-time", path, {"value": "25/11/2026 10:15"}
            yield f"{path} date-time without zone", path, {"value": "2026-11-25T10:15:30"}
            if v201:
                for text in ("2026-02-30T10:15:30Z", "2026-02-29T10:15:30Z", "2028-02-29T10:15:30Z", "1900-02-29T00:00:00Z",
                             "2000-02-29T00:00:00Z", "2026-04-31T10:15:30Z", "2026-12-31T23:59:59.999+14:00",
                             "0000-01-01T00:00:00Z", "2026-11-25T10:15:60Z", "2026-11-25T24:00:00Z", "2026-11-25t10:15:30z",
                             "2026-11-25T10:15:30+24:00", "2026-11-25T10:15:30.Z", "2026-11-25 10:15:30Z", "2026-13-01T00:00:00Z"):
                    yield f"{path} date-time {text}", path, {"value": text}
    elif kind == "integer":
        yield f"{path} fraction", path, {"value": 1.5}
        yield f"{path} null", path, {"value": None}
        if v201:
            # Draft 6: a number with an integral value is an integer.
            low, high = schema.get("minimum"), schema.get("maximum")
            whole = 7 if low is None or low <= 7 else int(low)
            whole = whole if high is None or whole <= high else int(high)
            yield f"{path} integral float", path, {"value": float(whole)}
            yield f"{path} integer as a string", path, {"value": str(whole)}
            yield f"{path} boolean for an integer", path, {"value": True}
            if low is not None:
                yield f"{path} at the minimum", path, {"value": low}
                yield f"{path} below the minimum", path, {"value": int(low) - 1}
            if high is not None:
                yield f"{path} at the maximum", path, {"value": high}
                yield f"{path} above the maximum", path, {"value": int(high) + 1}
    elif kind == "number":
        if schema.get("multipleOf"):
            yield f"{path} not a multiple", path, {"value": 16.55}
        if v201:
            yield f"{path} integer for a number", path, {"value": 16}
            yield f"{path} number as a string", path, {"value": "16.5"}
    elif kind == "boolean" and v201:
        yield f"{path} boolean as a string", path, {"value": "true"}
        yield f"{path} number for a boolean", path, {"value": 1}


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


def corpus_201():
    """As corpus(), for the 2.0.1 schemas (files named <Action>Request / <Action>Response)."""
    for file in sorted(SCHEMAS_201.glob("*.json")):
        schema = json.loads(file.read_text(encoding="utf-8-sig"))
        response = file.stem.endswith("Response")
        action = file.stem.removesuffix("Response").removesuffix("Request")
        for full in (False, True):
            valid = sample(schema, schema, full)
            yield action, response, f"{'full' if full else 'minimal'} valid", valid, schema
            if full:
                for description, path, change in mutations(schema, schema, valid, v201=True):
                    yield action, response, description, apply(valid, path, change), schema


def oracle(schema, payload):
    validator = jsonschema.Draft4Validator(schema, format_checker=jsonschema.FormatChecker())
    return {CODES.get(error.validator, error.validator) for error in validator.iter_errors(payload)}


def oracle_201(schema, payload):
    assert schema["$schema"] == "http://json-schema.org/draft-06/schema#"
    validator = jsonschema.Draft6Validator(schema, format_checker=jsonschema.FormatChecker())
    return {CODES_201.get(error.validator, error.validator) for error in validator.iter_errors(payload)}


def compare(cases, verdicts, oracle):
    """The disagreements between the gateway's verdicts and the oracle's, and how many cases are invalid."""
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
    return disagreements, invalid


def gateway_verdicts_201(cases, tmp_path):
    lines = "\n".join(json.dumps({"action": a, "response": r, "version": "ocpp2.0.1", "payload": p}) for a, r, _, p, _ in cases)
    run = subprocess.run([str(SIMULATOR), "validate-payloads"], input=lines, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    return [json.loads(line) for line in run.stdout.splitlines()]


def test_gateway_validator_agrees_with_the_ocpp_schemas():
    cases = list(corpus())
    lines = "\n".join(json.dumps({"action": a, "response": r, "payload": p}) for a, r, _, p, _ in cases)
    run = subprocess.run([str(SIMULATOR), "validate-payloads"], input=lines, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    verdicts = [json.loads(line) for line in run.stdout.splitlines()]
    assert len(verdicts) == len(cases)

    disagreements, invalid = compare(cases, verdicts, oracle)
    assert len(cases) > 1000 and invalid > 800, f"the corpus is too small: {len(cases)} cases, {invalid} invalid"
    assert disagreements == [], "\n".join(disagreements[:40])


def test_gateway_validator_agrees_with_the_ocpp_201_schemas(tmp_path):
    cases = list(corpus_201())
    verdicts = gateway_verdicts_201(cases, tmp_path)
    assert len(verdicts) == len(cases)

    disagreements, invalid = compare(cases, verdicts, oracle_201)
    # At least as many cases, and as many broken ones, as for 1.6; every action, both ways; and
    # valid variants among the mutations, so a validator that refuses everything fails too.
    cases_16 = list(corpus())
    invalid_16 = sum(1 for *_, payload, schema in cases_16 if oracle(schema, payload))
    assert len(cases) >= len(cases_16) and invalid >= invalid_16, f"{len(cases)} cases, {invalid} invalid; 1.6: {len(cases_16)}, {invalid_16}"
    assert {(a, r) for a, r, *_ in cases} == {(p.stem.removesuffix("Response").removesuffix("Request"), p.stem.endswith("Response"))
                                              for p in SCHEMAS_201.glob("*.json")}
    assert len(cases) - invalid > 2 * 128, "too few valid cases"
    assert disagreements == [], f"{len(disagreements)} disagreements:\n" + "\n".join(disagreements[:40])
