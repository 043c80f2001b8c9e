"""GPU throughput, measured: images/s, the step split into its parts, peak memory, counted FLOPs and MFU.

For each method (coda, dino, supcon) and view path (``device``: uint8 shards -> views made on the
accelerator by ``organfm.views.device``; ``per_sample``: the CPU recipe in the loader, the fallback) it runs
the real data path and the real step (bf16 autocast, channels_last and fused AdamW on CUDA) and reports:

- images/s (source images per second of the timed steps);
- time per step split into data wait / host-to-device / device views / forward / backward / optimizer / EMA
  (``torch.cuda.synchronize`` only at the boundaries of these timed sections);
- peak memory (CUDA: max allocated; CPU: the process's max RSS);
- FLOPs of one real step counted by ``torch.utils.flop_counter.FlopCounterMode`` (a multiply-add is 2), and
  MFU = FLOPs / step time / the device's dense bf16 peak (table below, ``--peak-tflops`` overrides).

``--compile`` adds Coda with ``torch.compile`` as its own case. Both paths read the same uint8 shard cache of
synthetic organs (built once per run, or ``--cache DIR`` to keep it), so they differ only in where the views
are made. Writes ``gpu_throughput.json`` and ``.md`` under ``benchmarks/results/gpu_throughput-<scale>-<device>/``
(or ``--out``); ``--docs docs/results.md`` also writes its section there.

    python benchmarks/gpu_throughput.py --scale cpu              # convnext_atto, 64 px + 12 x 32 px, batch 32
    python benchmarks/gpu_throughput.py --scale paper --compile  # GPU: ConvNeXt-B, 224 + 12 x 96 px, batch 64
"""
from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCALES = {
    "cpu": dict(backbone="convnext_atto", batch=32, image_size=64, global_size=64, local_size=32, num_local=12,
                out_dim=4096, hidden_dim=512, warmup=1, steps=2, workers=1, images=64),
    "paper": dict(backbone="convnext_base", batch=64, image_size=256, global_size=224, local_size=96, num_local=12,
                  out_dim=65536, hidden_dim=2048, warmup=3, steps=10, workers=6, images=256),
}
# dense bf16 peaks (TFLOP/s, no sparsity) by a substring of torch.cuda.get_device_name()
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "GH200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0,
                    "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 3090": 71.0}
PARTS = ("data_wait", "host_to_device", "device_views", "forward", "backward", "optimizer", "ema")
BEGIN, END = "<!-- BEGIN gpu_throughput -->", "<!-- END gpu_throughput -->"


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """The table's dense bf16 peak for this device (None on CPU or an unknown device)."""
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key in sorted(PEAK_BF16_TFLOPS, key=len, reverse=True):  # "A10G" before "A10"
        if key in name:
            return PEAK_BF16_TFLOPS[key]
    return None


