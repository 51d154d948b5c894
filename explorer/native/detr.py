"""DETR: Carion, Massa, Synnaeve, Usunier, Kirillov & Zagoruyko, "End-to-End Object Detection with
Transformers", ECCV 2020 (the R50 model of the paper's Table 1).

    image (B, 3, H, W) → ResNet-50 up to layer4 (B, 2048, H/32, W/32) → 1×1 conv to d = 256
    → H/32·W/32 tokens + 2-D sine positional encoding → 6 encoder layers
    → 6 decoder layers over 100 learned object queries → final LayerNorm
    → class linear (91 + 1 "no object") and a 3-layer box MLP (ReLU) with sigmoid (cx, cy, w, h).

d = 256 (the seed notes' d = 512 is wrong), 8 heads, FFN 2048 with ReLU, dropout 0.1, post-norm layers
(normalize_before=False, so the encoder has no final norm; the decoder's outputs go through a shared
LayerNorm). As in the official code (facebookresearch/detr, models/transformer.py):
- the positional encoding is added to the queries and keys of every attention, never to the values;
  encoder self-attention: q = k = x + pos; decoder self-attention: q = k = tgt + query_pos;
  cross-attention: q = tgt + query_pos, k = memory + pos, v = memory;
- the decoder input starts at zeros; the object queries are `query_embed` (nn.Embedding(100, 256));
- the sine encoding is the official PositionEmbeddingSine(128, temperature=10000, normalize=True,
  scale=2π) for an image without padding (the mask is all valid, so the cumulative sums are 1..H, 1..W).

Differences from the official model, on purpose:
- the backbone is torchvision's ResNet-50 with plain BatchNorm2d (the official code freezes it as
  FrozenBatchNorm2d, whose affine values are buffers: our count has 53,120 more parameters);
- only the last decoder layer is returned (the auxiliary per-layer outputs are a training device);
- no padding mask: one batch of same-size images.

Parameters: 41,577,888 with plain BN; 41,524,768 without the 53,120 BN affine parameters (frozen in
the official code); the official training script's 41,302,368 ("41 M") counts only the trainable
parameters, which also leaves out the frozen conv1 and layer1 (9,408 + 212,992 weights).

Cost: the paper's 86 GFLOPs (Table 1) are Detectron2/fvcore flop counts (one multiply-add = one flop)
averaged over the first 100 COCO val2017 images at their test size (shorter side 800, longer ≤ 1333).
The engine's multiply-adds: 60.17 G at the catalog's 800×800, 81.17 G at 800×1066 (a 4:3 image) and
91.07 G at 800×1199 (3:2), which bracket the paper's average.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

from explorer.native.registry import register_model

D_MODEL = 256
NUM_HEADS = 8
FFN_DIM = 2048
DROPOUT = 0.1
NUM_QUERIES = 100
NUM_CLASSES = 91  # COCO category ids 1..90 plus the unused 0; "no object" is one more logit


class Backbone(nn.Module):
    """torchvision ResNet-50 (weights=None, plain BatchNorm) up to layer4: stride 32, 2048 channels."""

    def __init__(self):
        super().__init__()
        resnet = torchvision.models.resnet50(weights=None)
        self.conv1, self.bn1, self.relu, self.maxpool = resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4
        self.num_channels = 2048

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class PositionEmbeddingSine(nn.Module):
    """The paper's 2-D sine encoding: 128 channels for y then 128 for x, positions normalised to (0, 2π]."""

    def __init__(self, num_pos_feats: int = D_MODEL // 2, temperature: float = 10000.0, scale: float = 2 * math.pi):
        super().__init__()
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        eps = 1e-6
        # The official code takes cumulative sums of the not-padded mask; without padding they are 1..H, 1..W.
        y_embed = torch.arange(1, h + 1, dtype=x.dtype, device=x.device) / (h + eps) * self.scale
        x_embed = torch.arange(1, w + 1, dtype=x.dtype, device=x.device) / (w + eps) * self.scale
        dim_t = torch.arange(self.num_pos_feats, dtype=x.dtype, device=x.device)
        dim_t = self.temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / self.num_pos_feats)
        pos_y = y_embed[:, None] / dim_t  # (H, F)
        pos_x = x_embed[:, None] / dim_t  # (W, F)
        pos_y = torch.stack((pos_y[:, 0::2].sin(), pos_y[:, 1::2].cos()), dim=2).flatten(1)
        pos_x = torch.stack((pos_x[:, 0::2].sin(), pos_x[:, 1::2].cos()), dim=2).flatten(1)
        pos = torch.cat((pos_y[:, None, :].expand(h, w, -1), pos_x[None, :, :].expand(h, w, -1)), dim=2)
        return pos.permute(2, 0, 1).unsqueeze(0).expand(b, -1, -1, -1)  # (B, 2F, H, W)

    def extra_repr(self) -> str:
        return f"num_pos_feats={self.num_pos_feats}, temperature={self.temperature:g}, normalize=True"


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int = D_MODEL, nhead: int = NUM_HEADS, dim_feedforward: int = FFN_DIM,
                 dropout: float = DROPOUT):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.activation = nn.ReLU()

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        q = k = src + pos
        src = self.norm1(src + self.dropout1(self.self_attn(q, k, value=src, need_weights=False)[0]))
        src2 = self.linear2(self.dropout(self.activation(self.linear1(src))))
        return self.norm2(src + self.dropout2(src2))


