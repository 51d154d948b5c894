"""The catalog: roster families and their buildable variants, plus any library model by name.

Catalog data (descriptions, papers, published figures) lives in explorer/data/catalog.json.
Library metadata (torchvision weight metadata, timm pretrained configs) is read from the
installed libraries, offline.
"""
from __future__ import annotations

import difflib
import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from explorer.errors import ExplorerError

CATALOG_PATH = Path(__file__).parent / "data" / "catalog.json"
LIBRARIES = ("torchvision", "timm", "native")

# torchvision task modules we can build and cost, with the input each takes by default.
_TV_TASK_INPUT = {
    "classification": None,  # from the default weights' crop size
    "detection": (3, 800, 800),
    "segmentation": (3, 520, 520),
    "video": (3, 16, 112, 112),
}


@dataclass(frozen=True)
class Variant:
    id: str
    builder: str  # "torchvision:resnet50", "timm:seresnet50" or "native:lenet5"
    family_id: str | None = None  # None for library models opened by name
    input_size: tuple[int, ...] | None = None
    published: dict[str, Any] | None = None
    input_kind: str = "image"  # "image" | "tokens" (integer ids below vocab_size) | "graph" | "volume"
    vocab_size: int | None = None
    # Builder options the catalog row builds with unless a spec sets them: the network its published figures
    # describe (GoogLeNet without its training-time auxiliary heads).
    default_options: tuple[tuple[str, Any], ...] = ()

    @property
    def library(self) -> str:
        return self.builder.split(":", 1)[0]

    @property
    def name(self) -> str:
        return self.builder.split(":", 1)[1]

    @property
    def implemented(self) -> bool:
        if self.library != "native":
            return True
        from explorer.native import NATIVE_BUILDERS  # imported on demand: it loads every native model's code

        return self.name in NATIVE_BUILDERS


@dataclass(frozen=True)
class Family:
    id: str
    name: str
    section: str
    year: int
    paper: dict[str, str]
    description: str
    teach: str
    variants: tuple[Variant, ...] = field(default_factory=tuple)
    native_note: str | None = None

    @property
    def sources(self) -> tuple[str, ...]:
        return tuple(sorted({v.library for v in self.variants}))


@dataclass(frozen=True)
class Catalog:
    families: tuple[Family, ...]

    @functools.cached_property
    def variants(self) -> dict[str, Variant]:
        return {v.id: v for f in self.families for v in f.variants}

    @functools.cached_property
    def families_by_id(self) -> dict[str, Family]:
        return {f.id: f for f in self.families}

    def family_of(self, variant: Variant) -> Family | None:
        return self.families_by_id.get(variant.family_id) if variant.family_id else None


@functools.lru_cache(maxsize=1)
def load_catalog() -> Catalog:
    data = json.loads(CATALOG_PATH.read_text(encoding="utf-8"))
    families = []
    for f in data["families"]:
        variants = tuple(
            Variant(
                id=v["id"],
                builder=v["builder"],
                family_id=f["id"],
                input_size=tuple(v["input_size"]) if v.get("input_size") else None,
                published=v.get("published"),
                input_kind=v.get("input_kind", "image"),
                vocab_size=v.get("vocab_size"),
                default_options=tuple(sorted(v.get("options", {}).items())),
            )
            for v in f["variants"]
        )
        families.append(
            Family(
                id=f["id"],
                name=f["name"],
                section=f["section"],
                year=int(f["year"]),
                paper=f["paper"],
                description=f["description"],
                teach=f.get("teach", ""),
                variants=variants,
                native_note=f.get("native_note"),
            )
        )
    return Catalog(tuple(families))


@functools.lru_cache(maxsize=1)
def torchvision_names() -> dict[str, str]:
    """Every buildable torchvision model name -> its task."""
    import torchvision.models as tvm

    names = {}
    for task, module in (
        ("video", tvm.video),
        ("segmentation", tvm.segmentation),
        ("detection", tvm.detection),
    ):
        for name in tvm.list_models(module=module):
            names[name] = task
    for name in tvm.list_models(module=tvm):
        names[name] = "classification"
    return names


