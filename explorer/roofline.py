"""Peak compute and memory bandwidth of a device, for the roofline: a table of known GPUs,
and a measured fallback (one large matmul — and on a CPU a large conv, whichever is faster — and one large copy)
for anything else."""
from __future__ import annotations

import time

import torch

# Dense (no sparsity) peak TFLOP/s by dtype and memory bandwidth in GB/s, from the vendors'
# data sheets. fp32 is the non-tensor-core rate; "tf32" is the tensor-core rate for fp32 matmuls.
KNOWN_GPUS = {
    "H200": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4, "bandwidth_gb_s": 4800},
    "H100 SXM": {"fp32": 67.0, "tf32": 494.7, "bf16": 989.4, "fp16": 989.4, "bandwidth_gb_s": 3350},
    "H100 PCIe": {"fp32": 51.2, "tf32": 378.0, "bf16": 756.0, "fp16": 756.0, "bandwidth_gb_s": 2000},
    "A100-SXM4-80GB": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0, "bandwidth_gb_s": 2039},
    "A100-SXM4-40GB": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0, "bandwidth_gb_s": 1555},
    "A100-PCIE-40GB": {"fp32": 19.5, "tf32": 156.0, "bf16": 312.0, "fp16": 312.0, "bandwidth_gb_s": 1555},
    "L40S": {"fp32": 91.6, "tf32": 183.0, "bf16": 362.0, "fp16": 362.0, "bandwidth_gb_s": 864},
    "L4": {"fp32": 30.3, "tf32": 60.0, "bf16": 121.0, "fp16": 121.0, "bandwidth_gb_s": 300},
    "A10": {"fp32": 31.2, "tf32": 62.5, "bf16": 125.0, "fp16": 125.0, "bandwidth_gb_s": 600},
    "RTX 4090": {"fp32": 82.6, "tf32": 82.6, "bf16": 165.2, "fp16": 165.2, "bandwidth_gb_s": 1008},
    "V100": {"fp32": 15.7, "tf32": 15.7, "bf16": 15.7, "fp16": 125.0, "bandwidth_gb_s": 900},
    "T4": {"fp32": 8.1, "tf32": 8.1, "bf16": 8.1, "fp16": 65.0, "bandwidth_gb_s": 320},
}


def known_peaks(device_name: str) -> dict | None:
    """Match a CUDA device name ("NVIDIA H100 80GB HBM3") against the table."""
    name = device_name.upper()
    if "H100" in name:
        return KNOWN_GPUS["H100 PCIe" if "PCIE" in name else "H100 SXM"]
    for key, peaks in KNOWN_GPUS.items():
        if key.upper() in name:
            return peaks
    return None


_MEASURED: dict[tuple[str, str], dict] = {}  # (device, dtype) → peaks, measured once per server
_MEASURED_AGAIN: set[tuple[str, str]] = set()  # pairs already re-measured after a reading below an achieved rate


def measured_peaks(device: str, dtype: str, again: bool = False) -> dict:
    """Achievable peaks of `device` at `dtype`: a matmul (on a CPU also a conv) and a large copy, measured
    once per server; `again` measures that one pair anew (the first reading was taken on a busy device)."""
    from explorer.device_queue import queue_for

    key = (device, dtype)
    if again or key not in _MEASURED:
        with queue_for(device).hold():  # alone on the device, like a latency run
            _MEASURED[key] = _measure(device, dtype)
    return _MEASURED[key]


def _measure(device: str, dtype: str) -> dict:
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    if device == "cuda":
        n = 8192
    else:  # a CPU's speed varies a thousandfold across dtypes (fp16 has no fast kernels on most): grow to ~0.1 s
        n = 256
        while n < 2048:
            probe = _square(n, torch_dtype, device)
            if _once(lambda: probe @ probe) > 0.02:  # noqa: B023 - called at once, in this iteration
                break
            n *= 2
    a, b = _square(n, torch_dtype, device), _square(n, torch_dtype, device)
    seconds = _best_of(lambda: a @ b, device)
    tflops = 2 * n**3 / seconds / 1e12
    if device == "cpu":  # oneDNN's convs can beat the CPU's matmul (AVX-512 vs the BLAS): the faster one is the roof
        tflops = max(tflops, _conv_tflops(torch_dtype))
    elements = (256 if device == "cuda" else 32) * 2**20
    src = torch.empty(elements, device=device, dtype=torch.float32)
    dst = torch.empty_like(src)
    copy_seconds = _best_of(lambda: dst.copy_(src), device)
    bandwidth = 2 * src.numel() * src.element_size() / copy_seconds / 1e9  # read + write
    return {dtype: tflops, "bandwidth_gb_s": bandwidth, "measured": True}


def _square(n: int, torch_dtype, device: str) -> torch.Tensor:
    return torch.randn(n, n, device=device).to(torch_dtype)


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _conv_tflops(torch_dtype) -> float:
    """A ResNet-style 3×3 conv, 256 → 256 channels, channels-last, grown from 1×7×7 to 8×56×56 (29.6 GFLOP)
    while one call stays under 0.05 s: a dtype without fast kernels (fp16 on most CPUs) stops small."""
    conv = torch.nn.Conv2d(256, 256, 3, padding=1, bias=False).to(torch_dtype).to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for batch, side in ((1, 7), (1, 14), (1, 28), (1, 56), (2, 56), (4, 56), (8, 56)):
            x = torch.randn(batch, 256, side, side).to(torch_dtype).contiguous(memory_format=torch.channels_last)
            if _once(lambda: conv(x)) > 0.05:  # noqa: B023 - called at once, in this iteration
                break
        seconds = _best_of(lambda: conv(x), "cpu", repeats=3)
    return 2 * batch * 256 * 256 * 9 * side * side / seconds / 1e12


def _best_of(fn, device: str, repeats: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t)
    return best


def peaks_for(device: str, dtype: str, achieved_tflops: float = 0.0) -> dict:
    """{'tflops', 'bandwidth_gb_s', 'source'} for the roofline of `device` at `dtype`.

    A measured peak below a rate a model has just achieved (`achieved_tflops`) was taken while the device
    was busy: it is measured again once, and the source says if it is still below."""
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        table = known_peaks(name)
        if table:
            key = "tf32" if dtype == "fp32" and torch.backends.cuda.matmul.allow_tf32 else dtype
            return {"tflops": table[key], "bandwidth_gb_s": table["bandwidth_gb_s"],
                    "source": f"data sheet of {name} ({key})"}
    measured = measured_peaks(device, dtype)
    if measured[dtype] < achieved_tflops and (device, dtype) not in _MEASURED_AGAIN:
        _MEASURED_AGAIN.add((device, dtype))  # once per pair: a busy device may stay busy
        measured = measured_peaks(device, dtype, again=True)
    source = f"measured on this {device}: {dtype} matmul{' or conv' if device == 'cpu' else ''} and a large copy"
    if measured[dtype] < achieved_tflops:
        source += "; still below a model's achieved rate, so the device is busy: take the roof as a lower bound"
    return {"tflops": measured[dtype], "bandwidth_gb_s": measured["bandwidth_gb_s"], "source": source}


def ridge_point(peaks: dict) -> float:
    """Arithmetic intensity (FLOPs/byte) where the roof turns from memory- to compute-bound."""
    return peaks["tflops"] * 1e12 / (peaks["bandwidth_gb_s"] * 1e9)
