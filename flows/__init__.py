"""Prefect flows of aoi-pipeline: wiring only.

`aoi_pipeline` is the three-phase pipeline with its single approval gate, `automl_sweep` one AutoML phase,
`deft_loop` Phase 2, and `tao_job` a single TAO job (the unit a work pool executes). Flows decide the order of
tasks and nothing else.
"""
