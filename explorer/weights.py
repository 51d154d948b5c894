"""Loading weights into a built model: the libraries' own pretrained weights (cache first), or a checkpoint.

Nothing is downloaded unless the caller allows it. Checkpoints load with
`torch.load(..., weights_only=True)` or safetensors, after their zip directory or header shows they
unpack to no more than the model can use; missing, unexpected and mismatched keys are reported, never fatal.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import socket
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from explorer.catalog import Variant
from explorer.errors import ExplorerError
from explorer.models import one_line
from explorer.units import format_bytes


# --- the libraries' pretrained weights: where they come from, whether they are cached, fetching them ------

@dataclass(frozen=True)
class PretrainedSource:
    """Where a library model's default pretrained weights come from and where the library caches them."""

    arch: str
    library: str  # torchvision | timm
    name: str  # the weights' name: torchvision's enum member, timm's model.tag
    url: str | None  # a plain download (torchvision; some timm weights)
    hf_repo: str | None  # a Hugging Face Hub repository (most timm weights)
    hf_files: tuple[str, ...]  # the files tried in that repository, in timm's order
    cache_path: Path | None  # the file a plain download lands in

    @property
    def host(self) -> str:
        from urllib.parse import urlparse

        return "huggingface.co" if self.hf_repo else (urlparse(self.url or "").hostname or "the weights' server")

    def cached_file(self) -> Path | None:
        """The cached weights file, or None: looks in the caches only, never on the network."""
        if self.hf_repo:
            from huggingface_hub import try_to_load_from_cache

            for filename in self.hf_files:
                found = try_to_load_from_cache(self.hf_repo, filename)
                if isinstance(found, str):
                    return Path(found)
            return None
        return self.cache_path if self.cache_path is not None and self.cache_path.is_file() else None


CONNECT_TIMEOUT_S = 5.0


def hub_checkpoints_dir() -> Path:
    """torch.hub's download folder (torchvision's weights, timm's URL weights): $TORCH_HOME/hub/checkpoints."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def pretrained_source(variant: Variant) -> PretrainedSource:
    """The library's default pretrained weights of `variant`; ExplorerError when the library has none."""
    if variant.library == "torchvision":
        import torchvision.models as tvm

        try:
            weights = tvm.get_model_weights(variant.name).DEFAULT
        except (ValueError, KeyError, AttributeError):
            raise ExplorerError(f"torchvision ships no pretrained weights for {variant.name}") from None
        return PretrainedSource(variant.id, "torchvision", str(weights), weights.url, None, (),
                                hub_checkpoints_dir() / os.path.basename(weights.url))
    if variant.library == "timm":
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(variant.name)
        if cfg is None or not (cfg.hf_hub_id or cfg.url):
            raise ExplorerError(f"timm has no pretrained weights for {variant.name}")
        name = f"{variant.name}.{cfg.tag}" if cfg.tag else variant.name
        if cfg.hf_hub_id:  # timm's own order: an override, else safetensors before the pickle
            files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else ("model.safetensors", "pytorch_model.bin")
            return PretrainedSource(variant.id, "timm", name, None, cfg.hf_hub_id, files, None)
        return PretrainedSource(variant.id, "timm", name, cfg.url, None, (), hub_checkpoints_dir() / os.path.basename(cfg.url))
    raise ExplorerError(f"{variant.id} has no library weights; load a checkpoint instead")


