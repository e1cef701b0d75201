"""Tests of the classify known-key tree: every key of the reference table is known."""

from __future__ import annotations

from aoi_pipeline.core.spec import schema as spec_schema


def test_every_key_of_the_reference_table_is_in_the_schema() -> None:
    known = set(spec_schema.known_keys())
    for key in [
        "train.checkpointer.enable_topk",
        "train.checkpointer.monitor",
        "train.tensorboard.enabled",
        "train.optim.lr_steps",
        "train.optim.lr_step_size",
        "train.optim.lr_decay",
        "train.optim.min_lr",
        "train.optim.monitor_name",
        "train.num_gpus",
        "train.gpu_ids",
        "train.seed",
        "train.precision",
        "train.checkpoint_interval_unit",
        "dataset.classify.num_golden",
        "dataset.classify.augmentation_config.random_color.color_probability",
        "dataset.classify.augmentation_config.with_scale_random_crop.scale_range",
        "inference.vis_after_n_batches",
        "evaluate.results_dir",
        "export.onnx_file",
        "gen_trt_engine.trt_engine",
    ]:
        assert key in known, key
