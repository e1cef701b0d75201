"""The `aoi-pipeline` command: the user's entry point on a terminal.

Each subcommand parses its arguments, calls one function of the package and prints the outcome; the logic
lives in the modules it calls. Errors the product raises on purpose (`AoiPipelineError`) are printed without
a traceback and end the command with exit code 1; argument mistakes exit with 2, as argparse does; a run whose
plan the reviewer rejected exits with 3 (it ends Cancelled and did nothing). Heavy
imports happen inside the subcommand that needs them, so `--help` and the data checks start quickly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

from aoi_pipeline import __version__
from aoi_pipeline.errors import AoiPipelineError
from aoi_pipeline.pipeline.layout import check_run_name

EXIT_OK = 0
EXIT_INVALID_INPUT = 1
EXIT_USAGE = 2
# `run` of a plan the reviewer rejected: nothing ran, which a script must not read as success.
EXIT_REJECTED = 3


class UsageError(AoiPipelineError):
    """An argument the command cannot use; exits 2 with the usage, as argparse's own errors do."""


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
    from aoi_pipeline.core.metric_result import evaluate_inference_csv
    from aoi_pipeline.core.metric_target import parse_target

    contract = parse_target(args.target)
    result = evaluate_inference_csv(contract, args.inference_csv, output_json=args.output_json)
    print(json.dumps(result.to_dict(), indent=2))
    return EXIT_OK


def _connect() -> None:
    """Point this process at a persistent Prefect server (the gate needs one); start a local one if unset."""
    if os.environ.get("PREFECT_API_URL"):
        print(f"Prefect server: {os.environ['PREFECT_API_URL']}")
        return
    from aoi_pipeline.server import ensure_local_server

    server = ensure_local_server()
    verb = "started" if server.started else "reusing"
    print(f"Prefect server ({verb}, data in {server.home}): UI at {server.ui_url}")


def _terminal_approver(run_name: str) -> None:
    """On a terminal, offer to decide the paused run here as well as in the UI."""
    from aoi_pipeline.control import decide, list_runs, waiting_plan

    while not (paused := list_runs(limit=1, paused_only=True, run=run_name)):
        time.sleep(1.0)
    plan = waiting_plan(paused[0])
    print(f"\nRun {run_name} waits for approval of plan {plan.plan_hash}: {plan.summary}\n  {paused[0].ui_url or ''}")
    answer = input("Type 'approve' or 'reject' (or approve in the UI): ").strip().lower()
    if answer not in ("approve", "reject"):
        print("No decision taken here; decide in the UI or with `aoi-pipeline approve`.")
        return
    reviewer = input("Reviewer name: ").strip() or os.environ.get("USER", "terminal")
    comment = input("Comment (optional): ").strip()
    decide(paused[0], reviewer=reviewer, comment=comment, reject=answer == "reject", plan_hash=plan.plan_hash)


def run_pipeline(config: Any, *, yes: bool, run_name: str | None, reviewer: str) -> dict[str, Any]:
    """Run the flow in this process; with `yes`, pre-approve exactly the plan the pre-flight shows now."""
    from aoi_pipeline.core.lock import check_unlocked
    from aoi_pipeline.pipeline.layout import check_run_name, new_run_name

    run_name = check_run_name(run_name, where="--run-name") if run_name is not None else new_run_name()
    if Path(config.workspace).is_dir():
        check_unlocked(Path(config.workspace))  # refused in one line, before a server starts or a file is written
    _connect()
    from aoi_pipeline.pipeline.preflight import run_preflight

    preapproved = None
    if yes:
        report = run_preflight(config, run_name=run_name)
        if not report.ok:
            raise AoiPipelineError(report.blockers, summary="pre-flight found blockers: fix them and run again")
        preapproved = report.plan_hash
        print(f"Pre-approving plan {preapproved} as {reviewer} (--yes)")
    elif sys.stdin.isatty():
        threading.Thread(target=_terminal_approver, args=(run_name,), daemon=True).start()
    else:
        print("Approve in the Prefect UI or with: aoi-pipeline approve --latest --reviewer NAME")
    from flows.aoi_pipeline import aoi_pipeline

    state = aoi_pipeline.with_options(flow_run_name=run_name)(
        config=config, run_name=run_name, preapproved_plan_hash=preapproved, preapproved_by=reviewer, return_state=True
    )
    if state.is_cancelled():
        # A rejected plan ends the run Cancelled with "Rejected by <reviewer>: <comment>".
        result: dict[str, Any] = {"status": "rejected", "message": state.message or "cancelled"}
    else:
        result = cast("dict[str, Any]", state.result())  # raises the run's error when it failed
    _print_result(result)
    return result


