"""Files and numbers from outside (uploads, CLI flags) are sized before they are read or used.

Checkpoints: a zip bomb, a legacy pickle, a safetensors header that lies, more bytes than the model
can use. Images: devices, directories, oversized files, pixel bombs, formats outside the allowlist.
CLI: every path and number flag ends in one line on stderr and exit status 2.
"""
import collections
import contextlib
import io
import json
import pickle
import re
import resource
import struct
import subprocess
import sys
import zipfile
import zlib

import pytest
import torch

from explorer.cli import build_parser, main
from explorer.errors import ExplorerError
from explorer.images import MAX_IMAGE_BYTES, load_image
from explorer.latency import BenchSettings
from explorer.models import build_model
from explorer.spec import ModelSpec
from explorer.weights import CHECKPOINT_FACTOR, expected_state, read_checkpoint
from tests.conftest import ROOT

RSS_LIMIT_MB = 100
BOMB_BYTES = 208 * 2**20  # zeros deflate ~1000:1, so about 210 kB on disk


# --- measuring memory ---------------------------------------------------------------------------------

def _status_kb(field: str) -> int:
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1))


def peak_rss_growth_mb(action) -> float:
    """Peak resident memory above the starting point while `action` runs (Linux: VmHWM reset via clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")  # resets the peak to the current RSS
    except OSError:
        pytest.skip("cannot reset the peak RSS on this system")
    start = _status_kb("VmRSS")
    action()
    return (_status_kb("VmHWM") - start) / 1024


def refusal(call) -> ExplorerError:
    """The ExplorerError `call` raises (and fails the test if it raises nothing or something else)."""
    caught = []

    def action():
        with pytest.raises(ExplorerError) as info:
            call()
        caught.append(info.value)

    growth = peak_rss_growth_mb(action)
    assert growth < RSS_LIMIT_MB, f"refusing it grew the peak RSS by {growth:.0f} MB"
    assert len(str(caught[0]).splitlines()) == 1
    return caught[0]


@contextlib.contextmanager
def address_space_headroom(gib: int):
    """A ceiling on this process's address space (its current size + `gib`), so a regression that reads
    an endless file fails with MemoryError instead of taking the machine's memory."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    ceiling = _status_kb("VmSize") * 1024 + gib * 2**30
    resource.setrlimit(resource.RLIMIT_AS, (ceiling if hard == resource.RLIM_INFINITY else min(ceiling, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


# --- checkpoint files -----------------------------------------------------------------------------------

def _torch_archive(tensors: dict[str, bytes | int]) -> bytes:
    """A torch.save zip of float32 tensors, each in its own storage: given bytes, stored as they are;
    given a byte count, that many zeros deflated in chunks (never all in memory)."""
    template = io.BytesIO()
    torch.save({"w": torch.zeros(1)}, template)
    source = zipfile.ZipFile(io.BytesIO(template.getvalue()))
    root = source.infolist()[0].filename.split("/")[0]
    chunk = memoryview(bytes(16 * 2**20))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for info in source.infolist():
            if info.filename.endswith("/data.pkl"):
                sizes = {name: (len(v) if isinstance(v, bytes) else v) // 4 for name, v in tensors.items()}
                archive.writestr(info, _state_pickle(sizes))
            elif not info.filename.endswith("/data/0"):
                archive.writestr(info, source.read(info.filename))
        for key, content in enumerate(tensors.values()):
            entry = zipfile.ZipInfo(f"{root}/data/{key}")
            entry.compress_type = zipfile.ZIP_STORED if isinstance(content, bytes) else zipfile.ZIP_DEFLATED
            with archive.open(entry, "w", force_zip64=True) as handle:
                if isinstance(content, bytes):
                    handle.write(content)
                else:
                    for start in range(0, content, len(chunk)):
                        handle.write(chunk[:min(len(chunk), content - start)])
    return out.getvalue()


def _state_pickle(numels: dict[str, int]) -> bytes:
    """data.pkl of {name: a float32 tensor of numel elements}, tensor i in storage i, as torch.save writes it."""
    storages = {name: object() for name in numels}

    class Tensor:
        def __init__(self, name):
            self.name = name

        def __reduce__(self):
            return torch._utils._rebuild_tensor_v2, (storages[self.name], 0, (numels[self.name],), (1,), False,
                                                     collections.OrderedDict())

    ids = {id(storage): (str(i), numels[name]) for i, (name, storage) in enumerate(storages.items())}

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if id(obj) not in ids:
                return None
            key, numel = ids[id(obj)]
            return "storage", torch.FloatStorage, key, "cpu", numel

    buffer = io.BytesIO()
    Pickler(buffer, protocol=2).dump({name: Tensor(name) for name in numels})
    return buffer.getvalue()


@pytest.fixture(scope="module")
def zip_bomb() -> bytes:
    """A 210 kB .pt whose one tensor (declared to match) inflates to 208 MiB."""
    return _torch_archive({"fc.weight": BOMB_BYTES})


@pytest.fixture(scope="module")
def zip_bomb_of_small_entries() -> bytes:
    """A 240 kB .pt of 208 tensors, each 1 MiB of zeros: no entry over the per-entry ratio's 1 MiB floor."""
    return _torch_archive({f"layer{i}.weight": 2**20 for i in range(BOMB_BYTES // 2**20)})


def test_the_zip_bomb_is_a_checkpoint_torch_would_load():
    # The same construction at a small size loads: the bomb below is refused for its size, not its form.
    small = _torch_archive({"fc.weight": 2**20, "fc.bias": torch.arange(4.0).numpy().tobytes()})
    state = torch.load(io.BytesIO(small), weights_only=True)
    assert state["fc.weight"].shape == (2**18,) and not state["fc.weight"].any()
    assert torch.equal(state["fc.bias"], torch.arange(4.0))
    assert torch.equal(read_checkpoint(small, "small.pt")["fc.bias"], torch.arange(4.0))


def _safetensors(header: dict, data: bytes = b"", length: int | None = None) -> bytes:
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text) if length is None else length) + text + data


def _models():
    return {name: build_model(ModelSpec(name), device="meta") for name in ("resnet18", "lenet5")}


MODELS = _models()


def _many_entries() -> bytes:
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(3)}, buffer)
    out = io.BytesIO(buffer.getvalue())
    with zipfile.ZipFile(out, "a") as archive:
        for i in range(5000):
            archive.writestr(f"archive/extra/{i}", b"")
    return out.getvalue()


def _count_that_lies() -> bytes:
    data = bytearray(_many_entries())
    end = data.rfind(b"PK\x05\x06")
    data[end + 8:end + 12] = (7).to_bytes(2, "little") * 2  # entries on this disk, entries in all
    return bytes(data)


def _legacy() -> bytes:
    buffer = io.BytesIO()
    torch.save({"conv1.weight": torch.zeros(3)}, buffer, _use_new_zipfile_serialization=False)
    return buffer.getvalue()


def _stored(numel: int) -> bytes:
    buffer = io.BytesIO()
    torch.save({"junk": torch.zeros(numel)}, buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    "case,filename,model,message",
    [
        ("zip bomb", "bomb.pt", "resnet18", r"unpacks 2\d\d\.\d kB to 218\.1 MB \(more than 100:1"),
        ("zip bomb", "bomb.pth", None, r"more than 100:1"),
        ("zip bomb of small entries", "bomb.pt", None, r"entries unpack to 218\.1 MB from a 2\d\d\.\d kB file \(more than 100:1"),
        # 8 MB of tensors: more than 4 × lenet5's 246.8 kB, though a stored (uncompressed) file
        ("stored, over the model", "big.pt", "lenet5",
         r"tensors unpack to 8\.0 MB, more than 987\.3 kB \(4 × this model's 246\.8 kB of tensors\)"),
        ("many entries", "many.pt", "lenet5",
         r"lists 5,007 entries in 3\d\d\.\d kB; a checkpoint of this model needs at most 104 entries \(53\.2 kB\)"),
        # zipfile reads the directory by its byte size, not its entry count: a count of 7 does not hide 5,007
        ("a count that lies", "lies.pt", "lenet5", r"lists 7 entries in 3\d\d\.\d kB; .* at most 104 entries"),
        ("legacy pickle", "old.pt", None, r"not torch.save's zip format"),
        ("huge tensor", "huge.safetensors", None, r"data_offsets \[0, 4398046511104\] outside the file's 16 bytes"),
        ("2^60 header", "long.safetensors", None, r"header claims 1,152,921,504,606,846,976 bytes; the limit is"),
        ("extra tensor, over the model", "extra.safetensors", "lenet5", r"tensors unpack to 8\.0 MB, more than 987\.3 kB"),
        ("wrong size", "lies.safetensors", None, r"declares 16 bytes \(F32 \[2, 2\]\) but its offsets span 8"),
    ],
)
@pytest.mark.slow
def test_oversized_or_unbounded_checkpoints_are_refused_before_reading(case, filename, model, message, zip_bomb,
                                                                       zip_bomb_of_small_entries):
    data = {
        "zip bomb": lambda: zip_bomb,
        "zip bomb of small entries": lambda: zip_bomb_of_small_entries,
        "stored, over the model": lambda: _stored(2 * 10**6),
        "many entries": _many_entries,
        "a count that lies": _count_that_lies,
        "legacy pickle": _legacy,
        "huge tensor": lambda: _safetensors({"fc.weight": {"dtype": "F32", "shape": [2**20, 2**20],
                                                           "data_offsets": [0, 2**42]}}, bytes(16)),
        "2^60 header": lambda: _safetensors({}, bytes(64), length=2**60),
        "extra tensor, over the model": lambda: _safetensors(
            {"junk": {"dtype": "F32", "shape": [2 * 10**6], "data_offsets": [0, 8 * 10**6]}}, bytes(8 * 10**6)),
        "wrong size": lambda: _safetensors({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 8]}}, bytes(8)),
    }[case]()
    expected = {} if model is None else {"expected": MODELS[model]}
    error = refusal(lambda: read_checkpoint(data, filename, **expected))
    assert re.search(message, str(error)), str(error)


def test_the_model_budget_is_the_factor_times_its_tensors():
    lenet = expected_state(MODELS["lenet5"])
    model_bytes = sum(info.nbytes for info in lenet.values())
    assert model_bytes == 4 * sum(p.numel() for p in build_model(ModelSpec("lenet5"), "cpu").state_dict().values())
    # One float32 tensor of exactly the budget loads (as a name the model lacks); 4 bytes more does not.
    fits = _stored(CHECKPOINT_FACTOR * model_bytes // 4)
    assert set(read_checkpoint(fits, "fits.pt", expected=lenet)) == {"junk"}
    with pytest.raises(ExplorerError, match="more than"):
        read_checkpoint(_stored(CHECKPOINT_FACTOR * model_bytes // 4 + 1), "over.pt", expected=lenet)


def _training_checkpoint(model):
    """A checkpoint as training scripts save it: the weights, Adam's two moments per parameter, an epoch."""
    optimizer = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 1, 32, 32)).sum().backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}


@pytest.mark.parametrize("filename,layout", [("w.pt", "state"), ("w.pth", "training"), ("w.safetensors", "state")])
def test_a_valid_checkpoint_of_the_model_still_loads(filename, layout):
    from safetensors.torch import save

    torch.manual_seed(0)
    source = build_model(ModelSpec("lenet5"), "cpu")
    state = source.state_dict()
    if filename.endswith(".safetensors"):
        data = save({k: v.contiguous() for k, v in state.items()})
    else:
        buffer = io.BytesIO()
        torch.save(_training_checkpoint(source) if layout == "training" else state, buffer)
        data = buffer.getvalue()
    loaded = read_checkpoint(data, filename, expected=build_model(ModelSpec("lenet5"), "meta"))
    assert set(loaded) == set(state)
    assert all(torch.equal(loaded[k], v) for k, v in state.items())


def test_expected_state_is_the_same_from_a_model_or_its_state_dict():
    model = MODELS["resnet18"]
    from_model, from_state = expected_state(model), expected_state(model.state_dict())
    assert from_model == from_state and expected_state(from_model) == from_model
    assert from_model["fc.weight"].shape == (1000, 512) and from_model["fc.weight"].nbytes == 1000 * 512 * 4
    # torchvision's 11,689,512 parameters plus each BatchNorm's running mean and variance (4,800 channels)
    assert sum(i.nbytes for i in from_model.values() if i.dtype == torch.float32) == 4 * (11_689_512 + 2 * 4800)


# --- image files ---------------------------------------------------------------------------------------------

def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width × height but holds almost no data (its header is all PIL reads to open it)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n%%EOF\n"


@pytest.mark.parametrize(
    "case,message",
    [
        ("/dev/zero", "'/dev/zero' is not a regular file"),
        ("/dev/null", "'/dev/null' is not a regular file"),
        ("a directory", "is not a regular file"),
        ("a 300 MB file", r"is 300\.0 MB; the limit is 20 MB"),
        ("a 21 MB upload", r"is 21\.0 MB; the limit is 20 MB"),
        ("30000×30000 pixels", r"declares 900\.0 megapixels; the limit is 40 megapixels"),
        ("12000×9000 pixels", r"12000×9000 \(108\.0 megapixels\); the limit is 40 megapixels"),
        ("an EPS file", r"not an image in a format accepted here \(PNG, JPEG, WebP, BMP, TIFF or GIF\)"),
    ],
)
def test_image_files_are_checked_before_they_are_read(case, message, tmp_path):
    if case == "a directory":
        source = str(tmp_path)
    elif case == "a 300 MB file":
        source = tmp_path / "big.png"
        with open(source, "wb") as handle:
            handle.truncate(300 * 10**6)  # sparse: no disk used, but 300 MB to anyone who reads it
    elif case == "a 21 MB upload":
        source = bytes(21 * 10**6)
    elif case == "30000×30000 pixels":
        source = png_header(30000, 30000)
    elif case == "12000×9000 pixels":
        source = png_header(12000, 9000)
    elif case == "an EPS file":
        source = EPS
    else:
        source = case
    with address_space_headroom(gib=2):
        error = refusal(lambda: load_image(source))
    assert re.search(message, str(error)), str(error)


def test_an_image_at_the_file_limit_is_still_read(tmp_path):
    # A real PNG padded to exactly the limit by a trailing chunk PIL skips: read, decoded and converted.
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(buffer, format="PNG")
    data = buffer.getvalue()
    data += bytes(MAX_IMAGE_BYTES - len(data))
    path = tmp_path / "padded.png"
    path.write_bytes(data)
    image, _ = load_image(path)
    assert image.size == (64, 48) and image.getpixel((5, 5)) == (10, 20, 30)
    with pytest.raises(ExplorerError, match="limit is 20 MB"):
        load_image(data + b"\0")


# --- the CLI ---------------------------------------------------------------------------------------------------

def run_cli(*args):
    """The CLI in a child process, its address space capped so a file read without a bound fails fast."""
    ceiling = _status_kb("VmSize") * 1024 + 2 * 2**30

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (max(ceiling, 8 * 2**30), resource.RLIM_INFINITY))

    return subprocess.run([sys.executable, "-m", "explorer", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300, preexec_fn=cap)


SHAPES = str(ROOT / "assets" / "images" / "shapes.png")


@pytest.mark.parametrize(
    "args,message",
    [
        (("cam", "resnet18", "--image", "/dev/zero"), "'/dev/zero' is not a regular file"),
        (("cam", "resnet18", "--image", "{tmp}/huge.png"), "108.0 megapixels"),  # no DecompressionBombWarning line
        (("cam", "resnet18", "--input", "3,64,64", "--image", SHAPES, "--out", "/proc/x/y.png"),
         "the folder '/proc/x' does not exist"),
        (("view", "resnet18", "erf", "--layer", "layer1", "--out", "{tmp}/missing/maps.npz"), "does not exist"),
        (("cam", "resnet18", "--input", "3,64,64", "--image", SHAPES, "--out", "{tmp}"), "must be a .png file"),
        (("bench", "resnet50", "--min-runs", "-1"), "min_runs (timed runs per batch size) must be between 1 and 10000"),
    ],
)
@pytest.mark.slow
def test_cli_refusals_are_one_line_and_exit_2(args, message, tmp_path):
    (tmp_path / "huge.png").write_bytes(png_header(12000, 9000))
    proc = run_cli(*(a.replace("{tmp}", str(tmp_path)) for a in args))
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and proc.stdout == "", proc.stderr[-2000:]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize(
    "argv,message",
    [
        (["swin-mask", "swin_t", "--window", "1000"], "argument --window: must be an integer from 1 to 32, got 1000"),
        (["cam", "resnet18", "--image", "x.png", "--class", "-3"], "argument --class: must be an integer from 0 to"),
        (["losses", "weights", "--classes", "1000000000"], "argument --classes: must be an integer from 2 to 10,000"),
        (["losses", "regression", "--alpha", "nan"], "argument --alpha: must be a finite number of at most 100"),
        (["losses", "regression", "--gamma", "1e9"], "argument --gamma: must be a finite number of at most 100"),
        (["losses", "weights", "--imbalance", "inf"], "argument --imbalance: must be a finite number from 1 to"),
        (["losses", "weights", "--cb-beta", "nan"], "argument --cb-beta: must be a finite number, got nan"),
    ],
)
def test_number_flags_are_bounded_when_parsed(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1 and message in lines[0], lines


@pytest.mark.parametrize(
    "argv,message",
    [
        (["bench", "resnet18", "--min-seconds", "nan"], "min_seconds (timing per batch size) must be between 0 and 60 s"),
        (["bench", "resnet18", "--min-seconds", "1e9"], "min_seconds (timing per batch size) must be between 0 and 60 s"),
        (["bench", "resnet18", "--batch", "1,2000"], "batch sizes must be between 1 and 1024"),
        (["bench", "resnet18", "--batch", ",".join(["1"] * 33)], "1 to 32 of them"),
        (["compare", "resnet18", "--sweep", "0,224"], "--sweep takes 1 to 16 input sides, each between 1 and 4096"),
        (["compare", "resnet18", "--sweep", ",".join(["224"] * 17)], "--sweep takes 1 to 16 input sides"),
        (["swin-mask", "swin_t", "--stage", "0"], "stage must be 1..4, got 0"),
        (["swin-mask", "swin_t", "--block", "-1"], "block must be 0..1 in stage 1, got -1"),
    ],
)
@pytest.mark.slow
def test_number_flags_the_engine_bounds_end_in_one_line(argv, message, capsys):
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and message in lines[0], lines


@pytest.mark.parametrize(
    "change,message",
    [
        ({"min_runs": -1}, "min_runs (timed runs per batch size) must be between 1 and 10000, got -1"),
        ({"min_runs": 0}, "min_runs"),
        ({"min_runs": True}, "min_runs"),
        ({"min_seconds": -0.1}, "min_seconds (timing per batch size) must be between 0 and 60 s"),
        ({"min_seconds": float("inf")}, "min_seconds"),
        ({"max_seconds": 0}, "max_seconds (warm-up and timing per batch size) must be above 0 and at most 600 s"),
        ({"max_seconds": float("nan")}, "max_seconds"),
        ({"batches": ()}, "batch sizes must be between 1 and 1024, 1 to 32 of them"),
        ({"batches": (1, 1025)}, "batch sizes"),
        ({"batches": (2.5,)}, "batch sizes"),
        ({"dtype": "int4"}, "dtype must be one of fp32, fp16, bf16"),
        ({"device": "tpu"}, "device must be one of auto, cuda, mps, cpu"),
        ({"compile": "yes"}, "compile must be true or false"),
    ],
)
def test_bench_settings_are_bounded_with_the_setting_named(change, message):
    with pytest.raises(ExplorerError) as info:
        BenchSettings(**{"device": "cpu", **change})
    assert message in str(info.value) and len(str(info.value).splitlines()) == 1


def test_the_settings_the_app_uses_are_within_the_bounds():
    from explorer.latency import quick_settings

    for device in ("cpu", "cuda"):
        quick_settings(device).validate()
    # the Latency page's settings (pages/5_Latency.py) at their extremes
    BenchSettings(device="cpu", batches=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024), dtype="bf16",
                  channels_last=True, compile=True, per_layer=True, min_runs=10, min_seconds=0.5)
