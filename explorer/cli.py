"""`python -m explorer ...`: everything a page can do, as JSON."""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path
from typing import Any

from explorer.errors import ExplorerError
from explorer.spec import MAX_SIDE, ModelSpec, parse_size

MAX_SWEEP_SIDES = 16
MAX_CLASS_INDEX = 100_000
MAX_WINDOW = 32  # a Swin window of w tokens a side has w⁴ mask entries per window (the Inside page's limit too)
MAX_LOSS_CLASSES = 10_000
MAX_LOSS_PARAMETER = 100.0
MAX_IMBALANCE = 1e6


def _parse_option(text: str) -> tuple[str, Any]:
    """key=value, the value read as JSON when it parses (true, 3, 0.5, "x"), else as a string."""
    if "=" not in text:
        raise ExplorerError(f"option {text!r} must look like name=value")
    key, raw = text.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    return key.strip(), value


def spec_from_args(args) -> ModelSpec:
    return ModelSpec(
        arch=args.arch,
        input_size=parse_size(args.input) if args.input else None,
        batch=args.batch,
        options=tuple(_parse_option(o) for o in args.option or ()),
        swaps=tuple(getattr(args, "swap", None) or ()),
    )


def cmd_list(args) -> Any:
    from explorer.catalog import catalog_rows

    rows = catalog_rows()
    if args.json:
        return rows
    for row in rows:
        status = "" if row["implemented"] else "  (needs a native implementation)"
        print(f"{row['id']:<32} {row['family']:<28} {row['year']}  {row['source']:<11}{status}")
    return None


def cmd_cost(args) -> Any:
    from explorer.backend import BACKEND

    spec = spec_from_args(args)
    result = BACKEND.cost(spec.to_dict(), with_layers=not args.no_layers)
    if args.second_opinion:
        from explorer.second_opinion import explain_difference

        fv = BACKEND.fvcore(spec.to_dict())
        result["second_opinion"] = {"fvcore": fv, "reasons": explain_difference(result["macs"], fv)}
    if args.json:
        return result
    from explorer.units import format_count

    print(f"{result['arch']}  input {'×'.join(map(str, result['input_shape']))}")
    print(f"  params               {format_count(result['params'])}")
    print(f"  MACs                 {format_count(result['macs'])}  (FLOPs = 2 × MACs = {format_count(result['flops'])})")
    print(f"  memory access cost   {result['memory_access_bytes'] / 1e6:,.1f} MB  ({format_count(result['memory_access_elements'])} elements, fp32)")
    print(f"  activations          {format_count(result['activations'])} elements")
    print(f"  elementwise ops      {format_count(result['elementwise_ops'])}")
    if result["uncounted_ops"]:
        names = ", ".join(f"{u['op']} ×{u['count']}" for u in result["uncounted_ops"])
        print(f"  not costed           {names}")
    if args.second_opinion:
        print(f"  fvcore               {format_count(result['second_opinion']['fvcore']['total'])}")
        for reason in result["second_opinion"]["reasons"]:
            print(f"    {reason}")
    return None


def cmd_graph(args) -> Any:
    from explorer.graph import as_json, collapsed, graph_of, parse_depth, to_dot, to_svg

    if args.time:
        return _onnx_timing(args)
    if args.runs is not None or args.threads is not None or args.device is not None or args.estimate:
        raise ExplorerError("--runs, --threads, --device and --estimate go with --time (timing an .onnx file with "
                            "ONNX Runtime)")
    depth = parse_depth(args.depth)
    svg_path = None
    if args.svg:
        try:
            svg_path = _output_path(args.svg, ".svg")
        except ExplorerError as exc:
            raise ExplorerError(str(exc).replace("--out", "--svg", 1)) from None
    if args.arch.lower().endswith((".onnx", ".pt2")):
        if args.diff:
            raise ExplorerError("--diff needs a model built from its code, not an exported file")
        graph = collapsed(_onnx_graph(args), depth)
    elif args.diff:
        graph = collapsed(_diff_graph(spec_from_args(args), args.diff), depth)
    else:
        graph = collapsed(graph_of(spec_from_args(args)), depth)
    if svg_path is not None:
        _write(svg_path, lambda: svg_path.write_text(to_svg(graph, args.measure), encoding="utf-8"))
    if args.dot:
        sys.stdout.write(to_dot(graph))
        return None
    if args.json:
        if args.diff:
            return {**as_json(graph), **{key: graph[key] for key in ("diff_against", "base_totals", "removed", "diff")}}
        return as_json(graph)
    if svg_path is None:
        from explorer.units import format_count

        for node in graph["nodes"]:
            mark = " *changed*" if node["changed"] else ""
            print(f"{'  ' * (node['depth'] - 1)}{node['id']} ({node['type']})  {format_count(node['macs'])} MACs{mark}")
        print(f"{len(graph['nodes'])} nodes, {len(graph['edges'])} edges")
    else:
        print(f"wrote {args.svg}")
    return None


def _diff_graph(spec: ModelSpec, other: str) -> dict:
    """The spec's graph marked node by node against OTHER (a catalog id, library name or JSON spec of the same
    architecture), as the Compare page's graph diff draws it."""
    from explorer.compare import spec_from_item
    from explorer.cost import analyse
    from explorer.graph import build_graph
    from explorer.graph_overlays import diff_graph, diff_summary

    first = spec_from_item(other)
    graph = diff_graph(first, analyse(first), spec, build_graph(spec))
    return {**graph, "diff": diff_summary(graph)}  # counted over every node, before --depth folds any


