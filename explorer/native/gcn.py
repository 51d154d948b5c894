"""GCN: Kipf & Welling, "Semi-Supervised Classification with Graph Convolutional Networks", ICLR 2017.

Two graph convolutions, Z = Â · ReLU(Â X W⁰ + b⁰) W¹ + b¹, with Â = D̃^-1/2 (A + I) D̃^-1/2 (self-loops,
symmetric normalisation, D̃ the degrees of A + I); 16 hidden units, dropout 0.5 on each layer's input;
Cora: 2708 nodes, 1433 bag-of-words features, 7 classes (paper Table 1: 5429 edges).

THE GRAPH IS SYNTHETIC, WITH CORA'S SIZE: the adjacency is a fixed buffer built at construction from a
seeded random graph of 2708 nodes and 5429 distinct undirected edges (no self-loops before + I), not
Cora's citation graph (no data is downloaded). It changes neither the parameters nor the MACs of this
dense formulation. (Cora's cites file has 5429 lines; de-duplicated, the undirected graph has 5278 edges.)

The model takes ONE tensor, the node features (batch, N, F) of a batch of copies of the graph, and
returns logits (batch, N, classes) (the softmax belongs to the loss, cross-entropy on labelled nodes).

Costs, dense products (the adjacency is a dense N×N matrix here, so Â·H is a dense matmul):
    X W⁰: N·F·16, Â (X W⁰): N²·16, H W¹: N·16·7, Â (H W¹): N²·7
    = 62,089,024 + 117,332,224 + 303,296 + 51,332,848 = 231,057,392 MACs per graph.
Kipf's implementation multiplies a SPARSE Â (nnz = 2·5429 + 2708 = 13,566) and sparse X, so the two
propagations cost only nnz·16 + nnz·7 = 312,018 MACs there; the dense figure is what is traced here.
Parameters: W⁰ 1433·16 + b⁰ 16 + W¹ 16·7 + b¹ 7 = 23,063 (biases as in Kipf's PyTorch port, pygcn;
the TensorFlow original tkipf/gcn builds its layers without bias: 23,040). Weights are Glorot-uniform
as in the paper, biases zero.
"""
from __future__ import annotations

import random

import torch
import torch.nn as nn

from explorer.native.registry import register_model

CORA_NODES = 2708
CORA_FEATURES = 1433
CORA_CLASSES = 7
CORA_EDGES = 5429  # paper Table 1


def random_edges(num_nodes: int, num_edges: int, seed: int = 0) -> list[tuple[int, int]]:
    """`num_edges` distinct undirected edges (i < j) between `num_nodes` nodes, from a seeded generator."""
    if num_edges > num_nodes * (num_nodes - 1) // 2:
        raise ValueError(f"a simple graph on {num_nodes} nodes has fewer than {num_edges} edges")
    rng = random.Random(seed)
    edges: set[tuple[int, int]] = set()
    while len(edges) < num_edges:
        i, j = rng.randrange(num_nodes), rng.randrange(num_nodes)
        if i != j:
            edges.add((min(i, j), max(i, j)))
    return sorted(edges)


def normalized_adjacency(num_nodes: int, edges: list[tuple[int, int]]) -> torch.Tensor:
    """Dense D̃^-1/2 (A + I) D̃^-1/2 of an undirected graph (on the default device; meta gives shapes only)."""
    index = torch.tensor(edges, dtype=torch.long).reshape(-1, 2)
    a = torch.eye(num_nodes)
    a[index[:, 0], index[:, 1]] = 1.0
    a[index[:, 1], index[:, 0]] = 1.0
    d_inv_sqrt = a.sum(dim=1).rsqrt()
    return d_inv_sqrt[:, None] * a * d_inv_sqrt[None, :]


class GraphConvolution(nn.Module):
    """Â (H W) + b: transform every node's features, then average over its normalised neighbourhood."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        nn.init.xavier_uniform_(self.weight)

    def forward(self, h: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        out = torch.matmul(adjacency, torch.matmul(h, self.weight))  # (N, N) @ (B, N, out)
        return out + self.bias if self.bias is not None else out


class GCN(nn.Module):
    """Two-layer GCN on a fixed graph (buffer ``adjacency`` = Â). forward(x): (B, N, F) -> logits (B, N, classes)."""

    def __init__(self, num_nodes: int = CORA_NODES, in_features: int = CORA_FEATURES, hidden: int = 16,
                 num_classes: int = CORA_CLASSES, num_edges: int = CORA_EDGES, dropout: float = 0.5,
                 bias: bool = True, seed: int = 0):
        super().__init__()
        self.register_buffer("adjacency", normalized_adjacency(num_nodes, random_edges(num_nodes, num_edges, seed)))
        self.dropout1 = nn.Dropout(dropout)
        self.gc1 = GraphConvolution(in_features, hidden, bias)
        self.relu = nn.ReLU()
        self.dropout2 = nn.Dropout(dropout)
        self.gc2 = GraphConvolution(hidden, num_classes, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(self.gc1(self.dropout1(x), self.adjacency))
        return self.gc2(self.dropout2(h), self.adjacency)


@register_model
def gcn(**kwargs) -> GCN:
    """Kipf & Welling's 2-layer GCN at Cora's size (2708 nodes, 1433 features, 16 hidden, 7 classes), synthetic graph."""
    return GCN(**kwargs)
