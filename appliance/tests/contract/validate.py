"""Validates recorded responses against rackboot's contract schemas (schemas/*.json).

Input (argv[1]): a JSON array of {"label", "schema": "smd#Component", "instance"}.
Prints one line per failure and exits 1 if any; run by appliance/tests/openchami_contract/
with build/venv's python (`cargo xtask deps` installs jsonschema there).
"""
import json
import pathlib
import sys

import jsonschema

HERE = pathlib.Path(__file__).parent / "schemas"
docs = {p.stem: json.loads(p.read_text()) for p in HERE.glob("*.json")}
for d in docs.values():
    jsonschema.Draft202012Validator.check_schema(d)
cases = json.loads(pathlib.Path(sys.argv[1]).read_text())
failed = 0
for case in cases:
    doc, name = case["schema"].split("#")
    schema = dict(docs[doc])
    if name not in schema["$defs"]:
        print(f"{case['label']}: no schema {case['schema']}")
        failed += 1
        continue
    schema["$ref"] = f"#/$defs/{name}"
    v = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker())
    errors = sorted(v.iter_errors(case["instance"]), key=lambda e: list(e.path))
    for e in errors:
        path = "/".join(str(p) for p in e.path)
        print(f"{case['label']}: {case['schema']} at /{path}: {e.message}")
    failed += bool(errors)
print(f"validated {len(cases)} responses against the contract schemas; {failed} did not match")
sys.exit(1 if failed else 0)
