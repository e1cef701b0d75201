"""The pure domain core of aoi-pipeline: the dataset CSV contract, leakage and mining-pool checks, the
workspace layout, the TAO spec and metric contracts and the run state, written with the standard library,
numpy, pyyaml and pydantic only, so every rule is reachable from a plain unit test and no module here imports
Prefect or torch.
"""
