"""``python main.py portrait style ...``: FF3D on the command line (engine.portrait.ff3d_style).

* ``build-set --style TEXT --out DIR``: the few-shot stylised set (every ``BuildSetConfig`` setting a flag);
* ``train --set DIR[,DIR2...] --out STYLE_DIR``: fine-tune I2T on it (``StyleTrainConfig``; a stopped run resumes);
* ``apply --style STYLE_DIR (--seed K | --image FILE) --out DIR``: views, orbit video and mesh of a head in the
  style, optionally mixed with another (``--mix OTHER --alpha A``);
* ``bench --report FILE.json``: the embedded path's figures against synthetic ground truth.
"""

from __future__ import annotations

import argparse

from engine.core.config import add_config_arguments, config_from_args, subcommands

SUMMARY = "free-style 3D portraits (FF3D): build a stylised set from a style text, fine-tune I2T on it, apply and mix"


def cmd_build_set(args: argparse.Namespace) -> int:
    from engine.core.jobs import CancelToken, run_and_list
    from engine.portrait.ff3d_style import BuildSetConfig, build_set_job

    return run_and_list(build_set_job(config_from_args(BuildSetConfig, args), CancelToken()))


def cmd_train(args: argparse.Namespace) -> int:
    from engine.core.jobs import CancelToken, run_and_list
    from engine.portrait.ff3d_style import StyleTrainConfig, train_style_job

    return run_and_list(train_style_job(config_from_args(StyleTrainConfig, args), CancelToken()))


def cmd_apply(args: argparse.Namespace) -> int:
    from engine.core.jobs import CancelToken, run_and_list
    from engine.portrait.ff3d_style import StyleRequest, apply_style_job

    return run_and_list(apply_style_job(config_from_args(StyleRequest, args), CancelToken()))


def cmd_bench(args: argparse.Namespace) -> int:
    from engine.core.machine import write_report
    from engine.portrait.ff3d_bench import bench_styles, print_report

    report = bench_styles(styles=tuple(s.strip() for s in args.styles.split(",")), heads=args.heads,
                          train_minutes=args.train_minutes, ablation_styles=args.ablation_styles, i2t=args.i2t,
                          official=not args.skip_official, identities=args.identities, grid=args.grid)
    print_report(report)
    write_report(args.report, report)
    return 0


def _add_bench(p: argparse.ArgumentParser) -> None:
    from engine.portrait.ff3d_bench import BENCH_GRID, BENCH_IDENTITIES, BENCH_STYLES

    p.add_argument("--styles", default=",".join(BENCH_STYLES), help="the offline vocabulary's styles measured "
                   f"(default {','.join(BENCH_STYLES)})")
    p.add_argument("--heads", type=int, default=10, help="held-out heads (each seen from 9 views)")
    p.add_argument("--train-minutes", type=float, default=2.0, help="fine-tuning budget per style")
    p.add_argument("--i2t", default=None, help="the pre-trained I2T (default: the shipped one)")
    p.add_argument("--identities", type=int, default=BENCH_IDENTITIES, help="identities in each style's set")
    p.add_argument("--grid", default=BENCH_GRID, help="each identity's pitch x yaw views (the frontal view added)")
    p.add_argument("--ablation-styles", type=int, default=None, help="fine-tune the ablations (no pre-training, vector "
                   "w_s, without I2T) on the first N styles only (default: all; 0: none)")
    p.add_argument("--skip-official", action="store_true", help="leave out the full-size I2T's CPU step time")
    p.add_argument("--report", default=None, help="also write the figures to this JSON file")


def _add_config(cls_name: str):
    def add(p: argparse.ArgumentParser) -> None:
        from engine.portrait import ff3d_style

        add_config_arguments(p, getattr(ff3d_style, cls_name))
    return add


COMMANDS = {
    "build-set": ("render a head on a pitch x yaw grid with the prior and stylise every view with a 2D editor "
                  "(the few-shot set a style is learned from)", _add_config("BuildSetConfig"), cmd_build_set),
    "train": ("fine-tune I2T on one or more stylised sets (a style generator in minutes); a stopped run resumes",
              _add_config("StyleTrainConfig"), cmd_train),
    "apply": ("turn a sampled head or a photo into a 3D portrait in a learned style (views, orbit video, mesh), "
              "optionally mixed with another style", _add_config("StyleRequest"), cmd_apply),
    "bench": ("FF3D's figures on the embedded path: time per style, 3D fidelity against ground truth, consistency, "
              "ablations, mixing", _add_bench, cmd_bench),
}
"""``portrait style``'s subcommands: summary, the function adding its flags, the one running it"""


add_style, cmd_style = subcommands(COMMANDS, "style_command")
"""``portrait style``'s flags, and running the subcommand given"""


__all__ = ["COMMANDS", "SUMMARY", "add_style", "cmd_style"]
