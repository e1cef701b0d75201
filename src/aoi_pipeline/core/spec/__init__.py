"""TAO Visual ChangeNet classify specs: the schema, YAML files, keys and overrides, validation and derivation.

A spec is a plain nested dict, exactly what the YAML file holds, so it can be written for the TAO container
unchanged; every module here returns a new spec and never mutates its input. `schema` lists the keys TAO's
classify task reads, `yaml_io` reads and writes spec files, `baseline` holds the DEFT baseline, `keys` and
`overrides` read, set and merge dotted keys, `validation` (with `invariants`) collects every problem of a
spec into one `SpecError`, and `derive` builds inference and evaluate specs from a training spec.
"""

from typing import Any, Literal

Spec = dict[str, Any]
Action = Literal["train", "evaluate", "inference"]
