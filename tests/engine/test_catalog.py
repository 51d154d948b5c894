import pytest
import timm
import torchvision.models as tvm

from explorer.catalog import load_catalog, native_input_size, published_figures, resolve
from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.measured import load_measured
from explorer.spec import ModelSpec

catalog = load_catalog()

ROSTER_IDS = [  # ids the roster names for library rows of sections 1-3 and 5
    "alexnet", "vgg16_bn", "googlenet", "inception_v3", "inception_v4", "inception_resnet_v2", "resnet152",
    "resnext50_32x4d", "wide_resnet50_2", "resnest50d", "res2net50_26w_4s", "densenet201", "dpn131",
    "nasnetalarge", "seresnet50", "senet154", "skresnext50_32x4d", "efficientnet_b7", "efficientnet_v2_l",
    "darknet53", "ese_vovnet39b", "hrnet_w18", "legacy_xception", "squeezenet1_1", "mobilenetv1_100",
    "mobilenet_v2", "mobilenet_v3_small", "shufflenet_v2_x2_0", "mnasnet1_3", "fbnetc_100", "fbnetv3_b",
    "ghostnet_100", "vit_h_14", "deit_base_patch16_224", "swin_b", "pvt_v2_b5", "coatnet_0_rw_224",
    "botnet26t_256", "mixer_b16_224", "fasterrcnn_resnet50_fpn", "retinanet_resnet50_fpn", "maskrcnn_resnet50_fpn",
]


def test_roster_library_rows_are_buildable_variants():
    for variant_id in ROSTER_IDS:
        assert variant_id in catalog.variants, variant_id
        assert catalog.variants[variant_id].implemented


def test_every_family_has_a_paper_a_description_and_variants():
    assert len(catalog.families) >= 60
    for family in catalog.families:
        assert family.paper["url"].startswith("http"), family.id
        assert len(family.description) > 40, family.id
        assert family.variants, family.id


def test_every_library_builder_exists():
    tv_names = set(tvm.list_models())
    for variant in catalog.variants.values():
        if variant.library == "torchvision":
            assert variant.name in tv_names, variant.id
        elif variant.library == "timm":
            assert timm.is_model(variant.name), variant.id


def test_native_rows_are_listed_with_their_paper_not_hidden():
    natives = [v for v in catalog.variants.values() if v.library == "native"]
    assert {"lenet5", "darknet19", "spinenet49", "detr_r50", "pvt_v1_tiny"} <= {v.id for v in natives}
    for variant in natives:
        assert catalog.family_of(variant).paper["url"]
        assert variant.input_size, variant.id


def test_native_input_sizes_come_from_the_libraries():
    assert native_input_size(resolve("inception_v3")) == (3, 299, 299)
    assert native_input_size(resolve("efficientnet_b7")) == (3, 600, 600)
    assert native_input_size(resolve("nasnetalarge")) == (3, 331, 331)
    assert native_input_size(resolve("botnet26t_256")) == (3, 256, 256)


def test_published_figures_prefer_torchvision_metadata():
    figures = published_figures(resolve("resnet50"))
    assert figures["params_m"] == pytest.approx(25.557032)
    assert figures["gmacs"] == 4.089
    assert figures["top1"] == 80.858  # IMAGENET1K_V2, the DEFAULT weights
    assert "ResNet50_Weights.IMAGENET1K_V2" in figures["source"]


def test_library_names_open_beyond_the_roster():
    assert resolve("timm:convnext_tiny").builder == "timm:convnext_tiny"
    assert resolve("torchvision:regnet_y_400mf").builder == "torchvision:regnet_y_400mf"
    # A library name that the roster lists opens the catalog entry, with its paper figures.
    assert resolve("timm:seresnet50").family_id == "senet"


NOT_YET_NATIVE = next((v.id for v in catalog.variants.values() if not v.implemented), None)


@pytest.mark.parametrize("arch,match", [("resnet5O", "did you mean resnet50"), ("timm:not_a_model", "timm has no model"),
                                        ("keras:resnet50", "unknown library"),
                                        (NOT_YET_NATIVE, "needs a native implementation")])
def test_unknown_or_unbuildable_architectures(arch, match):
    if arch is None:
        pytest.skip("every catalog variant is implemented")
    with pytest.raises(ExplorerError, match=match):
        analyse(ModelSpec(arch))


def test_measured_costs_cover_every_buildable_variant():
    measured = load_measured()
    for variant in catalog.variants.values():
        if variant.implemented:
            assert variant.id in measured and "macs" in measured[variant.id], variant.id


# Native models are checked against the same table by the contract test over their registry
# (tests/native/test_native_contract.py); here, the library models the catalog builds at their own sizes.
NON_TV_CLASSIFICATION = [v.id for v in catalog.variants.values()
                         if v.implemented and v.library != "native" and (v.library != "torchvision" or v.input_size)]


@pytest.mark.slow
@pytest.mark.parametrize("variant_id", NON_TV_CLASSIFICATION)
def test_measured_costs_match_a_fresh_analysis(variant_id):
    fresh = analyse(ModelSpec(variant_id), with_layers=False)
    stored = load_measured()[variant_id]
    assert stored["params"] == fresh["params"]
    # Detection heads traced on the CPU depend on the (seeded) random weights: still exact.
    assert stored["macs"] == fresh["macs"]
