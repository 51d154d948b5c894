"""Captions a teacher reads beside a figure, checked against that figure: the Catalog's note on where published
figures come from names the table's own column, and the Losses page's claim about inlier gradients is read off
the curves it plots."""
import math
import re

import numpy as np
import pandas as pd
import pytest

from explorer.losses import regression_curves
from tests.page_support import open_page

pytestmark = pytest.mark.usefixtures("clear_streamlit_caches")


def test_the_catalog_caption_names_the_column_that_holds_each_published_source():
    at = open_page("pages/1_Catalog.py")
    caption = next(c.value for c in at.caption if "variants ·" in c.value)
    table = at.dataframe[0].value
    shown, total = map(int, re.match(r"(\d+) of (\d+) variants", caption).groups())
    assert shown == total == len(table)
    # "the paper named in the source column" was wrong: Source is the library a model is built from
    assert "**Published source** column" in caption and "source column" not in caption.replace("Published source", "")
    assert set(table["source"]) == {"torchvision", "timm", "native"}
    sources = table.set_index("id")["published source"]
    assert sources["resnet50"].startswith("torchvision ResNet50_Weights")  # torchvision's weight metadata
    assert sources["skresnet18"].startswith("timm's results table")  # timm's results table
    assert "paper" in sources["lenet5"].lower() or "lecun" in sources["lenet5"].lower()  # the paper's own table
    for origin in ("torchvision's weight metadata", "the paper or its official repository", "timm's results table"):
        assert origin in caption
    # no text cell is null (the grid prints "None"): a row without a published accuracy says so in its Metric
    text_columns = [c for c in table.columns if not pd.api.types.is_numeric_dtype(table[c])]
    assert {"metric", "published source", "input", "family"} <= set(text_columns)
    assert not table[text_columns].isna().any().any()
    unpublished = table[table["published accuracy"].isna()]
    assert len(unpublished) >= 1 and set(unpublished["metric"]) == {"none published"}
    # LeNet-5 by hand: convs 6·28²·25 + 16·10²·150, then 400·120 + 120·84 + 84·10 = 416,520 MACs, which the GMACs
    # column's four decimals show as 0.0004 (three showed 0.000)
    by_hand = 6 * 28**2 * 25 + 16 * 10**2 * 150 + 400 * 120 + 120 * 84 + 84 * 10
    assert round(table.set_index("id")["GMACs"]["lenet5"] * 1e9) == by_hand == 416_520


def _gradient_sentence(at) -> tuple[float, str, float]:
    text = next(m.value for m in at.markdown if "keeps the gradient continuous" in m.value)
    found = re.search(r"at \|x\| = 0\.5, balanced L1's gradient is \*\*([\d.]+)\*\*, (above|not above) smooth L1's "
                      r"\*\*([\d.]+)\*\*", text)
    assert found, text
    return float(found.group(1)), found.group(2), float(found.group(3))


def test_the_balanced_l1_sentence_reads_its_gradients_off_the_plotted_curves():
    at = open_page("pages/8_Losses.py")
    balanced, verdict, smooth = _gradient_sentence(at)
    # the paper's α = 0.5, γ = 1.5: b = e³ − 1, gradient α·ln(b|x| + 1) at 0.5 by hand; smooth L1 (β = 1): |x|/β
    b = math.exp(3) - 1
    assert balanced == round(0.5 * math.log(b * 0.5 + 1), 2) == 1.18
    assert smooth == 0.5 and verdict == "above"
    curves = regression_curves(0.5, 1.5, 1.0)  # what the gradient chart draws
    assert np.interp(0.5, curves["x"], curves["gradient"]["balanced L1"]) == pytest.approx(balanced, abs=0.005)

    # α = 2, γ = 0.5: b = e^0.25 − 1 and the balanced gradient at 0.5 is 2·ln(b/2 + 1) = 0.27, below smooth L1's 0.5
    at.slider(key="loss_alpha").set_value(2.0)
    at.slider(key="loss_gamma").set_value(0.5)
    at.run()
    balanced, verdict, smooth = _gradient_sentence(at)
    assert balanced == round(2 * math.log((math.exp(0.25) - 1) * 0.5 + 1), 2) == 0.27
    assert smooth == 0.5 and verdict == "not above"
