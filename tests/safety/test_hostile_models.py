"""One request must not take the machine: builder options are allowlisted and bounded, every real build is
sized on the meta device first, swap options have types and ranges, and inputs a model would silently crop
are refused."""
import math

import pytest

from explorer import models
from explorer.blocks import describe
from explorer.blocks.options import BUILDER_OPTIONS, MAX_CLASSES, SWAP_OPTIONS
from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.models import MAX_BUILD_BYTES, build_model, native_options, real_build_bytes
from explorer.native import NATIVE_BUILDERS
from explorer.spec import ModelSpec
from explorer.swaps import parse_swap

TIMM_SWIN_T = "timm:swin_tiny_patch4_window7_224"
RESNET50_PARAMS = 25_557_032
RESNET50_BN_CHANNELS = 26_560  # 53 BatchNorms
RESNET50_BN_LAYERS = 53


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


@pytest.fixture
def no_builder_runs(monkeypatch):
    """Any library or native builder that runs fails the test: refusals must come first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("a builder ran for an option that should have been refused")

    monkeypatch.setattr(models, "_construct", forbidden)


# --- 1. builder options: an allowlist per library, each with a type and range -------------------------------

@pytest.mark.parametrize(("arch", "name", "value", "allowed_for"), [
    ("timm:resnet18", "checkpoint_path", "/etc/hostname", "allowed for timm models: num_classes"),
    ("timm:resnet18", "pretrained", True, "allowed for timm models: num_classes"),
    ("timm:resnet18", "pretrained_cfg", "resnet50", "allowed for timm models: num_classes"),
    ("torchvision:fasterrcnn_resnet50_fpn", "weights_backbone", "DEFAULT",
     "allowed for torchvision detection models: num_classes, min_size"),
    ("resnet50", "pretrained", True, "allowed for torchvision classification models: num_classes"),
    ("resnet50", "weights", "DEFAULT", "allowed for torchvision classification models: num_classes"),
    ("resnet50", "norm_layer", "x", "allowed for torchvision classification models: num_classes"),
    ("lenet5", "foo", 3, "allowed for lenet5: num_classes, in_channels"),
])
def test_options_outside_the_allowlist_are_refused_by_name(no_builder_runs, arch, name, value, allowed_for):
    with pytest.raises(ExplorerError, match=f"option '{name}' is not allowed; {allowed_for}"):
        build_model(ModelSpec(arch, options=((name, value),)), "meta")


@pytest.mark.parametrize(("arch", "name", "value", "requirement"), [
    ("resnet50", "num_classes", 1_000_000, f"a whole-number num_classes from 1 to {MAX_CLASSES}"),
    ("resnet50", "num_classes", 0, f"a whole-number num_classes from 1 to {MAX_CLASSES}"),
    ("resnet50", "num_classes", float("nan"), f"a whole-number num_classes from 1 to {MAX_CLASSES}"),
    ("resnet50", "num_classes", 10.0, f"a whole-number num_classes from 1 to {MAX_CLASSES}"),
    ("resnet50", "num_classes", True, f"a whole-number num_classes from 1 to {MAX_CLASSES}"),
    ("resnet50", "num_classes", "10", f"a whole-number num_classes from 1 to {MAX_CLASSES}"),
    ("vit_b_16", "dropout", float("inf"), "a finite number dropout from 0 to 1"),
    ("vit_b_16", "dropout", 1.5, "a finite number dropout from 0 to 1"),
    ("vit_b_16", "image_size", 100_000, "a whole-number image_size from 1 to 4096"),
    ("timm:resnet18", "in_chans", 4096, "a whole-number in_chans from 1 to 64"),
    ("timm:resnet18", "global_pool", "evil", 'global_pool= one of "", avg, max'),
    ("timm:resnet18", "drop_rate", float("-inf"), "a finite number drop_rate from 0 to 1"),
    ("lenet5", "num_classes", -1, f"a whole-number num_classes from 1 to {MAX_CLASSES}"),
    ("gcn", "num_edges", 10 ** 9, "a whole-number num_edges from 0 to 200000"),
    ("bert_base", "num_layers", 10_000, "a whole-number num_layers from 1 to 128"),
])
def test_option_values_are_typed_and_bounded(no_builder_runs, arch, name, value, requirement):
    with pytest.raises(ExplorerError, match=f"option {name}=.* is refused: it needs {requirement}"):
        build_model(ModelSpec(arch, options=((name, value),)), "meta")


@pytest.mark.parametrize(("arch", "options", "params"), [
    # the fc layer is 2048·C + C: 1000 → 10 classes takes away 2,049,000 − 20,490 parameters
    ("resnet50", {"num_classes": 10}, RESNET50_PARAMS - 2048 * 1000 - 1000 + 2048 * 10 + 10),
    ("timm:resnet18", {"num_classes": MAX_CLASSES}, 11_689_512 - 513 * 1000 + 513 * MAX_CLASSES),
    ("lenet5", {"num_classes": 10}, 61_706),  # LeCun et al. 1998's C1…F6 with a 10-way output
])
def test_allowed_options_still_build_with_the_hand_counted_parameters(arch, options, params):
    assert analyse(ModelSpec(arch, options=tuple(options.items())), with_layers=False)["params"] == params


def test_every_native_option_has_a_declared_range_that_takes_its_default():
    import functools
    import inspect

    missing = {name: [o for o in native_options(name) if o not in BUILDER_OPTIONS] for name in NATIVE_BUILDERS}
    assert {name: opts for name, opts in missing.items() if opts} == {}
    for name, builder in NATIVE_BUILDERS.items():
        function = builder.func if isinstance(builder, functools.partial) else builder
        for parameter in inspect.signature(function).parameters.values():
            if parameter.name in native_options(name) and parameter.default is not parameter.empty:
                assert BUILDER_OPTIONS[parameter.name].accepts(parameter.default), (name, parameter.name)


# --- 2. every real build is sized on the meta device first ----------------------------------------------------

def test_build_size_estimate_is_the_real_builds_bytes():
    """ResNet-50: fp32 parameters, BN running mean and variance (fp32) and a step counter (int64) per BN."""
    spec = ModelSpec("resnet50")
    weights, inputs = real_build_bytes(spec)
    assert weights == RESNET50_PARAMS * 4 + RESNET50_BN_CHANNELS * 2 * 4 + RESNET50_BN_LAYERS * 8 == 102_441_032
    assert inputs == 3 * 224 * 224 * 4
    model = build_model(spec, "cpu")
    real = {id(t): t for t in (*model.parameters(), *model.buffers())}
    assert sum(t.numel() * t.element_size() for t in real.values()) == weights


@pytest.mark.parametrize(("limit", "refused"), [(102_441_032 + 602_112 - 1, True), (102_441_032 + 602_112, False)])
def test_the_limit_is_read_from_the_environment(monkeypatch, limit, refused):
    monkeypatch.setenv("EXPLORER_MAX_BUILD_BYTES", str(limit))
    if refused:
        with pytest.raises(ExplorerError, match=r"about 0\.102 GB and its input 0\.000602 GB, over the limit of "
                                                r"0\.103 GB for a real build"):
            build_model(ModelSpec("resnet50"), "cpu")
    else:
        assert sum(p.numel() for p in build_model(ModelSpec("resnet50"), "cpu").parameters()) == RESNET50_PARAMS


@pytest.mark.parametrize(("request_", "limit", "estimate"), [
    # 64 experts in every conv of a ResNet-50: ~6 GB of weights (a meta cost analysis is fine, a real build is not)
    (lambda: build_model(ModelSpec("resnet50", swaps=("conv:condconv(num_experts=64)@all",)), "cpu"), None, "6.02 GB"),
    # detection post-processing is data-dependent: the cost analysis falls back to a CPU build, sized first
    (lambda: analyse(ModelSpec("torchvision:ssdlite320_mobilenet_v3_large"), with_layers=False), 1_000_000,
     "0.0139 GB"),
], ids=["condconv_64_cpu", "detection_cost_fallback"])
@pytest.mark.slow
def test_real_builds_above_the_limit_are_refused_with_the_estimate(monkeypatch, request_, limit, estimate):
    if limit is not None:
        monkeypatch.setenv("EXPLORER_MAX_BUILD_BYTES", str(limit))
    with pytest.raises(ExplorerError, match=f"too large to build here: its parameters and buffers take about {estimate}"
                                            f".*over the limit of {(limit or MAX_BUILD_BYTES) / 1e9:.3g} GB"):
        request_()


def test_a_meta_cost_analysis_builds_nothing_real_so_the_limit_does_not_apply(monkeypatch):
    monkeypatch.setenv("EXPLORER_MAX_BUILD_BYTES", "1000")
    report = analyse(ModelSpec("resnet50", swaps=("conv:condconv(num_experts=64)@all",)), with_layers=False)
    assert report["traced_on"] == "meta" and report["params"] > 1_500_000_000


def test_a_builder_that_computes_while_building_takes_no_memory_on_meta():
    """torchvision's RegNet reads its widths with .tolist(), so it cannot build under torch.device('meta'); it used
    to be built on the CPU in full (RegNetY-128GF: 2.6 GB) just to be costed."""
    build_model(ModelSpec("resnet18"), "meta")
    before = _status_mb("VmRSS")
    peak_known = _reset_peak_rss()
    model = build_model(ModelSpec("torchvision:regnet_y_128gf"), "meta")
    assert sum(p.numel() for p in model.parameters()) == 644_812_894  # torchvision's published num_params
    assert all(p.device.type == "meta" for p in model.parameters())
    assert _status_mb("VmRSS") - before < 200
    if peak_known:
        assert _status_mb("VmHWM") - before < 200
    cpu = build_model(ModelSpec("torchvision:regnet_y_400mf"), "cpu")
    meta = build_model(ModelSpec("torchvision:regnet_y_400mf"), "meta")
    assert [(n, p.shape) for n, p in cpu.named_parameters()] == [(n, p.shape) for n, p in meta.named_parameters()]


# --- 3. swap options have types and ranges ------------------------------------------------------------------

@pytest.mark.parametrize(("swap", "shown", "requirement"), [
    ("attn:se(reduction=NaN)@all", "reduction=nan", "se needs a whole-number reduction from 1 to 1024"),
    ("attn:se(reduction=1e400)@all", "reduction=inf", "se needs a whole-number reduction from 1 to 1024"),
    ("attn:se(reduction=-4)@all", "reduction=-4", "se needs a whole-number reduction from 1 to 1024"),
    ("attn:se(reduction=0)@all", "reduction=0", "se needs a whole-number reduction from 1 to 1024"),
    ('attn:se(reduction="abc")@all', "reduction='abc'", "se needs a whole-number reduction from 1 to 1024"),
    ("attn:se(reduction=abc)@all", "reduction='abc'", "se needs a whole-number reduction from 1 to 1024"),
    ("attn:se(reduction=true)@all", "reduction=true", "se needs a whole-number reduction from 1 to 1024"),
    ("attn:se(reduction=8.5)@all", "reduction=8.5", "se needs a whole-number reduction from 1 to 1024"),
    ("attn:cbam(spatial_kernel=4)@all", "spatial_kernel=4", "cbam needs an odd whole-number spatial_kernel from 1 to 31"),
    ("attn:gc(ratio=0)@all", "ratio=0", "gc needs a finite number ratio from 0.015625 to 4"),
    ("attn:gc(fusion=cat)@all", "fusion='cat'", "gc needs fusion= one of add, mul"),
    ("conv:igcv2(chain=1)@layer1.0.conv1", "chain=1", "igcv2 needs a whole-number chain from 2 to 8"),
    ("conv:condconv(num_experts=100000)@all", "num_experts=100000", "condconv needs a whole-number num_experts from 1 to 64"),
    ("conv:shuffle(groups=1e9)@all", "groups=1000000000.0", "shuffle needs a whole-number groups from 1 to 1024"),
    ("conv:dwsep(norm=evil)@all", "norm='evil'", "dwsep needs norm= one of bn, gn, ln, none"),
    ("norm:bn(eps=0)@all", "eps=0", "bn needs a finite number eps from 1e-12 to 1"),
    ("front:stn(hidden=0)@input", "hidden=0", "stn needs a whole-number hidden from 1 to 1024"),
    ("tfm:window(size=3000)@all", "size=3000", "window needs a whole-number size from 1 to 1024"),
    ("tfm:shift(size=-1)@all", "size=-1", "shift needs a whole-number size from 0 to 1023"),
    ("tfm:patch(size=NaN)@all", "size=nan", "patch needs a whole-number size from 1 to 4096"),
])
def test_swap_option_values_are_refused_with_their_range(swap, shown, requirement):
    with pytest.raises(ExplorerError, match=f"option {shown} is refused: {requirement}"):
        parse_swap(swap)
    with pytest.raises(ExplorerError, match=f"option {shown} is refused"):
        analyse(ModelSpec("resnet50", swaps=(swap,)), with_layers=False)


def test_every_block_option_has_a_range_that_takes_its_default():
    tables = {"attention": "attn", "convs": "conv", "activations": "act", "norms": "norm"}
    for registry, blocks in describe().items():
        for block, info in blocks.items():
            rules = SWAP_OPTIONS[(tables[registry], block)]
            for name, default in info["options"].items():
                if isinstance(default, tuple):  # sk's dilations, psconv's pattern: not writable in a swap
                    assert name not in rules
                    continue
                assert name in rules, (registry, block, name)
                assert rules[name].accepts(default), (registry, block, name, default)


@pytest.mark.parametrize(("arch", "swap", "size", "message"), [
    ("swin_t", "tfm:window(size=57)@all", None, r"window size 57 is larger than the 56×56 token map of features\.1\.0\.attn"),
    ("swin_t", "tfm:window(size=8)@all", None, r"larger than the 7×7 token map of features\.7\.0\.attn .*at most 7"),
    ("swin_t", "tfm:window(size=9)@all", (3, 256, 256), r"larger than the 8×8 token map .*at input 256×256: 64×64, "
                                                         r"32×32, 16×16, 8×8"),
    (TIMM_SWIN_T, "tfm:window(size=8)@all", None, r"larger than the 7×7 token map of layers\.3\.blocks\.0\.attn"),
    (TIMM_SWIN_T, "tfm:window(size=100)@layers.0.*", None, r"larger than the 56×56 token map of layers\.0\.blocks\.0"),
])
def test_a_window_larger_than_the_token_map_is_refused(arch, swap, size, message):
    with pytest.raises(ExplorerError, match=message):
        analyse(ModelSpec(arch, swaps=(swap,), input_size=size), with_layers=False)


def test_a_window_that_fits_every_matched_stage_is_costed_by_the_w_msa_formula():
    """Windows of 14 on the first three stages of swin_t at 224 (maps 56, 28, 14): each block's QKᵀ and AV
    cost 2·hw·M²·C MACs, so 14 instead of 7 adds 2·hw·(14² − 7²)·C per block."""
    stages = "features.1.*,features.3.*,features.5.*"
    swapped = analyse(ModelSpec("swin_t", swaps=(f"tfm:window(size=14)@{stages}",)), with_layers=False)
    plain = analyse(ModelSpec("swin_t"), with_layers=False)
    tokens_times_c = sum(s * s * c * n for s, c, n in zip((56, 28, 14), (96, 192, 384), (2, 2, 6)))
    assert swapped["macs"] - plain["macs"] == 2 * (14 * 14 - 7 * 7) * tokens_times_c


# --- 4. inputs torchvision's Swin would silently crop ---------------------------------------------------------

@pytest.mark.parametrize(("arch", "size", "works"), [
    ("swin_t", (3, 225, 225), "224×224 or 256×256"),
    ("swin_t", (3, 228, 224), "224×224 or 256×224"),
    ("torchvision:swin_v2_t", (3, 250, 250), "224×224 or 256×256"),
    ("torchvision:swin_b", (3, 20, 20), "32×32"),
])
def test_torchvision_swin_refuses_sides_that_are_not_multiples_of_32(arch, size, works):
    with pytest.raises(ExplorerError, match=f"multiples of 32 .*sizes that work: {works}$"):
        analyse(ModelSpec(arch, input_size=size), with_layers=False)


@pytest.mark.parametrize(("arch", "size"), [("swin_t", (3, 256, 256)), ("swin_t", (3, 224, 320))])
def test_torchvision_swin_takes_multiples_of_32_and_counts_every_patch(arch, size):
    """The patch embedding (a 4×4/4 conv, 3→96) sees every pixel: (H/4)·(W/4)·96·48 MACs."""
    report = analyse(ModelSpec(arch, input_size=size))
    embed = next(row for row in report["layers"] if row["name"] == "features.0.0")
    assert embed["macs"] == (size[1] // 4) * (size[2] // 4) * 96 * 3 * 4 * 4


def test_torchvision_vit_refuses_sides_that_are_not_whole_patches():
    with pytest.raises(ExplorerError, match="cannot take input 3×225×225: Input shape indivisible by patch size"):
        analyse(ModelSpec("vit_b_16", input_size=(3, 225, 225)), with_layers=False)


# --- memory: refusing takes no memory ------------------------------------------------------------------------

@pytest.mark.parametrize("request_", [
    lambda: build_model(ModelSpec("resnet50", options=(("num_classes", 1_000_000),)), "cpu"),
    lambda: analyse(ModelSpec("resnet50", options=(("num_classes", 1_000_000),)), with_layers=False),
    lambda: analyse(ModelSpec("swin_t", swaps=("tfm:window(size=100000)@all",)), with_layers=False),
    lambda: build_model(ModelSpec("swin_t", swaps=("tfm:window(size=100000)@all",)), "meta"),
    lambda: analyse(ModelSpec("swin_t", swaps=("tfm:window(size=1000)@all",), input_size=(3, 4096, 4096)),
                    with_layers=False),
    lambda: build_model(ModelSpec("resnet50", swaps=("conv:condconv(num_experts=64)@all",)), "cpu"),
], ids=["num_classes_cpu", "num_classes_cost", "window_100000_cost", "window_100000_meta", "window_1000_at_4096",
        "condconv_64_cpu"])
def test_refusing_a_huge_request_grows_memory_by_less_than_200_mb(request_):
    build_model(ModelSpec("resnet18"), "meta")  # imports and first-use allocations are not the request's
    before = _status_mb("VmRSS")
    peak_known = _reset_peak_rss()
    with pytest.raises(ExplorerError):
        request_()
    assert _status_mb("VmRSS") - before < 200
    if peak_known:
        assert _status_mb("VmHWM") - before < 200
    assert math.isfinite(before)
