"""Shaping the per-layer rows of a cost report: roll-up to a depth, subtrees, the module tree."""
from __future__ import annotations

from typing import Any

ROOT = "(model)"


def parent_of(name: str) -> str:
    return name.rsplit(".", 1)[0] if "." in name else ROOT


def rolled_up(layers: list[dict[str, Any]], depth: int) -> list[dict[str, Any]]:
    """Rows as seen when the tree is collapsed at `depth`: modules at that depth, plus
    leaves above it. Their inclusive figures add up to the model's total."""
    return [row for row in layers if row["depth"] == depth or (0 < row["depth"] < depth and row["is_leaf"])]


def subtree(layers: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    prefix = name + "."
    return [row for row in layers if row["name"] == name or row["name"].startswith(prefix)]


def max_depth(layers: list[dict[str, Any]]) -> int:
    return max((row["depth"] for row in layers), default=0)


def shape_text(shape) -> str:
    if shape is None:
        return "— (not called itself)"
    if shape and isinstance(shape[0], list):
        return ", ".join("×".join(map(str, s)) for s in shape)
    return "×".join(map(str, shape))


def module_tree_text(layers: list[dict[str, Any]], depth: int) -> str:
    """An indented tree: name (Type) → output shape, down to `depth`."""
    lines = []
    for row in layers:
        if row["depth"] > depth:
            continue
        indent = "  " * row["depth"]
        short = row["name"].rsplit(".", 1)[-1]
        lines.append(f"{indent}{short} ({row['type']}) → {shape_text(row['output_shape'])}")
    return "\n".join(lines)
