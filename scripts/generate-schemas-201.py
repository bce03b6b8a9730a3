#!/usr/bin/env python3
"""Generates Sources/OCPP/Validation/Schemas201.generated.swift from the OCA JSON schemas for
OCPP 2.0.1 (draft-06, as shipped in the `ocpp` PyPI package, MIT licensed).

Run `make schemas` after changing this script; the output is committed so that building the
gateway needs no Python. The differential test (Tests/Interop/test_validation.py) checks the
Swift validator against the same schemas through the `jsonschema` package.

Every keyword of every schema is accounted for: a keyword this script does not know stops it,
so a new schema release cannot be validated more loosely than it says without anyone noticing.
Shared definitions (CustomDataType, IdTokenType, …) are emitted once when they are identical in
every file that has them, per file otherwise.
"""

import json
import pathlib
import sys

import ocpp

SCHEMAS = pathlib.Path(ocpp.__file__).parent / "v201" / "schemas"
OUTPUT = pathlib.Path(__file__).resolve().parents[1] / "Sources" / "OCPP" / "Validation" / "Schemas201.generated.swift"
DRAFT = "http://json-schema.org/draft-06/schema#"

# Keywords that do not constrain a value (documentation, code generation hints, defaults).
ANNOTATIONS = {"description", "javaType", "comment", "default", "$schema", "title", "$id"}
# Keywords the Swift validator checks, per JSON type.
CHECKED = {
    "object": {"type", "properties", "required", "additionalProperties"},
    "array": {"type", "items", "minItems", "maxItems", "additionalItems"},
    "string": {"type", "maxLength", "enum", "format", "additionalProperties"},
    "integer": {"type", "minimum", "maximum"},
    "number": {"type", "minimum", "maximum", "multipleOf"},
    "boolean": {"type"},
}


def swift_string(text):
    return json.dumps(text, ensure_ascii=False)


def swift_double(value):
    return repr(float(value))


def lower_first(name):
    return name[0].lower() + name[1:]


