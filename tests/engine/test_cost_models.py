"""The engine on whole models: roll-ups, batch scaling, input handling."""
import pytest

from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.layers import rolled_up, subtree
from explorer.spec import ModelSpec


@pytest.fixture(scope="module")
def resnet18():
    return analyse(ModelSpec("resnet18"))


def test_resnet18_hand_count_of_the_stem(resnet18):
    conv1 = next(r for r in resnet18["layers"] if r["name"] == "conv1")
    # 7x7 conv, 3 -> 64, stride 2, 224 -> 112.
    assert conv1["macs"] == 112 * 112 * 64 * 3 * 49
    assert conv1["params"] == 64 * 3 * 49
    assert conv1["output_shape"] == [1, 64, 112, 112]
    fc = next(r for r in resnet18["layers"] if r["name"] == "fc")
    assert fc["macs"] == 512 * 1000 and fc["params"] == 512 * 1000 + 1000


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_rolled_up_rows_add_up_to_the_total(resnet18, depth):
    rows = rolled_up(resnet18["layers"], depth)
    assert sum(r["macs"] for r in rows) == resnet18["macs"]
    assert sum(r["params"] for r in rows) == resnet18["params"]


def test_a_block_includes_its_children(resnet18):
    block = subtree(resnet18["layers"], "layer1.0")
    parent = block[0]
    children = [r for r in block if r["depth"] == parent["depth"] + 1]
    assert parent["macs"] == sum(r["macs"] for r in children)
    # The residual addition and final ReLU run in the block itself: memory traffic beyond its children's.
    assert parent["memory_access_bytes"] > sum(r["memory_access_bytes"] for r in children)


def test_batch_scales_compute_not_parameters():
    one = analyse(ModelSpec("resnet18"), with_layers=False)
    four = analyse(ModelSpec("resnet18", batch=4), with_layers=False)
    assert four["macs"] == 4 * one["macs"]
    assert four["params"] == one["params"]
    assert four["input_shape"] == [4, 3, 224, 224]


def test_cnn_cost_grows_with_the_square_of_the_side():
    small = analyse(ModelSpec("vgg11", input_size=(3, 112, 112)), with_layers=False)
    large = analyse(ModelSpec("vgg11", input_size=(3, 224, 224)), with_layers=False)
    fc = 512 * 7 * 7 * 4096 + 4096 * 4096 + 4096 * 1000  # the adaptive pool keeps the head the same
    assert large["macs"] - fc == 4 * (small["macs"] - fc)


def test_vit_cost_quadratic_term_in_tokens():
    a = analyse(ModelSpec("vit_b_16", input_size=(3, 224, 224)), with_layers=False)
    assert a["macs"] == pytest.approx(17.5638e9, rel=1e-4)
    b = analyse(ModelSpec("vit_b_16", input_size=(3, 384, 384)), with_layers=False)
    assert b["macs"] / 1e9 == pytest.approx(55.484, abs=0.0005)  # torchvision's IMAGENET1K_SWAG_E2E_V1 _ops


@pytest.mark.parametrize(
    "spec,message",
    [
        (ModelSpec("vit_b_16", input_size=(3, 100, 100)), "cannot take input"),
        (ModelSpec("timm:vit_base_patch16_224", input_size=(3, 100, 100)), "cannot take input"),
        (ModelSpec("resnet50", input_size=(1, 224, 224)), "cannot take input"),
        (ModelSpec("resnet50", options=(("no_such_option", 1),)), "cannot build"),
    ],
)
def test_inputs_a_model_cannot_take_are_one_line_errors(spec, message):
    with pytest.raises(ExplorerError, match=message) as info:
        analyse(spec)
    assert "\n" not in str(info.value)


@pytest.mark.slow
def test_detection_models_are_costed_and_name_their_uncounted_ops():
    result = analyse(ModelSpec("fasterrcnn_resnet50_fpn", input_size=(3, 320, 320)), with_layers=False)
    assert result["traced_on"] == "cpu"
    uncounted = {u["op"] for u in result["uncounted_ops"]}
    assert "torchvision.nms.default" in uncounted
    # torchvision publishes 41,755,286 for the trained model, whose backbone uses FrozenBatchNorm2d
    # (weight and bias as buffers). Untrained, it builds plain BatchNorm2d: their weights and biases
    # are parameters, exactly the BN parameters of a ResNet-50.
    resnet50 = analyse(ModelSpec("resnet50"))
    bn_params = sum(r["params"] for r in resnet50["layers"] if r["type"] == "BatchNorm2d")
    assert result["params"] == 41_755_286 + bn_params


@pytest.mark.parametrize("side", [224, 448])
def test_attention_layers_match_the_swin_papers_formulas(side):
    """The engine's count of one attention layer equals Ω(MSA) = 4NC² + 2N²C (ViT, N = patches + CLS)
    and Ω(W-MSA) = 4hwC² + 2M²hwC (Swin-T stage 1, C = 96, M = 7)."""
    from explorer.compare import attention_formula_sweep

    rows = [r for r in attention_formula_sweep([side]) if r["measured_macs"] is not None]
    assert len(rows) == 2
    for row in rows:
        assert row["measured_macs"] == row["formula_macs"], row
    vit, swin = rows
    assert vit["tokens"] == (side // 16) ** 2 + 1 and swin["tokens"] == (side // 4) ** 2


def test_containers_that_are_never_called_roll_up_their_members():
    """M2Det's TUMs sit in a ModuleList that is indexed, never called: its row sums the TUMs."""
    rows = {r["name"]: r for r in analyse(ModelSpec("m2det320"))["layers"]}
    tums = rows["neck.tums"]
    assert tums["calls"] == 0 and tums["output_shape"] is None
    members = [r for name, r in rows.items() if name.count(".") == 2 and name.startswith("neck.tums.")]
    assert len(members) == 8
    assert tums["macs"] == sum(r["macs"] for r in members) > 0
    assert tums["memory_access_bytes"] == sum(r["memory_access_bytes"] for r in members)
