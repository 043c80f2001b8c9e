"""Throughput benchmark: organfm DINO vs lightly DINO, organfm Coda vs organfm DINO, and the MedNIST loader.

Each training case runs in its own subprocess (so peak memory is its own) on identical pre-made batches:
same backbone, same heads, same crops, same batch. Prints a table and the ratios, and writes them to
``benchmarks/results/throughput-<device>.json`` and ``.md``.

Targets: Coda/DINO step time <= 1.10; organfm DINO >= lightly DINO; loader >= 2x what the Coda step consumes.

    python benchmarks/throughput.py                      # CPU scale (convnext_atto, 64 px + 12 x 32 px)
    python benchmarks/throughput.py --scale paper        # GPU: ConvNeXt-B, 224 px + 12 x 96 px, batch 64, bf16
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SCALES = {
    "cpu": dict(backbone="convnext_atto", batch=32, global_size=64, local_size=32, num_local=12, out_dim=4096,
                hidden_dim=512, warmup=2, steps=5),
    "paper": dict(backbone="convnext_base", batch=64, global_size=224, local_size=96, num_local=12, out_dim=65536,
                  hidden_dim=2048, warmup=5, steps=20),
}


def make_batch(s: dict, device: torch.device) -> dict:
    g = torch.Generator().manual_seed(0)
    b = s["batch"]
    return {"global": [torch.randn(b, 1, s["global_size"], s["global_size"], generator=g).to(device) for _ in range(2)],
            "local": [torch.randn(b, 1, s["local_size"], s["local_size"], generator=g).to(device)
                      for _ in range(s["num_local"])],
            "organ": torch.arange(b).remainder(6).to(device)}


def organfm_step_fn(name: str, s: dict, device: torch.device):
    from organfm.backbones import create_backbone
    from organfm.methods import StepState, create_method

    method = create_method(name, backbone=create_backbone(s["backbone"], in_chans=1), out_dim=s["out_dim"],
                           hidden_dim=s["hidden_dim"]).to(device)
    opt = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-4)

    state = StepState(step=0, values={"lr": 1e-4, "weight_decay": 0.04, "momentum": 0.996, "teacher_temp": 0.04})

    def step(batch):
        out = method(batch, state)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        method.after_step(state)

    return step


def lightly_step_fn(s: dict, device: torch.device):
    """lightly's DINO recipe as its documentation writes it (one forward per view)."""
    import timm
    from lightly.loss import DINOLoss
    from lightly.models.modules import DINOProjectionHead
    from lightly.models.utils import deactivate_requires_grad, update_momentum

    backbone = timm.create_model(s["backbone"], in_chans=1, num_classes=0)
    dim = backbone.num_features
    student_head = DINOProjectionHead(dim, s["hidden_dim"], 256, s["out_dim"], freeze_last_layer=1)
    teacher_backbone = copy.deepcopy(backbone)
    teacher_head = DINOProjectionHead(dim, s["hidden_dim"], 256, s["out_dim"])
    teacher_head.load_state_dict(student_head.state_dict())  # deepcopy of a weight-normed head raises
    deactivate_requires_grad(teacher_backbone)
    deactivate_requires_grad(teacher_head)
    modules = [backbone, student_head, teacher_backbone, teacher_head]
    for m in modules:
        m.to(device)
    criterion = DINOLoss(output_dim=s["out_dim"], warmup_teacher_temp_epochs=0).to(device)
    opt = torch.optim.AdamW(list(backbone.parameters()) + list(student_head.parameters()), lr=1e-4)

    def step(batch):
        update_momentum(backbone, teacher_backbone, m=0.996)
        update_momentum(student_head, teacher_head, m=0.996)
        views = batch["global"] + batch["local"]
        teacher_out = [teacher_head(teacher_backbone(v)) for v in batch["global"]]
        student_out = [student_head(backbone(v)) for v in views]
        loss = criterion(teacher_out, student_out, epoch=0)
        loss.backward()
        student_head.cancel_last_layer_gradients(current_epoch=1)
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def run_case(case: str, scale: str, device_name: str) -> dict:
    s = SCALES[scale]
    device = torch.device(device_name)
    torch.manual_seed(0)
    step = lightly_step_fn(s, device) if case == "lightly_dino" else organfm_step_fn(case.split("_")[1], s, device)
    batch = make_batch(s, device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with autocast:
        for _ in range(s["warmup"]):
            step(batch)
        sync()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(s["steps"]):
            step(batch)
        sync()
    seconds = (time.perf_counter() - t0) / s["steps"]
    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"case": case, "step_s": seconds, "images_per_s": s["batch"] / seconds, "peak_mem_mb": peak / 2**20}


