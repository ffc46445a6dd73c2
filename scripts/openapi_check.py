#!/usr/bin/env python3
"""Checks distcron's OpenAPI document and recorded responses against it (README "Tests").

1. The document passes an independent validator (PyPI openapi-spec-validator, OpenAPI 3.1).
2. Every recorded response (JSON lines written by tests/it/support's recorder:
   {"method","path","query","status","content_type","json","body"}) whose path and method are
   documented has a documented status, and its JSON body validates against that response's
   schema (JSON Schema 2020-12, the dialect of OpenAPI 3.1).

Usage:
  openapi_check.py --doc openapi.json [--records responses.jsonl] [--require-coverage]
  openapi_check.py --records responses.jsonl      # the document is taken from the records
                                                  # (a recorded 200 of GET /api/v1/openapi.json)

--require-coverage also fails when a documented operation has no recorded 2xx response.
Exit status 0 when everything holds, 1 otherwise (every problem is printed), 2 on usage errors.
Installed by scripts/setup.sh --test into ~/.cache/distcron/openapi-venv.
"""

import argparse
import json
import re
import sys

try:
    from jsonschema import Draft202012Validator
    from openapi_spec_validator import validate as validate_spec
except ImportError as e:  # pragma: no cover - setup problem, said plainly
    print(f"openapi_check: {e}; run scripts/setup.sh --test (PyPI openapi-spec-validator)", file=sys.stderr)
    sys.exit(2)

METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
DOC_PATH = "/api/v1/openapi.json"


def load_records(path):
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SystemExit(f"openapi_check: {path}:{n}: not JSON ({e})")
    return records


def doc_from_records(records):
    for r in records:
        if r["method"] == "GET" and r["path"] == DOC_PATH and r["status"] == 200 and r["json"]:
            return r["body"]
    raise SystemExit(f"openapi_check: no recorded 200 of GET {DOC_PATH} to take the document from")


def path_matchers(doc):
    """(regex, template) per documented path; templates without parameters first."""
    out = []
    for template in doc.get("paths", {}):
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        out.append((template.count("{"), re.compile(pattern), template))
    out.sort(key=lambda t: t[0])
    return [(rx, t) for _, rx, t in out]


def match(matchers, path):
    for rx, template in matchers:
        if rx.match(path):
            return template
    return None


def response_schema(response):
    content = response.get("content") or {}
    media = content.get("application/json")
    return None if media is None else media.get("schema")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--doc", help="the OpenAPI document (JSON)")
    ap.add_argument("--records", help="recorded responses (JSON lines)")
    ap.add_argument("--require-coverage", action="store_true", help="every operation needs a recorded 2xx")
    args = ap.parse_args()
    if not args.doc and not args.records:
        ap.error("give --doc, --records or both")

    records = load_records(args.records) if args.records else []
    if args.doc:
        with open(args.doc, encoding="utf-8") as f:
            doc = json.load(f)
    else:
        doc = doc_from_records(records)

    problems = []
    try:
        validate_spec(doc)
    except Exception as e:  # the validator's own error types vary by version
        problems.append(f"document: not a valid OpenAPI document: {e}")
    if not str(doc.get("openapi", "")).startswith("3.1"):
        problems.append(f"document: openapi is {doc.get('openapi')!r}, not 3.1.x")

    matchers = path_matchers(doc)
    components = doc.get("components", {})
    validators = {}
    checked = skipped = 0
    covered = set()
    for r in records:
        method, path, status = r["method"].lower(), r["path"], r["status"]
        where = f"{r['method']} {path} -> {status}"
        template = match(matchers, path)
        if template is None:
            skipped += 1  # not an API route (admin page, unknown paths a test probes)
            continue
        op = doc["paths"][template].get(method)
        if op is None:
            if method != "head" and 200 <= status < 400:
                problems.append(f"{where}: answered {status} but {r['method']} {template} is not documented")
            else:
                skipped += 1  # 405 and friends for a method the route does not have
            continue
        responses = op.get("responses", {})
        response = responses.get(str(status)) or responses.get(f"{str(status)[0]}XX") or responses.get("default")
        if response is None:
            problems.append(f"{where}: status {status} is not documented for {r['method']} {template} "
                            f"(documented: {', '.join(sorted(responses))})")
            continue
        if 200 <= status < 300:
            covered.add((method, template))
        schema = response_schema(response)
        checked += 1
        if schema is None or method == "head":
            continue
        if not r["json"]:
            problems.append(f"{where}: documented as JSON but the body is not JSON ({r['content_type']})")
            continue
        key = json.dumps(schema, sort_keys=True)
        if key not in validators:
            # The response schema with the document's components beside it, so that its
            # "#/components/schemas/..." references resolve.
            validators[key] = Draft202012Validator({**schema, "components": components})
        errors = sorted(validators[key].iter_errors(r["body"]), key=lambda e: list(e.absolute_path))
        for e in errors[:3]:
            at = "/".join(str(p) for p in e.absolute_path) or "(root)"
            problems.append(f"{where}: body does not match the documented schema at {at}: {e.message[:300]}")

    if args.require_coverage:
        for template, item in doc.get("paths", {}).items():
            for method in METHODS:
                if method in item and (method, template) not in covered:
                    problems.append(f"coverage: no recorded 2xx response of {method.upper()} {template}")

    for p in problems:
        print(f"openapi_check: {p}", file=sys.stderr)
    print(f"openapi_check: document ok={not any(p.startswith('document') for p in problems)}; "
          f"{checked} responses checked, {skipped} outside the documented routes, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
