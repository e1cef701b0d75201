"""The `aoi-changenet` command: TAO's `visual_changenet` command line, served by the reference runtime.

`aoi-changenet {train,evaluate,inference,embed,sdg} -e SPEC.yaml [dotted.key=value ...]` loads the spec,
applies the overrides, validates everything it can before writing (the spec, the CSVs and their images, the
checkpoints and the results directory), prints one warning listing the TAO keys it cannot honour, runs the
action and ends, like TAO, with `Execution status: PASS` or `Execution status: FAIL`. A failure exits non-zero
and prints a FAILURE status line; once the action's results directory is in use the line also goes to its
`status.json`. The name differs from TAO's entry point on purpose, so it never shadows it inside a TAO image.
`sdg` hands its (non-ChangeNet) spec to the procedural defect synthesiser without importing torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from aoi_pipeline.changenet.runtime_spec import ACTIONS, RuntimeSpec, read_runtime_spec, warning_message
from aoi_pipeline.changenet.status_writer import FAILURE, STARTED, SUCCESS, StatusLog, status_line
from aoi_pipeline.errors import AoiPipelineError

EXIT_OK = 0
EXIT_FAILED = 1
SUCCESS_MESSAGES = {
    "train": "Training finished successfully.",
    "evaluate": "Evaluation finished successfully.",
    "inference": "Inference finished successfully.",
    "embed": "Embedding finished successfully.",
}

log = logging.getLogger("aoi_pipeline.changenet")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aoi-changenet",
        description="Reference Visual ChangeNet classify runtime: TAO's command line, spec keys and outputs.",
    )
    parser.add_argument("action", choices=[*ACTIONS, "sdg"], help="what to run")
    parser.add_argument(
        "-e",
        "--experiment_spec",
        "--experiment-spec",
        dest="spec",
        type=Path,
        required=True,
        help="spec YAML",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted spec overrides, applied in order")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    _configure_logging()
    if args.action == "sdg":
        return _finish(_run_sdg(args.spec, args.overrides))
    return _finish(_run_action(args.action, args.spec, args.overrides))


class _StdoutHandler(logging.StreamHandler):
    """Logs to whatever `sys.stdout` is at the time of each record (it may be replaced, e.g. when captured)."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> TextIO:  # type: ignore[override]
        return sys.stdout

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def _configure_logging() -> None:
    if not any(isinstance(handler, _StdoutHandler) for handler in log.handlers):
        handler = _StdoutHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False


def _finish(code: int) -> int:
    print(f"Execution status: {'PASS' if code == EXIT_OK else 'FAIL'}", flush=True)
    return code


def _report_failure(error: BaseException, status: StatusLog | None) -> int:
    message = str(error) if isinstance(error, AoiPipelineError) else f"{type(error).__name__}: {error}"
    if not isinstance(error, AoiPipelineError):
        traceback.print_exc()
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    if status is not None:
        status.write(FAILURE, message)
    else:
        print(json.dumps(status_line(FAILURE, message)), flush=True)
    return EXIT_FAILED


def _run_action(action: str, spec_path: Path, overrides: Sequence[str]) -> int:
    try:
        spec = read_runtime_spec(spec_path, overrides, action)
        warning = warning_message(spec.unhonoured) if spec.unhonoured else None
        if warning:
            print(warning, file=sys.stderr, flush=True)
        job, resume = _plan(spec)
    except AoiPipelineError as error:
        return _report_failure(error, None)
    status = StatusLog(spec.results_dir, append=resume)
    try:
        message = _execute(spec, job, status, warning)
        status.write(SUCCESS, message)
    except (AoiPipelineError, Exception) as error:
        return _report_failure(error, status)
    except KeyboardInterrupt:
        status.write(FAILURE, "Interrupted.")
        raise
    finally:
        status.close()
    return EXIT_OK


def _plan(spec: RuntimeSpec) -> tuple[object, bool]:
    """The checked job for the action (torch is imported here, never for `sdg`), and whether it resumes."""
    if spec.action == "train":
        from aoi_pipeline.changenet.train import plan_training

        job = plan_training(spec)
        return job, job.resume is not None
    from aoi_pipeline.changenet.infer import plan_scoring

    return plan_scoring(spec), False


def _execute(spec: RuntimeSpec, job: object, status: StatusLog, warning: str | None) -> str:
    if spec.action == "train":
        from aoi_pipeline.changenet.train import run_training

        outcome = run_training(job, status, warning=warning)  # type: ignore[arg-type]
        log.info("latest checkpoint: %s", outcome.latest)
        return SUCCESS_MESSAGES["train"]
    from aoi_pipeline.changenet import infer

    # Scoring writes no line until it is done; this one dates the end of the process's start-up (imports).
    status.write(STARTED, f"Starting {spec.action}.")
    runner = {"inference": infer.run_inference, "evaluate": infer.run_evaluate, "embed": infer.run_embed}
    result = runner[spec.action](job, status)  # type: ignore[arg-type]
    log.info("%s: %s", spec.action, json.dumps(result) if isinstance(result, dict) else result)
    return SUCCESS_MESSAGES[spec.action]


def _run_sdg(spec_path: Path, overrides: Sequence[str]) -> int:
    from aoi_pipeline.core.spec.overrides import deep_merge, parse_override
    from aoi_pipeline.core.spec.yaml_io import load_spec

    try:
        spec = load_spec(spec_path)
        spec = deep_merge(spec, dict(parse_override(text) for text in overrides))
        from aoi_pipeline.changenet.sdg import run_sdg

        run_sdg(spec, spec_path=spec_path)
    except AoiPipelineError as error:
        return _report_failure(error, None)
    except Exception as error:
        return _report_failure(error, None)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
