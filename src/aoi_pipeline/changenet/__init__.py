"""The reference Visual ChangeNet classify runtime (`aoi-changenet`) and the procedural defect synthesiser.

Where no TAO container exists (a laptop, CI, the demo) this package trains and scores real models with TAO's
command line, spec keys and output files, so the pipeline cannot tell it from the container. Importing the
package imports neither torch nor any submodule: `aoi-changenet sdg` runs without torch, and the other
actions load the torch modules (`model`, `data`, `train`, `infer`, `checkpoints`) only when they run.
"""
