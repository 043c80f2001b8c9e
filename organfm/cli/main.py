"""``organfm``: one command line, thin: parse → load_config → call library functions."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["main"]


def _pretrain(args: argparse.Namespace) -> int:
    from organfm.api import pretrain

    summary = pretrain(args.config, args.overrides, method=args.method, resume=args.resume)
    warning = summary.warning()
    if warning:
        print(f"organfm pretrain: warning: {warning}", file=sys.stderr, flush=True)
    if summary.export is not None:
        print(summary.line(), flush=True)
    return 0


def _config(args: argparse.Namespace) -> int:
    from organfm.config import dump_config, load_config
    from organfm.presets import list_presets

    if args.action == "list":
        print("recipes (--config NAME):", ", ".join(list_presets("config")))
        print("tasks (--task NAME):", ", ".join(list_presets("task")))
        return 0
    cfg = load_config(args.method, args.config, args.overrides)
    print(dump_config(cfg), end="")
    return 0


def _export(args: argparse.Namespace) -> int:
    from organfm.engine.checkpoint import export_backbone
    from organfm.outputs import FolderLock, check_output_folder, write_marker

    if args.out is None:  # the run's own export/ folder
        weights, contract = export_backbone(args.run_dir, checkpoint=args.checkpoint, network=args.network,
                                            license=args.license, format=args.format)
    else:  # --out overwrites backbone.* and text/ by name: only in a new, empty or earlier export folder
        check_output_folder(args.out, "export", recognise=lambda p: (p / "backbone.json").is_file())
        with FolderLock(args.out, "export"):
            weights, contract = export_backbone(args.run_dir, checkpoint=args.checkpoint, out_dir=args.out,
                                                network=args.network, license=args.license, format=args.format)
            write_marker(args.out, "export")
    print(f"exported {weights} and {contract}")
    if args.format is not None:
        from organfm.interop import FORMAT_FILES

        print(f"{args.format}: " + ", ".join(str(weights.parent / name) for name in FORMAT_FILES[args.format]))
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


_DESCRIPTION = """Pretrain, evaluate and use foundation models for medical images (2D and 3D).

Every command takes dotted key=value overrides after its options; `organfm config show` prints what they
resolve to. Data roots of tasks default to $ORGANFM_DATA."""

_EPILOG = """examples:
  organfm pretrain --config small/coda data=images/          # a shipped recipe on a folder per organ
  organfm evaluate --models coda=runs/coda-x,scratch=random:convnext_atto --task mednist
  organfm embed --model runs/coda-x --out feats/coda data=images/
  organfm export runs/coda-x --license cc-by-4.0             # timm / Hugging Face model folder + model card
  organfm config show --config coda trainer.max_steps=100
  organfm list

in Python: model, preprocess = organfm.load("runs/coda-x")
see `organfm COMMAND --help` for each command's examples"""

_PRETRAIN_HELP = """Pretrain a backbone. Overrides are dotted key=value pairs (data= is data.source=).

SIGINT or SIGTERM (also to the whole process group, as SLURM and `timeout` send it) ends the run at the next
step boundary with a checkpoint; `--resume RUN_DIR` continues it. On SLURM: `#SBATCH --signal=B:TERM@120`
and `#SBATCH --requeue`, with `organfm pretrain --resume RUN_DIR || organfm pretrain ... trainer.out_dir=RUN_DIR`
in the script (docs/slurm.md)."""

_PRETRAIN_EXAMPLES = """examples:
  organfm pretrain --config small/coda                       # the small Coda recipe on synthetic organs
  organfm pretrain --config coda data=images/ trainer.max_steps=2000 trainer.out_dir=runs/coda
  organfm pretrain --method dino backbone.name=vit_small_patch16_224 data=manifest.csv
  organfm pretrain --config triad data=volumes/              # 3D (NIfTI / DICOM series)
  organfm pretrain --resume runs/coda trainer.max_steps=4000 # continue (after a stop or preemption)"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="organfm", description=_DESCRIPTION, epilog=_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("pretrain", help="pretrain a backbone (organfm list names the methods)",
                       description=_PRETRAIN_HELP, epilog=_PRETRAIN_EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--method", default=None, help="registered method (default: the config's, else coda)")
    p.add_argument("--config", default=None, metavar="FILE|NAME",
                   help="a YAML of overrides, or a shipped recipe: coda, small/coda, ... (organfm config list)")
    p.add_argument("--resume", default=None, metavar="RUN_DIR", help="continue the run in RUN_DIR")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_pretrain)

    p = sub.add_parser("export", help="write a run's backbone: safetensors + contract, timm folder, model card",
                       description="Write a run's backbone as a model folder: backbone.safetensors + backbone.json "
                                   "(the data contract), and for timm architectures config.json + model.safetensors, "
                                   "which timm.create_model('local-dir:FOLDER', pretrained=True) loads; README.md "
                                   "is its model card.",
                       epilog="examples:\n  organfm export runs/coda-x\n"
                              "  organfm export runs/coda-x --out models/coda --license cc-by-4.0\n"
                              "  organfm export runs/triad-x --format nnunet   # plainconv3d -> nnUNetv2_train "
                              "-pretrained_weights\n"
                              "  organfm export runs/triad-swin --format monai # swin3d -> SwinUNETR.swinViT "
                              "(docs/triad.md)",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir")
    p.add_argument("--checkpoint", default=None, help="a specific checkpoint (default: the latest)")
    p.add_argument("--out", default=None, help="output folder (default: RUN_DIR/export)")
    p.add_argument("--network", choices=("teacher", "student"), default=None,
                   help="which backbone (default: the method's: Coda/DINO the EMA teacher, SupCon the student)")
    p.add_argument("--license", default=None,
                   help="licence of the weights in the model card and config.json (default: the previous export's, "
                        "else 'other')")
    p.add_argument("--format", choices=("nnunet", "monai"), default=None,
                   help="also write the encoder for another framework: nnunet (plainconv3d: nnunet_pretrained.pth "
                        "for nnUNetv2_train -pretrained_weights, + nnunet_architecture.json for the plans), monai "
                        "(swin3d: monai_swinvit.pt for SwinUNETR(use_v2=True).swinViT, + monai_swinunetr.json)")
    p.set_defaults(func=_export)

    p = sub.add_parser("config", help="print the resolved config (or list the shipped recipes and tasks)",
                       description="Print the config a pretraining run would use: defaults < method < --config < "
                                   "key=value, as the YAML a run writes to config.yaml.",
                       epilog="examples:\n  organfm config show --config coda trainer.max_steps=100\n"
                              "  organfm config show --method dino\n  organfm config list",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    show = actions.add_parser("show", help="print the resolved config as YAML")
    show.add_argument("--method", default=None, help="registered method (default: the config's, else coda)")
    show.add_argument("--config", default=None, metavar="FILE|NAME", help="a YAML of overrides, or a shipped recipe")
    show.add_argument("overrides", nargs="*", metavar="key=value")
    actions.add_parser("list", help="the shipped recipes (--config NAME) and tasks (--task NAME)")
    p.set_defaults(func=_config)

    p = sub.add_parser("list", help="list methods, backbones, protocols and text towers")
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
