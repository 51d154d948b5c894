"""The serialisable description of a model: what caches key on and URLs carry."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from explorer.errors import ExplorerError

_ARCH_RE = re.compile(r"^[A-Za-z0-9_.\-]+(:[A-Za-z0-9_.\-]+)?$")
_OPTION_KEY_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
MAX_SIDE = 4096
MAX_ELEMENTS_PER_SAMPLE = 64 * 1024 * 1024
MAX_BATCH = 1024


@dataclass(frozen=True)
class ModelSpec:
    """Architecture id, builder options, swaps, input size (per sample, no batch) and batch.

    `input_size` None means the model's native input size from the catalog.
    `options` are keyword arguments for the builder (JSON scalars only).
    """

    arch: str
    input_size: tuple[int, ...] | None = None
    batch: int = 1
    options: tuple[tuple[str, Any], ...] = ()
    swaps: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if not isinstance(self.arch, str) or not _ARCH_RE.match(self.arch):
            raise ExplorerError(f"invalid architecture id {self.arch!r}")
        if self.input_size is not None:
            size = tuple(self.input_size)
            if not 1 <= len(size) <= 4 or not all(isinstance(s, int) and not isinstance(s, bool) for s in size):
                raise ExplorerError(f"input size must be 1 to 4 integers, got {self.input_size!r}")
            if any(s < 1 or s > MAX_SIDE for s in size):
                raise ExplorerError(f"each input dimension must be between 1 and {MAX_SIDE}, got {size}")
            elements = 1
            for s in size:
                elements *= s
            if elements > MAX_ELEMENTS_PER_SAMPLE:
                raise ExplorerError(f"input {size} has {elements:,} elements; the limit is {MAX_ELEMENTS_PER_SAMPLE:,}")
            object.__setattr__(self, "input_size", size)
        if not isinstance(self.batch, int) or isinstance(self.batch, bool) or not 1 <= self.batch <= MAX_BATCH:
            raise ExplorerError(f"batch must be an integer between 1 and {MAX_BATCH}, got {self.batch!r}")
        options = dict(self.options)
        for key, value in options.items():
            if not isinstance(key, str) or not _OPTION_KEY_RE.match(key):
                raise ExplorerError(f"invalid option name {key!r}")
            if not isinstance(value, (bool, int, float, str)) and value is not None:
                raise ExplorerError(f"option {key} must be a number, a string, true/false or null")
        object.__setattr__(self, "options", tuple(sorted(options.items())))
        object.__setattr__(self, "swaps", tuple(self.swaps))

    @property
    def options_dict(self) -> dict[str, Any]:
        return dict(self.options)

    def with_(self, **changes) -> "ModelSpec":
        data = self.to_dict()
        data.update(changes)
        return ModelSpec.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "input_size": list(self.input_size) if self.input_size is not None else None,
            "batch": self.batch,
            "options": self.options_dict,
            "swaps": list(self.swaps),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelSpec":
        if not isinstance(data, dict) or "arch" not in data:
            raise ExplorerError("a model spec needs at least an 'arch'")
        unknown = set(data) - {"arch", "input_size", "batch", "options", "swaps"}
        if unknown:
            raise ExplorerError(f"unknown spec fields: {', '.join(sorted(unknown))}")
        size = data.get("input_size")
        options = data.get("options") or {}
        if not isinstance(options, dict):
            raise ExplorerError("spec options must be an object")
        return cls(
            arch=data["arch"],
            input_size=tuple(size) if size is not None else None,
            batch=data.get("batch", 1),
            options=tuple(options.items()),
            swaps=tuple(data.get("swaps") or ()),
        )

    def key(self) -> str:
        """Canonical JSON: equal specs give equal keys."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    # URL form: ?arch=resnet50&input=3,224,224&batch=1&options={...}&swaps=...
    def to_query(self) -> dict[str, str]:
        query = {"arch": self.arch}
        if self.input_size is not None:
            query["input"] = format_size(self.input_size)
        if self.batch != 1:
            query["batch"] = str(self.batch)
        if self.options:
            query["options"] = json.dumps(self.options_dict, sort_keys=True, separators=(",", ":"))
        if self.swaps:
            query["swaps"] = ";".join(self.swaps)
        return query

    @classmethod
    def from_query(cls, query: dict[str, str]) -> "ModelSpec":
        if "arch" not in query:
            raise ExplorerError("the URL names no architecture (?arch=...)")
        options_text = query.get("options")
        try:
            options = json.loads(options_text) if options_text else {}
        except json.JSONDecodeError as exc:
            raise ExplorerError(f"options in the URL are not valid JSON: {exc.msg}") from None
        if not isinstance(options, dict):
            raise ExplorerError("options in the URL must be a JSON object")
        swaps = tuple(s for s in query.get("swaps", "").split(";") if s)
        return cls(
            arch=query["arch"],
            input_size=parse_size(query["input"]) if query.get("input") else None,
            batch=parse_int(query.get("batch", "1"), "batch"),
            options=tuple(options.items()),
            swaps=swaps,
        )


def parse_size(text: str) -> tuple[int, ...]:
    """'3,224,224' or '3x224x224' -> (3, 224, 224)."""
    parts = [p for p in re.split(r"[,x×\s]+", str(text).strip()) if p]
    if not parts:
        raise ExplorerError("input size is empty; write it like 3,224,224")
    try:
        return tuple(int(p) for p in parts)
    except ValueError:
        raise ExplorerError(f"input size {text!r} is not a list of integers like 3,224,224") from None


def parse_int(text: str, what: str) -> int:
    try:
        return int(text)
    except (TypeError, ValueError):
        raise ExplorerError(f"{what} must be an integer, got {text!r}") from None


def format_size(size) -> str:
    return ",".join(str(s) for s in size)
