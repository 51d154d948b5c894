"""torch.export `.pt2` archives read from their JSON graph alone (explorer.model_files.read_pt2): the same
params, MACs and memory access as the cost engine's trace of the model, and hostile archives refused in one
sentence without anything being unpickled or resolved outside torch.ops.aten."""
import io
import json
import pickle
import zipfile
from contextlib import redirect_stdout

import pytest
import torch

from explorer.cli import main
from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.model_files import read_pt2
from explorer.spec import ModelSpec

RESNET18_PARAMS = 11_689_512  # torchvision's published count
CONV1_MACS = 64 * 3 * 7 * 7 * 32 * 32  # the stem conv at 64×64 input: 64 channels of 3·7·7 taps over 32×32 outputs


@pytest.fixture(scope="module")
def resnet18_pt2(tmp_path_factory):
    """torchvision resnet18 (random weights, eval) exported at 1×3×64×64 and saved with torch.export.save."""
    import torchvision

    model = torchvision.models.resnet18().eval()
    exported = torch.export.export(model, (torch.randn(1, 3, 64, 64),))
    path = tmp_path_factory.mktemp("pt2") / "resnet18.pt2"
    torch.export.save(exported, str(path))
    return model, path.read_bytes()


@pytest.fixture(scope="module")
def resnet18_cost():
    return analyse(ModelSpec("resnet18", input_size=(3, 64, 64)), with_layers=False)