def _timm_exists(name: str) -> bool:
    import timm

    return timm.is_model(name.split(".", 1)[0])


def resolve(arch: str) -> Variant:
    """A catalog id, or 'torchvision:NAME' / 'timm:NAME' for any library model."""
    catalog = load_catalog()
    if arch in catalog.variants:
        return catalog.variants[arch]
    if not arch.strip():
        raise ExplorerError("give a model: a catalog id (e.g. resnet50), or torchvision:NAME / timm:NAME")
    if ":" in arch:
        library, name = arch.split(":", 1)
        if library == "torchvision":
            if name not in torchvision_names():
                raise ExplorerError(f"torchvision has no model named {name!r}{_suggest(name, torchvision_names(), LISTED_BY['torchvision'])}")
            return _catalog_twin(arch) or Variant(id=arch, builder=arch)
        if library == "timm":
            if not _timm_exists(name):
                import timm

                raise ExplorerError(f"timm has no model named {name!r}{_suggest(name, timm.list_models(), LISTED_BY['timm'])}")
            return _catalog_twin(arch) or Variant(id=arch, builder=arch)
        if library == "native":
            for variant in catalog.variants.values():
                if variant.builder == arch:
                    return variant
        raise ExplorerError(f"unknown library {library!r}: use torchvision:NAME, timm:NAME or a catalog id")
    # A bare library name: torchvision's model of that name, else timm's ('convnext_tiny' is torchvision's).
    if arch in torchvision_names():
        return _catalog_twin(f"torchvision:{arch}") or Variant(id=f"torchvision:{arch}", builder=f"torchvision:{arch}")
    if _timm_exists(arch):
        return _catalog_twin(f"timm:{arch}") or Variant(id=f"timm:{arch}", builder=f"timm:{arch}")
    raise ExplorerError(f"unknown architecture {arch!r}{_suggest(arch, _every_name()) if len(arch) <= 100 else ''}")


def _every_name() -> list[str]:
    """Catalog ids and every torchvision and timm model name: what an unknown name is matched against."""
    import timm

    return [*load_catalog().variants, *torchvision_names(), *timm.list_models()]


def _catalog_twin(builder: str) -> Variant | None:
    """'torchvision:resnet50' opens the catalog's resnet50, with its paper figures."""
    for variant in load_catalog().variants.values():
        if variant.builder == builder:
            return variant
    return None


# Where a person finds every name of each source. The Catalog lists the roster only, not every library model.
LISTED_BY = {
    "catalog": "the Catalog page and `python -m explorer list` name them all",
    "torchvision": "torchvision.models.list_models() names them all; the Catalog lists only the roster",
    "timm": "timm.list_models() names them all; the Catalog lists only the roster",
}