def run_loader(data: Path, s: dict, seconds: float = 20.0, workers: int = 2) -> dict:
    from torch.utils.data import DataLoader

    from organfm.data import build_dataset
    from organfm.data.samplers import ResumableBatchSampler
    from organfm.views import GlobalLocalViews, MultiViewDataset

    t0 = time.perf_counter()
    ds = build_dataset(str(data), split="train")
    build_s = time.perf_counter() - t0
    recipe = GlobalLocalViews(global_size=s["global_size"], local_size=s["local_size"], num_local_views=s["num_local"])
    loader = DataLoader(MultiViewDataset(ds, recipe), batch_sampler=ResumableBatchSampler(len(ds), s["batch"]),
                        num_workers=workers)
    it = iter(loader)
    next(it)  # workers started
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        n += len(next(it)["organ"])
    return {"case": "loader_mednist", "images_per_s": n / (time.perf_counter() - t0), "build_s": build_s,
            "num_images": len(ds), "workers": workers}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=sorted(SCALES), default="cpu")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "mednist" / "MedNIST.tar.gz"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--case", help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.case:  # child process: one case, JSON on the last line
        print(json.dumps(run_case(args.case, args.scale, args.device)))
        return

    env = dict(os.environ, HF_HUB_OFFLINE="1")
    rows = {}
    for case in ("organfm_dino", "lightly_dino", "organfm_coda"):
        out = subprocess.run([sys.executable, __file__, "--case", case, "--scale", args.scale, "--device", args.device,
                              "--threads", str(args.threads)], capture_output=True, text=True, env=env, check=True)
        rows[case] = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{case:14s} {rows[case]['images_per_s']:8.2f} img/s  {rows[case]['step_s']:7.3f} s/step  "
              f"peak {rows[case]['peak_mem_mb']:8.0f} MB", flush=True)
    if Path(args.data).is_file():
        rows["loader"] = run_loader(Path(args.data), SCALES[args.scale])
        print(f"loader         {rows['loader']['images_per_s']:8.1f} img/s  (MedNIST, {rows['loader']['workers']} workers, "
              f"index built in {rows['loader']['build_s']:.1f} s)", flush=True)
    ratios = {
        "coda_over_dino_step_time": rows["organfm_coda"]["step_s"] / rows["organfm_dino"]["step_s"],
        "organfm_over_lightly_dino_images_per_s": rows["organfm_dino"]["images_per_s"] / rows["lightly_dino"]["images_per_s"],
    }
    if "loader" in rows:
        ratios["loader_over_coda_consumption"] = rows["loader"]["images_per_s"] / rows["organfm_coda"]["images_per_s"]
    targets = {"coda_over_dino_step_time": ("<=", 1.10), "organfm_over_lightly_dino_images_per_s": (">=", 1.0),
               "loader_over_coda_consumption": (">=", 2.0)}
    lines = [f"# Throughput ({args.scale} scale, {args.device}, {args.threads} threads, {time.strftime('%Y-%m-%d')})", "",
             "| case | images/s | s/step | peak memory (MB) |", "|---|---|---|---|"]
    for case in ("organfm_dino", "lightly_dino", "organfm_coda"):
        r = rows[case]
        lines.append(f"| {case} | {r['images_per_s']:.2f} | {r['step_s']:.3f} | {r['peak_mem_mb']:.0f} |")
    if "loader" in rows:
        lines.append(f"| loader (MedNIST, views only) | {rows['loader']['images_per_s']:.1f} | | |")
    lines += ["", "| ratio | value | target | met |", "|---|---|---|---|"]
    for name, value in ratios.items():
        op, bound = targets[name]
        met = value <= bound if op == "<=" else value >= bound
        lines.append(f"| {name} | {value:.3f} | {op} {bound} | {'yes' if met else 'NO'} |")
        print(f"{name}: {value:.3f} (target {op} {bound}: {'met' if met else 'NOT met'})")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"throughput-{args.scale}-{args.device}"
    stem.with_suffix(".json").write_text(json.dumps({"scale": SCALES[args.scale], "rows": rows, "ratios": ratios}, indent=2))
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {stem}.json and {stem}.md")


if __name__ == "__main__":
    main()