def _onnx_graph(args) -> dict:
    """An exported ONNX file's or torch.export .pt2 archive's graph; what only a model built from its code has is
    refused by name."""
    from explorer.model_files import read_onnx, read_pt2

    shown = repr(args.arch[:200])
    if args.swap or args.input or args.option or args.batch != 1:
        raise ExplorerError(f"{shown} is a file: swaps, --input, --option and --batch need a model built from its code")
    read = read_pt2 if args.arch.lower().endswith(".pt2") else read_onnx
    return read(_onnx_bytes(args.arch), Path(args.arch).name)


def _onnx_timing(args) -> Any:
    """`graph FILE.onnx --time`: the file timed with ONNX Runtime's kernels (explorer.onnx_timing), here."""
    from explorer.onnx_timing import time_onnx

    shown = repr(args.arch[:200])
    if args.arch.lower().endswith(".pt2"):
        raise ExplorerError(f"--time times an exported .onnx file with ONNX Runtime; {shown} is a .pt2 archive, which "
                            "ONNX Runtime does not run")
    if not args.arch.lower().endswith(".onnx"):
        raise ExplorerError(f"--time times an exported .onnx file with ONNX Runtime; {shown} is timed with `bench`")
    if args.swap or args.input or args.option or args.dot or args.svg:
        raise ExplorerError(f"{shown} is a file: --time reads only --batch, --runs, --threads and --device")
    data = _onnx_bytes(args.arch)
    if args.estimate:  # the page's job: warm-up and the timed runs at the batch, at the device's typical rate
        return _estimate("onnx_bench", {"name": Path(args.arch).name, "data": data, "settings": {
            "batch": args.batch, "runs": 20 if args.runs is None else args.runs, "device": args.device or "auto"}})
    result = time_onnx(data, Path(args.arch).name, batch=args.batch, runs=20 if args.runs is None else args.runs,
                       threads=args.threads, device=args.device or "auto")
    if args.json:
        return result
    s, row = result["settings"], result["results"][0]
    print(f"{result['file']} in ONNX Runtime {s['onnxruntime']} on {s['device_name']} ({', '.join(s['providers'])}), "
          f"threads {s['threads']}, batch {row['batch']}")
    print(f"  median {row['median_ms']:.3f} ms  p10 {row['p10_ms']:.3f} ms  p90 {row['p90_ms']:.3f} ms  "
          f"({row['runs']} runs after {row['warmup_runs']} warm-up)  {row['throughput_per_s']:,.1f} samples/s")
    print(f"  {result['note']}")
    return None


def _onnx_bytes(arch: str) -> bytes:
    """The file's bytes, refused before reading when it is larger than an upload may be."""
    from explorer.model_files import MAX_ONNX_BYTES

    shown = repr(arch[:200])
    path = Path(arch)
    try:
        if not path.is_file():
            raise ExplorerError(f"{shown} is not a file")
        if path.stat().st_size > MAX_ONNX_BYTES:
            raise ExplorerError(f"{shown} is larger than the limit of {MAX_ONNX_BYTES:,} bytes")
        return path.read_bytes()
    except OSError as exc:
        raise ExplorerError(f"cannot read {shown}: {exc.strerror or exc}") from None


def cmd_swap_points(args) -> Any:
    from explorer.backend import BACKEND
    from explorer.swaps import PRESETS

    spec = spec_from_args(args)
    points = BACKEND.swap_points(spec.to_dict())
    if args.json:
        return {"arch": spec.arch, "points": points, "presets": PRESETS}
    for kind, rows in points.items():
        print(f"{kind}: {len(rows)}")
        for row in rows[:200]:
            print("  " + ", ".join(f"{k}={v}" for k, v in row.items()))
    return None


def cmd_fold(args) -> Any:
    from explorer.backend import BACKEND

    result = BACKEND.fold(spec_from_args(args).to_dict())
    if args.json:
        return result
    print(f"{result['arch']}: folded {result['folded']} blocks; max |difference| {result['max_abs_diff']:.3g}")
    for key in ("params", "macs"):
        print(f"  {key}: train-time {result['train'][key]:,} → folded {result['folded_cost'][key]:,}")
    return None


def cmd_rf(args) -> Any:
    report = _compute_view("rf", {"spec": spec_from_args(args).to_dict()})
    if args.json:
        return report
    for row in report["rows"]:
        rf = "global" if row["global"] else f"{row['rf'][0]}×{row['rf'][1]}"
        print(f"{row['name']:<40} {row['type']:<20} rf {rf:<10} jump {row['jump'][0]}")
    return None


def cmd_swin_mask(args) -> Any:
    result = _compute_view("swin", {"spec": spec_from_args(args).to_dict(), "stage": args.stage, "block": args.block,
                                    "window": args.window})
    if args.json:
        return result
    print(f"stage {result['stage']} block {result['block']}: {result['resolution_hw'][0]}×{result['resolution_hw'][1]} tokens, "
          f"window {result['window'][0]}, shift {result['shift'][0]}; {result['masked_windows']} of "
          f"{result['total_windows']} windows carry a mask")
    return None