def download_failure(source: PretrainedSource, exc: BaseException) -> ExplorerError:
    """A failed download as one plain sentence: what could not be fetched, why in words, and what to do."""
    import urllib.error

    reason = None
    status = getattr(getattr(exc, "response", None), "status_code", None) or getattr(exc, "code", None)
    if isinstance(exc, urllib.error.HTTPError) or isinstance(status, int):
        reason = f"{source.host} answered HTTP {status}"
    elif isinstance(exc, (urllib.error.URLError, ConnectionError, TimeoutError, OSError)) or _is_offline_error(exc):
        reason = f"{source.host} cannot be reached (this machine seems to have no network connection)"
    if reason is None:
        reason = f"the download failed ({type(exc).__name__})"
    where = (f"the Hugging Face cache ({source.hf_repo})" if source.hf_repo
             else f"{source.cache_path}" if source.cache_path else "the library's cache")
    return ExplorerError(f"could not download the pretrained weights of {source.arch}: {reason}. Fetch them before "
                         f"the class on a machine with a network (python -m explorer weights fetch {source.arch}), "
                         f"or copy them into {where}")


def _is_offline_error(exc: BaseException) -> bool:
    """huggingface_hub's and httpx's ways of saying the Hub could not be reached."""
    names = {type(e).__name__ for e in (exc, exc.__cause__, exc.__context__) if e is not None}
    return bool(names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError", "ConnectTimeout",
                         "ReadTimeout", "NetworkError", "TransportError", "ProxyError"})


def fetch_pretrained(source: PretrainedSource) -> Path:
    """Download the weights into the library's cache (the only function here that uses the network); the
    cached file, or ExplorerError with a plain sentence."""
    cached = source.cached_file()
    if cached is not None:
        return cached
    try:
        if source.hf_repo:
            from huggingface_hub import hf_hub_download
            from huggingface_hub.errors import RemoteEntryNotFoundError

            # huggingface_hub retries an unreachable host for half a minute per file, logging every try:
            # one connection first says at once whether the Hub can be reached at all.
            socket.create_connection((source.host, 443), timeout=CONNECT_TIMEOUT_S).close()
            for filename in source.hf_files:
                try:
                    return Path(hf_hub_download(source.hf_repo, filename))
                except RemoteEntryNotFoundError:  # the repository has the other format: try it
                    continue
            raise ExplorerError(f"{source.hf_repo} holds none of {', '.join(source.hf_files)}")
        source.cache_path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(source.url, str(source.cache_path), progress=False)
        return source.cache_path
    except ExplorerError:
        raise
    except Exception as exc:  # noqa: BLE001 — every library's network error becomes one sentence
        raise download_failure(source, exc) from None


@contextlib.contextmanager
def _hub_offline():
    """huggingface_hub reads HF_HUB_OFFLINE once, when imported: set its constant itself while loading from
    the cache, so that no request leaves the machine."""
    from huggingface_hub import constants

    previous = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = previous


def load_pretrained(model: nn.Module, variant: Variant, allow_download: bool = False) -> dict[str, Any]:
    """Load the library's default pretrained weights into `model` (built by us, same architecture): from the
    library's cache; downloaded into it first only with `allow_download`."""
    source = pretrained_source(variant)
    if source.cached_file() is None:
        if not allow_download:
            raise ExplorerError(f"the pretrained weights of {variant.id} ({source.name}) are not in the cache "
                                f"on this machine; allow the download, or fetch them before the class with "
                                f"python -m explorer weights fetch {variant.id}")
        fetch_pretrained(source)
    if variant.library == "torchvision":
        state = torch.load(source.cached_file(), map_location="cpu", weights_only=True)
        return load_state(model, state, source=f"torchvision {source.name}")
    import timm

    try:
        with _hub_offline():  # the file is cached: timm reads it (and applies its own key conversions) offline
            reference = timm.create_model(variant.name, pretrained=True)
    except Exception as exc:  # noqa: BLE001 — a damaged cache file, an unexpected format
        raise ExplorerError(f"timm could not load its cached weights for {variant.name}: {one_line(exc)[:160]}") from None
    return load_state(model, reference.state_dict(), source=f"timm {source.name}")


