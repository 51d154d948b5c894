"""Sequence models written from their papers: the Transformer (2017), BERT (2019) and Seq2Seq LSTMs (2014).

Every model's forward takes ONE LongTensor of token ids, shape (batch, L), and needs no data-dependent
Python branching, so it traces on PyTorch's meta device.

Transformer — Vaswani et al., "Attention Is All You Need", NeurIPS 2017 (base model of Table 3):
    N = 6 encoder and 6 decoder layers, d_model = 512, h = 8 heads (d_k = d_v = 64), d_ff = 2048 (ReLU),
    post-LN sub-layers (LayerNorm(x + Sublayer(x))), dropout 0.1 on every sub-layer output and on the
    embedding + position sums, sinusoidal positions PE(pos, 2i) = sin(pos / 10000^(2i/d)),
    PE(pos, 2i+1) = cos(...). Section 3.4: ONE weight matrix is shared by the source embedding, the
    target embedding and the pre-softmax linear layer (the WMT'14 En-De model uses a shared
    source-target byte-pair vocabulary of about 37000 tokens), and the embeddings are multiplied by
    sqrt(d_model). The layers are torch.nn.TransformerEncoderLayer / TransformerDecoderLayer
    (batch_first); the stacks have no final LayerNorm (post-LN, as in the paper; torch.nn.Transformer
    would add one per stack).
    Parameters: embedding 37000·512 = 18,944,000 (counted once: it is also the output projection);
    encoder layer 4·(512²+512) + (512·2048+2048) + (2048·512+512) + 2·2·512 = 3,152,384, ×6 = 18,914,304;
    decoder layer 8·(512²+512) + 2,099,712 + 3·2·512 = 4,204,032, ×6 = 25,224,192;
    total 63,082,496. The paper's Table 3 says 65M: it gives the vocabulary only as "about 37000"
    (65M would need about 40.7k rows) and does not break its count down; 63.08M is 3.0 % below it.
    An untied model (separate source, target and output matrices) would have 100.97M.

BERT — Devlin et al., NAACL 2019; sizes from google-research/bert's README and bert_config.json:
    BASE L=12, H=768, A=12; LARGE L=24, H=1024, A=16; FFN 4H with GELU; post-LN with eps 1e-12;
    WordPiece vocabulary 30522 (the paper says "30,000"; the released uncased vocab.txt has 30522
    entries); 512 learned positions; 2 segment (token-type) embeddings; embedding LayerNorm; a pooler
    tanh(W h_[CLS] + b). The pre-training heads (masked LM, next sentence) are not part of it, as in
    the README's counts. Forward takes only the ids, so every token is in segment 0. Returns
    (sequence_output (B, L, H), pooled_output (B, H)).
    Parameters (BASE): embeddings 30522·768 + 512·768 + 2·768 + 2·768 = 23,837,184; layer
    4·(768²+768) + (768·3072+3072) + (3072·768+768) + 2·2·768 = 7,087,872, ×12 = 85,054,464;
    pooler 768²+768 = 590,592; total 109,482,240 (README: 110M). LARGE: 335,141,888 (README: 340M).

Seq2Seq — Sutskever, Vinyals & Le, "Sequence to Sequence Learning with Neural Networks", NeurIPS 2014:
    two different LSTMs (encoder, decoder), each 4 layers of 1000 cells; 1000-d word embeddings; input
    vocabulary 160,000, output vocabulary 80,000 with a full ("naive") softmax over it; the source
    sentence is read reversed; all parameters uniform in [-0.08, 0.08]. The paper: "The resulting LSTM
    has 384M parameters of which 64M are pure recurrent connections (32M for the encoder LSTM and 32M
    for the decoder LSTM)". 384M is EVERYTHING: source embeddings 160M + target embeddings 80M +
    encoder LSTM 32M + decoder LSTM 32M + softmax weights 80M. Here: 384,144,000, the extra 144,000
    being biases (PyTorch's LSTM keeps two bias vectors per layer: 2·4 layers·8000 = 64,000; softmax
    bias 80,000).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.native.registry import register_model

BOS_ID = 0  # the id fed to a decoder as its first (start-of-sentence) token under teacher forcing


def shift_right(ids: torch.Tensor, bos_id: int = BOS_ID) -> torch.Tensor:
    """Teacher-forcing decoder input: the start token, then every id but the last."""
    return F.pad(ids[:, :-1], (1, 0), value=bos_id)


# --- Transformer ------------------------------------------------------------------------------

def sinusoidal_positions(length: int, dim: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """PE(pos, 2i) = sin(pos / 10000^(2i/dim)), PE(pos, 2i+1) = cos(pos / 10000^(2i/dim)); shape (length, dim)."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = position * inv_freq  # (length, dim/2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1).to(dtype)


