"""Our counts against torchvision's published weight metadata, for every classification model.

`meta["_ops"]` is in GMACs at the weight's own crop size, given to 3 decimals; `meta["num_params"]`
is exact. Agreement: within 0.5 %, or within the 3-decimal rounding of the published figure.
"""
import pytest
import torchvision.models as tvm

from explorer.cost import analyse
from explorer.spec import ModelSpec

CASES = [
    (name, weight)
    for name in tvm.list_models(module=tvm)
    for weight in tvm.get_model_weights(name)
]


def spec_for(name, weight):
    crop = weight.transforms.keywords["crop_size"]
    options = {}
    if weight.meta.get("categories"):
        options["num_classes"] = len(weight.meta["categories"])
    if name == "googlenet":
        options["aux_logits"] = False  # its weights drop the auxiliary heads
    return ModelSpec(f"torchvision:{name}", input_size=(3, crop, crop), options=tuple(options.items()))


def test_every_classification_model_is_covered():
    assert len({name for name, _ in CASES}) >= 80
    assert len(CASES) >= 110


@pytest.mark.slow
@pytest.mark.parametrize("grad_enabled", [False, True], ids=["no_grad", "grad"])
@pytest.mark.parametrize("name,weight", CASES, ids=[f"{n}-{w.name}" for n, w in CASES])
def test_matches_torchvision_metadata(name, weight, grad_enabled):
    result = analyse(spec_for(name, weight), with_layers=False, grad_enabled=grad_enabled)
    published_gmacs = weight.meta["_ops"]
    ours_gmacs = result["macs"] / 1e9
    assert abs(ours_gmacs - published_gmacs) <= max(0.005 * published_gmacs, 0.0005), (ours_gmacs, published_gmacs)
    assert result["params"] == weight.meta["num_params"]
    assert result["uncounted_ops"] == []