def _print_result(result: dict[str, Any]) -> None:
    if result.get("status") == "rejected":
        print(f"Run cancelled. {result['message']}. Nothing was written.")
        return
    print(f"Run complete: {result['run_dir']}")
    value = f"{result['value']:.4g}{result.get('unit', '')}"
    print(f"  best model:      {result['best_model']} ({result['iteration']}, value {value})")
    print(f"  inference spec:  {result['inference_spec']}")
    if result.get("report"):
        print(f"  run report:      {result['report']}")
    print(f"  KPI target met:  {'yes' if result['passed'] else 'no'}")
    if result.get("published"):
        print(f"  published to:    {result['published']['destination']}")


def _run(args: argparse.Namespace) -> int:
    from aoi_pipeline.config import load_config

    result = run_pipeline(load_config(args.config), yes=args.yes, run_name=args.run_name, reviewer=args.reviewer)
    return EXIT_REJECTED if result.get("status") == "rejected" else EXIT_OK


def _demo(args: argparse.Namespace) -> int:
    from aoi_pipeline.demo import DEMO_BOARDS, default_demo_root, demo_story, prepare_demo
    from aoi_pipeline.server import data_dir

    root = args.dir or default_demo_root(data_dir() / "demos")
    started = time.monotonic()
    # On Slurm the demo's jobs run in the nodes' Python environment (the pool's runner none), not in an image.
    image = args.image if args.platform not in ("local", "slurm") else None
    demo = prepare_demo(root, boards=args.boards or DEMO_BOARDS, seed=args.seed, platform=args.platform, image=image)
    print(f"Demo workspace: {demo.workspace.root}  config: {demo.config_path}")
    if args.platform != "local":
        _connect()
        _setup_pools(args.platform, concurrency_limit=None)
    result = run_pipeline(demo.config, yes=args.yes, run_name=None, reviewer=args.reviewer)
    if args.platform == "docker":
        from aoi_pipeline.pools import running_job_containers

        print(f"Job containers left running: {len(running_job_containers())}")
    if args.platform == "slurm" and result.get("run_dir"):
        from aoi_pipeline.pools import queued_slurm_jobs

        print(f"Slurm jobs left in squeue: {len(queued_slurm_jobs(Path(result['run_dir'])))}")
    print(f"Demo finished in {time.monotonic() - started:.0f} s")
    if result.get("status") == "rejected":
        return EXIT_REJECTED
    if result.get("run_dir"):
        for line in demo_story(Path(result["run_dir"]), str(result["iteration"])):
            print(line)
    return EXIT_OK


def _setup_pools(platform: str, *, concurrency_limit: int | None) -> None:
    from aoi_pipeline.pools import setup_platform

    setup = setup_platform(platform, concurrency_limit=concurrency_limit)
    for action in setup.actions:
        print(f"  {action}")


def _pools_setup(args: argparse.Namespace) -> int:
    _connect()
    print(f"Setting up platform {args.platform}:")
    _setup_pools(args.platform, concurrency_limit=args.concurrency)
    return EXIT_OK


