"""The pipeline layer: what one run of the three-phase pipeline does, below the Prefect flows that wire it.

It holds the consolidated read-only pre-flight and its plan (`preflight`), the run directory layout and phase
record (`layout`), the specs of every job (`specs`), the Phase 1/3 AutoML study, trials and sweep, and the
handoffs between phases. Flows call these plain functions; everything here runs, and is tested, without a
Prefect server.
"""
