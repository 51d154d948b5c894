"""Our own cost figures for every buildable catalog variant, computed ahead of time.

The catalog page filters and sorts by cost without building 100+ models per visit;
`python -m explorer measure-catalog --write` regenerates the file, and a test checks
that it agrees with a fresh analysis.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from explorer.catalog import load_catalog
from explorer.errors import ExplorerError

MEASURED_PATH = Path(__file__).parent / "data" / "measured_costs.json"
FIELDS = ("input_shape", "params", "macs", "memory_access_bytes", "activations", "elementwise_ops")


def measure_catalog(ids: list[str] | None = None, cost=None) -> dict[str, dict[str, Any]]:
    """Costs every buildable catalog variant (or those in `ids`) at its native input. `cost(spec_dict,
    with_layers)` is the backend's cost call (the CLI passes its backend's); the engine's own by default."""
    from explorer.spec import ModelSpec

    if cost is None:
        from explorer.cost import analyse

        def cost(spec, with_layers):
            return analyse(ModelSpec.from_dict(spec), with_layers=with_layers)

    out = {}
    for variant in load_catalog().variants.values():
        if not variant.implemented or (ids and variant.id not in ids):
            continue
        try:
            result = cost(ModelSpec(variant.id).to_dict(), False)
        except ExplorerError as exc:
            out[variant.id] = {"error": str(exc)}
            continue
        out[variant.id] = {k: result[k] for k in FIELDS}
    return out


@functools.lru_cache(maxsize=1)
def load_measured() -> dict[str, dict[str, Any]]:
    if not MEASURED_PATH.exists():
        return {}
    return json.loads(MEASURED_PATH.read_text(encoding="utf-8"))


def write_measured(data: dict[str, dict[str, Any]]):
    MEASURED_PATH.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    load_measured.cache_clear()
