"""Failure classification (infrastructure vs program) and secret redaction."""

from __future__ import annotations

import pytest

from aoi_pipeline.jobs import StatusLine, classify_failure, redact

TRACEBACK = """Epoch 3: 100%|##########| 13/13
Traceback (most recent call last):
  File "/opt/nvidia_tao_pytorch/cv/visual_changenet/scripts/train.py", line 80
    raise ValueError("bad learning rate schedule")
ValueError: bad learning rate schedule
Execution status: FAIL"""

FAILURE_LINE = StatusLine("FAILURE", "Training failed: ValueError", None, None, {})
SUCCESS_LINE = StatusLine("SUCCESS", "Train finished successfully.", None, None, {})


def classify(exit_code, log_tail="", status_lines=(), wrote_checkpoint=None):
    return classify_failure(
        exit_code=exit_code, log_tail=log_tail, status_lines=status_lines, wrote_checkpoint=wrote_checkpoint
    )


def test_a_clean_exit_is_no_failure():
    assert classify(0, "Execution status: PASS", [SUCCESS_LINE], wrote_checkpoint=True) is None
    assert classify(0, "done", [], wrote_checkpoint=None) is None


@pytest.mark.parametrize(
    ("exit_code", "log_tail", "reason_part"),
    [
        (137, "Epoch 1 ...", "SIGKILL"),
        (-9, "", "SIGKILL"),
        (-15, "", "SIGTERM"),
        (1, "OSError: [Errno 28] No space left on device: '/results/train'", "disk is full"),
        (1, "RuntimeError: CUDA error: initialization error", "CUDA or the NVIDIA driver"),
        (1, "RuntimeError: Found no NVIDIA driver on your system.", "CUDA or the NVIDIA driver"),
        (1, "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp", "NCCL"),
        (125, "docker: Error response from daemon: pull access denied for nvcr.io/x", "container runtime"),
        (1, "ERROR: DataLoader worker (pid 77) is killed by signal: Bus error.", "shared memory"),
        (1, "slurmstepd: error: *** JOB 12 CANCELLED DUE TO NODE FAILURE ***", "node failed"),
        (127, "bash: visual_changenet: command not found", "not installed"),
        (1, "ModuleNotFoundError: No module named 'torch'", "dependencies are missing"),
        (None, "", "without an exit status"),
    ],
)
def test_infrastructure_failures(exit_code, log_tail, reason_part):
    failure = classify(exit_code, log_tail)

    assert failure is not None
    assert failure.kind == "infrastructure"
    assert reason_part in failure.reason


def test_infrastructure_evidence_wins_over_the_traceback_and_failure_line_tao_writes_for_it():
    log = "Traceback (most recent call last):\nOSError: [Errno 28] No space left on device\nExecution status: FAIL"

    failure = classify(1, log, [FAILURE_LINE])

    assert failure is not None
    assert failure.kind == "infrastructure"
    assert "No space left on device" in failure.evidence


@pytest.mark.parametrize(
    ("exit_code", "log_tail", "status_lines", "wrote_checkpoint", "reason_part"),
    [
        (1, TRACEBACK, [], None, "ValueError: bad learning rate schedule"),
        (0, "Execution status: PASS", [FAILURE_LINE], True, "Training failed: ValueError"),
        (0, "Execution status: FAIL", [], None, "Execution status: FAIL"),
        (0, "Execution status: PASS", [SUCCESS_LINE], False, "no new checkpoint"),
        (1, "omegaconf.errors.ConfigKeyError: Key 'learning_rat' is not in struct", [], None, "spec"),
        (1, "Could not override 'train.num_epoch'.", [], None, "spec"),
        (1, "FileNotFoundError: [Errno 2] No such file or directory: '/data/x.csv'", [], None, "dataset"),
        (
            1,
            "lightning.fabric.utilities.exceptions.MisconfigurationException: current_epoch=10, but max_epochs=5",
            [],
            None,
            "fresh results dir",
        ),
        (1, "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", [], None, "batch size"),
        (1, "ERROR: spec.yaml: 2 problem(s) in the train spec\nExecution status: FAIL", [], None, "spec"),
        (2, "ERROR: the CSV has no defect rows\nExecution status: FAIL", [], None, "no defect rows"),
        (-11, "", [], None, "SIGSEGV"),
        (3, "", [], None, "exited with code 3"),
    ],
)
def test_program_failures(exit_code, log_tail, status_lines, wrote_checkpoint, reason_part):
    failure = classify(exit_code, log_tail, status_lines, wrote_checkpoint)

    assert failure is not None
    assert failure.kind == "program"
    assert reason_part in failure.reason


