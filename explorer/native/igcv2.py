"""IGCV2: Xie, Wang, Zhang, Lai, Hong & Qi, "IGCV2: Interleaved Structured Sparse Convolutional Neural
Networks", CVPR 2018 (arXiv 1804.06202). Not built: nothing is registered.

The block is known: a channel-wise 3×3 conv followed by a chain of structured-sparse group 1×1 convs
with permutations between them, meeting the complementary condition (the branch widths multiply to the
channel count, so each output channel reaches each input channel by exactly one path) and, for the
fewest parameters, the balance condition (equal branch widths). The ImageNet network the paper sets
against MobileNetV1 (IGCV2-1.0 / 0.5 / 0.25) is not: its stage widths, chain length L and per-layer
branch widths could not be found in any source available to us (the paper's ImageNet section could not
be read; no official IGCV2 code was released — homles11/IGCV3 holds IGCV3 and MobileNetV2 only). We do
not invent a configuration, so the catalog variant stays unimplemented (tests/native/test_mobile_cnns.py).
The block itself is built: the conv swap `igcv2` (explorer.blocks.convs.InterleavedSparseConv) puts it in
place of any full k×k conv (and, without its channel-wise conv, of a 1×1 one: on timm's mobilenetv1_100,
`conv:igcv2@*.conv_pw` turns every layer into an IGCV2 block at MobileNet's widths, 1.34 M parameters and
91 M MACs against 4.23 M and 569 M), and Inside → Channel connectivity shows its factors and their product.

Published ImageNet figures, for when the configuration turns up (ShuffleNet V2, Ma et al., ECCV 2018,
Table 8, quoting IGCV2): IGCV2-1.0 564 M multiply-adds, top-1 error 29.3 %; IGCV2-0.5 156 M, 34.5 %;
IGCV2-0.25 46 M, 45.1 %.
"""
from __future__ import annotations
