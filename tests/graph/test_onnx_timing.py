"""An exported ONNX file timed with ONNX Runtime: the runs asked for, ordered statistics, the same network as
the torch model it came from (outputs compared), the file's shapes honoured or refused with the reason, files
refused before ONNX Runtime reads them, the job kind, the command line, and a missing onnxruntime said plainly."""
import io
import json
import re
import sys
import warnings
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import onnx
import pytest
import torch
import torch.nn as nn

from explorer.cli import main
from explorer.errors import ExplorerError
from explorer.job_kinds import JOB_KINDS
from explorer.onnx_timing import NOT_INSTALLED, example_feeds, run_once, time_onnx
from tests.cli_support import run_cli


class TinyNet(nn.Module):
    """A residual conv block, a concatenation and a linear head: enough ops that a wrong kernel would show."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.body = nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.mix = nn.Conv2d(16, 16, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x):
        y = self.stem(x)
        y = y + self.body(y)
        y = self.mix(torch.cat([y, torch.sigmoid(y)], 1))
        return self.head(y.mean((2, 3)))


@pytest.fixture(scope="module")
def tiny():
    """(torch model with non-trivial BatchNorm statistics, ONNX bytes with a named batch axis)."""
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():
        model.stem[1].running_mean.uniform_(-0.5, 0.5)
        model.stem[1].running_var.uniform_(0.5, 2.0)
    model.eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, 3, 16, 16),), buffer, dynamo=False, opset_version=17,
                          input_names=["pixels"], output_names=["logits"], dynamic_axes={"pixels": {0: "batch"}})
    return model, buffer.getvalue()


def _edited(data: bytes, edit) -> bytes:
    model = onnx.load_model_from_string(data)
    edit(model)
    return model.SerializeToString()


def test_time_onnx_gives_the_runs_asked_for_with_ordered_statistics(tiny):
    _, data = tiny
    result = time_onnx(data, "tiny.onnx", batch=3, runs=7, threads=1, device="cpu")
    row = result["results"][0]
    assert row["runs"] == 7 and row["warmup_runs"] >= 1
    assert 0 < row["p10_ms"] <= row["median_ms"] <= row["p90_ms"]
    assert row["batch"] == 3 and row["throughput_per_s"] == pytest.approx(3 / (row["median_ms"] / 1e3))
    assert result["inputs"] == [{"name": "pixels", "shape": [3, 3, 16, 16], "dtype": "float32",
                                 "values": "N(0, 1), seed 0"}]
    settings = result["settings"]
    assert settings["providers"] == ["CPUExecutionProvider"] and settings["device"] == "cpu"
    assert settings["threads"] == 1 and settings["runs"] == 7 and settings["batch"] == 3
    assert "not PyTorch's" in result["note"] and result["error"] is None


def test_onnx_runtime_runs_the_same_network_as_torch(tiny):
    model, data = tiny
    feeds = example_feeds(data, "tiny.onnx", batch=2)
    assert list(feeds) == ["pixels"] and feeds["pixels"].shape == (2, 3, 16, 16)
    np.testing.assert_array_equal(feeds["pixels"], example_feeds(data, "tiny.onnx", batch=2)["pixels"])  # seeded
    (logits,) = run_once(data, "tiny.onnx", feeds)
    with torch.no_grad():
        expected = model(torch.from_numpy(feeds["pixels"])).numpy()
    assert logits.shape == (2, 10)
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-5)
    assert np.abs(expected[0] - expected[1]).max() > 1e-3  # two different samples: a constant output would not pass


def test_an_open_axis_other_than_the_batch_is_refused_by_name(tiny):
    _, data = tiny

    def open_height(model):
        model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"

    with pytest.raises(ExplorerError, match=r"input 'pixels' of 'tiny.onnx' leaves axis 2 \('height'\) open; "
                                            r"only the batch \(axis 0\) takes a value"):
        time_onnx(_edited(data, open_height), "tiny.onnx", runs=1)


def test_a_fixed_batch_is_used_and_a_different_one_refused(tiny):
    _, data = tiny

    def fix_batch(model):
        model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 2

    fixed = _edited(data, fix_batch)
    assert example_feeds(fixed, "fixed.onnx")["pixels"].shape == (2, 3, 16, 16)
    with pytest.raises(ExplorerError, match="fixes the batch at 2, not 4"):
        time_onnx(fixed, "fixed.onnx", batch=4, runs=1)


@pytest.mark.parametrize("settings, message", [
    ({"runs": 0}, "runs .* from 1 to 1000"), ({"runs": True}, "runs"), ({"runs": 1001}, "runs"),
    ({"batch": 0}, "batch must be an integer from 1 to 1024"), ({"batch": 2.5}, "batch"),
    ({"threads": 0}, "threads"), ({"device": "tpu"}, "device must be one of auto, cpu, cuda"),
])
def test_bounded_settings_are_refused_before_any_work(tiny, settings, message):
    with pytest.raises(ExplorerError, match=message):
        time_onnx(tiny[1], "tiny.onnx", **{"runs": 1, **settings})


def test_files_are_refused_before_onnx_runtime_reads_them(tiny, monkeypatch):
    _, data = tiny

    def weights_elsewhere(model):
        weight = model.graph.initializer[0]
        weight.ClearField("raw_data")
        weight.data_location = onnx.TensorProto.EXTERNAL
        entry = weight.external_data.add()
        entry.key, entry.value = "location", "/etc/passwd"

    with pytest.raises(ExplorerError, match="keeps its weights in separate files"):
        time_onnx(_edited(data, weights_elsewhere), "tiny.onnx", runs=1)
    with pytest.raises(ExplorerError, match="not an .onnx file"):
        time_onnx(data, "tiny.pt", runs=1)
    with pytest.raises(ExplorerError, match="not a readable ONNX model"):
        time_onnx(b"\xff" * 64, "broken.onnx", runs=1)
    from explorer import model_files

    monkeypatch.setattr(model_files, "MAX_ONNX_BYTES", len(data) - 1)  # the Graph page's cap, one byte short
    with pytest.raises(ExplorerError, match="over the limit"):
        time_onnx(data, "tiny.onnx", runs=1)


def test_the_job_kind_times_the_uploaded_bytes(tiny):
    _, data = tiny
    messages = []
    payload = {"name": "tiny.onnx", "data": data, "settings": {"batch": 2, "runs": 4, "threads": 1}}
    result = JOB_KINDS["onnx_bench"](payload, messages.append)
    assert result["results"][0]["runs"] == 4 and result["results"][0]["batch"] == 2
    assert result["contention"]["pid"] > 0 and messages == ["timing"]  # recorded like every latency job
    with pytest.raises(ExplorerError, match="no ONNX file was uploaded"):
        JOB_KINDS["onnx_bench"]({"name": "tiny.onnx", "settings": {}}, messages.append)


def test_a_missing_onnxruntime_is_one_sentence(tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    with pytest.raises(ExplorerError) as refused:
        JOB_KINDS["onnx_bench"]({"name": "tiny.onnx", "data": tiny[1], "settings": {"runs": 1}}, lambda _: None)
    assert str(refused.value) == NOT_INSTALLED == (
        "ONNX Runtime is not installed: pip install onnxruntime==1.32.0 to time ONNX files")


def _cli_in_process(*args):
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_the_command_line_times_an_onnx_file(tiny, tmp_path, monkeypatch):
    path = tmp_path / "tiny.onnx"
    path.write_bytes(tiny[1])
    code, out, _ = _cli_in_process("graph", str(path), "--time", "--batch", "2", "--runs", "5", "--threads", "1",
                                   "--json")
    assert code == 0
    result = json.loads(out)
    assert result["results"][0]["runs"] == 5 and result["inputs"][0]["shape"] == [2, 3, 16, 16]
    assert _cli_in_process("graph", str(path), "--runs", "5", "--json")[0] == 2  # --runs without --time
    code, _, err = _cli_in_process("graph", "resnet18", "--time", "--json")
    assert code == 2 and "is timed with `bench`" in err
    from explorer import model_files

    monkeypatch.setattr(model_files, "MAX_ONNX_BYTES", 100)  # refused from its size, before it is read
    code, _, err = _cli_in_process("graph", str(path), "--time", "--json")
    assert code == 2 and "larger than the limit of 100 bytes" in err


def test_the_command_line_refuses_a_bad_runs_count_in_one_line(tmp_path):
    for bad in ("0", "1001", "many"):
        done = run_cli("graph", str(tmp_path / "tiny.onnx"), "--time", "--runs", bad, "--json")
        assert done.returncode == 2 and not done.stdout
        assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: argument --runs: must be an integer")


@pytest.mark.slow  # about 25 s on 2 busy cores: the page traces its model and the job starts a worker process
def test_the_graph_page_times_an_uploaded_file_as_a_job(tiny, clear_streamlit_caches):
    from tests.page_support import open_page

    at = open_page("pages/9_Graph.py", arch="resnet18")
    at.file_uploader(key="graph_onnx").set_value(("tiny <b>.onnx", tiny[1], "application/octet-stream")).run()
    at.number_input(key="graph_onnx_runs").set_value(6)
    at.button(key="graph_onnx_time").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    line = next(m.value for m in at.markdown if m.value.startswith("ONNX Runtime"))
    shown = re.search(r"median \*\*([\d.]+) ms\*\*, p10 ([\d.]+) ms, p90 ([\d.]+) ms \(6 runs", line)
    median, p10, p90 = (float(v) for v in shown.groups())
    assert p10 <= median <= p90 and "CPUExecutionProvider" in line and "threads" in line
    assert any("not PyTorch" in c.value for c in at.caption)