def _suggest(name: str, candidates, listed_by: str = LISTED_BY["catalog"]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else f" ({listed_by})"


def torchvision_task(variant: Variant) -> str | None:
    return torchvision_names().get(variant.name) if variant.library == "torchvision" else None


def native_input_size(variant: Variant) -> tuple[int, ...]:
    """The input a model was designed for (per sample, without batch)."""
    if variant.input_size:
        return variant.input_size
    if variant.library == "torchvision":
        task = torchvision_task(variant)
        if task != "classification":
            return _TV_TASK_INPUT[task]
        meta = torchvision_weights_meta(variant.name)
        return (3, meta["crop_size"], meta["crop_size"]) if meta else (3, 224, 224)
    if variant.library == "timm":
        cfg = timm_pretrained_cfg(variant.name)
        return tuple(cfg.get("input_size", (3, 224, 224)))
    raise ExplorerError(f"{variant.id} has no input size in the catalog")


def torchvision_weights_meta(name: str) -> dict[str, Any] | None:
    """Metadata of the DEFAULT weights (params, GMACs as `_ops`, accuracy, crop size), offline."""
    import torchvision.models as tvm

    try:
        weights = tvm.get_model_weights(name)
    except (ValueError, KeyError):
        return None
    default = weights.DEFAULT
    meta = dict(default.meta)
    meta["weights"] = f"{weights.__name__}.{default.name}"
    keywords = getattr(default.transforms, "keywords", {})
    meta["crop_size"] = keywords.get("crop_size", 224)
    meta["all_weights"] = [
        {
            "name": w.name,
            "crop_size": getattr(w.transforms, "keywords", {}).get("crop_size"),
            "num_params": w.meta.get("num_params"),
            "gmacs": w.meta.get("_ops"),
            "metrics": w.meta.get("_metrics", {}),
        }
        for w in weights
    ]
    return meta


def timm_pretrained_cfg(name: str) -> dict[str, Any]:
    import timm.models

    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.to_dict() if cfg is not None else {}


def library_metadata(variant: Variant) -> dict[str, Any]:
    """What the variant's library itself says about it (JSON-friendly)."""
    if variant.library == "torchvision":
        meta = torchvision_weights_meta(variant.name) or {}
        keep = ("weights", "num_params", "_ops", "_file_size", "_metrics", "crop_size", "recipe", "min_size", "all_weights")
        out = {k: meta[k] for k in keep if k in meta}
        if "_ops" in out:
            out["gmacs"] = out.pop("_ops")  # torchvision's `_ops` is in GMACs
        out["task"] = torchvision_task(variant)
        return out
    if variant.library == "timm":
        cfg = timm_pretrained_cfg(variant.name)
        keep = ("input_size", "crop_pct", "interpolation", "license", "paper_ids", "paper_name", "hf_hub_id", "origin_url", "num_classes", "tag")
        return {k: cfg[k] for k in keep if cfg.get(k) is not None}
    return {}


def published_figures(variant: Variant) -> dict[str, Any]:
    """Params (M), GMACs, the headline accuracy (`top1`, in the metric `metric`), every published accuracy
    (`metrics`: {metric: value}) and their source: torchvision's weight metadata, else the catalog's paper
    figures, else timm's published results table (explorer.accuracy)."""
    from explorer.accuracy import IMAGENET_TOP1, timm_published, torchvision_metrics

    if variant.library == "torchvision":
        meta = torchvision_weights_meta(variant.name)
        if meta:
            metrics = torchvision_metrics(meta.get("_metrics", {}))
            metric = next(iter(metrics), None)
            return {
                "params_m": meta["num_params"] / 1e6,
                "gmacs": meta.get("_ops"),
                "top1": metrics.get(metric),
                "metric": metric,
                "metrics": metrics,
                "source": f"torchvision {meta['weights']}",
            }
    published = dict(variant.published or {})
    if published:
        published.setdefault("metric", IMAGENET_TOP1)
        published["metrics"] = {published["metric"]: published["top1"]} if published.get("top1") is not None else {}
        return published
    if variant.library == "timm":
        return timm_published(variant.name) or {}
    return published


def catalog_rows() -> list[dict[str, Any]]:
    """One row per variant, for `explorer list` and the catalog page."""
    rows = []
    for family in load_catalog().families:
        for variant in family.variants:
            published = published_figures(variant)
            rows.append(
                {
                    "id": variant.id,
                    "family": family.name,
                    "family_id": family.id,
                    "section": family.section,
                    "year": family.year,
                    "source": variant.library,
                    "builder": variant.builder,
                    "implemented": variant.implemented,
                    "paper": family.paper,
                    "description": family.description,
                    "teach": family.teach,
                    "published_params_m": published.get("params_m"),
                    "published_gmacs": published.get("gmacs"),
                    "published_top1": published.get("top1"),
                    "published_metric": published.get("metric"),
                    "published_source": published.get("source"),
                    "native_note": family.native_note,
                }
            )
    return rows