def cached_pretrained() -> list[dict[str, Any]]:
    """Every library weights file in this machine's caches: torchvision's in torch.hub's folder (named by
    the models that use them), timm's in the Hugging Face cache."""
    rows = []
    folder = hub_checkpoints_dir()
    if folder.is_dir():
        users = _torchvision_files()
        for path in sorted(folder.iterdir()):
            if path.is_file():
                rows.append({"library": "torchvision" if path.name in users else "torch.hub", "file": str(path),
                             "bytes": path.stat().st_size, "models": users.get(path.name, [])})
    try:
        from huggingface_hub import scan_cache_dir

        repos = scan_cache_dir().repos
    except Exception:  # noqa: BLE001 — no cache folder yet
        repos = ()
    for repo in sorted(repos, key=lambda r: r.repo_id):
        if repo.repo_id.startswith("timm/"):
            rows.append({"library": "timm", "file": str(repo.repo_path), "bytes": repo.size_on_disk,
                         "models": [f"timm:{repo.repo_id.removeprefix('timm/').split('.')[0]}"]})
    return rows


def _torchvision_files() -> dict[str, list[str]]:
    """torchvision's weight file names → the models whose weights they are (every weight, not only DEFAULT)."""
    import torchvision.models as tvm

    users: dict[str, list[str]] = {}
    for name in tvm.list_models():
        try:
            members = list(tvm.get_model_weights(name))
        except (ValueError, KeyError):
            continue
        for weights in members:
            users.setdefault(os.path.basename(weights.url), []).append(f"{name} ({weights.name})")
    return users


# --- checkpoint files: sizes checked before any tensor data is read -----------------------------

MAX_CHECKPOINT_BYTES = 4 * 2**30  # unpacked tensor data, whatever the model (vit_h_14's fp32 weights are 2.5 GB)
CHECKPOINT_FACTOR = 4  # a checkpoint may hold a wider dtype, optimizer moments or an EMA copy beside the weights
METADATA_BASE_BYTES = 2**20  # the pickle or the safetensors header, plus this much per tensor (× the factor)
METADATA_BYTES_PER_TENSOR = 4096
MAX_METADATA_BYTES = 64 * 2**20  # without a model to size it by
MAX_ENTRIES = 20_000  # zip entries, without a model to size them by (vit_h_14 has about 500 tensors)
ZIP_DIRECTORY_BYTES_PER_ENTRY = 512  # torch.save's entries take about 100 (46, a name, a zip64 field)
MAX_COMPRESSION_RATIO = 100  # torch.save stores tensors uncompressed; float weights deflate ~1.1:1, zeros ~1000:1
RATIO_FREE_BYTES = 2**20  # small entries (zero biases, a version file) may compress as well as they like
MAX_SAFETENSORS_HEADER = 100_000_000  # the safetensors library's own limit
SAFETENSORS_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
                          "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}


@dataclass(frozen=True)
class TensorInfo:
    """What a model expects under one state-dict name."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    nbytes: int


def expected_state(model_or_state: nn.Module | Mapping[str, Any]) -> dict[str, TensorInfo]:
    """Names → shape, dtype and bytes of a model's tensors (a model on the meta device will do)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    out = {}
    for name, value in state.items():
        if isinstance(value, TensorInfo):
            out[name] = value
        elif isinstance(value, torch.Tensor):
            out[name] = TensorInfo(tuple(value.shape), value.dtype, value.numel() * value.element_size())
        else:
            raise TypeError(f"expected state for {name!r} must be a tensor or a TensorInfo")
    return out


