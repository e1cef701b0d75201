"""aoi-pipeline: makes a PCB AOI Visual ChangeNet classify model better, automatically and safely.

The package holds the pure domain core (`core`), the TAO job contract and launchers (`jobs`), the
TAO-compatible reference runtime (`changenet`), the synthetic workspace generator (`synth`) and the
`aoi-pipeline` command (`cli`). Prefect flows and tasks live beside the package and only wire these parts.
"""

__version__ = "0.1.0"