def cmd_cam(args) -> Any:
    from explorer.images import default_sample, heat_overlay, load_image, with_colour_bar
    from explorer.views.registry import cam_result, view_by_id

    spec = spec_from_args(args)
    out = _output_path(args.out, ".png") if args.out else None
    image, notes = load_image(args.image or default_sample())
    payload = {"spec": spec.to_dict(), "image": _pixels(image), **view_by_id("cam").cli_settings(vars(args))}
    if args.estimate:
        return _estimate("cam", payload)
    result, heat = cam_result(_compute_view("cam", payload))
    if out:
        _write(out, lambda: with_colour_bar(heat_overlay(image, heat)).save(out, format="PNG"))
    summary = {**result, "image_notes": notes, "out": args.out, "heat_shape": list(heat.shape),
               "heat_mean": float(heat.mean()), "weights": "random"}
    if args.json:
        return summary
    print(f"{args.method} at {result.get('layer', 'input')} for class index {result['class_index']} (random weights: "
          "the class is meaningless)"
          + (f"; wrote {args.out}" if args.out else ""))
    return None


# the `view` flags a view may read besides the model's: argparse dest → the flag as typed
_VIEW_FLAGS = {"image": "--image", "layer": "--layer", "method": "--method", "class_index": "--class",
               "stage": "--stage", "block": "--block", "window": "--window"}


def cmd_view(args) -> Any:
    """The Inside page's views as JSON summaries, computed by the job kinds the pages run; --out FILE.npz keeps
    the full arrays."""
    import numpy as np

    from explorer.catalog import resolve
    from explorer.images import default_sample, load_image
    from explorer.models import input_size_of
    from explorer.views.registry import view_by_id

    view = view_by_id(args.view)
    reads = set(view.cli_options) | ({"image"} if view.needs == "image" else set())
    stray = [flag for dest, flag in _VIEW_FLAGS.items() if getattr(args, dest, None) is not None and dest not in reads]
    if stray:
        allowed = ", ".join(flag for dest, flag in _VIEW_FLAGS.items() if dest in reads) or "none"
        raise ExplorerError(f"the {view.id} view does not read {', '.join(stray)}; its own flags: {allowed}")
    spec = spec_from_args(args)
    out = _output_path(args.out, ".npz") if args.out else None
    size = input_size_of(spec)
    input_kind = resolve(spec.arch).input_kind
    payload = {"spec": spec.to_dict(), **view.cli_settings(vars(args))}
    if input_kind != "image":
        if not view.tokens:
            raise ExplorerError(f"the {view.id} view needs an image model; {spec.arch} takes {input_kind} input")
    elif view.needs == "image":
        image, _ = load_image(args.image or default_sample())
        payload["image"] = _pixels(image)
    if args.estimate:
        return _estimate(view.job_kind, payload)
    summary, arrays = view.summarize(_compute_view(view.id, payload), spec)
    if out:
        _write(out, lambda: np.savez_compressed(out, **arrays))
    summary.update(view=args.view, arch=spec.arch, input_shape=[spec.batch, *size], weights="random",
                   out=args.out, arrays=sorted(arrays))
    if args.json:
        return summary
    print(json.dumps({k: v for k, v in summary.items() if not isinstance(v, (list, dict))}, indent=1))
    return None


def _compute_view(view_id: str, payload: dict[str, Any]) -> Any:
    """A view's result, computed in this process by the job kind the pages queue (random weights unless the
    payload names others)."""
    from explorer.jobs import run_job_kind
    from explorer.views.registry import view_by_id

    return run_job_kind(view_by_id(view_id).job_kind, payload, lambda text: None)


def _pixels(image):
    """An image as the jobs take it: H×W×3 uint8 RGB pixels."""
    import numpy as np

    return np.asarray(image.convert("RGB"))


def cmd_losses(args) -> Any:
    from explorer import losses

    if args.kind == "regression":
        result = losses.regression_curves(args.alpha, args.gamma, args.beta)
    elif args.kind == "weights":
        counts = losses.long_tail_counts(args.classes, 5000, args.imbalance)
        result = {"counts": counts.tolist(), "weights": losses.class_weights(counts, args.cb_beta)}
    else:
        result = losses.sample_negatives(bins=args.bins, samples=args.samples)
    if args.json:
        return result
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, (list, dict))}, indent=1))
    return None