def _blocks_register(args: argparse.Namespace) -> int:
    import yaml

    import blocks

    source: dict[str, str] = {key: os.environ[key] for key in blocks.SOURCE_KEYS if os.environ.get(key)}
    if args.file is not None:
        data = yaml.safe_load(args.file.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise AoiPipelineError.at(str(args.file), "is not a mapping of keys", "write KEY: value lines")
        unknown = sorted(set(map(str, data)) - set(blocks.SOURCE_KEYS))
        if unknown:
            raise AoiPipelineError.at(
                f"{args.file} keys {', '.join(unknown)}", "are not block settings", f"use {blocks.SOURCE_KEYS}"
            )
        source.update({str(key): str(value) for key, value in data.items() if value})
    if missing := blocks.missing_keys(source):
        raise AoiPipelineError.at(
            " and ".join(missing),
            "; ".join(f"{', '.join(keys)} not given" for keys in missing.values()),
            "give the missing keys, or none of that group's keys",
        )
    _connect()
    saved = blocks.register(source)
    print(f"Saved blocks: {', '.join(saved)}" if saved else f"No block values given (keys: {blocks.SOURCE_KEYS}).")
    return EXIT_OK


def _confirmed(question: str) -> bool:
    if not sys.stdin.isatty():
        raise UsageError.at(
            "aoi-pipeline approve",
            "cannot ask for confirmation: standard input is not a terminal",
            "check the run and plan printed above, then repeat the command with --yes",
        )
    return input(f"{question} [y/N] ").strip().lower() in ("y", "yes")


def _approve(args: argparse.Namespace) -> int:
    run = None if args.latest else check_run_name(args.run, where="approve RUN (flow run id or name)")
    _connect()
    from aoi_pipeline.control import decide, find_run, waiting_plan

    info = find_run(run)
    plan = waiting_plan(info)
    verb = "Reject" if args.reject else "Approve"
    print(f"Run {info.name} ({info.id}) waits for approval of plan {plan.plan_hash}:")
    print(f"  {plan.summary}")
    if info.ui_url:
        print(f"  {info.ui_url}")
    if not args.yes and not _confirmed(f"{verb} plan {plan.plan_hash} of {info.name} as {args.reviewer}?"):
        print("Nothing decided.")
        return EXIT_INVALID_INPUT
    decide(info, reviewer=args.reviewer, comment=args.comment, reject=args.reject, plan_hash=plan.plan_hash)
    done = "Rejected" if args.reject else "Approved"
    print(f"{done} {info.name} ({info.id}) plan {plan.plan_hash} as {args.reviewer}")
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    if args.run and Path(args.run).is_dir():
        from aoi_pipeline.pipeline.run_summary import describe_run_dir

        print(describe_run_dir(Path(args.run)))
        return EXIT_OK
    if args.run is not None:
        check_run_name(args.run, where="status RUN (flow run name or id, or a run directory)")
    _connect()
    from aoi_pipeline.control import LimitTooLarge, list_runs

    try:
        runs = list_runs(limit=args.limit, run=args.run)
    except LimitTooLarge as error:
        raise UsageError(*error.problems) from None
    if not runs:
        if args.run:
            raise AoiPipelineError.at(
                f"run {args.run!r}", "is neither a run directory nor a run on this server", "check the name"
            )
        print("No aoi-pipeline runs on this server yet.")
    for run in runs:
        started = run.started.strftime("%Y-%m-%d %H:%M:%S") if run.started else "not started"
        print(f"{run.name:24} {run.state:12} {started:20} {run.ui_url or run.id}")
        if args.run and run.message:
            print(f"  {run.message}")
    return EXIT_OK


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is below 1")
    return value


def _add_run_commands(subcommands: argparse._SubParsersAction) -> None:
    run = subcommands.add_parser("run", help="pre-flight, approval, then all three phases and the handoff")
    run.add_argument("--config", type=Path, required=True, help="pipeline.yaml")
    run.add_argument("--yes", action="store_true", help="pre-approve the plan the pre-flight shows now")
    run.add_argument("--run-name", default=None, help="resume (or name) a run: run_<YYYYMMDD_HHMMSS>")
    run.add_argument("--reviewer", default=os.environ.get("USER", "cli"), help="recorded with --yes")
    run.set_defaults(handler=_run)

    demo = subcommands.add_parser("demo", help="synthetic workspace + all phases on this machine, small budget")
    demo.add_argument("--dir", type=Path, default=None, help="new folder for the demo (default: user data dir)")
    demo.add_argument("--boards", type=int, default=None, help="synthetic boards, 16 tiles each (default 80)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--yes", action="store_true", help="pre-approve the plan instead of waiting")
    demo.add_argument("--reviewer", default=os.environ.get("USER", "demo"), help="recorded with --yes")
    demo.add_argument(
        "--platform", choices=("local", "docker", "slurm"), default="local", help="where the jobs run (default local)"
    )
    demo.add_argument("--image", default="localhost/aoi-pipeline-job:latest", help="job image on a work-pool platform")
    demo.set_defaults(handler=_demo)

    approve = subcommands.add_parser("approve", help="approve (or --reject) a run waiting on its plan")
    which = approve.add_mutually_exclusive_group(required=True)
    which.add_argument("run", nargs="?", default=None, help="flow run id or name")
    which.add_argument("--latest", action="store_true", help="the newest run waiting for approval")
    approve.add_argument("--reviewer", required=True, help="who decides (recorded)")
    approve.add_argument("--comment", default="", help="why (recorded)")
    approve.add_argument("--reject", action="store_true", help="reject: the run ends Cancelled and writes nothing")
    approve.add_argument("--yes", action="store_true", help="decide without asking (the run and plan are printed)")
    approve.set_defaults(handler=_approve)

    status = subcommands.add_parser("status", help="recent runs, or one run directory's phases and events")
    status.add_argument("run", nargs="?", default=None, help="flow run name/id, or a run directory")
    status.add_argument("--limit", type=_positive_int, default=10, help="how many recent runs to list (default 10)")
    status.set_defaults(handler=_status)


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


def _jobs_render(args: argparse.Namespace) -> int:
    import yaml

    from aoi_pipeline.config import load_config
    from aoi_pipeline.pipeline.job_preview import render_job

    manifest = render_job(load_config(args.config), args.action, args.platform, template=args.template)
    print(yaml.safe_dump(manifest, sort_keys=False), end="")
    return EXIT_OK


def _add_jobs_command(subcommands: argparse._SubParsersAction) -> None:
    jobs = subcommands.add_parser("jobs", help="inspect the jobs a run would launch")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="{render}")
    render = jobs_commands.add_parser(
        "render",
        help="print what a work pool's worker would submit for one action (the Kubernetes Job manifest)",
        description="Renders the job of an action with the worker's own code and the base job template: "
        "its image, GPU limit, node placement, volumes and mounts. Reads nothing from a cluster.",
    )
    render.add_argument("--platform", required=True, choices=["kubernetes"], help="the work pool's platform")
    render.add_argument("--config", type=Path, required=True, help="pipeline.yaml")
    render.add_argument("--action", required=True, help="train, evaluate, inference, embed, sdg or export")
    render.add_argument(
        "--template", type=Path, default=None, help="base job template (default deployments/kubernetes/...)"
    )
    render.set_defaults(handler=_jobs_render)


