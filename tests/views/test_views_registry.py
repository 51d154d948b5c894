"""One registry of the views inside a model (explorer.views.registry): the Inside page, the Swap page, the CLI and
the job kinds all read it, so a view cannot be added (or renamed) in one place and missed in another."""
import argparse
import json
import subprocess
import sys

import numpy as np
import pytest

from explorer.cli import build_parser, main
from explorer.job_kinds import JOB_KINDS
from explorer.views.cam import ATTRIBUTION_METHODS, CAM_METHODS
from explorer.views.registry import NEEDS, VIEW_IDS, VIEWS, inside_views, swap_views, view_by_id
from tests.conftest import ROOT
from tests.page_support import metric, open_page


def _subcommand(name: str) -> argparse.ArgumentParser:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[name]


def _action(parser: argparse.ArgumentParser, dest: str) -> argparse.Action:
    return next(a for a in parser._actions if a.dest == dest)


# --- the registry against its readers -----------------------------------------------------------------------

def test_every_view_has_a_page_renderer_a_cli_choice_and_its_job_kind():
    from ui.inside import INSIDE_RENDERERS
    from ui.swap_inside import SWAP_RENDERERS

    assert len(set(VIEW_IDS)) == len(VIEW_IDS) == 9
    labels = [v.label for v in inside_views()]
    assert len(set(labels)) == len(labels) == 8
    swap_labels = [v.swap_label for v in swap_views()]
    assert len(set(swap_labels)) == len(swap_labels) == 5
    # every view the Inside page lists has its renderer there, and no renderer is left without a view
    assert set(INSIDE_RENDERERS) == {v.id for v in inside_views()}
    for view in VIEWS:
        if view.label is None:  # drawn by another view's renderer (erf: a button of the receptive fields view)
            assert view.part_of in INSIDE_RENDERERS, view.id
    assert set(SWAP_RENDERERS) == {v.id for v in swap_views()}
    # the CLI's `view` choices are the registry's ids, in its order
    assert tuple(_action(_subcommand("view"), "view").choices) == VIEW_IDS
    for view in VIEWS:
        assert view.needs in NEEDS, view.id
        assert view.job_kind in JOB_KINDS, view.id  # pages and CLI compute it through the same job kind
        for dest in view.cli_options:  # each flag a view reads is one the `view` sub-command has
            _action(_subcommand("view"), dest)


