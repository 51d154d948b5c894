"""The compute backend: takes model specs (plain dicts) and returns plain data.

Pages and the CLI never hold a live module across this boundary, so the same calls can
later be served by a remote machine. The default backend runs in this process.
"""
from __future__ import annotations

from typing import Any

from explorer.devices import best_device, device_info  # noqa: F401  (the façade's callers read them here too)
from explorer.errors import ExplorerError
from explorer.spec import ModelSpec


class LocalBackend:
    """Runs every job in this process, on CUDA when available."""

    def cost(self, spec: dict[str, Any], with_layers: bool = True) -> dict[str, Any]:
        from explorer.cost import analyse

        return analyse(ModelSpec.from_dict(spec), with_layers=with_layers)

    def graph(self, spec: dict[str, Any]) -> dict[str, Any]:
        """The architecture graph (explorer.graph.build_graph): the cost report's rows with the data flow, from
        the same single trace as `cost` (meta device; the CPU where the forward depends on data)."""
        from explorer.graph import build_graph

        return build_graph(ModelSpec.from_dict(spec))

    def fvcore(self, spec: dict[str, Any]) -> dict[str, Any]:
        from explorer.second_opinion import fvcore_count

        return fvcore_count(ModelSpec.from_dict(spec))

    def bench(self, spec: dict[str, Any], settings: dict[str, Any], on_wait=None, progress=None) -> dict[str, Any]:
        """Latency sweep; waits in the device's queue (`on_wait(position)` while waiting) and reports its timed runs
        (`progress(text)`, explorer.latency.BenchProgress)."""
        from explorer.latency import BenchSettings, bench

        settings = dict(settings)
        settings["batches"] = tuple(settings.get("batches", (1,)))
        return bench(ModelSpec.from_dict(spec), BenchSettings(**settings), on_wait=on_wait, progress=progress)

    def quick_bench(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Batch-1 latency on the default device with the short settings the swap and compare pages use."""
        from explorer.latency import bench, quick_settings

        return bench(ModelSpec.from_dict(spec), quick_settings(self.device_info()["device"]))

    def fold(self, spec: dict[str, Any]) -> dict[str, Any]:
        from explorer.reparam import fold_report

        return fold_report(ModelSpec.from_dict(spec))

    def swap_points(self, spec: dict[str, Any]) -> dict[str, Any]:
        from explorer.models import build_model
        from explorer.swaps import swap_points

        return swap_points(build_model(ModelSpec.from_dict(spec), device="meta"))

    def swapped_modules(self, spec: dict[str, Any]) -> list[str]:
        from explorer.models import swapped_modules

        return swapped_modules(ModelSpec.from_dict(spec))

    def compare_row(self, spec: dict[str, Any]) -> dict[str, Any]:
        from explorer.compare import compare_row

        return compare_row(ModelSpec.from_dict(spec))

    def training_costs(self, spec: dict[str, Any]) -> dict[str, float]:
        """A training step's peak memory (GB) and MACs (G), fp32 with Adam, traced on the meta device."""
        from explorer.compare import training_costs

        return training_costs(ModelSpec.from_dict(spec))

    def compare_set(self, specs: list[dict[str, Any]], sides: list[int], latency: bool = False,
                    training: bool = False) -> dict[str, Any]:
        """Rows, Pareto fronts per published metric and (with `sides`) a resolution sweep of a set of models."""
        from explorer.compare import compare_set

        return compare_set([ModelSpec.from_dict(s) for s in specs], sides, latency=latency, training=training)

    def resolution_sweep(self, spec: dict[str, Any], sides: list[int], latency: bool = False) -> list[dict[str, Any]]:
        """Cost (and, with `latency`, quick batch-1 latency on this backend's device) per input side."""
        from explorer.compare import resolution_sweep

        device = self.device_info()["device"] if latency else None
        return resolution_sweep(ModelSpec.from_dict(spec), sides, latency_device=device)

    def receptive_field(self, spec: dict[str, Any]) -> dict[str, Any]:
        from explorer.views.receptive_field import receptive_field_report

        model_spec = ModelSpec.from_dict(spec)
        model = _cpu_model(model_spec)
        return receptive_field_report(model, _input_size(model_spec))

    def effective_receptive_field(self, spec: dict[str, Any], layer: str) -> dict[str, Any]:
        from explorer.views.receptive_field import effective_rf

        model_spec = ModelSpec.from_dict(spec)
        return effective_rf(_cpu_model(model_spec), _input_size(model_spec), layer)

    def channel_connectivity(self, spec: dict[str, Any], module: str | None = None) -> dict[str, Any]:
        """{"candidates": the blocks whose channel paths can be traced}, or, given `module`,
        {"report": that block's path counts}."""
        from explorer.views.connectivity import channel_paths, connectivity_candidates

        model = _cpu_model(ModelSpec.from_dict(spec))
        if module:
            return {"report": channel_paths(model, module)}
        return {"candidates": connectivity_candidates(model)}

    def swin_masks(self, spec: dict[str, Any], stage: int, block: int, window: int | None = None) -> dict[str, Any]:
        """The shifted-window masks of one Swin block; `window` overrides the model's window size."""
        from explorer.views.swin import shifted_window_mask, swin_masks_for

        if window is not None and window < 1:
            raise ExplorerError(f"the window size must be at least 1 token, got {window}")
        model_spec = ModelSpec.from_dict(spec)
        size = _input_size(model_spec)
        result = swin_masks_for(_cpu_model(model_spec), tuple(size[1:]), stage, block)
        if window is not None and window != result["window"][0]:
            resolution = tuple(result["resolution_hw"])
            shift = window // 2 if result["shift_nominal"][0] else 0
            override = shifted_window_mask(resolution, window, shift)
            result.update({k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in override.items()})
            result["window"] = [window, window]
            result["window_overridden"] = True
        return result

    def attention_formulas(self, sides: list[int]) -> list[dict[str, Any]]:
        from explorer.compare import attention_formula_sweep

        return attention_formula_sweep(sides)

    def peaks(self, device: str, dtype: str, achieved_tflops: float = 0.0) -> dict[str, Any]:
        """The roofline's peaks; a measured roof below `achieved_tflops` is measured again."""
        from explorer.roofline import peaks_for

        return peaks_for(device, dtype, achieved_tflops)

    def device_info(self) -> dict[str, Any]:
        return device_info()


def _input_size(spec: ModelSpec) -> tuple[int, ...]:
    from explorer.models import input_size_of

    return input_size_of(spec)


def _cpu_model(spec: ModelSpec):
    from explorer.models import build_model

    return build_model(spec, device="cpu")


BACKEND = LocalBackend()
