"""Write tests/data/waldur-openapi-extract.json: the operations of the Waldur 8.0.5 OpenAPI schema under the
path prefixes the agent and the stand-in use, with their documented response statuses.

    .venv/bin/python tests/data/make_waldur_schema_extract.py [/work/shared/waldur-openapi-schema.yaml]

The full schema is 4 MB; this extract is what the contract tests need. test_waldur_contract.py regenerates it
in memory from the full file (when present) and fails if the committed copy differs.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import yaml

DEFAULT_SCHEMA = Path("/work/shared/waldur-openapi-schema.yaml")
OUT = Path(__file__).with_name("waldur-openapi-extract.json")
PREFIXES = (
    "/api/version/",
    "/api/users/me/",
    "/api/marketplace-orders/",
    "/api/marketplace-provider-resources/",
    "/api/marketplace-provider-offerings/",
    "/api/marketplace-public-offerings/",
    "/api/marketplace-offering-users/",
    "/api/marketplace-component-usages/",
    "/api/marketplace-component-user-usages/",
    "/api/marketplace-slurm-remote/",
    "/api/slurm-associations/",
    "/api/slurm-allocations/",
)
METHODS = ("get", "head", "post", "put", "patch", "delete")


def extract(schema_path: Path) -> dict[str, Any]:
    raw = schema_path.read_bytes()
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    schema = yaml.load(raw, Loader=loader)
    paths: dict[str, Any] = {}
    for path, ops in sorted(schema["paths"].items()):
        if not path.startswith(PREFIXES):
            continue
        entry = {}
        for method in METHODS:
            op = ops.get(method)
            if op is not None:
                entry[method.upper()] = {
                    "operationId": op.get("operationId"),
                    "responses": sorted(int(code) for code in op.get("responses", {})),
                }
        paths[path] = entry
    return {
        "source": {
            "file": schema_path.name,
            "sha256": hashlib.sha256(raw).hexdigest(),
            "openapi_version": schema.get("info", {}).get("version"),
            "prefixes": list(PREFIXES),
        },
        "paths": paths,
    }


def main() -> None:
    schema_path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_SCHEMA
    OUT.write_text(json.dumps(extract(schema_path), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT} ({len(json.loads(OUT.read_text())['paths'])} paths)")


if __name__ == "__main__":
    main()
