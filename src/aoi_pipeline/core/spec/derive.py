"""Specs derived from a training spec: inference and evaluate specs, and container paths for a launcher.

Inference and evaluate specs are derived from the exact training spec so the architecture a checkpoint was
trained with is the one it is loaded with; `require_same_architecture` checks a spec that was not derived.
`rewrite_host_paths` turns host paths into container paths for a launcher that mounts directories.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Literal

from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.spec.keys import assign_key, find_key, is_interpolation, parse_dotted
from aoi_pipeline.errors import Problem, SpecError

#: Keys that must be identical between training, inference and evaluation of one checkpoint: a mismatch
#: fails at checkpoint load, silently produces wrong scores, or reads an empty dataset.
ARCHITECTURE_KEYS: tuple[str, ...] = (
    "model.backbone.type",
    "model.classify.difference_module",
    "model.classify.learnable_difference_modules",
    "model.classify.embedding_vectors",
    "model.classify.embed_dec",
    "model.decode_head.use_summary_token",
    "model.decode_head.feature_strides",
    "dataset.classify.num_input",
    "dataset.classify.input_map",
    "dataset.classify.concat_type",
    "dataset.classify.grid_map",
    "dataset.classify.image_ext",
    "dataset.classify.image_width",
    "dataset.classify.image_height",
    "dataset.classify.num_classes",
    "train.classify.loss",
)


EVAL_DATASET_BLOCK: Mapping[str, str] = {"inference": "infer_dataset", "evaluate": "test_dataset"}


def require_same_architecture(train_spec: Spec, other: Spec, *, where: str = "spec") -> None:
    """SpecError listing every ARCHITECTURE_KEYS value of `other` that differs from `train_spec`."""
    problems = []
    for key in ARCHITECTURE_KEYS:
        trained = find_key(train_spec, key)
        used = find_key(other, key)
        if trained != used:
            problems.append(
                Problem(
                    f"{where}: {key}",
                    f"{key} is {_shown(used)} but the checkpoint was trained with {_shown(trained)}",
                    "derive inference/evaluate specs from the training spec (derive_eval_spec) "
                    "instead of editing architecture keys",
                )
            )
    if problems:
        raise SpecError(problems, summary=f"{where}: the architecture differs from the training spec")


def _shown(present_value: tuple[bool, Any]) -> str:
    present, value = present_value
    return repr(value) if present else "unset"


def derive_eval_spec(
    train_spec: Spec,
    *,
    action: Literal["inference", "evaluate"],
    checkpoint: str,
    results_dir: str,
    csv_path: str | None = None,
    images_dir: str | None = None,
) -> Spec:
    """The inference or evaluate spec for a checkpoint trained with `train_spec`.

    Only these keys change: `<action>.checkpoint`, `<action>.results_dir`, the action's dataset block
    (`infer_dataset` for inference, `test_dataset` for evaluate) `csv_path`/`images_dir` when given, and
    `dataset.classify.augmentation_config.augment` (off). Everything else, the architecture above all, is the
    training spec's, including the `train.classify.loss` stub TAO 7.1 still reads outside training (added as
    `ce`, TAO's own default, when the training spec leaves it unset).
    """
    block = EVAL_DATASET_BLOCK.get(action)
    if block is None:
        raise SpecError.at("action", f"cannot derive a spec for action {action!r}", "use inference or evaluate")
    problems = []
    if not isinstance(checkpoint, str) or not checkpoint.strip():
        problems.append(Problem(f"{action}.checkpoint", f"no checkpoint given (got {checkpoint!r})", _CKPT_FIX))
    elif "${results_dir}" in checkpoint:
        problems.append(
            Problem(f"{action}.checkpoint", f"{checkpoint!r} uses ${{results_dir}}, rebased per action", _CKPT_FIX)
        )
    if not isinstance(results_dir, str) or not results_dir.strip():
        problems.append(
            Problem(
                f"{action}.results_dir",
                f"no results directory given (got {results_dir!r})",
                f"pass a fresh directory such as /results/<iteration>/{action}/<best_val|latest>",
            )
        )
    if problems:
        raise SpecError(problems)
    spec = copy.deepcopy(train_spec)
    assign_key(spec, (action, "checkpoint"), checkpoint, f"{action}.checkpoint")
    assign_key(spec, (action, "results_dir"), results_dir, f"{action}.results_dir")
    for name, value in (("csv_path", csv_path), ("images_dir", images_dir)):
        if value is not None:
            assign_key(spec, ("dataset", "classify", block, name), value, f"dataset.classify.{block}.{name}")
    assign_key(spec, parse_dotted("dataset.classify.augmentation_config.augment"), False, "augment")
    if not find_key(spec, "train.classify.loss")[0]:
        assign_key(spec, ("train", "classify", "loss"), "ce", "train.classify.loss")
    return spec


_CKPT_FIX = "pass the explicit container path of the trained .pth, e.g. /results/iter1/train/<file>.pth"


def rewrite_host_paths(spec: Spec, mounts: Mapping[str, str]) -> Spec:
    """A copy of `spec` whose host paths are container paths, per `{host_prefix: container_prefix}`.

    A value is rewritten when it equals a host prefix or continues it after a `/`; the longest matching
    prefix wins, so nested mounts (`<ws>` and `<ws>/results/run_x`) resolve to the most specific one.
    Values outside every mount, and `${...}` interpolations, are left as they are.
    """
    problems = [
        Problem(
            f"mounts: {host!r}",
            f"a mount needs absolute host and container paths, got {host!r} -> {container!r}",
            "use absolute paths, e.g. {'/home/me/ws': '/data/workspace'}",
        )
        for host, container in mounts.items()
        if not (_is_absolute(host) and _is_absolute(container))
    ]
    if problems:
        raise SpecError(problems)
    ordered = sorted(
        ((_strip_slash(host), _strip_slash(container)) for host, container in mounts.items()),
        key=lambda pair: len(pair[0]),
        reverse=True,
    )
    rewritten: dict[str, Any] = _rewrite(copy.deepcopy(spec), ordered)
    return rewritten


def _is_absolute(path: Any) -> bool:
    return isinstance(path, str) and path.startswith("/")


def _strip_slash(path: str) -> str:
    return path.rstrip("/") or "/"


def _rewrite(node: Any, mounts: list[tuple[str, str]]) -> Any:
    if isinstance(node, dict):
        return {key: _rewrite(value, mounts) for key, value in node.items()}
    if isinstance(node, list):
        return [_rewrite(value, mounts) for value in node]
    if isinstance(node, str) and not is_interpolation(node):
        for host, container in mounts:
            if node == host:
                return container
            if host == "/" or node.startswith(f"{host}/"):
                rest = node[len(host) :].lstrip("/")
                return f"{container.rstrip('/')}/{rest}"
    return node