def _publish(args: argparse.Namespace) -> int:
    from aoi_pipeline.config import load_config
    from aoi_pipeline.pipeline.publish import publish_and_record, run_directory, settings_for

    config = load_config(args.config) if args.config else None
    layout = run_directory(args.run, config)
    settings = settings_for(config, bucket_block=args.bucket_block, prefix=args.prefix)
    _connect()
    print(publish_and_record(layout, settings).summary())
    return EXIT_OK


def _add_publish_command(subcommands: argparse._SubParsersAction) -> None:
    publish = subcommands.add_parser(
        "publish",
        help="upload a finished run's deliverable to the S3 bucket of a Prefect S3Bucket block",
        description="Uploads best_model.json, the inference spec, the checkpoint, the report and the approval "
        "record to <prefix>/<run name>/, then manifest.json with their sha256 sums. Safe to repeat: what the "
        "bucket already holds is not uploaded again.",
    )
    publish.add_argument("run", help="run directory, or a run name under the config's results root")
    publish.add_argument("--config", type=Path, default=None, help="pipeline.yaml (its publish section)")
    publish.add_argument("--bucket-block", default=None, help="S3Bucket block name (default: publish.bucket_block)")
    publish.add_argument("--prefix", default=None, help="key prefix in the bucket (default: publish.prefix)")
    publish.set_defaults(handler=_publish)


