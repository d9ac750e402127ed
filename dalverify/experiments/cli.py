"""``dalverify experiment {train-model,run,report}``: reproducible sweeps."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def cmd_train_model(args: argparse.Namespace) -> int:
    from dalverify.experiments.config import load_config
    from dalverify.experiments.runner import train_model

    trained = set()
    for cell in load_config(args.config):
        if cell.model in trained:
            continue
        if cell.model == "bundled":
            sys.stdout.write(f"{cell.name}: uses the bundled brain model (nothing to train)\n")
            trained.add(cell.model)
            continue
        if Path(cell.model).exists() and not args.force:
            sys.stdout.write(f"{cell.model}: exists (use --force to retrain)\n")
            trained.add(cell.model)
            continue
        path = train_model(cell, progress=not args.quiet, max_seconds=args.max_seconds)
        trained.add(cell.model)
        if not args.quiet:
            sys.stdout.write(f"{path}: trained ({cell.train.steps} steps, side {cell.side}, {cell.covariance})\n")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from dalverify.experiments.config import load_config
    from dalverify.experiments.runner import run_sweep

    for config_path in args.config:
        for cell in load_config(config_path):
            if args.images is not None:
                cell.images = args.images
            path = run_sweep(cell, args.out, workers=args.workers, scheduler=args.scheduler,
                             progress=not args.quiet, limit=args.limit)
            if not args.quiet:
                sys.stdout.write(f"{cell.name}: {path}\n")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from dalverify.experiments.report import write_report

    outputs = write_report(args.results, args.out, alpha=args.alpha)
    if not args.quiet:
        for path in outputs:
            sys.stdout.write(f"{path}\n")
    return 0


def add_commands(subparsers: Any) -> None:
    """Add ``dalverify experiment`` to the main parser's subcommands."""
    parser = subparsers.add_parser("experiment",
                                   help="reproducible sweeps: type I error, power, robustness, real brain slices",
                                   description="Train the small DDPM of a sweep, run sweeps, summarize results.")
    commands = parser.add_subparsers(dest="experiment_command", required=True)

    train = commands.add_parser("train-model", help="train the config's DDPM on synthetic N(0, Sigma) images")
    train.add_argument("config", help="experiment file (.toml, or .yaml with pyyaml)")
    train.add_argument("--force", action="store_true", help="retrain even if the model file exists")
    train.add_argument("--max-seconds", dest="max_seconds", type=float, default=None,
                       help="stop training after this many seconds")
    train.add_argument("--quiet", action="store_true")
    train.set_defaults(handler=cmd_train_model)

    run = commands.add_parser("run", help="run (or resume) the sweep of one or more config files")
    run.add_argument("config", nargs="+", help="experiment files")
    run.add_argument("--out", required=True, help="output folder; each cell writes to OUT/<cell name>/")
    run.add_argument("--workers", type=int, default=1,
                     help="1: serial; more: a dask.distributed LocalCluster with this many processes")
    run.add_argument("--scheduler", default=None, help="address of a running Dask scheduler (tcp://HOST:PORT)")
    run.add_argument("--images", type=int, default=None, help="override the number of images of every cell")
    run.add_argument("--limit", type=int, default=None, help="run at most this many missing images per cell")
    run.add_argument("--quiet", action="store_true", help="no progress bar")
    run.set_defaults(handler=cmd_run)

    report = commands.add_parser("report", help="rates with Wilson 95%% intervals, Markdown table and PNG figures")
    report.add_argument("results", nargs="+", help="cell folders or results.jsonl files")
    report.add_argument("--out", required=True, help="folder for summary.json, table.md and figures")
    report.add_argument("--alpha", type=float, default=None, help="level (default: each cell's alpha)")
    report.add_argument("--quiet", action="store_true")
    report.set_defaults(handler=cmd_report)
