"""Prefect tasks of aoi-pipeline: thin wrappers that call the package and report to Prefect.

Each task does one step (a pre-flight, a TAO job, a trial, a handoff, an evaluation) by calling
`aoi_pipeline`, and adds what only Prefect has: the run logger, artifacts, task-level retries for
infrastructure faults. The logic stays in the package, where plain unit tests reach it.
"""
