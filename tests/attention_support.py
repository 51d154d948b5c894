"""Helpers shared by the attention-view tests."""
import torch


def timm_unfused_softmax(model, x, attns) -> list[torch.Tensor]:
    """timm's own unfused path (fused_attn=False) of ViT or Swin attention: the softmax output is
    attn_drop's input."""
    flags = [a.fused_attn for a in attns]
    ref, handles = [], []
    try:
        for a in attns:
            a.fused_attn = False
            handles.append(a.attn_drop.register_forward_pre_hook(lambda m, i: ref.append(i[0].clone())))
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for a, f in zip(attns, flags):
            a.fused_attn = f
    return ref
