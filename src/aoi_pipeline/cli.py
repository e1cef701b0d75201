"""The `aoi-pipeline` command: the user's entry point on a terminal.

Each subcommand parses its arguments, calls one function of the package and prints the outcome; the logic
lives in the modules it calls. Errors the product raises on purpose (`AoiPipelineError`) are printed without
a traceback and end the command with exit code 1; argument mistakes exit with 2, as argparse does. Heavy
imports happen inside the subcommand that needs them, so `--help` and the data checks start quickly.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from aoi_pipeline import __version__
from aoi_pipeline.errors import AoiPipelineError

EXIT_OK = 0
EXIT_INVALID_INPUT = 1


def _data_check(args: argparse.Namespace) -> int:
    from aoi_pipeline.core.workspace import check_workspace

    report = check_workspace(
        args.workspace, lights=tuple(args.light), image_ext=args.image_ext, batch_size=args.batch_size
    )
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.render())
    return EXIT_OK


def _data_synth(args: argparse.Namespace) -> int:
    from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

    summary = write_workspace(
        args.out, SynthSpec(boards=args.boards, size=args.size, seed=args.seed, image_ext=args.image_ext)
    )
    print(f"Synthetic AOI workspace written to {summary.root}")
    for name, rows in summary.rows.items():
        labels = ", ".join(f"{label} {count}" for label, count in summary.label_counts[name].items())
        print(f"  {name}: {rows} rows ({labels})")
    print(f"Check it with: aoi-pipeline data check {summary.root} --image-ext {args.image_ext}")
    return EXIT_OK


def _kpi(args: argparse.Namespace) -> int:
    from aoi_pipeline.core.metric_contract import evaluate_inference_csv, parse_target

    contract = parse_target(args.target)
    result = evaluate_inference_csv(contract, args.inference_csv, output_json=args.output_json)
    print(json.dumps(result.to_dict(), indent=2))
    return EXIT_OK


def _add_data_commands(subcommands: argparse._SubParsersAction) -> None:
    data = subcommands.add_parser("data", help="check or synthesise AOI workspaces")
    data_commands = data.add_subparsers(dest="data_command", required=True, metavar="{check,synth}")

    check = data_commands.add_parser(
        "check",
        help="validate a workspace: CSVs, images, mining pool and leakage between every pair",
        description="Read-only: validates train/validation/KPI CSVs, their images, the mining pool and "
        "leakage between every pair of sets; prints a summary, or every problem found.",
    )
    check.add_argument("workspace", type=Path, help="workspace root (holds images/, train/base/, kpi/)")
    check.add_argument(
        "--light",
        action="append",
        default=None,
        help="lighting name in image file names (repeat for several; default SolderLight)",
    )
    check.add_argument("--image-ext", default=".jpg", help="image file extension (default .jpg)")
    check.add_argument("--batch-size", type=int, default=None, help="also check batch_size <= rows")
    check.add_argument("--json", action="store_true", help="print the summary as JSON")
    check.set_defaults(handler=_data_check)

    synth = data_commands.add_parser(
        "synth", help="write a synthetic AOI workspace (procedural PCB tiles with the six DeepPCB defects)"
    )
    synth.add_argument("out", type=Path, help="new folder to write the workspace into")
    synth.add_argument("--boards", type=int, default=40, help="number of boards (16 tiles each)")
    synth.add_argument("--size", type=int, default=64, help="tile size in pixels")
    synth.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    synth.add_argument("--image-ext", default=".png", help="image file extension (default .png)")
    synth.set_defaults(handler=_data_synth)


def _add_kpi_command(subcommands: argparse._SubParsersAction) -> None:
    kpi = subcommands.add_parser(
        "kpi",
        help="score an inference.csv against a KPI target and print the evaluator result JSON",
    )
    kpi.add_argument("inference_csv", type=Path, help="inference.csv with label and siamese_score columns")
    kpi.add_argument("--target", required=True, help='KPI target, e.g. "FAR < 5%% at Recall=100%%"')
    kpi.add_argument("--output-json", type=Path, default=None, help="also write the result JSON here")
    kpi.set_defaults(handler=_kpi)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="aoi-pipeline",
        description="Improve a PCB AOI Visual ChangeNet classify model, automatically and safely.",
    )
    parser.add_argument("--version", action="version", version=f"aoi-pipeline {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(subcommands)
    _add_kpi_command(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    if getattr(args, "light", "absent") is None:
        args.light = ["SolderLight"]
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except AoiPipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID_INPUT


if __name__ == "__main__":
    sys.exit(main())