class DecoderLayer(nn.Module):
    def __init__(self, d_model: int = D_MODEL, nhead: int = NUM_HEADS, dim_feedforward: int = FFN_DIM,
                 dropout: float = DROPOUT):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.cross_attn = nn.MultiheadAttention(d_model, nhead, dropout=dropout)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)
        self.dropout1 = nn.Dropout(dropout)
        self.dropout2 = nn.Dropout(dropout)
        self.dropout3 = nn.Dropout(dropout)
        self.activation = nn.ReLU()

    def forward(self, tgt: torch.Tensor, memory: torch.Tensor, pos: torch.Tensor,
                query_pos: torch.Tensor) -> torch.Tensor:
        q = k = tgt + query_pos
        tgt = self.norm1(tgt + self.dropout1(self.self_attn(q, k, value=tgt, need_weights=False)[0]))
        tgt2 = self.cross_attn(tgt + query_pos, memory + pos, value=memory, need_weights=False)[0]
        tgt = self.norm2(tgt + self.dropout2(tgt2))
        tgt2 = self.linear2(self.dropout(self.activation(self.linear1(tgt))))
        return self.norm3(tgt + self.dropout3(tgt2))


class Encoder(nn.Module):
    def __init__(self, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(EncoderLayer() for _ in range(num_layers))

    def forward(self, src: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            src = layer(src, pos)
        return src  # post-norm: no final encoder norm


class Decoder(nn.Module):
    def __init__(self, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(DecoderLayer() for _ in range(num_layers))
        self.norm = nn.LayerNorm(D_MODEL)

    def forward(self, tgt, memory, pos, query_pos) -> torch.Tensor:
        for layer in self.layers:
            tgt = layer(tgt, memory, pos, query_pos)
        return self.norm(tgt)


class Transformer(nn.Module):
    """Sequence-first (L, B, d) tensors, as the official code and nn.MultiheadAttention's default."""

    def __init__(self, num_encoder_layers: int = 6, num_decoder_layers: int = 6):
        super().__init__()
        self.encoder = Encoder(num_encoder_layers)
        self.decoder = Decoder(num_decoder_layers)

    def forward(self, src: torch.Tensor, query_embed: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        b = src.shape[0]
        src = src.flatten(2).permute(2, 0, 1)  # (HW, B, d)
        pos = pos.flatten(2).permute(2, 0, 1)
        query_pos = query_embed.unsqueeze(1).expand(-1, b, -1)  # (N, B, d)
        tgt = torch.zeros_like(query_pos)
        memory = self.encoder(src, pos)
        return self.decoder(tgt, memory, pos, query_pos).transpose(0, 1)  # (B, N, d)


class MLP(nn.Module):
    """The box head: Linear-ReLU-Linear-ReLU-Linear."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        dims = [input_dim] + [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip(dims, dims[1:] + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return x


class DETR(nn.Module):
    def __init__(self, num_classes: int = NUM_CLASSES, num_queries: int = NUM_QUERIES,
                 num_encoder_layers: int = 6, num_decoder_layers: int = 6):
        super().__init__()
        self.backbone = Backbone()
        self.position_embedding = PositionEmbeddingSine(D_MODEL // 2)
        self.input_proj = nn.Conv2d(self.backbone.num_channels, D_MODEL, kernel_size=1)
        self.transformer = Transformer(num_encoder_layers, num_decoder_layers)
        self.query_embed = nn.Embedding(num_queries, D_MODEL)
        self.class_embed = nn.Linear(D_MODEL, num_classes + 1)
        self.bbox_embed = MLP(D_MODEL, D_MODEL, 4, 3)

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.backbone(images)
        pos = self.position_embedding(features)
        hs = self.transformer(self.input_proj(features), self.query_embed.weight, pos)  # (B, N, d)
        return {"pred_logits": self.class_embed(hs), "pred_boxes": self.bbox_embed(hs).sigmoid()}


@register_model(small_input=(3, 64, 64))
def detr_r50(num_classes: int = NUM_CLASSES, num_queries: int = NUM_QUERIES) -> DETR:
    return DETR(num_classes=num_classes, num_queries=num_queries)