def test_the_cli_offers_the_engines_cam_methods_and_stays_quick_to_start():
    for command in ("cam", "view"):
        assert tuple(_action(_subcommand(command), "method").choices) == CAM_METHODS + ATTRIBUTION_METHODS
    args = build_parser().parse_args(["cam", "resnet18", "--image", "x.png", "--method", "occlusion"])
    assert args.method == "occlusion"
    # the choices come from explorer.views.cam (torch) only when a command parses them, not while `list` starts
    probe = ("import sys; from explorer.cli import build_parser; build_parser(); "
             "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_unknown_view_ids_are_refused():
    with pytest.raises(Exception, match="unknown view 'nosuch'; the views: cam, attention"):
        view_by_id("nosuch")


# --- the CLI computes through the pages' job kinds ------------------------------------------------------------

@pytest.fixture
def job_kinds_run(monkeypatch):
    """Records the job kinds the CLI runs, and runs them (a spy on explorer.jobs.run_job_kind, not a stub)."""
    import explorer.jobs

    original, ran = explorer.jobs.run_job_kind, []

    def spy(kind, payload, progress):
        ran.append(kind)
        return original(kind, payload, progress)

    monkeypatch.setattr(explorer.jobs, "run_job_kind", spy)
    return ran


def run_main(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if captured.out else None), captured.err


def test_cli_views_run_the_job_kinds_the_pages_run(capsys, tmp_path, job_kinds_run):
    out = tmp_path / "rf.npz"
    code, rf, err = run_main(capsys, "view", "resnet18", "rf", "--input", "3,64,64", "--out", str(out), "--json")
    assert code == 0, err
    conv1 = next(r for r in rf["rows"] if r["name"] == "conv1")
    assert conv1["rf"] == [7, 7] and conv1["jump"] == [2, 2]  # a 7×7 conv of stride 2
    names = [r["name"] for r in rf["rows"]]
    with np.load(out) as arrays:
        assert arrays["rf"][names.index("conv1")].tolist() == [7, 7]
        assert arrays["jump"][names.index("layer4")].tolist() == [32, 32]  # 5 halvings: stride 32
    code, erf, err = run_main(capsys, "view", "resnet18", "erf", "--input", "3,64,64", "--layer", "layer1", "--json")
    assert code == 0, err
    assert erf["map_shape"] == [64, 64] and erf["output_hw"] == [16, 16]  # layer1 at stride 4
    assert job_kinds_run == ["receptive_field", "erf"]
    # the `rf` command and the `view rf` sub-command are one computation
    code, rows, err = run_main(capsys, "rf", "resnet18", "--input", "3,64,64", "--json")
    assert rows["rows"] == rf["rows"] and job_kinds_run[-1] == "receptive_field"


@pytest.mark.slow
def test_cli_cam_view_matches_the_cam_command(capsys, job_kinds_run):
    image = str(ROOT / "assets" / "images" / "shapes.png")
    common = ("resnet18", "--input", "3,64,64", "--image", image, "--method", "gradcam", "--class", "3", "--json")
    code, viewed, err = run_main(capsys, "view", "resnet18", "cam", *common[1:])
    assert code == 0, err
    code, cammed, err = run_main(capsys, "cam", *common)
    assert code == 0, err
    assert job_kinds_run == ["cam", "cam"]
    assert viewed["class_index"] == cammed["class_index"] == 3 and viewed["layer"] == cammed["layer"] == "layer4"
    assert viewed["heat_shape"] == cammed["heat_shape"] == [64, 64]
    assert viewed["heat_mean"] == pytest.approx(cammed["heat_mean"], rel=1e-6)
    assert "layers" not in cammed and "weights_report" not in cammed  # the page's extras stay out of the CLI's JSON


def test_cli_view_refuses_flags_the_view_does_not_read(capsys):
    code, _, err = run_main(capsys, "view", "resnet18", "rf", "--method", "gradcam")
    assert code == 2 and err.strip() == "error: the rf view does not read --method; its own flags: none"
    code, _, err = run_main(capsys, "view", "resnet18", "erf", "--image", "x.png", "--layer", "layer1")
    assert code == 2 and "the erf view does not read --image; its own flags: --layer" in err
    code, _, err = run_main(capsys, "view", "resnet18", "fusion", "--input", "3,64,64")
    assert code == 2 and "no learned fusion weights (ASFF or M2Det's SFAM)" in err  # the job's own reason


# --- the Inside page's radio is the registry -------------------------------------------------------------------

# a cheap link per view, and what its page must then show
LINKS = {
    "cam": ({"arch": "resnet18", "input": "3,64,64"}, lambda at: any(" for " in c for c in _image_captions(at))),
    "attention": ({"arch": "deit_tiny_patch16_224"},
                  lambda at: at.selectbox(key="inside_attn_layer").value == "blocks.11.attn"),
    "offsets": ({"arch": "resnet18", "input": "3,64,64", "swaps": "conv:dcn@layer4.*.conv2"},
                lambda at: at.selectbox(key="inside_dcn_layer").value == "layer4.1.conv2"),
    "rf": ({"arch": "resnet18", "input": "3,64,64"}, lambda at: metric(at, "Jump / stride (pixels)") == "32 × 32"),
    "swin": ({"arch": "resnet18", "input": "3,64,64"}, lambda at: "Pick a Swin model" in at.info[0].value),
    "stn": ({"arch": "resnet18", "input": "3,64,64"}, lambda at: any("θ = " in c.value for c in at.caption)),
    "fusion": ({"arch": "resnet18", "input": "3,64,64"}, lambda at: any("Fusion weights belong to" in i.value for i in at.info)),
    "connectivity": ({"arch": "resnet18", "input": "3,64,64"},
                     lambda at: "no block built from grouped convs" in at.info[0].value),
}


def _image_captions(at) -> list[str]:
    """Captions of the images drawn, and titles of the figures drawn over an image (a CAM's overlay)."""
    import json

    captions = [c for node in at._tree if node.type == "image" for c in node.captions]
    return captions + [json.loads(chart.proto.spec)["layout"].get("title", {}).get("text", "")
                       for chart in at.get("plotly_chart")]


def test_every_labelled_view_has_a_link_here():
    assert set(LINKS) == {v.id for v in inside_views()}


@pytest.mark.slow
@pytest.mark.usefixtures("clear_streamlit_caches")
@pytest.mark.parametrize("view", inside_views(), ids=lambda v: v.id)
def test_a_link_to_each_view_opens_it(view):
    query, shows = LINKS[view.id]
    at = open_page("pages/3_Inside.py", view=view.label, **query)  # asserts no exception
    radio = at.radio(key="inside_view")
    assert list(radio.options) == [v.label for v in inside_views()]  # the radio is the registry's labels
    assert radio.value == view.label and not at.warning and not at.error, [e.value for e in at.error]
    assert shows(at)


@pytest.mark.slow
@pytest.mark.usefixtures("clear_streamlit_caches")
def test_the_swap_page_offers_the_registrys_swap_views():
    at = open_page("pages/4_Swap.py", arch="resnet18", swaps="act:relu6@all", input="3,64,64")
    radio = at.radio(key="swap_inside_view")
    assert list(radio.options) == ["nothing", *(v.swap_label for v in swap_views())] and radio.value == "nothing"
