"""PVT (v1): Wang, Xie, Li, Fan, Song, Liang, Lu, Luo & Shao, "Pyramid Vision Transformer", ICCV 2021.

Four stages, each a patch embedding (a conv with kernel = stride = P_i, then LayerNorm), a learned
position embedding and L_i Transformer encoder layers; the stage's tokens are reshaped back to a map
for the next stage (strides 4, 8, 16, 32 of the image). From the paper's Table 1 (224 input):

    stage   P_i  C_i  heads N_i  MLP ratio E_i  SR ratio R_i   L_i Tiny / Small / Medium / Large
    1       4    64   1          8              8              2 / 3 / 3  / 3
    2       2    128  2          8              4              2 / 4 / 4  / 8
    3       2    320  5          4              2              2 / 6 / 18 / 27
    4       2    512  8          4              1              2 / 3 / 3  / 3

Spatial-reduction attention (SRA): the queries are the N = H·W tokens; keys and values come
from the map reduced by a conv with kernel = stride = R_i (then LayerNorm), so attention costs
N·N/R_i² instead of N². Encoder layer: x + SRA(LN(x)), then x + MLP(LN(x)) (GELU, hidden E_i·C_i).

Choices where the paper is silent, after the official code (whai362/PVT, classification/pvt.py):
- q and kv are separate Linear layers with bias (qkv_bias=True); the output projection has a bias;
- the encoder LayerNorms and the final norm use eps = 1e-6; the SRA norm and the patch-embedding
  norms use PyTorch's default eps = 1e-5;
- a class token is prepended in stage 4 only (its position embedding has N + 1 entries); the head
  classifies the final-normed class token;
- position embeddings are learned for the 224 grid and bilinearly resized for other input sizes.

Parameters and multiply-adds at 224 (paper Table 2 in brackets; the paper's GFLOPs are multiply-adds):
    Tiny 13.23 M / 1.93 G (13.2 M / 1.9 G), Small 24.49 M / 3.82 G (24.5 M / 3.8 G),
    Medium 44.21 M / 6.66 G (44.2 M / 6.7 G), Large 61.37 M / 9.81 G (61.4 M / 9.8 G);
the MACs include the attention products QK^T and AV.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.native.registry import register_model

EMBED_DIMS = (64, 128, 320, 512)
NUM_HEADS = (1, 2, 5, 8)
MLP_RATIOS = (8, 8, 4, 4)
SR_RATIOS = (8, 4, 2, 1)
PATCH_SIZES = (4, 2, 2, 2)
DEPTHS = {
    "tiny": (2, 2, 2, 2),
    "small": (3, 4, 6, 3),
    "medium": (3, 4, 18, 3),
    "large": (3, 8, 27, 3),
}


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys and values come from the map shrunk R× per side (SRA)."""

    def __init__(self, dim: int, num_heads: int, sr_ratio: int, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} does not split into {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.sr_ratio = sr_ratio
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias)
        if sr_ratio > 1:
            self.sr = nn.Conv2d(dim, dim, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        b, n, c = x.shape
        q = self.q(x).reshape(b, n, self.num_heads, self.head_dim).transpose(1, 2)
        source = x
        if self.sr_ratio > 1:
            # Only the H·W patch tokens form the map; stage 4 (which has the class token) uses R = 1.
            grid = x.transpose(1, 2).reshape(b, c, height, width)
            source = self.norm(self.sr(grid).flatten(2).transpose(1, 2))
        kv = self.kv(source).reshape(b, -1, 2, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)  # (B, heads, N, N / R²)
        out = (attn @ v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, sr_ratio={self.sr_ratio}"


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, sr_ratio: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SpatialReductionAttention(dim, num_heads, sr_ratio)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLP(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), height, width)
        return x + self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    """Non-overlapping P×P patches → linear projection (a conv with kernel = stride = P) → LayerNorm."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x = self.proj(x)
        height, width = x.shape[-2:]
        return self.norm(x.flatten(2).transpose(1, 2)), height, width


class PVTStage(nn.Module):
    def __init__(self, in_channels: int, dim: int, patch_size: int, grid: int, depth: int, num_heads: int,
                 mlp_ratio: int, sr_ratio: int, cls_token: bool = False):
        super().__init__()
        self.grid = grid  # side of the token grid at the native size (224 / stride)
        self.patch_embed = PatchEmbed(in_channels, dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if cls_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + int(cls_token), dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
        self.blocks = nn.ModuleList(EncoderLayer(dim, num_heads, mlp_ratio, sr_ratio) for _ in range(depth))

    def _patch_pos_embed(self, height: int, width: int) -> torch.Tensor:
        pos = self.pos_embed[:, 1:] if self.cls_token is not None else self.pos_embed
        if (height, width) == (self.grid, self.grid):
            return pos
        grid = pos.reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(height, width), mode="bilinear", align_corners=False)
        return grid.flatten(2).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        x, height, width = self.patch_embed(x)
        pos = self._patch_pos_embed(height, width)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
            pos = torch.cat([self.pos_embed[:, :1], pos], dim=1)
        x = x + pos
        for block in self.blocks:
            x = block(x, height, width)
        return x, height, width


class PyramidVisionTransformer(nn.Module):
    def __init__(self, depths=DEPTHS["small"], num_classes: int = 1000, image_size: int = 224):
        super().__init__()
        if len(depths) != 4:
            raise ValueError(f"PVT has four stages, got depths {depths}")
        stride, in_channels = 1, 3
        for index in range(4):
            stride *= PATCH_SIZES[index]
            stage = PVTStage(in_channels, EMBED_DIMS[index], PATCH_SIZES[index], image_size // stride, depths[index],
                             NUM_HEADS[index], MLP_RATIOS[index], SR_RATIOS[index], cls_token=index == 3)
            self.add_module(f"stage{index + 1}", stage)
            in_channels = EMBED_DIMS[index]
        self.norm = nn.LayerNorm(EMBED_DIMS[-1], eps=1e-6)
        self.head = nn.Linear(EMBED_DIMS[-1], num_classes)

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The pyramid F1..F4 as (B, C_i, H/4·2^-i, W/4·2^-i) maps (F4 without its class token)."""
        maps = []
        for index in range(1, 5):
            tokens, height, width = getattr(self, f"stage{index}")(x)
            patches = tokens[:, 1:] if index == 4 else tokens
            x = patches.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)
            maps.append(x)
        return maps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for index in range(1, 4):
            tokens, height, width = getattr(self, f"stage{index}")(x)
            x = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, height, width)
        tokens, _, _ = self.stage4(x)
        return self.head(self.norm(tokens)[:, 0])  # the class token


def pvt_v1(depths=DEPTHS["small"], num_classes: int = 1000, image_size: int = 224) -> PyramidVisionTransformer:
    return PyramidVisionTransformer(tuple(depths), num_classes=num_classes, image_size=image_size)


def _builder(size: str):
    def build(num_classes: int = 1000, image_size: int = 224) -> PyramidVisionTransformer:
        return pvt_v1(DEPTHS[size], num_classes=num_classes, image_size=image_size)

    build.__name__ = f"pvt_v1_{size}"
    return build


for _size in DEPTHS:  # pvt_v1_tiny / small / medium / large
    register_model(f"pvt_v1_{_size}", _builder(_size), small_input=(3, 32, 32))