def cmd_bench(args) -> Any:
    from explorer.latency import BenchSettings, bench

    batches = tuple(_int_list(args.batch_sizes, "--batch"))
    settings = BenchSettings(
        device=args.device, batches=batches, dtype=args.dtype, channels_last=args.channels_last,
        compile=args.compile, per_layer=args.per_layer,
        min_runs=args.min_runs, min_seconds=args.min_seconds,
    )
    spec = ModelSpec(arch=args.arch, input_size=parse_size(args.input) if args.input else None,
                     options=tuple(_parse_option(o) for o in args.option or ()), swaps=tuple(args.swap or ()))
    if args.estimate:
        return _estimate("bench", {"spec": spec.to_dict(), "settings": _bench_payload_settings(settings)})
    if os.environ.get("EXPLORER_BACKEND", "").strip().lower() in ("", "local"):
        result = bench(spec, settings)  # in this process, as always
    else:
        result = _bench_as_job(spec, settings)
    if result["error"] and not result["results"]:
        raise ExplorerError(result["error"])
    if args.roofline:
        result["roofline"] = _roofline(result)
    if args.json:
        return result
    s = result["settings"]
    print(f"{result['arch']} on {s['device_name']}, {s['dtype']}, threads {s['threads']}")
    print(f"{'batch':>6} {'median ms':>10} {'p10 ms':>8} {'p90 ms':>8} {'img/s':>9} {'TFLOP/s':>8} {'GB/s':>8}")
    for r in result["results"]:
        print(f"{r['batch']:>6} {r['median_ms']:>10.3f} {r['p10_ms']:>8.3f} {r['p90_ms']:>8.3f} "
              f"{r['throughput_per_s']:>9.1f} {r['achieved_tflops']:>8.3f} {r['achieved_gb_per_s']:>8.1f}")
    if result["error"]:
        print(f"stopped: {result['error']}")
    return None


def _bench_payload_settings(settings) -> dict[str, Any]:
    """BenchSettings as a `bench` job's payload takes them (plain data)."""
    from dataclasses import asdict

    return {**asdict(settings), "batches": list(settings.batches)}