def test_a_device_side_assert_stays_a_program_failure_even_when_nccl_errors_follow():
    log = (
        "Loss.cu:250: block: [0,0,0] Assertion `t >= 0 && t < n_classes` failed.\n"
        "RuntimeError: CUDA error: device-side assert triggered\n"
        "torch.distributed.DistBackendError: NCCL error in: ProcessGroupNCCL.cpp:1970, unhandled cuda error"
    )

    failure = classify(1, log)

    assert failure is not None
    assert failure.kind == "program"
    assert "device-side assert" in failure.evidence


def test_early_network_noise_does_not_mask_the_real_error():
    log = "\n".join(
        ["wandb: Network error: Connection timed out, retrying"]
        + [f"Epoch {i}: train_loss=0.5" for i in range(40)]
        + [
            "KeyError: 'input_path'",
            "Traceback (most recent call last):",
            "ValueError: label column is empty",
        ]
    )

    failure = classify(1, log)

    assert failure is not None
    assert failure.kind == "program"


def test_evidence_shows_the_lines_around_the_error_with_secrets_masked():
    log = "\n".join(
        [f"line {i}" for i in range(50)]
        + ["export NGC_API_KEY=nvapi-abcdefghijklmnopqrstuvwx", "OSError: No space left on device", "after"]
    )

    failure = classify(1, log)

    assert failure is not None
    assert "No space left on device" in failure.evidence
    assert "line 49" in failure.evidence
    assert "line 10" not in failure.evidence
    assert "nvapi-abcdefghijklmnopqrstuvwx" not in failure.evidence


def test_redact_masks_given_secret_values_everywhere():
    text = "token is s3cr3t-value, again: s3cr3t-value; short x"

    assert redact(text, ["s3cr3t-value", "", "x"]) == "token is <redacted>, again: <redacted>; short x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("NGC_API_KEY=abc123def", "NGC_API_KEY=<redacted>"),
        ("export HF_TOKEN='hf value'", "export HF_TOKEN='<redacted>'"),
        (
            "docker run -e AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI ...",
            "docker run -e AWS_SECRET_ACCESS_KEY=<redacted> ...",
        ),
        ('{"db_password": "hunter22"}', '{"db_password": "<redacted>"}'),
        ("s3.secret_key: abcd1234", "s3.secret_key: <redacted>"),
        ("login --password hunter22 --user me", "login --password <redacted> --user me"),
        ("postgresql://prefect:hunter22@db:5432/prefect", "postgresql://prefect:<redacted>@db:5432/prefect"),
        ("key nvapi-0123456789abcdefghij used", "key <redacted> used"),
        (
            "https://b.s3/x?X-Amz-Signature=abcdef0123&X-Amz-Date=1",
            "https://b.s3/x?X-Amz-Signature=<redacted>&X-Amz-Date=1",
        ),
    ],
)
def test_redact_masks_obvious_credential_literals(text, expected):
    assert redact(text, ()) == expected


@pytest.mark.parametrize(
    "text",
    [
        "TOKENIZERS_PARALLELISM=false",
        "NGC_API_KEY=${NGC_API_KEY}",
        "NGC_API_KEY=$NGC_API_KEY",
        "key: value",
        "train.checkpointer.monitor=val_loss",
        "val_loss: 0.25, val_far: 12.5",
        "model.decode_head={'use_summary_token': True, 'feature_strides': [4, 8]}",
        "use_summary_token: false",
    ],
)
def test_redact_leaves_references_and_ordinary_settings_alone(text):
    assert redact(text, ()) == text