def _entries(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in entries.items():
            archive.writestr(name, payload)
    return buffer.getvalue()


def _model_json_name(entries) -> str:
    return next(name for name in entries if name.endswith("/models/model.json"))


def _with_model_json(data: bytes, edit) -> bytes:
    entries = _entries(data)
    name = _model_json_name(entries)
    model = json.loads(entries[name])
    edit(model)
    entries[name] = json.dumps(model).encode()
    return _zip(entries)


class _Trap:
    """Unpickling this creates the marker file: proof that something unpickled the archive."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_the_archive_lists_json_graph_raw_weights_and_one_pickle(resnet18_pt2):
    _, data = resnet18_pt2
    names = list(_entries(data))
    pickles = [n for n in names if n.endswith((".pt", ".pkl"))]
    assert pickles == [next(n for n in names if n.endswith("/data/sample_inputs/model.pt"))]
    assert any(n.endswith("/models/model.json") for n in names)
    assert any(n.endswith("/data/weights/model_weights_config.json") for n in names)


def test_resnet18_reads_back_with_the_models_params_macs_and_memory_access(resnet18_pt2, resnet18_cost):
    model, data = resnet18_pt2
    graph = read_pt2(data, "resnet18.pt2")
    totals = graph["totals"]
    assert totals["params"] == sum(p.numel() for p in model.parameters()) == RESNET18_PARAMS
    # The same aten ops replayed under the same formulas: exactly equal, not merely within 0.5 %.
    assert totals["macs"] == resnet18_cost["macs"] == 148_557_824
    assert totals["memory_access_bytes"] == resnet18_cost["memory_access_bytes"]
    assert totals["activations"] == resnet18_cost["activations"]
    assert graph["uncounted_ops"] == [] and graph["source"] == "pt2" and graph["input_shape"] == [1, 3, 64, 64]
    nodes = {n["id"]: n for n in graph["nodes"]}
    # Module groups from the exporter's nn_module_stack, leaf modules as one node each, named as the torch graph
    assert nodes["layer1.0"]["group"] and nodes["layer1.0"]["parent"] == "layer1"
    assert nodes["layer1.0"]["params"] == 2 * 64 * 64 * 9 + 2 * 2 * 64
    assert nodes["conv1"]["type"] == "Conv2d" and nodes["conv1"]["macs"] == CONV1_MACS
    assert nodes["layer1.0.relu@2"]["kind"] == "call" and nodes["layer1.0.relu@2"]["parent"] == "layer1.0"
    into = {}
    for edge in graph["edges"]:
        into.setdefault(edge["dst"], set()).add(edge["src"])
        assert edge["shape"]
    assert into["layer1.0.add_#1"] == {"layer1.0.bn2", "maxpool"}  # the residual addition's two branches
    assert into["fc"] == {"flatten#1"}


def test_the_pickled_sample_inputs_are_never_opened(resnet18_pt2, tmp_path):
    _, data = resnet18_pt2
    marker = tmp_path / "unpickled"
    entries = _entries(data)
    sample = next(n for n in entries if n.endswith("/data/sample_inputs/model.pt"))
    entries[sample] = pickle.dumps(_Trap(marker))
    assert read_pt2(_zip(entries), "trapped.pt2")["totals"]["params"] == RESNET18_PARAMS
    assert not marker.exists()


def test_a_pickle_only_or_sample_inputs_only_archive_is_refused(resnet18_pt2, tmp_path):
    _, data = resnet18_pt2
    marker = tmp_path / "unpickled"
    pickle_only = _zip({"archive/data.pkl": pickle.dumps(_Trap(marker)), "archive/version": b"3"})
    with pytest.raises(ExplorerError, match="no <archive>/models/model.json"):
        read_pt2(pickle_only, "pickle.pt2")
    samples_only = {n: b for n, b in _entries(data).items() if "/data/sample_inputs/" in n}
    with pytest.raises(ExplorerError, match="not a torch.export archive"):
        read_pt2(_zip(samples_only), "samples.pt2")
    assert not marker.exists()


def test_non_zips_wrong_names_and_zip_bombs_are_refused():
    with pytest.raises(ExplorerError, match="not a .pt2 file"):
        read_pt2(b"PK\x03\x04", "model.pt")
    with pytest.raises(ExplorerError, match="not a zip archive"):
        read_pt2(b"\x80\x04not a zip at all", "model.pt2")
    # A bomb: 20 MB of zeros deflate to about 20 kB, far past the 100:1 a real archive's entries reach.
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("archive/models/model.json", b"0" * 20 * 2**20)
    with pytest.raises(ExplorerError, match="more than 100:1"):
        read_pt2(buffer.getvalue(), "bomb.pt2")
    # A declared size lied about in the central directory (2 GiB for a 2-byte entry)
    small = _zip({"archive/models/model.json": b"{}"})
    at = small.index(b"PK\x01\x02")
    lied = small[:at + 24] + (2**31).to_bytes(4, "little") + small[at + 28:]
    with pytest.raises(ExplorerError, match="refused"):
        read_pt2(lied, "lied.pt2")


def test_malformed_json_is_refused_in_one_sentence(resnet18_pt2):
    _, data = resnet18_pt2
    entries = _entries(data)
    name = _model_json_name(entries)
    for payload, reason in ((b"{not json", "not readable JSON"), (b"[]", "not a JSON object"),
                            (b'{"graph_module": 5}', "graph_module is missing or malformed"),
                            (b"[" * 100_000, "not readable JSON")):
        with pytest.raises(ExplorerError, match=reason) as caught:
            read_pt2(_zip({**entries, name: payload}), "bad.pt2")
        assert "\n" not in str(caught.value)


def test_a_target_outside_torch_ops_aten_is_listed_not_resolved(resnet18_pt2, monkeypatch):
    import os

    _, data = resnet18_pt2
    called = []
    monkeypatch.setattr(os, "system", lambda *a: called.append(a))

    def hostile(model):
        nodes = model["graph_module"]["graph"]["nodes"]
        assert nodes[0]["target"] == "torch.ops.aten.conv2d.default"
        nodes[0]["target"] = "os.system"
        nodes[1]["target"] = "torch.ops.aten.__class__.default"
        nodes[2]["inputs"][0]["arg"] = {"as_graph": {"graph": {}}}  # an argument kind not read here

    graph = read_pt2(_with_model_json(data, hostile), "hostile.pt2")
    assert not called
    uncounted = {row["op"]: row["count"] for row in graph["uncounted_ops"]}
    assert uncounted == {"os.system": 1, "torch.ops.aten.__class__.default": 1, "torch.ops.aten.relu_.default": 1}
    # Downstream nodes carry on from the shapes the file recorded: only the stem conv's MACs are missing.
    assert graph["totals"]["macs"] == 148_557_824 - CONV1_MACS
    assert graph["totals"]["params"] == RESNET18_PARAMS


def test_a_node_that_would_read_a_file_is_never_run(resnet18_pt2, tmp_path):
    """aten.from_file maps a path on this machine: it is never resolved to an op (so never run, whatever device the
    archive gives it), and a hostile archive naming one gets it listed as not costed."""
    from explorer.model_files import _aten_op

    assert _aten_op("torch.ops.aten.from_file.default") is None
    assert _aten_op("torch.ops.aten.conv2d.default") is torch.ops.aten.conv2d.default  # the lookup itself works
    _, data = resnet18_pt2
    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)

    def hostile(model):
        node = model["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.ops.aten.from_file.default"
        node["inputs"] = [{"name": "filename", "arg": {"as_string": str(secret)}},
                          {"name": "shared", "arg": {"as_bool": False}}, {"name": "size", "arg": {"as_int": 64}}]

    graph = read_pt2(_with_model_json(data, hostile), "hostile.pt2")
    assert {row["op"]: row["count"] for row in graph["uncounted_ops"]} == {"torch.ops.aten.from_file.default": 1}


def _cli(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_the_command_line_reads_a_pt2_archive_and_refuses_a_bad_one(resnet18_pt2, tmp_path, capsys):
    _, data = resnet18_pt2
    path = tmp_path / "resnet18.pt2"
    path.write_bytes(data)
    code, text = _cli("graph", str(path), "--depth", "1", "--json")
    assert code == 0
    result = json.loads(text)
    assert result["totals"]["params"] == RESNET18_PARAMS and result["totals"]["macs"] == 148_557_824
    assert max(n["depth"] for n in result["nodes"]) == 1
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    capsys.readouterr()
    assert _cli("graph", str(bad), "--json")[0] == 2
    assert capsys.readouterr().err.strip().count("\n") == 0
    assert _cli("graph", str(path), "--time")[0] == 2
    assert "ONNX Runtime does not run" in capsys.readouterr().err


def test_factory_ops_stay_on_the_meta_device_and_impossible_sizes_are_refused(resnet18_pt2):
    _, data = resnet18_pt2

    def factory(model):
        # 10^12 float32 zeros "on cpu" would be 4 TB: replayed on the meta device, nothing is allocated.
        model["graph_module"]["graph"]["nodes"].insert(0, {
            "target": "torch.ops.aten.zeros.default", "name": "zeros_trap", "metadata": {},
            "inputs": [{"name": "size", "arg": {"as_ints": [100_000, 100_000, 100]}, "kind": 1},
                       {"name": "device", "arg": {"as_device": {"type": "cpu", "index": None}}, "kind": 2}],
            "outputs": [{"as_tensor": {"name": "zeros_trap"}}]})
        model["graph_module"]["graph"]["nodes"].insert(0, {
            "target": "torch.ops.aten._print.default", "name": "print_trap", "metadata": {},
            "inputs": [{"name": "s", "arg": {"as_string": "printed"}, "kind": 1}], "outputs": []})

    graph = read_pt2(_with_model_json(data, factory), "factory.pt2")
    zeros = next(n for n in graph["nodes"] if n["id"] == "zeros#1")
    assert zeros["output_shape"] == [100_000, 100_000, 100]
    assert {row["op"] for row in graph["uncounted_ops"]} == {"torch.ops.aten._print.default"}
    assert graph["totals"]["macs"] == 148_557_824

    def impossible(model):
        values = model["graph_module"]["graph"]["tensor_values"]
        values["p_conv1_weight"]["sizes"] = [{"as_int": 2**40}] * 16
        values["p_conv1_weight"]["strides"] = [{"as_int": 1}] * 16

    with pytest.raises(ExplorerError, match="p_conv1_weight"):
        read_pt2(_with_model_json(data, impossible), "impossible.pt2")


def test_the_graph_page_opens_an_uploaded_pt2_without_the_onnx_runtime_timing(resnet18_pt2, clear_streamlit_caches):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    _, data = resnet18_pt2
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    at.query_params["arch"] = "lenet5"  # the page's own model: the cheapest to trace
    at.switch_page("pages/9_Graph.py")
    at.run()
    at.file_uploader(key="graph_onnx").set_value(("resnet18.pt2", data, "application/zip"))
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    text = " ".join(m.value for m in at.markdown)
    assert "11.69 M parameters, 148.56 M MACs" in text
    assert any("ONNX Runtime times `.onnx` files only" in c.value for c in at.caption)
    assert not [b for b in at.button if b.key == "graph_onnx_time"]
    at.file_uploader(key="graph_onnx").set_value(("broken.pt2", b"not a zip", "application/zip"))
    at.run()
    assert any("not a zip archive" in e.value for e in at.error)
