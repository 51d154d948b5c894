"""Guided tours (explorer/data/tours.json): per roster family, steps of idea → live figure → question."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

TOURS_PATH = Path(__file__).parent / "data" / "tours.json"
FIGURE_KINDS = {"model_totals", "layer_table", "compare", "swap", "fold", "swin_mask", "receptive_field",
                "resolution_sweep", "connectivity", "text"}


@functools.lru_cache(maxsize=1)
def load_tours() -> list[dict[str, Any]]:
    return json.loads(TOURS_PATH.read_text(encoding="utf-8"))["tours"]
