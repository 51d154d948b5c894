"""Predicted memory peaks (explorer.memory, meta device) against torch.cuda.max_memory_allocated on a GPU, for
ten models across families: one no-grad forward, and one steady-state training step with Adam (state already
made, gradients freed by zero_grad(set_to_none=True)), fp32. Prints why it cannot run without CUDA.

The prediction counts storages as PyTorch asks for them; the caching allocator rounds each up (to 512 B, or
2 MB blocks for large ones) and cuDNN adds its workspace, so measured peaks run a few percent above.
"""
import gc
import sys

import torch

from benchmarks.common import print_table
from explorer.memory import floating_outputs, make_optimizer, memory_report
from explorer.models import build_model, example_input
from explorer.spec import ModelSpec

BATCH = 16
MODELS = ["resnet50", "mobilenet_v2", "efficientnet_b0", "densenet121", "vgg16", "regnet_y_400mf",
          "convnext_tiny", "vit_b_16", "swin_t", "bert_base"]


def measured_peak(spec: ModelSpec, train: bool) -> int:
    """Bytes above what was allocated before the model was built, at the peak of one forward or training step."""
    gc.collect()
    torch.cuda.empty_cache()
    base = torch.cuda.memory_allocated()
    model = build_model(spec, device="cuda").train(train)
    x = example_input(spec, "cuda")
    optimizer = make_optimizer("adam", [p for p in model.parameters() if p.requires_grad]) if train else None

    def step():
        outputs = floating_outputs(model(x))
        loss = outputs[0].float().sum()
        for extra in outputs[1:]:
            loss = loss + extra.float().sum()
        del outputs
        loss.backward()
        del loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    try:
        if train:
            for _ in range(2):  # the optimizer's state made, kernels chosen
                step()
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            step()
        else:
            torch.cuda.reset_peak_memory_stats()
            with torch.no_grad():
                out = model(x)
                del out
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    finally:
        model = x = optimizer = None  # released before the cache is emptied
        gc.collect()
        torch.cuda.empty_cache()


def main():
    if not torch.cuda.is_available():
        print("\nGPU memory check skipped: no CUDA device on this machine (run `python -m benchmarks gpu_memory` on a GPU).")
        return
    torch.backends.cudnn.benchmark = False  # no autotuning workspaces beyond the default algorithms'
    rows = []
    for name in MODELS:
        spec = ModelSpec(name, batch=BATCH)
        row = [name]
        for train in (False, True):
            predicted = memory_report(spec, train=train, optimizer="adam", with_layers=False)["peak_bytes"]
            try:
                measured = measured_peak(spec, train)
                row += [f"{predicted / 1e9:.3f}", f"{measured / 1e9:.3f}", f"{measured / predicted:.3f}"]
            except Exception as exc:  # one model's failure must not hide the others'
                row += [f"{predicted / 1e9:.3f}", f"failed: {str(exc).splitlines()[0][:60]}", "—"]
        rows.append(row)
    print_table(
        f"Predicted vs measured peak memory, batch {BATCH}, fp32, Adam, on {torch.cuda.get_device_name(0)} "
        f"(GB = 10⁹ bytes; measured = torch.cuda.max_memory_allocated above the empty baseline)",
        ["model", "inference predicted", "inference measured", "measured / predicted",
         "training predicted", "training measured", "measured / predicted"],
        rows,
    )


if __name__ == "__main__":
    sys.exit(main())
