"""The Prefect worker for Slurm: `prefect worker start --pool gpu-slurm --type slurm`.

Importing this package registers the worker type `slurm` with Prefect (the `prefect.collections` entry
point of aoi-pipeline names it), the way prefect-docker registers `docker`. The sbatch rendering
(`sbatch.py`) and the state classification (`states.py`) are pure functions; `shell.py` runs the Slurm
commands here or over ssh; `login.py` is the `slurm-login` block.
"""

from aoi_pipeline.workers.slurm.login import SlurmLogin
from aoi_pipeline.workers.slurm.worker import SlurmJobConfiguration, SlurmVariables, SlurmWorker, SlurmWorkerResult

__all__ = ["SlurmJobConfiguration", "SlurmLogin", "SlurmVariables", "SlurmWorker", "SlurmWorkerResult"]
