"""`python -m explorer compare --typed`: figures a person types, in the Compare link's own form, join the rows named
as typed and move the Pareto fronts; a bad figure is a one-line refusal with exit status 2."""
import json

import pytest

from explorer.accuracy import TYPED_SOURCE
from explorer.cli import main
from tests.cli_support import run_cli

TOP1 = "ImageNet top-1 (%)"


@pytest.mark.slow
def test_typed_figures_join_the_rows_and_move_the_front():
    # torchvision's weights: resnet18 69.758 % top-1 at 1.814 GMACs, mobilenet_v2 72.154 % at 0.301 GMACs, so
    # mobilenet_v2 alone is on the top-1 front (tests/cli/test_cli.py). Typing 75.0 % for resnet18 puts it there too.
    typed = json.dumps([["resnet18", TOP1, 75.0], ["resnet18", "CIFAR-10 top-1 (%)", 95.5]])
    typed_again = json.dumps([["mobilenet_v2", "COCO val2017 box AP (%)", 22.1]])
    proc = run_cli("compare", "resnet18", "mobilenet_v2", "--typed", typed, "--typed", typed_again, "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    resnet, mobilenet = result["rows"]
    assert resnet["published"][TOP1] == 75.0 and resnet["published_sources"][TOP1] == TYPED_SOURCE
    assert resnet["published_top1"] == 75.0 and resnet["published_source"] == TYPED_SOURCE
    assert resnet["published"]["CIFAR-10 top-1 (%)"] == 95.5
    # the library's own figures stay, with their own source
    assert resnet["published"]["ImageNet top-5 (%)"] == 89.078
    assert resnet["published_sources"]["ImageNet top-5 (%)"] == "torchvision ResNet18_Weights.IMAGENET1K_V1"
    assert mobilenet["published"][TOP1] == 72.154 and mobilenet["published_source"] != TYPED_SOURCE
    assert mobilenet["published_sources"]["COCO val2017 box AP (%)"] == TYPED_SOURCE
    assert result["pareto"][TOP1]["gmacs"] == ["mobilenet_v2", "resnet18"]
    assert result["pareto"]["CIFAR-10 top-1 (%)"]["params_m"] == ["resnet18"]
    assert result["pareto"]["COCO val2017 box AP (%)"]["memory_access_mb"] == ["mobilenet_v2"]


@pytest.mark.parametrize("typed, reason", [
    ([["resnet18", TOP1, 101.0]], "must lie between 0 and 100, got 101"),
    ([["resnet18", "top1<script>", 80.0]], "a metric name is 1 to 60 letters"),
    ([["resnet50", TOP1, 80.0]], "names a model that is not in the comparison set (resnet18)"),
    ([["resnet18", TOP1, "80"]], "must be a finite number"),
    ("not json", "not valid JSON"),
])
def test_a_bad_typed_figure_is_one_line_and_exit_2(typed, reason, capsys):
    text = typed if isinstance(typed, str) else json.dumps(typed)
    # the command line's own entry point, in this process (the subprocess above runs the same code)
    assert main(["compare", "resnet18", "--typed", text, "--json"]) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert out == "" and len(lines) == 1 and lines[0].startswith("error: --typed: ") and reason in lines[0], err
