"""``organfm``: one command line, thin: parse → load_config → call library functions."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _pretrain(args: argparse.Namespace) -> int:
    from organfm.config import ConfigError, load_config, parse_overrides
    from organfm.engine.pretrain import pretrain

    if args.resume:
        run_dir = Path(args.resume)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise ConfigError(f"cannot resume {run_dir}: it has no config.yaml (is it an organfm run folder?)")
        changed = [k for k in parse_overrides(args.overrides) if not k.startswith("trainer.")]
        if changed:
            raise ConfigError(f"a resumed run keeps its config; only trainer.* keys may change, not {', '.join(changed)}")
        cfg = load_config(None, saved, args.overrides)
        if args.method and args.method != cfg.method_name:
            raise ConfigError(f"{run_dir} is a {cfg.method_name} run, not {args.method}")
        cfg.trainer.out_dir = str(run_dir)
    else:
        cfg = load_config(args.method, args.config, args.overrides)
        source = Path(cfg.data.source)
        if cfg.data.source != "synthetic" and source.exists():
            cfg.data.source = str(source.resolve())  # a resumed run must find its data from any folder
    summary = pretrain(cfg, resume_dir=args.resume)
    warning = summary.warning()
    if warning:
        print(f"organfm pretrain: warning: {warning}", file=sys.stderr, flush=True)
    if summary.export is not None:
        print(summary.line(cfg.method_name, cfg.backbone.name), flush=True)
    return 0


def _export(args: argparse.Namespace) -> int:
    from organfm.engine.checkpoint import export_backbone
    from organfm.outputs import FolderLock, check_output_folder, write_marker

    if args.out is None:  # the run's own export/ folder
        weights, contract = export_backbone(args.run_dir, checkpoint=args.checkpoint, network=args.network)
        print(f"exported {weights} and {contract}")
        return 0
    # --out overwrites backbone.* and text/ by name: only in a new, empty or earlier export folder
    check_output_folder(args.out, "export", recognise=lambda p: (p / "backbone.json").is_file())
    with FolderLock(args.out, "export"):
        weights, contract = export_backbone(args.run_dir, checkpoint=args.checkpoint, out_dir=args.out,
                                            network=args.network)
        write_marker(args.out, "export")
    print(f"exported {weights} and {contract}")
    return 0


def _list(args: argparse.Namespace) -> int:
    from organfm.backbones import list_backbones
    from organfm.methods import list_methods

    from organfm.evaluation.protocol import list_protocols
    from organfm.text.tower import TEXT_TOWERS

    print("methods:", ", ".join(list_methods()))
    print("backbones: any timm architecture (timm.list_models())", *list_backbones())
    print("evaluation protocols:", ", ".join(list_protocols()))
    print("text towers:", ", ".join(TEXT_TOWERS.names()), "(hf: method.text_tower=<local Hugging Face folder>)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="organfm", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pretrain a backbone (organfm list names the methods)",
                       description="Pretrain a backbone. Overrides are dotted key=value pairs, e.g. "
                                   "data=path/to/images trainer.max_steps=100 method.use_inter=false.")
    p.add_argument("--method", default=None, help="registered method (default: the config's, else coda)")
    p.add_argument("--config", default=None, help="YAML of overrides (configs/*.yaml)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("export", help="write a run's backbone as safetensors + data contract JSON")
    p.add_argument("run_dir")
    p.add_argument("--checkpoint", default=None, help="a specific checkpoint (default: the latest)")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/export)")
    p.add_argument("--network", choices=("teacher", "student"), default=None,
                   help="which backbone (default: the method's: Coda/DINO the EMA teacher, SupCon the student)")
    p.set_defaults(func=_export)

    p = sub.add_parser("list", help="list methods and backbones")
    p.set_defaults(func=_list)
    from organfm.cli import cache, embed, evaluate, synth

    for command in (evaluate, embed, cache, synth):
        command.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # weights come from local files, never the hub
    from organfm.engine.checkpoint import CheckpointWriteError
    from organfm.engine.loop import NonFiniteLossError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, CheckpointWriteError, NonFiniteLossError) as e:
        print(f"organfm {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
