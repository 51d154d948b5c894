import pytest

from explorer.errors import ExplorerError
from explorer.spec import ModelSpec, parse_size


def test_round_trips_through_dict_key_and_url():
    spec = ModelSpec("vit_b_16", input_size=(3, 384, 384), batch=8, options=(("num_classes", 10), ("dropout", 0.1)))
    assert ModelSpec.from_dict(spec.to_dict()) == spec
    assert ModelSpec.from_query(spec.to_query()) == spec
    # Option order does not change the cache key.
    other = ModelSpec("vit_b_16", input_size=(3, 384, 384), batch=8, options=(("dropout", 0.1), ("num_classes", 10)))
    assert other.key() == spec.key()


def test_url_of_a_default_spec_is_short():
    assert ModelSpec("resnet50").to_query() == {"arch": "resnet50"}


@pytest.mark.parametrize("text,expected", [("3,224,224", (3, 224, 224)), ("3x32x32", (3, 32, 32)), (" 1 , 28 ", (1, 28))])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"arch": "resnet50; rm -rf /"},
        {"arch": "resnet50", "input_size": (3, 0, 224)},
        {"arch": "resnet50", "input_size": (3, 100000, 224)},
        {"arch": "resnet50", "batch": 0},
        {"arch": "resnet50", "options": (("__class__", 1),)},
        {"arch": "resnet50", "options": (("x", [1, 2]),)},
    ],
)
def test_rejects_bad_specs_with_a_message(kwargs):
    with pytest.raises(ExplorerError):
        ModelSpec(**kwargs)


def test_bad_url_values_are_explorer_errors():
    with pytest.raises(ExplorerError, match="integers"):
        ModelSpec.from_query({"arch": "resnet50", "input": "big"})
    with pytest.raises(ExplorerError, match="JSON"):
        ModelSpec.from_query({"arch": "resnet50", "options": "{oops"})