@dataclass(frozen=True)
class CheckpointLimits:
    """How big a checkpoint may be once unpacked: sized by the model's own tensors when it is known."""

    tensor_bytes: int
    metadata_bytes: int
    entries: int
    basis: str  # for messages: where tensor_bytes comes from

    @classmethod
    def for_model(cls, expected: Mapping[str, TensorInfo] | None) -> "CheckpointLimits":
        if expected is None:
            return cls(MAX_CHECKPOINT_BYTES, MAX_METADATA_BYTES, MAX_ENTRIES,
                       f"the limit of {format_bytes(MAX_CHECKPOINT_BYTES)}")
        model_bytes = sum(info.nbytes for info in expected.values())
        tensors = CHECKPOINT_FACTOR * len(expected)
        metadata = min(MAX_METADATA_BYTES, METADATA_BASE_BYTES + METADATA_BYTES_PER_TENSOR * tensors)
        tensor_bytes = CHECKPOINT_FACTOR * model_bytes
        if tensor_bytes > MAX_CHECKPOINT_BYTES:
            return cls(MAX_CHECKPOINT_BYTES, metadata, tensors + 64, f"the limit of {format_bytes(MAX_CHECKPOINT_BYTES)}")
        return cls(tensor_bytes, metadata, tensors + 64,
                   f"{CHECKPOINT_FACTOR} × this model's {format_bytes(model_bytes)} of tensors")


def check_checkpoint(data: bytes, filename: str, expected: Mapping[str, TensorInfo] | None = None) -> None:
    """Refuse (ExplorerError) a checkpoint that would unpack to more than `expected`'s model can use, from
    its zip directory or safetensors header alone, before torch or safetensors reads any tensor data."""
    limits = CheckpointLimits.for_model(expected)
    name = filename.lower()
    if name.endswith(".safetensors"):
        _check_safetensors(data, _shown(filename), limits)
    elif name.endswith((".pt", ".pth", ".bin")):
        _check_torch_zip(data, _shown(filename), limits)
    else:
        raise ExplorerError("checkpoints must be .safetensors, .pt or .pth files")


def _shown(filename: str) -> str:
    """An uploaded file name safe for a one-line message."""
    return repr(filename[:80] + ("…" if len(filename) > 80 else ""))


def zip_directory(data: bytes) -> tuple[int, int] | None:
    """(entries, central directory bytes) from the end-of-central-directory record (zip64's when present),
    read before zipfile builds an object for every entry it finds; None when there is no such record."""
    at = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 65535))
    if at < 0 or at + 22 > len(data):
        return None
    entries = int.from_bytes(data[at + 10:at + 12], "little")
    directory = int.from_bytes(data[at + 12:at + 16], "little")
    locator = at - 20
    if locator >= 0 and data[locator:locator + 4] == b"PK\x06\x07":
        record = int.from_bytes(data[locator + 8:locator + 16], "little")
        if data[record:record + 4] == b"PK\x06\x06" and record + 48 <= len(data):
            entries = max(entries, int.from_bytes(data[record + 32:record + 40], "little"))
            directory = max(directory, int.from_bytes(data[record + 40:record + 48], "little"))
    return entries, directory


