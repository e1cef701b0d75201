"""The pre-flight's checks: pure functions of the config, the workspace and the probe's answers.

Each returns what its sections show and the `Findings` it made (blockers that must be fixed before approval,
warnings a user should know), one module per group of sections: `host` (workspace, platform, runtime),
`credentials`, `images`, `data` (the datasets), `specs` (the KPI target and the specs of the three phases)
and `gpus`. None of them asks the machine anything: the answers of the probe come in as data.
"""