def _add_platform_commands(subcommands: argparse._SubParsersAction) -> None:
    pools = subcommands.add_parser("pools", help="work pools and deployments on the Prefect server")
    pool_commands = pools.add_subparsers(dest="pools_command", required=True, metavar="{setup}")
    setup = pool_commands.add_parser(
        "setup",
        help="create a platform's work pool and deployments; start a worker if none is online (docker) or "
        "print the command that starts one (kubernetes)",
    )
    setup.add_argument("--platform", required=True, help="docker, kubernetes or slurm")
    setup.add_argument("--concurrency", type=int, default=None, help="the pool's concurrency limit (GPU budget)")
    setup.set_defaults(handler=_pools_setup)

    blocks = subcommands.add_parser("blocks", help="Prefect blocks of the pipeline (credentials)")
    block_commands = blocks.add_subparsers(dest="blocks_command", required=True, metavar="{register}")
    register = block_commands.add_parser(
        "register",
        help="save the registry credentials and NGC key blocks from environment variables or a YAML file",
        description="Keys: AOI_REGISTRY_URL, AOI_REGISTRY_USERNAME, AOI_REGISTRY_PASSWORD, NGC_API_KEY. "
        "Values are stored only in the blocks and never printed.",
    )
    register.add_argument("--file", type=Path, default=None, help="YAML file with the same keys")
    register.set_defaults(handler=_blocks_register)


def _nightly(args: argparse.Namespace) -> int:
    from aoi_pipeline.config import load_config
    from aoi_pipeline.core.nightly_history import read_history, render_history
    from aoi_pipeline.core.nightly_policy import read_policy_approval, revoke_policy
    from aoi_pipeline.pipeline.nightly import nightly_dir

    where = nightly_dir(load_config(args.config))
    if args.nightly_command == "history":
        nights = read_history(where)[-args.limit :] if args.limit else read_history(where)
        print(json.dumps([night.to_dict() for night in nights], indent=2) if args.json else render_history(nights))
        return EXIT_OK
    if args.nightly_command == "revoke":
        revoked = revoke_policy(where, by=args.reviewer, reason=args.reason)
        print(f"Revoked nightly policy {revoked.policy_hash}: the next night waits for a person to approve a policy")
        return EXIT_OK
    approval = read_policy_approval(where)
    if approval is None:
        print("No nightly policy is approved: the next night pauses on the gate; approving it approves the policy.")
        return EXIT_OK
    state = "REVOKED" if approval.revoked else "approved"
    print(f"Nightly policy {approval.policy_hash}: {state} by {approval.reviewer} at {approval.decided_at}")
    print(approval.policy.describe())
    return EXIT_OK


def _add_nightly_command(subcommands: argparse._SubParsersAction) -> None:
    nightly = subcommands.add_parser("nightly", help="the nightly DEFT runs: their policy and history")
    commands = nightly.add_subparsers(dest="nightly_command", required=True, metavar="{history,policy,revoke}")
    history = commands.add_parser("history", help="one line per night: decision, rows added, KPI, promotion")
    history.add_argument("--limit", type=int, default=0, help="only the last N nights")
    history.add_argument("--json", action="store_true", help="the rows as JSON")
    commands.add_parser("policy", help="the approved nightly policy (platform, images, target, budget)")
    revoke = commands.add_parser("revoke", help="revoke the nightly policy: the next night waits for a person")
    revoke.add_argument("--reviewer", required=True, help="who revokes (recorded)")
    revoke.add_argument("--reason", default="", help="why (recorded)")
    for command in (history, revoke, commands.choices["policy"]):
        command.add_argument("--config", type=Path, required=True, help="pipeline.yaml of the nightly deployment")
        command.set_defaults(handler=_nightly)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = argparse.ArgumentParser(
        prog="aoi-pipeline",
        description="Improve a PCB AOI Visual ChangeNet classify model, automatically and safely.",
    )
    parser.add_argument("--version", action="version", version=f"aoi-pipeline {__version__}")
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_run_commands(subcommands)
    _add_data_commands(subcommands)
    _add_kpi_command(subcommands)
    _add_jobs_command(subcommands)
    _add_publish_command(subcommands)
    _add_platform_commands(subcommands)
    _add_nightly_command(subcommands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "light", "absent") is None:
        args.light = ["SolderLight"]
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UsageError as error:
        parser.print_usage(sys.stderr)
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except AoiPipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_INVALID_INPUT


if __name__ == "__main__":
    sys.exit(main())