def _check_torch_zip(data: bytes, shown: str, limits: CheckpointLimits) -> None:
    # torch.load itself treats anything not starting with a zip entry as the legacy format, whose pickle
    # allocates every storage at its declared size before reading it: refused.
    if not data.startswith(b"PK\x03\x04"):
        raise ExplorerError(f"cannot read {shown} as a weights-only checkpoint: it is not torch.save's zip format "
                            "(PyTorch 1.6 and later); re-save it with a current torch.save or as .safetensors")
    directory = zip_directory(data)
    if directory is None:
        raise ExplorerError(f"cannot read {shown} as a weights-only checkpoint: its zip directory is missing")
    # zipfile reads entries until the directory's byte size is used up, whatever the count says: bound both.
    count, directory_bytes = directory
    if count > limits.entries or directory_bytes > limits.entries * ZIP_DIRECTORY_BYTES_PER_ENTRY:
        raise ExplorerError(f"refused {shown}: its zip directory lists {count:,} entries in "
                            f"{format_bytes(directory_bytes)}; a checkpoint of this model needs at most "
                            f"{limits.entries:,} entries ({format_bytes(limits.entries * ZIP_DIRECTORY_BYTES_PER_ENTRY)})")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            infos = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise ExplorerError(f"cannot read {shown} as a weights-only checkpoint: {one_line(exc)}") from None
    if len(infos) > limits.entries:
        raise ExplorerError(f"refused {shown}: it has {len(infos):,} zip entries; a checkpoint of this model needs "
                            f"at most {limits.entries:,}")
    tensor_bytes = metadata_bytes = packed = 0
    for info in infos:
        entry = repr(info.filename[:80])
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise ExplorerError(f"refused {shown}: entry {entry} uses zip compression method {info.compress_type}; "
                                "torch.save's checkpoints are stored or deflated")
        if info.file_size > RATIO_FREE_BYTES and info.file_size > MAX_COMPRESSION_RATIO * info.compress_size:
            raise ExplorerError(f"refused {shown}: entry {entry} unpacks {format_bytes(info.compress_size)} to "
                                f"{format_bytes(info.file_size)} (more than {MAX_COMPRESSION_RATIO}:1; tensors do not "
                                "compress that well)")
        packed += info.compress_size
        parts = info.filename.split("/")
        if len(parts) == 3 and parts[1] == "data":  # <archive>/data/<storage key>: one storage's bytes
            tensor_bytes += info.file_size
        else:
            metadata_bytes += info.file_size
    # Entries may not claim more packed bytes than the file has (overlapping entries share their data).
    if packed > len(data):
        raise ExplorerError(f"refused {shown}: its zip entries claim {format_bytes(packed)} of packed data in a "
                            f"{format_bytes(len(data))} file")
    # Many small entries, each under RATIO_FREE_BYTES, may not add up to a bomb either.
    if tensor_bytes + metadata_bytes > MAX_COMPRESSION_RATIO * len(data) + RATIO_FREE_BYTES:
        raise ExplorerError(f"refused {shown}: its entries unpack to {format_bytes(tensor_bytes + metadata_bytes)} "
                            f"from a {format_bytes(len(data))} file (more than {MAX_COMPRESSION_RATIO}:1; tensors do "
                            "not compress that well)")
    _check_totals(shown, tensor_bytes, metadata_bytes, limits)


def _check_totals(shown: str, tensor_bytes: int, metadata_bytes: int, limits: CheckpointLimits) -> None:
    if tensor_bytes > limits.tensor_bytes:
        raise ExplorerError(f"refused {shown}: its tensors unpack to {format_bytes(tensor_bytes)}, more than "
                            f"{format_bytes(limits.tensor_bytes)} ({limits.basis}); save only the model's state dict")
    if metadata_bytes > limits.metadata_bytes:
        raise ExplorerError(f"refused {shown}: its metadata (pickle or header) is {format_bytes(metadata_bytes)}, "
                            f"more than the {format_bytes(limits.metadata_bytes)} a checkpoint of this model needs")


def _check_safetensors(data: bytes, shown: str, limits: CheckpointLimits) -> None:
    """The header's length first, then every tensor's dtype, shape and offsets against the file and the limits."""
    def refuse(why: str):
        raise ExplorerError(f"refused {shown}: {why}")

    if len(data) < 8:
        refuse("it is too short to be a safetensors file")
    header_bytes = int.from_bytes(data[:8], "little")
    header_limit = min(MAX_SAFETENSORS_HEADER, limits.metadata_bytes)
    if header_bytes > header_limit:
        refuse(f"its header claims {header_bytes:,} bytes; the limit is {header_limit:,}")
    if header_bytes > len(data) - 8:
        refuse(f"its header claims {header_bytes:,} bytes but the file has {len(data) - 8:,} after the length")
    try:
        header = json.loads(data[8:8 + header_bytes])
    except (ValueError, RecursionError):
        refuse("its header is not valid JSON")
    if not isinstance(header, dict):
        refuse("its header is not a JSON object")
    data_bytes = len(data) - 8 - header_bytes
    tensor_bytes = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        shown_name = repr(name[:80])
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            refuse(f"tensor {shown_name} lacks dtype, shape or data_offsets")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_ITEM_BYTES:
            refuse(f"tensor {shown_name} has dtype {str(dtype)[:20]!r}; allowed: {', '.join(SAFETENSORS_ITEM_BYTES)}")
        if not (isinstance(shape, list) and len(shape) <= 8
                and all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s for s in shape)):
            refuse(f"tensor {shown_name} has shape {str(shape)[:60]}; a shape is at most 8 non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2
                and all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
                and 0 <= offsets[0] <= offsets[1] <= data_bytes):
            refuse(f"tensor {shown_name} has data_offsets {str(offsets)[:60]} outside the file's "
                   f"{data_bytes:,} bytes of data")
        nbytes = math.prod(shape) * SAFETENSORS_ITEM_BYTES[dtype]
        if nbytes != offsets[1] - offsets[0]:
            refuse(f"tensor {shown_name} declares {nbytes:,} bytes ({dtype} {shape}) but its offsets span "
                   f"{offsets[1] - offsets[0]:,}")
        tensor_bytes += nbytes  # names the model lacks count too: they are read all the same
    if tensor_bytes > data_bytes:
        refuse(f"its tensors claim {tensor_bytes:,} bytes but the file holds {data_bytes:,}")
    _check_totals(shown, tensor_bytes, header_bytes, limits)