def _estimate(kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """What `--estimate` prints instead of running the job: explorer.estimates' figures for it (image forwards,
    MACs, GMAC/s, seconds) at the typical rate of the device it would run on, as the pages show before a job."""
    from explorer.devices import best_device
    from explorer.estimates import QUICK_KINDS, estimate

    shown = estimate(kind, payload, device=best_device())
    return shown.to_dict() if shown is not None else {"kind": kind, "seconds": 0.0, "long": False,
                                                      "text": QUICK_KINDS[kind]}


def _bench_as_job(spec: ModelSpec, settings) -> dict[str, Any]:
    """The bench as a job of the shared service (EXPLORER_BACKEND=ray: on a worker of the Ray cluster); its
    settings then name the worker and host it ran on. The service and Ray are shut down before returning."""
    from explorer.jobs import shared_service

    service = None
    try:
        service = shared_service()
        return service.run("cli", "bench", {"spec": spec.to_dict(), "settings": _bench_payload_settings(settings)})
    finally:
        if service is not None:
            service.shutdown()
        ray_workers = sys.modules.get("explorer.ray_workers")  # imported only when the backend is ray
        if ray_workers is not None:
            ray_workers.shutdown()  # this process's local Ray instance stops; a cluster is only left


def cmd_memory(args) -> Any:
    from explorer.memory import memory_report, parse_memory_size
    from explorer.units import format_bytes, format_count

    fits = parse_memory_size(args.fits) if args.fits else None
    result = memory_report(spec_from_args(args), dtype=args.dtype, train=args.train, optimizer=args.optimizer,
                           fits_bytes=fits, with_layers=True)
    if args.json:
        return result
    print(f"{result['arch']}  input {'×'.join(map(str, result['input_shape']))}, {result['dtype']}, {result['mode']}"
          + (f" with {result['optimizer']}" if args.train else ""))
    for label, key in (("weights", "weights_bytes"), ("gradients", "gradients_bytes"), ("optimizer state", "optimizer_bytes"),
                       ("fp32 master weights", "master_weights_bytes"), ("saved activations", "saved_activations_bytes"),
                       ("activation peak", "activation_peak_bytes"), ("peak", "peak_bytes")):
        if result.get(key) is not None:
            print(f"  {label:<22} {format_bytes(result[key])}")
    print(f"  forward MACs           {format_count(result['forward_macs'], 'MAC')}")
    if args.train:
        print(f"  backward MACs          {format_count(result['backward_macs'], 'MAC')}  "
              f"(training step {format_count(result['training_step_macs'], 'MAC')})")
    if fits is not None:
        answer = result["fits"]
        print(f"  largest batch in {format_bytes(fits)}: {answer['largest_batch']}"
              + (" (the batch limit)" if answer["capped"] else "")
              + (f"; batch {answer['breaks_at']['batch']} breaks in {answer['breaks_at'].get('module', '?')} "
                 f"({answer['breaks_at'].get('phase', '?')})" if "breaks_at" in answer else ""))
    return None


def cmd_compare(args) -> Any:
    from explorer.backend import BACKEND
    from explorer.accuracy import TYPED_SOURCE
    from explorer.compare import READY_MADE, pareto_fronts, spec_from_item, with_typed_figures

    items = list(args.items)
    if args.ready:
        if args.ready not in READY_MADE:
            raise ExplorerError(f"unknown ready-made comparison {args.ready!r}; choose from {', '.join(READY_MADE)}")
        items += READY_MADE[args.ready]["specs"]
    if not items:
        raise ExplorerError("name at least one model (a catalog id, torchvision:NAME, timm:NAME or a JSON spec) or --ready")
    sides = _int_list(args.sweep, "--sweep") if args.sweep else []
    if len(sides) > MAX_SWEEP_SIDES or any(not 1 <= side <= MAX_SIDE for side in sides):
        raise ExplorerError(f"--sweep takes 1 to {MAX_SWEEP_SIDES} input sides, each between 1 and {MAX_SIDE} pixels")
    typed = _typed_figures(args.typed or [], items)
    if args.estimate:
        return _compare_estimate([spec_from_item(i).to_dict() for i in items], sides, args.latency)
    result = BACKEND.compare_set([spec_from_item(i).to_dict() for i in items], sides, latency=args.latency,
                                 training=args.training)
    if typed:  # the page's way: each typed figure joins its row, named as typed, and the fronts count it
        result["rows"] = [with_typed_figures(row, typed.get(item, {})) for row, item in zip(result["rows"], items)]
        result["pareto"] = pareto_fronts(result["rows"])
    if args.json:
        return result
    print(f"{'model':<40} {'params M':>9} {'GMACs':>9} {'mem MB':>9} {'published':>10}  metric")
    for r in result["rows"]:
        top1 = f"{r['published_top1']:.2f}" if r["published_top1"] is not None else "—"
        typed_mark = " (typed)" if r["published_source"] == TYPED_SOURCE else ""
        print(f"{r['label'][:40]:<40} {r['params_m']:>9.2f} {r['gmacs']:>9.3f} {r['memory_access_mb']:>9.1f} "
              f"{top1:>10}  {r['published_metric'] or ''}{typed_mark}")
    return None


def _compare_estimate(specs: list[dict[str, Any]], sides: list[int], latency: bool) -> dict[str, Any]:
    """`compare --latency --estimate`: the page's jobs, one after another (each model's quick timing, and its
    timed sweep at `sides`), as one estimate. Without --latency nothing is timed: the rest is meta-device work."""
    from explorer.devices import best_device
    from explorer.estimates import combine, estimate

    if not latency:
        raise ExplorerError("--estimate goes with --latency: without it, compare only traces on the meta device")
    device = best_device()
    parts = [estimate("quick_bench", {"spec": spec}, device=device) for spec in specs]
    parts += [estimate("latency_sweep", {"spec": spec, "sides": sides}, device=device) for spec in specs if sides]
    return combine(parts, "compare", "jobs").to_dict()


def _typed_figures(texts: list[str], items: list[str]) -> dict[str, dict[str, float]]:
    """--typed values, each in the Compare link's form (a JSON list of [model, metric, value]), read by the
    link's own parser; where the page drops a bad entry with a warning, the command line refuses it."""
    from explorer.accuracy import MAX_TYPED_FIGURES, typed_figures_from_link

    typed: dict[str, dict[str, float]] = {}
    for text in texts:
        figures, problems = typed_figures_from_link(text, items)
        if problems:
            reason = problems[0]
            if "not in the comparison set" in reason:
                reason += f" ({', '.join(items)[:200]})"
            raise ExplorerError(f"--typed: {reason}")
        for item, named in figures.items():
            typed.setdefault(item, {}).update(named)
    if sum(map(len, typed.values())) > MAX_TYPED_FIGURES:
        raise ExplorerError(f"--typed: at most {MAX_TYPED_FIGURES} typed figures")
    return typed


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise ExplorerError(f"{flag} must be a comma-separated list of integers, got {text[:80]!r}") from None


def _number(kind: type, low: float | None = None, high: float | None = None):
    """An argparse type: a finite int or float within [low, high]; argparse turns a refusal into
    'argument --flag: …' on one line with exit status 2."""
    def shown(bound: float) -> str:
        return f"{int(bound):,}" if bound == int(bound) else f"{bound:g}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, "
                                             f"got {text[:40]!r}") from None
        what = "an integer" if kind is int else "a finite number"
        allowed = (what if low is None and high is None else f"{what} of at least {shown(low)}" if high is None
                   else f"{what} of at most {shown(high)}" if low is None else f"{what} from {shown(low)} to {shown(high)}")
        if not math.isfinite(value) or (low is not None and value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {str(value)[:40]}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its own messages
    return parse


def _output_path(text: str, suffix: str) -> Path:
    """--out checked before any work: a `suffix` file, in a folder that exists and can be written,
    and not a directory, device or pipe that happens to carry the name."""
    shown = repr(text[:200])
    path = Path(text)
    if path.suffix.lower() != suffix:
        raise ExplorerError(f"--out {shown} must be a {suffix} file")
    try:
        if path.exists() or path.is_symlink():
            if not path.is_file():
                raise ExplorerError(f"--out {shown} is not a regular file (a directory, device or pipe)")
            if not os.access(path, os.W_OK):
                raise ExplorerError(f"--out {shown} exists and cannot be overwritten")
        folder = path.parent
        if not folder.is_dir():
            raise ExplorerError(f"--out {shown}: the folder {str(folder)[:200]!r} does not exist")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ExplorerError(f"--out {shown}: the folder {str(folder)[:200]!r} is not writable")
    except OSError as exc:
        raise ExplorerError(f"--out {shown} cannot be used: {exc.strerror or exc}") from None
    return path


def _write(path: Path, write) -> None:
    try:
        write()
    except OSError as exc:  # the disk filled, or the folder changed since it was checked
        raise ExplorerError(f"cannot write {str(path)[:200]!r}: {exc.strerror or exc}") from None


def _roofline(result: dict) -> dict:
    """The Latency page's roofline as data: the device's peaks, the ridge point, and each batch (and
    timed layer) placed by arithmetic intensity (FLOPs per byte of memory access cost)."""
    from explorer.roofline import peaks_for, ridge_point

    best = max((r["achieved_tflops"] or 0 for r in result["results"]), default=0.0)
    peaks = peaks_for(result["settings"]["device"], result["settings"]["dtype"], best)
    points = [{"batch": r["batch"], "achieved_tflops": r["achieved_tflops"],
               "flops_per_byte": r["achieved_tflops"] * 1e3 / r["achieved_gb_per_s"] if r["achieved_gb_per_s"] else None}
              for r in result["results"]]
    layers = [{"name": layer["name"], "flops_per_byte": layer["arithmetic_intensity"],
               "achieved_tflops": layer["achieved_tflops"], "share_time": layer["share_time"]}
              for layer in result.get("layers") or [] if layer["arithmetic_intensity"] and layer["achieved_tflops"]]
    return {"peaks": peaks, "ridge_flops_per_byte": ridge_point(peaks), "batches": points, "layers": layers}


def cmd_tour(args) -> Any:
    from explorer.tours import load_tours

    tours = {t["family"]: t for t in load_tours()}
    if args.family not in tours:
        raise ExplorerError(f"no tour for {args.family!r}; families: {', '.join(sorted(tours))}")
    tour = tours[args.family]
    if args.json:
        return tour
    print(tour["title"])
    for number, step in enumerate(tour["steps"], 1):
        print(f"\n{number}. {step['title']}\n{step['text']}\nQuestion: {step['question']}")
    return None


def cmd_measure_catalog(args) -> Any:
    from explorer.backend import BACKEND
    from explorer.measured import load_measured, measure_catalog, write_measured

    data = measure_catalog(args.ids or None, cost=BACKEND.cost)
    if args.write:
        # Measuring a few ids updates their entries and keeps the others.
        write_measured({**load_measured(), **data} if args.ids else data)
        print(f"wrote {len(data)} entries", file=sys.stderr)
        return None
    return data


def cmd_weights(args) -> Any:
    """`weights list [ARCH…]`: what the caches hold (or, per model, whether its weights are cached);
    `weights fetch ARCH…`: download them into the libraries' caches before a class (the network is used here only)."""
    from explorer.catalog import resolve
    from explorer.units import format_bytes
    from explorer.weights import cached_pretrained, fetch_pretrained, hub_checkpoints_dir, pretrained_source

    if args.action == "fetch" and not args.archs:
        raise ExplorerError("name the models whose weights to fetch, e.g. weights fetch resnet50 timm:convnext_tiny")
    sources = [pretrained_source(resolve(arch)) for arch in args.archs]  # every name checked before any download
    rows = []
    for source in sources:
        path = fetch_pretrained(source) if args.action == "fetch" else source.cached_file()
        rows.append({"arch": source.arch, "weights": source.name, "cached": path is not None,
                     "file": str(path) if path else None, "bytes": path.stat().st_size if path else None,
                     "from": source.hf_repo or source.url})
        if args.action == "fetch" and not args.json:
            print(f"{source.arch}: {source.name} in {path} ({format_bytes(path.stat().st_size)})")
    if args.action == "fetch":
        return {"fetched": rows} if args.json else None
    from huggingface_hub import constants

    result = {"torch_hub_checkpoints": str(hub_checkpoints_dir()), "huggingface_cache": str(constants.HF_HUB_CACHE),
              "models": rows} if args.archs else {"torch_hub_checkpoints": str(hub_checkpoints_dir()),
                                                  "huggingface_cache": str(constants.HF_HUB_CACHE),
                                                  "cached": cached_pretrained()}
    if args.json:
        return result
    if args.archs:
        for row in rows:
            print(f"{row['arch']}: {row['weights']} " + (f"cached ({row['file']})" if row["cached"] else "not cached"))
    elif not result["cached"]:
        print(f"no pretrained weights cached (looked in {result['torch_hub_checkpoints']} and "
              f"{result['huggingface_cache']})")
    for row in result.get("cached", []):
        print(f"{row['library']}: {row['file']} ({format_bytes(row['bytes'])})"
              + (f" for {', '.join(row['models'][:4])}" if row["models"] else ""))
    return None


class OneLineErrors(argparse.ArgumentParser):
    """Bad arguments end with one line and exit status 2, like every other refusal of the CLI."""

    def error(self, message: str):
        message = " ".join(message.splitlines())  # a flag's value may hold a line break
        self.exit(2, f"error: {message} (see: {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineErrors(prog="python -m explorer", description="Architecture explorer engine")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("list", help="the catalog: every roster architecture and its variants")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("cost", help="params, MACs, memory access cost and activations, per layer and in total")
    _model_args(p)
    p.add_argument("--no-layers", action="store_true", help="totals only, no per-layer rows")
    p.add_argument("--second-opinion", action="store_true",
                   help="also fvcore's FlopCountAnalysis total and why it differs from ours")
    p.set_defaults(func=cmd_cost)

    p = sub.add_parser("graph", help="the architecture as a graph: module groups, data flow with shapes, cost per node "
                                     "(ARCH may be an exported .onnx file or torch.export .pt2 archive)")
    _model_args(p)
    p.add_argument("--depth", default="all", help="cut the module hierarchy at this depth (1 = stages), or 'all'")
    p.add_argument("--dot", action="store_true", help="print Graphviz DOT instead of JSON")
    p.add_argument("--svg", metavar="FILE", help="write a drawing as SVG (drawn here; Graphviz is not needed)")
    p.add_argument("--measure", default="macs", choices=("macs", "params", "memory_access_bytes", "activations"),
                   help="what colours the SVG's nodes (default macs)")
    p.add_argument("--diff", metavar="OTHER_SPEC",
                   help="mark the nodes changed against OTHER_SPEC (a catalog id, library name or JSON spec of the same "
                        "architecture): changed, new and removed modules, each node's Δ params, MACs, memory access")
    from explorer.onnx_timing import DEVICES as ONNX_DEVICES, MAX_RUNS as ONNX_MAX_RUNS, MAX_THREADS as ONNX_MAX_THREADS

    p.add_argument("--time", action="store_true",
                   help="time an .onnx file with ONNX Runtime's kernels (not PyTorch's) at --batch: median, p10, p90")
    p.add_argument("--runs", type=_number(int, 1, ONNX_MAX_RUNS),
                   help="with --time: timed runs after warm-up (default 20)")
    p.add_argument("--threads", type=_number(int, 1, ONNX_MAX_THREADS),
                   help="with --time: ONNX Runtime's threads (default: PyTorch's thread count)")
    p.add_argument("--device", choices=ONNX_DEVICES, help="with --time: auto (CUDA when this onnxruntime has it "
                                                         "and there is a GPU), cpu or cuda")
    _estimate_flag(p)
    p.set_defaults(func=cmd_graph)

    p = sub.add_parser("swap-points", help="where blocks can go or be replaced in a model, and the presets")
    _model_args(p)
    p.set_defaults(func=cmd_swap_points)

    p = sub.add_parser("fold", help="fold re-parameterised blocks (DO-Conv, RepVGG, DBB) and compare outputs")
    _model_args(p)
    p.set_defaults(func=cmd_fold)

    p = sub.add_parser("rf", help="theoretical receptive field of every layer")
    _model_args(p)
    p.set_defaults(func=cmd_rf)

    p = sub.add_parser("swin-mask", help="Swin's shifted-window attention masks for one stage and block")
    _model_args(p)
    _swin_flags(p, stage=1, block=1)
    p.set_defaults(func=cmd_swin_mask)

    p = sub.add_parser("cam", help="Grad-CAM++ and its siblings, or Captum attributions, on an image")
    _model_args(p)
    p.add_argument("--image", help="an image file (PNG, JPEG, ...; default: the shipped cat photograph)")
    p.add_argument("--layer", help="target layer name (default: derived from the model)")
    _cam_flags(p, method="gradcam++")
    p.add_argument("--out", help="write the heat map over the image as PNG")
    _estimate_flag(p)
    p.set_defaults(func=cmd_cam)

    from explorer.views.registry import VIEW_IDS, VIEWS

    p = sub.add_parser("view", help="the Inside page's views, computed as the pages compute them: "
                                    + ", ".join(VIEW_IDS))
    _model_args(p)
    p.add_argument("view", choices=VIEW_IDS, help="; ".join(f"{v.id}: {v.about}" for v in VIEWS))
    p.add_argument("--image", help="an image file, for the views that read one (default: the shipped cat photograph)")
    p.add_argument("--layer", help="the layer (erf; cam's target layer) or the block (connectivity)")
    _cam_flags(p, method=None)
    _swin_flags(p, stage=None, block=None)
    p.add_argument("--out", help="write the full arrays to this .npz file")
    _estimate_flag(p)
    p.set_defaults(func=cmd_view)

    p = sub.add_parser("losses", help="loss curves: balanced L1, long-tail class weights, IoU-balanced sampling")
    p.add_argument("kind", choices=["regression", "weights", "sampling"])
    # Lower bounds (positive α, γ, β; 0 < cb-beta < 1; bins, samples) are the engine's, with its own reasons.
    p.add_argument("--alpha", type=_number(float, high=MAX_LOSS_PARAMETER), default=0.5)
    p.add_argument("--gamma", type=_number(float, high=MAX_LOSS_PARAMETER), default=1.5)
    p.add_argument("--beta", type=_number(float, high=MAX_LOSS_PARAMETER), default=1.0, help="smooth-L1 beta")
    p.add_argument("--classes", type=_number(int, 2, MAX_LOSS_CLASSES), default=100)
    p.add_argument("--imbalance", type=_number(float, 1, MAX_IMBALANCE), default=100.0)
    p.add_argument("--cb-beta", type=_number(float), default=0.999)
    p.add_argument("--bins", type=int, default=3)
    p.add_argument("--samples", type=int, default=384)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_losses)

    p = sub.add_parser("bench", help="latency and throughput with the real kernels, per batch size")
    p.add_argument("arch")
    p.add_argument("--device", default="auto", choices=["auto", "cuda", "mps", "cpu"])
    p.add_argument("--batch", dest="batch_sizes", default="1", help="batch sizes, e.g. 1,8,64")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "fp16", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model first")
    p.add_argument("--per-layer", action="store_true", help="also time every leaf module with torch.profiler")
    p.add_argument("--roofline", action="store_true",
                   help="also the device's peaks and each batch (and timed layer) on the roofline")
    p.add_argument("--input", help="input size per sample, e.g. 3,224,224")
    p.add_argument("--option", action="append", metavar="NAME=VALUE")
    p.add_argument("--swap", action="append", metavar="SPEC")
    p.add_argument("--min-runs", type=int, default=10)
    p.add_argument("--min-seconds", type=float, default=0.5)
    _estimate_flag(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("memory", help="memory at inference or over a training step, backward MACs, largest batch that fits")
    _model_args(p)
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16", "fp16"])
    p.add_argument("--train", action="store_true", help="one training step: forward, backward and the optimizer's step")
    p.add_argument("--optimizer", default="adam", choices=["sgd", "momentum", "adam", "adamw"])
    p.add_argument("--fits", help="also the largest batch whose peak fits this memory, e.g. 24GB or 80GiB")
    p.set_defaults(func=cmd_memory)

    p = sub.add_parser("compare", help="a comparison set: cost, published accuracy, Pareto fronts, resolution sweep")
    p.add_argument("items", nargs="*", help="catalog ids, torchvision:NAME, timm:NAME or JSON specs")
    p.add_argument("--ready", help="add a ready-made comparison's models (e.g. efficientnet_scaling)")
    p.add_argument("--sweep", help="also cost every model at these square input sides, e.g. 160,224,320")
    p.add_argument("--latency", action="store_true", help="quick batch-1 latency on this machine's device too")
    _estimate_flag(p)
    p.add_argument("--training", action="store_true",
                   help="a training step's peak memory and MACs too (fp32, Adam), traced on the meta device")
    p.add_argument("--typed", action="append", metavar="JSON",
                   help="figures the libraries lack, as the Compare link's typed= carries them: a JSON list of "
                        "[model, metric, value], e.g. '[[\"timm:convnext_tiny\", \"ImageNet top-1 (%%)\", 82.1]]' "
                        "(a %% metric lies in 0..100); repeatable")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("tour", help="a family's guided tour: steps of idea, figure and question")
    p.add_argument("family", help="a catalog family id, e.g. swin")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tour)

    p = sub.add_parser("measure-catalog", help="cost every buildable catalog variant at its native input")
    p.add_argument("ids", nargs="*", help="only these variant ids")
    p.add_argument("--write", action="store_true", help="write explorer/data/measured_costs.json")
    p.set_defaults(func=cmd_measure_catalog)

    p = sub.add_parser("weights", help="the libraries' pretrained weights: list what is cached, fetch before a class")
    p.add_argument("action", choices=["list", "fetch"], help="list: the caches (or the named models); fetch: download")
    p.add_argument("archs", nargs="*", metavar="ARCH", help="catalog ids, torchvision:NAME or timm:NAME")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_weights)
    return parser


