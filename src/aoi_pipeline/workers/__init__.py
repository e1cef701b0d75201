"""Work-pool integrations: what the Prefect workers of the Docker, Kubernetes and Slurm pools need from us.

Modules here may import Prefect and its integrations (the worker's own template rendering, its API clients);
the TAO job contract they translate lives in `aoi_pipeline.jobs`.
"""