def count_flops(fn) -> int:
    """FLOPs of whatever ``fn()`` runs (matmuls and convolutions, forward and backward; multiply-add = 2)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def build_cache(s: dict, folder: Path) -> Path:
    from organfm.cli.cache import cache
    from organfm.config import load_config

    organs = 8
    data = load_config(None, None, ["data=synthetic", f"data.synthetic_organs={organs}",
                                    f"data.synthetic_images_per_organ={math.ceil(s['images'] / organs)}",
                                    f"data.synthetic_size={s['image_size']}"]).data
    cache(data, folder)
    return folder


def make_case(method_name: str, path: str, s: dict, cache_dir: Path, device: torch.device, compile_: bool):
    from organfm.backbones import create_backbone
    from organfm.batches import SourceContext, create_batch_source
    from organfm.config import load_config
    from organfm.engine.optim import build_optimizer
    from organfm.methods import get_method

    locals_ = s["num_local"] if get_method(method_name).section_defaults.get("views.num_local_views", 1) else 0
    cfg = load_config(method_name, None, [
        f"data={cache_dir}", f"views.on_device={str(path == 'device').lower()}", f"views.global_size={s['global_size']}",
        f"views.local_size={s['local_size']}", f"views.num_local_views={locals_}"])
    source = create_batch_source("views", SourceContext(data=cfg.data, views=cfg.views, batch_size=s["batch"],
                                                        seed=0, num_workers=s["workers"]))
    source.batches.pin_memory = device.type == "cuda"
    cls = get_method(method_name)
    kwargs = {k: s[k] for k in ("out_dim", "hidden_dim") if k in cls.Config.__dataclass_fields__}
    torch.manual_seed(0)
    method = cls(create_backbone(s["backbone"], in_chans=1), **kwargs).to(device)
    if device.type == "cuda":
        method = method.to(memory_format=torch.channels_last)
    opt = build_optimizer(method, lr=1e-4, fused=device.type == "cuda")
    forward = torch.compile(method) if compile_ else method
    return source, method, forward, opt


def _to(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: _to(v, device) for k, v in batch.items()}
    if isinstance(batch, list):
        return [_to(v, device) for v in batch]
    return batch


def run_case(method_name: str, path: str, s: dict, cache_dir: Path, device: torch.device, *, compile_: bool = False,
             peak: float | None = None) -> dict:
    from organfm.methods.base import StepState

    source, method, forward, opt = make_case(method_name, path, s, cache_dir, device, compile_)
    state = StepState(step=0, values={"lr": 1e-4, "weight_decay": 0.04, "momentum": 0.996, "teacher_temp": 0.04})
    cuda = device.type == "cuda"
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    it = iter(source.batches)

    def step(times: dict | None):
        marks = [time.perf_counter()]

        def mark():
            sync()
            marks.append(time.perf_counter())
        batch = next(it)
        marks.append(time.perf_counter())  # data wait: blocked on the loader (nothing queued on the device yet)
        batch = _to(batch, device)
        mark()
        if source.on_device is not None:
            batch = source.on_device(batch)
        mark()
        with autocast:
            out = forward(batch, state)
        mark()
        out.loss.backward()
        mark()
        opt.step()
        opt.zero_grad(set_to_none=True)
        mark()
        method.after_step(state)
        mark()
        if times is not None:
            for name, a, b in zip(PARTS, marks, marks[1:]):
                times[name].append(b - a)
        return batch

    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(s["warmup"]):
        step(None)
    times = {name: [] for name in PARTS}
    for _ in range(s["steps"]):
        step(times)

    # FLOPs of one more real step (its forward and backward; the optimizer and EMA are elementwise)
    batch = source.on_device(_to(next(it), device)) if source.on_device else _to(next(it), device)

    def counted():
        with autocast:
            out = method(batch, state)
        out.loss.backward()
    flops = count_flops(counted)
    opt.zero_grad(set_to_none=True)

    mean = {name: sum(v) / len(v) for name, v in times.items()}
    step_s = sum(mean.values())
    achieved = flops / step_s
    res = {
        "method": method_name, "view_path": path, "compiled": compile_, "batch": s["batch"],
        "images_per_s": s["batch"] / step_s, "step_s": step_s, "step_breakdown_s": mean,
        "data_wait_share": mean["data_wait"] / step_s,
        "flop_per_step": flops, "flop_per_image": flops / s["batch"], "achieved_tflop_per_s": achieved / 1e12,
        "mfu": achieved / (peak * 1e12) if peak else None,
    }
    if cuda:
        res["peak_device_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    else:
        res["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process-wide, cumulative
    del it
    return res


def markdown(report: dict) -> str:
    s, env = report["settings"], report["environment"]
    lines = [f"GPU-throughput benchmark, scale `{report['scale']}` on {env['device_name']} (torch {env['torch']}); "
             f"{s['backbone']}, batch {s['batch']}, {s['global_size']} px globals + {s['num_local']} x "
             f"{s['local_size']} px locals (Coda/DINO), heads {s['out_dim']}-way; {s['steps']} timed steps after "
             f"{s['warmup']} warm-up; peak {env['peak_bf16_tflops'] or 'unknown'} TFLOP/s bf16.", "",
             "| method | views | compiled | images/s | step ms | data wait | h2d | views | fwd | bwd | opt | EMA "
             "| GFLOP/image | TFLOP/s | MFU |", "|" + "---|" * 15]
    for r in report["cases"]:
        b = r["step_breakdown_s"]
        mfu = f"{100 * r['mfu']:.1f} %" if r["mfu"] is not None else "–"
        lines.append(f"| {r['method']} | {r['view_path']} | {'yes' if r['compiled'] else 'no'} | "
                     f"{r['images_per_s']:.1f} | {1e3 * r['step_s']:.0f} | {100 * r['data_wait_share']:.1f} % | "
                     + " | ".join(f"{1e3 * b[p]:.0f}" for p in PARTS[1:]) +
                     f" | {r['flop_per_image'] / 1e9:.2f} | {r['achieved_tflop_per_s']:.3f} | {mfu} |")
    for m, ratio in report["device_vs_per_sample"].items():
        lines.append(f"\n{m}: device views {ratio:.2f}x the images/s of per-sample views.")
    lines.append("\nTimes are means per step in ms; data wait is the time blocked on the loader; FLOPs counted by "
                 "`torch.utils.flop_counter.FlopCounterMode` on a real step (forward + backward, multiply-add = 2). "
                 "One run, one machine: ratios from a shared machine are noisy.")
    return "\n".join(lines) + "\n"


def write_docs(docs: Path, md: str, command: str) -> None:
    from benchmarks.results_page import write_section

    write_section(docs, BEGIN, END, f"## GPU throughput (issue 16)\n\n`{command}`\n\n{md}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=tuple(SCALES), default="cpu")
    p.add_argument("--methods", default="coda,dino,supcon")
    p.add_argument("--paths", default="device,per_sample", help="view paths: device, per_sample")
    p.add_argument("--compile", action="store_true", help="also measure Coda (device views) under torch.compile")
    p.add_argument("--steps", type=int, default=None, help="timed steps per case (default: the scale's)")
    p.add_argument("--warmup", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="loader workers (default: the scale's)")
    p.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak of the device (overrides the table)")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--cache", default=None, help="keep the uint8 shard cache in this folder (default: a temp dir)")
    p.add_argument("--out", default=None, help="output folder (default: benchmarks/results/gpu_throughput-<scale>-<device>)")
    p.add_argument("--docs", default=None, help="also write the section of this results page (docs/results.md)")
    args = p.parse_args(argv)

    s = dict(SCALES[args.scale])
    for key in ("steps", "warmup", "workers"):
        if getattr(args, key) is not None:
            s[key] = getattr(args, key)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cpu":
        torch.set_num_threads(min(2, torch.get_num_threads()))
    peak = peak_tflops(device, args.peak_tflops)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = Path(args.out or ROOT / "benchmarks" / "results" / f"gpu_throughput-{args.scale}-{device.type}")
    out.mkdir(parents=True, exist_ok=True)
    tmp = None if args.cache else tempfile.TemporaryDirectory()
    cache_dir = build_cache(s, Path(args.cache or tmp.name) / f"shards-{args.scale}")

    cases = [(m, path, False) for m in args.methods.split(",") for path in args.paths.split(",")]
    if args.compile:
        cases.append(("coda", "device", True))
    results = []
    for m, path, comp in cases:
        t = time.perf_counter()
        r = run_case(m, path, s, cache_dir, device, compile_=comp, peak=peak)
        r["case_wall_s"] = time.perf_counter() - t
        results.append(r)
        print(f"{m:7s} {path:10s} compiled={comp!s:5s} {r['images_per_s']:8.1f} img/s  step {1e3 * r['step_s']:.0f} ms"
              f"  data wait {100 * r['data_wait_share']:.1f} %  {r['flop_per_image'] / 1e9:.2f} GFLOP/img"
              + (f"  MFU {100 * r['mfu']:.1f} %" if r["mfu"] is not None else ""), flush=True)
    ratios = {}
    for m in args.methods.split(","):
        by = {r["view_path"]: r for r in results if r["method"] == m and not r["compiled"]}
        if "device" in by and "per_sample" in by:
            ratios[m] = by["device"]["images_per_s"] / by["per_sample"]["images_per_s"]
    report = {"scale": args.scale, "settings": s, "cases": results, "device_vs_per_sample": ratios,
              "environment": {"device": str(device), "device_name": name, "torch": torch.__version__,
                              "peak_bf16_tflops": peak, "threads": torch.get_num_threads()},
              "command": "python " + " ".join([Path(sys.argv[0]).as_posix()] + (argv or sys.argv[1:]))}
    (out / "gpu_throughput.json").write_text(json.dumps(report, indent=2))
    md = markdown(report)
    (out / "gpu_throughput.md").write_text(md)
    if args.docs:
        write_docs(Path(args.docs), md, report["command"])
    print(md)
    print(f"wrote {out / 'gpu_throughput.json'} and .md")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