class _CamMethods:
    """The CAM and attribution methods as argparse choices, read from explorer.views.cam only when a command
    that takes --method parses it or prints its help: that module loads torch (seconds), which `list` and the
    other commands' parsers need not wait for."""

    def _all(self) -> tuple[str, ...]:
        from explorer.views.cam import ATTRIBUTION_METHODS, CAM_METHODS

        return CAM_METHODS + ATTRIBUTION_METHODS

    def __contains__(self, value) -> bool:
        return value in self._all()

    def __iter__(self):
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())


def _cam_flags(p, method: str | None):
    # a metavar, so that argparse does not list the choices (and import torch) while it builds the parser
    p.add_argument("--method", default=method, choices=_CamMethods(), metavar="METHOD",
                   help="one of %(choices)s" + (f" (default {method})" if method else "; cam only"))
    p.add_argument("--class", dest="class_index", type=_number(int, 0, MAX_CLASS_INDEX),
                   help="target class (default: the top class)")


def _swin_flags(p, stage: int | None, block: int | None):
    p.add_argument("--stage", type=int, default=stage, help="Swin stage, 1 to 4" + (f" (default {stage})" if stage else ""))
    p.add_argument("--block", type=int, default=block,
                   help="block within the stage, from 0 (odd blocks are shifted)" + (f" (default {block})" if block else ""))
    p.add_argument("--window", type=_number(int, 1, MAX_WINDOW), default=None,
                   help=f"override the window size (1 to {MAX_WINDOW} tokens)")


def _estimate_flag(p):
    p.add_argument("--estimate", action="store_true",
                   help="print the job's estimate (image forwards, MACs, seconds) as JSON instead of running it")


def _model_args(p):
    p.add_argument("arch", help="a catalog id (see `list`), torchvision:NAME or timm:NAME")
    p.add_argument("--input", help="input size per sample, e.g. 3,224,224 (default: the model's native size)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--option", action="append", metavar="NAME=VALUE", help="builder keyword argument (repeatable)")
    p.add_argument("--swap", action="append", metavar="SPEC",
                   help="block swap ACTION:BLOCK@WHERE or preset:NAME (repeatable; see the README)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
        if result is not None:
            json.dump(result, sys.stdout, default=str)
            sys.stdout.write("\n")
            sys.stdout.flush()
    except ExplorerError as exc:
        print(f"error: {' '.join(str(exc).splitlines())}", file=sys.stderr)  # one line, whatever the message
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head`
        sys.stderr.close()
        return 0
    return 0
