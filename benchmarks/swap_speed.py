"""A swap of one block in resnet50 must update the cost figures within 1.5 s on the 2-core CPU:
the time from a new swapped spec to its full cost report (per-layer rows included), uncached."""
from benchmarks.common import print_table, timed
from explorer.cost import analyse
from explorer.spec import ModelSpec

SWAPS = ["attn:se@layer3.0", "attn:eca@all", "conv:dcn@layer4.0.conv2", "conv:doconv@layer2.*.conv2", "preset:dcnv2",
         "act:hswish@all"]


def main():
    analyse(ModelSpec("resnet50"))  # imports and the base model, as on a page already open
    rows = []
    for swap in SWAPS:
        first, median = timed(lambda: analyse(ModelSpec("resnet50", swaps=(swap,))), repeats=3)  # noqa: B023 - called at once
        rows.append([swap, f"{first:.2f}", f"{median:.2f}", "1.5"])
    print_table("resnet50: full cost report of a swapped model, per-layer rows included (seconds; such reports are never cached)",
                ["swap", "first", "median of 3", "target"], rows)


if __name__ == "__main__":
    main()