class Generator:
    def __init__(self, files):
        self.files = files
        # Definition name → {canonical JSON: [files]}
        self.variants = {}
        for file, schema in files.items():
            for name in schema.get("definitions", {}):
                self.variants.setdefault(name, {}).setdefault(self.canonical(name, file), []).append(file)
        self.keywords = set()

    def canonical(self, name, file):
        """What definition `name` of `file` checks: its references expanded, annotations left out,
        so that two definitions differing only in their descriptions are one."""
        definitions = self.files[file]["definitions"]

        def expand(value, depth):
            if depth > 32:
                sys.exit(f"{file}: {name}: recursive definitions are not supported")
            if isinstance(value, dict):
                if "$ref" in value:
                    return expand(definitions[value["$ref"].removeprefix("#/definitions/")], depth + 1)
                return {k: expand(v, depth) for k, v in value.items() if k not in ANNOTATIONS}
            if isinstance(value, list):
                return [expand(v, depth) for v in value]
            return value

        return json.dumps(expand(definitions[name], 0), sort_keys=True)

    def definition_symbol(self, name, file):
        """The Swift name of definition `name` as `file` has it."""
        variants = self.variants[name]
        if len(variants) == 1:
            return "def" + name
        first = sorted(variants[self.canonical(name, file)])[0]
        return "def" + name + "_" + first

    def node(self, schema, file, indent, where):
        pad = "    " * indent
        self.keywords.update(schema.keys())
        if "$ref" in schema:
            ref = schema["$ref"]
            if not ref.startswith("#/definitions/") or set(schema) != {"$ref"}:
                sys.exit(f"{file}: {where}: unsupported $ref form {schema}")
            name = ref.removeprefix("#/definitions/")
            if name not in self.files[file].get("definitions", {}):
                sys.exit(f"{file}: {where}: $ref to a missing definition {name}")
            return self.definition_symbol(name, file)
        kind = schema.get("type")
        if kind is None and set(schema) <= ANNOTATIONS:
            return ".any"  # DataTransfer's `data`: any JSON value
        if not isinstance(kind, str) or kind not in CHECKED:
            sys.exit(f"{file}: {where}: unsupported type {kind!r}")
        unknown = set(schema) - CHECKED[kind] - ANNOTATIONS
        if unknown:
            sys.exit(f"{file}: {where}: unsupported keywords {sorted(unknown)} for type {kind}")
        if schema.get("additionalProperties", False) is not False:
            sys.exit(f"{file}: {where}: additionalProperties other than false")
        if kind == "object":
            properties = schema.get("properties", {})
            required = schema.get("required", [])
            closed = "additionalProperties" in schema
            lines = [".object(["]
            for name, sub in properties.items():
                lines.append(f"{pad}    ({swift_string(name)}, {self.node(sub, file, indent + 1, where + '.' + name)}),")
            lines.append(f"{pad}], required: [{', '.join(swift_string(r) for r in required)}], closed: {'true' if closed else 'false'})")
            return "\n".join(lines)
        if kind == "array":
            items = schema.get("items")
            if not isinstance(items, dict):
                sys.exit(f"{file}: {where}: array without one items schema")
            # With one `items` schema for every element, draft 6 ignores `additionalItems`.
            if schema.get("additionalItems", False) is not False:
                sys.exit(f"{file}: {where}: additionalItems other than false")
            item = self.node(items, file, indent + 1, where + "[]")
            maximum = schema.get("maxItems")
            tail = f", maxItems: {maximum}" if maximum is not None else ""
            return f".array({item}, minItems: {schema.get('minItems', 0)}{tail})"
        if kind == "string":
            values = schema.get("enum")
            if values is not None and not all(isinstance(v, str) for v in values):
                sys.exit(f"{file}: {where}: a string enum with non-string values")
            enum = "[" + ", ".join(swift_string(v) for v in values) + "]" if values is not None else "nil"
            length = schema.get("maxLength")
            fmt = schema.get("format")
            if fmt not in (None, "date-time"):
                sys.exit(f"{file}: {where}: unsupported format {fmt}")
            fmt = ".dateTime" if fmt else "nil"
            return f".string(maxLength: {length if length is not None else 'nil'}, values: {enum}, format: {fmt})"
        if kind in ("integer", "number"):
            base = ".integer" if kind == "integer" else f".number(multipleOf: {schema['multipleOf'] if 'multipleOf' in schema else 'nil'})"
            if "minimum" in schema or "maximum" in schema:
                low = swift_double(schema["minimum"]) if "minimum" in schema else "nil"
                high = swift_double(schema["maximum"]) if "maximum" in schema else "nil"
                return f".bounded({base}, minimum: {low}, maximum: {high})"
            return base
        return ".boolean"

    def generate(self):
        actions = sorted({name.removesuffix("Response").removesuffix("Request") for name in self.files})
        for action in actions:
            for suffix in ("Request", "Response"):
                if action + suffix not in self.files:
                    sys.exit(f"{action}{suffix}.json is missing")
        for file, schema in self.files.items():
            if schema.get("$schema") != DRAFT:
                sys.exit(f"{file}: not a draft-06 schema")
        out = [
            "// Generated by scripts/generate-schemas-201.py from the OCA OCPP 2.0.1 JSON schemas (draft 6).",
            "// Do not edit; run `make schemas`.",
            "",
            "extension PayloadSchema {",
            "    /// Request and response schemas of every OCPP 2.0.1 action, by action name.",
            "    public static let ocpp201: [String: (request: PayloadSchema, response: PayloadSchema)] = [",
        ]
        for action in actions:
            out.append(f"        {swift_string(action)}: (Schemas201.{lower_first(action)}Request, Schemas201.{lower_first(action)}Response),")
        out += ["    ]", "}", "", "/// The 2.0.1 schemas, one per message, and the definitions they share.", "enum Schemas201 {"]
        for action in actions:
            for suffix in ("Request", "Response"):
                file = action + suffix
                # `definitions` belongs to the document, not to the root object: emitted below.
                root = self.node({k: v for k, v in self.files[file].items() if k != "definitions"}, file, 1, file)
                out.append("")
                out.append(f"    static let {lower_first(action)}{suffix}: PayloadSchema = .versioned(.v201, {root})")
        emitted = set()
        for name in sorted(self.variants):
            for canonical, files in sorted(self.variants[name].items(), key=lambda item: sorted(item[1])[0]):
                file = sorted(files)[0]
                symbol = self.definition_symbol(name, file)
                if symbol in emitted:
                    continue
                emitted.add(symbol)
                used_by = "" if len(self.variants[name]) == 1 else f" (as {', '.join(sorted(files))} have it)"
                out.append("")
                out.append(f"    /// {name}{used_by}.")
                definition = self.files[file]["definitions"][name]
                out.append(f"    static let {symbol}: PayloadSchema = {self.node(definition, file, 1, file + '#' + name)}")
        out.append("}")
        OUTPUT.write_text("\n".join(out) + "\n")
        distinct = sum(len(v) for v in self.variants.values())
        print(f"wrote {OUTPUT.relative_to(OUTPUT.parents[3])}: {len(actions)} actions, {distinct} definitions; "
              f"keywords: {', '.join(sorted(self.keywords))}")


def main():
    files = {p.stem: json.loads(p.read_text(encoding="utf-8-sig")) for p in sorted(SCHEMAS.glob("*.json"))}
    Generator(files).generate()


if __name__ == "__main__":
    main()
