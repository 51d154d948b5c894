"""UNETR: Hatamizadeh, Tang, Nath, Yang, Myronenko, Landman, Roth & Xu, "UNETR: Transformers for 3D
Medical Image Segmentation", WACV 2022 (Figure 2; the BTCV configuration).

Encoder: a ViT-B over non-overlapping 16³ patches of the 96³ single-channel volume (6³ = 216 tokens):
patch embedding by a Conv3d with kernel = stride = 16, a learned 1-D position embedding, 12 pre-norm
Transformer layers (768-d, 12 heads, MLP 3072 with GELU) and a final LayerNorm.
Decoder (feature size F = 16), as in Figure 2 and the reference implementation (MONAI's UNETR, which
the authors' BTCV code uses):

    z3  (6³, 768)  → deconv ×2 to 12³ → 2 × [deconv ×2, res conv block] → 48³, 2F = 32 channels
    z6  (6³, 768)  → deconv ×2 to 12³ → 1 × [deconv ×2, res conv block] → 24³, 4F = 64 channels
    z9  (6³, 768)  → deconv ×2 to 12³                                     → 12³, 8F = 128 channels
    z12 (6³, 768, after the final norm) → deconv ×2 to 12³, concat z9's map → res block → 128 @ 12³
      → deconv, concat z6's → 64 @ 24³ → deconv, concat z3's → 32 @ 48³
      → deconv, concat the input's conv block (F @ 96³) → 16 @ 96³ → 1×1×1 conv → 14 classes @ 96³.

Blocks (after MONAI's dynunet_block): a "res conv block" is conv3×3×3 → InstanceNorm → LeakyReLU(0.01)
→ conv3×3×3 → InstanceNorm, plus the input (through a 1×1×1 conv + InstanceNorm when the channels
change), then LeakyReLU. The convs and deconvs (kernel = stride = 2) have no bias; the instance norms
have no affine parameters; the output conv has a bias. The ViT's qkv projection has no bias.

The skip taps are the outputs of layers 3, 6 and 9 (1-based, as in the paper); MONAI indexes its list
of layer outputs with 3, 6, 9, i.e. layers 4, 7 and 10; this changes neither parameters nor cost.

Parameters: 92,784,046 (the paper's model-complexity table: 92.58 M, +0.22 %). Multiply-adds at 1×96³:
73.22 G, of which about 26 G are the full-resolution conv blocks (encoder1, decoder2). The paper's
41.19 G "FLOPs" is not reproduced by counting this network's multiply-adds (nor twice them); the paper
does not say how it counted.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from explorer.native.registry import register_model

HIDDEN = 768
MLP_DIM = 3072
NUM_HEADS = 12
NUM_LAYERS = 12
PATCH = 16
FEATURE_SIZE = 16
SKIP_LAYERS = (3, 6, 9)  # 1-based; layer 12's output (after the final norm) feeds the bottom of the decoder


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.out_proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn = ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.out_proj((attn @ v).transpose(1, 2).reshape(b, n, c))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"


class TransformerBlock(nn.Module):
    def __init__(self, dim: int = HIDDEN, mlp_dim: int = MLP_DIM, num_heads: int = NUM_HEADS):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class ViT3D(nn.Module):
    def __init__(self, in_channels: int = 1, image_size: int = 96, patch_size: int = PATCH):
        super().__init__()
        self.grid = image_size // patch_size
        self.patch_embed = nn.Conv3d(in_channels, HIDDEN, kernel_size=patch_size, stride=patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid ** 3, HIDDEN))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.blocks = nn.ModuleList(TransformerBlock() for _ in range(NUM_LAYERS))
        self.norm = nn.LayerNorm(HIDDEN)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (B, 216, 768)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        return self.norm(x), outputs


def deconv(cin: int, cout: int) -> nn.ConvTranspose3d:
    return nn.ConvTranspose3d(cin, cout, kernel_size=2, stride=2, bias=False)


class ResBlock(nn.Module):
    """conv3-IN-LReLU-conv3-IN + residual (1×1×1 conv + IN when the channels change) → LReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, cout, 3, padding=1, bias=False)
        self.norm1 = nn.InstanceNorm3d(cout)
        self.conv2 = nn.Conv3d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = nn.InstanceNorm3d(cout)
        self.lrelu = nn.LeakyReLU(0.01)
        self.downsample = None
        if cin != cout:
            self.downsample = nn.Sequential(nn.Conv3d(cin, cout, 1, bias=False), nn.InstanceNorm3d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.norm2(self.conv2(self.lrelu(self.norm1(self.conv1(x)))))
        residual = x if self.downsample is None else self.downsample(x)
        return self.lrelu(out + residual)


class PrUpBlock(nn.Module):
    """A skip path from a 6³ token map: deconv to 12³, then `num_layers` × (deconv ×2, res conv block)."""

    def __init__(self, cin: int, cout: int, num_layers: int):
        super().__init__()
        self.transp_conv_init = deconv(cin, cout)
        self.blocks = nn.ModuleList(nn.Sequential(deconv(cout, cout), ResBlock(cout, cout)) for _ in range(num_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.transp_conv_init(x)
        for block in self.blocks:
            x = block(x)
        return x


class UpBlock(nn.Module):
    """Decoder stage: deconv ×2, concatenate the skip map, res conv block."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.transp_conv = deconv(cin, cout)
        self.conv_block = ResBlock(2 * cout, cout)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv_block(torch.cat((self.transp_conv(x), skip), dim=1))


class UNETR(nn.Module):
    def __init__(self, in_channels: int = 1, num_classes: int = 14, image_size: int = 96,
                 feature_size: int = FEATURE_SIZE):
        super().__init__()
        if image_size % PATCH:
            raise ValueError(f"image_size {image_size} is not a multiple of the {PATCH}³ patches")
        f = feature_size
        self.vit = ViT3D(in_channels, image_size)
        self.encoder1 = ResBlock(in_channels, f)
        self.encoder2 = PrUpBlock(HIDDEN, 2 * f, num_layers=2)
        self.encoder3 = PrUpBlock(HIDDEN, 4 * f, num_layers=1)
        self.encoder4 = PrUpBlock(HIDDEN, 8 * f, num_layers=0)
        self.decoder5 = UpBlock(HIDDEN, 8 * f)
        self.decoder4 = UpBlock(8 * f, 4 * f)
        self.decoder3 = UpBlock(4 * f, 2 * f)
        self.decoder2 = UpBlock(2 * f, f)
        self.out = nn.Conv3d(f, num_classes, kernel_size=1)

    def _volume(self, tokens: torch.Tensor) -> torch.Tensor:
        g = self.vit.grid
        return tokens.transpose(1, 2).reshape(tokens.shape[0], HIDDEN, g, g, g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z12, hidden = self.vit(x)
        z3, z6, z9 = (self._volume(hidden[i - 1]) for i in SKIP_LAYERS)
        enc1 = self.encoder1(x)  # F @ 96³
        enc2 = self.encoder2(z3)  # 2F @ 48³
        enc3 = self.encoder3(z6)  # 4F @ 24³
        enc4 = self.encoder4(z9)  # 8F @ 12³
        dec = self.decoder5(self._volume(z12), enc4)  # 8F @ 12³
        dec = self.decoder4(dec, enc3)  # 4F @ 24³
        dec = self.decoder3(dec, enc2)  # 2F @ 48³
        dec = self.decoder2(dec, enc1)  # F @ 96³
        return self.out(dec)


@register_model(small_input=(1, 32, 32, 32), small_options={"image_size": 32})
def unetr(in_channels: int = 1, num_classes: int = 14, image_size: int = 96, feature_size: int = FEATURE_SIZE) -> UNETR:
    return UNETR(in_channels, num_classes, image_size, feature_size)