def read_checkpoint(data: bytes, filename: str,
                    expected: nn.Module | Mapping[str, Any] | None = None) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or .pt/.pth loaded with weights_only=True.

    `expected` (the model, its state dict or `expected_state(model)`) sizes what the file may unpack
    to; without it only the absolute limits apply. The sizes are checked before any tensor is read.
    """
    check_checkpoint(data, filename, None if expected is None else expected_state(expected))
    name = filename.lower()
    try:
        if name.endswith(".safetensors"):
            from safetensors.torch import load

            state = load(data)
        else:
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ExplorerError(f"cannot read {_shown(filename)} as a weights-only checkpoint: {one_line(exc)[:200]}") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ExplorerError(f"{_shown(filename)} holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _unwrap_keys(state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Checkpoint keys moved under the wrappers attention swaps add: a module P that a swap wrapped in
    Sequential(P, attention) keeps its weights under P.0. A prefix P counts as wrapped only when every
    checkpoint key under it exists in the model under P.0 with the same shape."""
    wrapped: dict[str, bool] = {}

    def is_wrapped(prefix: str) -> bool:
        if prefix not in wrapped:
            under = [k for k in state if k.startswith(prefix + ".")]
            moved = [f"{prefix}.0.{k[len(prefix) + 1:]}" for k in under]
            wrapped[prefix] = bool(under) and all(m in own and own[m].shape == state[k].shape
                                                  for k, m in zip(under, moved))
        return wrapped[prefix]

    # Look for wrapped prefixes among the keys the model lacks; then move every key under one (a moved
    # key may collide with a different tensor of the same name, e.g. a BN weight with the conv after it).
    found = set()
    for key in state:
        if key not in own:
            parts = key.split(".")
            prefix = next((".".join(parts[:i]) for i in range(1, len(parts)) if is_wrapped(".".join(parts[:i]))), None)
            if prefix:
                found.add(prefix)
    out = {}
    for key, value in state.items():
        prefix = next((p for p in found if key.startswith(p + ".")), None)
        out[f"{prefix}.0.{key[len(prefix) + 1:]}" if prefix else key] = value
    return out


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> dict[str, Any]:
    """Load what fits (a layer a swap wrapped is found under its wrapper); report what did not."""
    own = model.state_dict()
    state = _unwrap_keys(state, own)
    mismatched = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    usable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    result = model.load_state_dict(usable, strict=False)
    return {
        "source": source,
        "loaded": len(usable),
        "missing": sorted(set(result.missing_keys)),
        "unexpected": sorted(k for k in state if k not in own),
        "mismatched": [{"key": k, "checkpoint": list(state[k].shape), "model": list(own[k].shape)} for k in mismatched],
    }