class TransformerEmbedding(nn.Module):
    """Token embedding × sqrt(d_model) + sinusoidal positions, then dropout (Vaswani et al. §3.4, §3.5, §5.4).

    One instance serves both the source and the target sequence (shared vocabulary and weights).
    """

    def __init__(self, vocab_size: int, d_model: int, dropout: float):
        super().__init__()
        self.tokens = nn.Embedding(vocab_size, d_model)
        self.dropout = nn.Dropout(dropout)
        self.scale = math.sqrt(d_model)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.tokens(ids) * self.scale
        x = x + sinusoidal_positions(ids.shape[1], x.shape[-1], device=x.device, dtype=x.dtype)
        return self.dropout(x)


class TiedOutputProjection(nn.Module):
    """The pre-softmax linear layer, sharing its weight with the token embedding (no parameter of its own).

    The embedding is held as a plain reference, not a submodule, so the shared matrix is counted once;
    moving the model (``.to("meta")``) replaces the embedding's parameter and this layer follows.
    """

    def __init__(self, embedding: nn.Embedding):
        super().__init__()
        self.__dict__["embedding"] = embedding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.embedding.weight)


class Transformer(nn.Module):
    """Encoder-decoder Transformer (Vaswani et al. 2017) with one shared embedding / output matrix.

    ``forward(src_ids)`` takes ONE LongTensor (batch, L) of token ids. It encodes ``src_ids`` and, with
    teacher forcing, decodes the SAME ids shifted right by one (start token ``BOS_ID`` first) under the
    causal mask, so that position t sees target tokens < t only; it returns the logits (batch, L, vocab).
    Source and target share the length L. ``encode`` and ``decode`` are the two halves.
    """

    def __init__(self, vocab_size: int = 37000, d_model: int = 512, num_heads: int = 8, d_ff: int = 2048,
                 num_layers: int = 6, dropout: float = 0.1):
        super().__init__()
        self.embed = TransformerEmbedding(vocab_size, d_model, dropout)
        encoder_layer = nn.TransformerEncoderLayer(d_model, num_heads, d_ff, dropout, activation="relu",
                                                   batch_first=True, norm_first=False)
        decoder_layer = nn.TransformerDecoderLayer(d_model, num_heads, d_ff, dropout, activation="relu",
                                                   batch_first=True, norm_first=False)
        self.encoder = nn.TransformerEncoder(encoder_layer, num_layers, norm=None, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(decoder_layer, num_layers, norm=None)
        self.generator = TiedOutputProjection(self.embed.tokens)
        self._reset_parameters(d_model)

    def _reset_parameters(self, d_model: int):
        # As torch.nn.Transformer: Xavier-uniform matrices in the stacks (their deep-copied layers would
        # otherwise start identical); the shared embedding ~ N(0, d_model^-1/2), as tensor2tensor does.
        for p in list(self.encoder.parameters()) + list(self.decoder.parameters()):
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.normal_(self.embed.tokens.weight, std=d_model ** -0.5)

    def encode(self, src_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.embed(src_ids))

    def decode(self, memory: torch.Tensor, tgt_ids: torch.Tensor) -> torch.Tensor:
        """Logits for every target position given the encoder output; causal self-attention."""
        y = self.embed(tgt_ids)
        mask = nn.Transformer.generate_square_subsequent_mask(tgt_ids.shape[1], device=y.device, dtype=y.dtype)
        return self.generator(self.decoder(y, memory, tgt_mask=mask, tgt_is_causal=True))

    def forward(self, src_ids: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(src_ids), shift_right(src_ids))


@register_model(small_input=(16,))
def transformer_base(**kwargs) -> Transformer:
    """Vaswani et al. base model: N=6, d_model=512, h=8, d_ff=2048, dropout 0.1, shared 37000 vocabulary."""
    return Transformer(**kwargs)


# --- BERT -------------------------------------------------------------------------------------

class BertEmbeddings(nn.Module):
    """WordPiece + learned position + segment embeddings, summed, then LayerNorm and dropout."""

    def __init__(self, vocab_size: int, hidden: int, max_positions: int, type_vocab_size: int, dropout: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden)
        self.position_embeddings = nn.Embedding(max_positions, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden)
        self.norm = nn.LayerNorm(hidden, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        length = ids.shape[1]
        max_positions = self.position_embeddings.num_embeddings
        if length > max_positions:
            raise ValueError(f"BERT has {max_positions} learned positions; got {length} tokens")
        x = self.word_embeddings(ids)
        # Positions 0..L-1 and segment 0 for every token: rows of the tables, added by broadcasting.
        x = x + self.position_embeddings.weight[:length] + self.token_type_embeddings.weight[0]
        return self.dropout(self.norm(x))


class BertPooler(nn.Module):
    """tanh(W h_[CLS] + b): the sequence summary that classification heads read."""

    def __init__(self, hidden: int):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.activation = nn.Tanh()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.activation(self.dense(hidden_states[:, 0]))


class Bert(nn.Module):
    """BERT encoder + pooler. ``forward(ids)``: ids (batch, L) -> (sequence_output (batch, L, H), pooled (batch, H)).

    Segment ids are all 0 (one sentence) and there is no padding mask: the forward takes only the ids.
    """

    def __init__(self, num_layers: int, hidden: int, num_heads: int, vocab_size: int = 30522,
                 max_positions: int = 512, type_vocab_size: int = 2, intermediate: int | None = None,
                 dropout: float = 0.1):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab_size, hidden, max_positions, type_vocab_size, dropout)
        layer = nn.TransformerEncoderLayer(hidden, num_heads, intermediate or 4 * hidden, dropout,
                                           activation="gelu", layer_norm_eps=1e-12, batch_first=True,
                                           norm_first=False)
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=None, enable_nested_tensor=False)
        self.pooler = BertPooler(hidden)
        self._reset_parameters()

    def _reset_parameters(self, std: float = 0.02):
        # BERT's initializer_range: N(0, 0.02) weights, zero biases, LayerNorm (1, 0).
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.MultiheadAttention):
                nn.init.normal_(module.in_proj_weight, std=std)
                nn.init.zeros_(module.in_proj_bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sequence_output = self.encoder(self.embeddings(ids))
        return sequence_output, self.pooler(sequence_output)


@register_model(small_input=(16,))
def bert_base(**kwargs) -> Bert:
    """BERT-Base: L=12, H=768, A=12 (109.48M parameters with the pooler)."""
    return Bert(**{"num_layers": 12, "hidden": 768, "num_heads": 12, **kwargs})


@register_model(small_input=(16,), small_options={"num_layers": 2})  # 24 layers take seconds just to build
def bert_large(**kwargs) -> Bert:
    """BERT-Large: L=24, H=1024, A=16 (335.14M parameters with the pooler)."""
    return Bert(**{"num_layers": 24, "hidden": 1024, "num_heads": 16, **kwargs})


# --- Seq2Seq ----------------------------------------------------------------------------------

class Seq2SeqLSTM(nn.Module):
    """Sutskever et al. (2014): a deep LSTM encoder reads the reversed source; its final (h, c) of every
    layer starts a second deep LSTM that decodes the target, followed by a full softmax layer.

    ``forward(src_ids)`` takes ONE LongTensor (batch, L) of source ids (< src_vocab). The encoder reads
    them reversed; the decoder is run with teacher forcing on the SAME ids, clipped to the output
    vocabulary (ids >= tgt_vocab become tgt_vocab - 1, standing in for the unknown-word token) and
    shifted right by one (start token ``BOS_ID`` first). Returns logits (batch, L, tgt_vocab).
    """

    def __init__(self, src_vocab: int = 160_000, tgt_vocab: int = 80_000, embed_dim: int = 1000,
                 hidden: int = 1000, num_layers: int = 4, init_range: float = 0.08):
        super().__init__()
        self.tgt_vocab = tgt_vocab
        self.src_embedding = nn.Embedding(src_vocab, embed_dim)
        self.tgt_embedding = nn.Embedding(tgt_vocab, embed_dim)
        self.encoder = nn.LSTM(embed_dim, hidden, num_layers, batch_first=True)
        self.decoder = nn.LSTM(embed_dim, hidden, num_layers, batch_first=True)
        self.output = nn.Linear(hidden, tgt_vocab)
        for p in self.parameters():
            nn.init.uniform_(p, -init_range, init_range)

    def forward(self, src_ids: torch.Tensor) -> torch.Tensor:
        _, state = self.encoder(self.src_embedding(src_ids.flip(1)))
        tgt_in = shift_right(src_ids.clamp(max=self.tgt_vocab - 1))
        out, _ = self.decoder(self.tgt_embedding(tgt_in), state)
        return self.output(out)


# The vocabularies hold 320M of the 384M parameters: the small forward keeps the LSTMs and shrinks them.
@register_model(small_input=(16,), small_options={"src_vocab": 1000, "tgt_vocab": 1000})
def seq2seq_lstm(**kwargs) -> Seq2SeqLSTM:
    """4-layer LSTMs of 1000 cells, 1000-d embeddings, vocabularies 160,000 in / 80,000 out (384.14M parameters)."""
    return Seq2SeqLSTM(**kwargs)
