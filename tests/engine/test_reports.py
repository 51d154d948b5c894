"""The result dicts' keys are the TypedDicts of explorer.reports: real reports, key for key, both ways."""
from typing import get_type_hints

import pytest

from explorer.compare import compare_row, compare_set
from explorer.cost import analyse
from explorer.latency import BenchSettings, bench
from explorer.reports import (BenchResult, BenchRow, CompareRow, CompareSet, CostReport, LayerRow, LayerTime, OpRow,
                              SweepRow, UncountedOp)
from explorer.spec import ModelSpec

SMALL = ModelSpec("resnet18", input_size=(3, 32, 32))


def keys(typed_dict) -> set[str]:
    return set(get_type_hints(typed_dict))


def test_a_cost_report_has_exactly_the_typed_keys():
    report = analyse(SMALL)
    assert set(report) == keys(CostReport)
    assert len(report["layers"]) == len(list(report["layers"])) > 60  # resnet18: 68 modules, the root included
    for row in report["layers"]:
        assert set(row) == keys(LayerRow), row["name"]
    for row in report["ops"]:
        assert set(row) == keys(OpRow), row["op"]
    totals = analyse(SMALL, with_layers=False)
    assert set(totals) == CostReport.__required_keys__ == keys(CostReport) - {"layers"}


@pytest.mark.slow
def test_uncounted_op_rows_have_the_typed_keys():
    # SSDlite's post-processing (NMS, top-k, sort) has no cost formula: listed by name and count
    report = analyse(ModelSpec("ssdlite320_mobilenet_v3_large", input_size=(3, 64, 64)), with_layers=False)
    assert report["traced_on"] == "cpu"
    assert {"torchvision.nms.default", "aten.topk.default"} <= {row["op"] for row in report["uncounted_ops"]}
    for row in report["uncounted_ops"]:
        assert set(row) == keys(UncountedOp), row["op"]


@pytest.mark.slow
def test_a_bench_result_has_exactly_the_typed_keys():
    result = bench(SMALL, BenchSettings(device="cpu", batches=(1, 2), min_runs=2, min_seconds=0.0, max_seconds=1.0,
                                        per_layer=True))
    assert result["error"] is None and [r["batch"] for r in result["results"]] == [1, 2]
    assert set(result) == keys(BenchResult)
    for row in result["results"]:
        assert set(row) == keys(BenchRow)
    assert result["layers"] and all(set(row) == keys(LayerTime) for row in result["layers"])


def test_compare_rows_and_sets_have_the_typed_keys():
    row = compare_row(ModelSpec("resnet18"))
    assert set(row) == CompareRow.__required_keys__
    assert row["gmacs"] == pytest.approx(1.814, abs=5e-4)  # torchvision's published 1.81 GMACs for ResNet-18
    result = compare_set([SMALL], sides=[32, 64])
    assert set(result) == keys(CompareSet)
    assert [set(r) for r in result["rows"]] == [CompareRow.__required_keys__]
    assert [r["side"] for r in result["sweep"]] == [32, 64]
    assert all(set(r) == SweepRow.__required_keys__ for r in result["sweep"])
