"""The DEFT baseline classify spec: the reference key names and values, with the chosen backbone.

The spec lies beside this module as `baseline_spec.yaml`; DINOv3 backbones are set up frozen with their staged
weights file, as DEFT requires.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

from aoi_pipeline.core.spec import Spec, schema
from aoi_pipeline.core.spec.yaml_io import load_yaml_text
from aoi_pipeline.errors import SpecError

DEFAULT_BACKBONE = "c_radio_v2_vit_base_patch16_224"
_BACKBONE_DIR = "/data/pretrained_models"


@lru_cache(maxsize=1)
def _baseline_text() -> str:
    return resources.files("aoi_pipeline.core.spec").joinpath("baseline_spec.yaml").read_text(encoding="utf-8")


def baseline_spec(*, backbone_type: str = DEFAULT_BACKBONE) -> Spec:
    """The DEFT baseline classify spec (reference key names and values) with the given backbone.

    DINOv3 backbones are frozen and point at their staged file `/data/pretrained_models/<type>.safetensors`,
    as DEFT requires. Other non-default backbones get an empty `pretrained_backbone_path`: the staging step
    must set the container path of the file it staged.
    """
    if backbone_type not in schema.BACKBONE_TYPES:
        raise SpecError.at(
            "model.backbone.type",
            f"unknown backbone {backbone_type!r}",
            f"use one of: {', '.join(schema.BACKBONE_TYPES)}",
        )
    spec: Spec = load_yaml_text(_baseline_text())
    backbone = spec["model"]["backbone"]
    backbone["type"] = backbone_type
    if backbone_type.endswith("_dinov3"):
        backbone["freeze_backbone"] = True
        backbone["pretrained_backbone_path"] = f"{_BACKBONE_DIR}/{backbone_type}.safetensors"
    elif backbone_type != DEFAULT_BACKBONE:
        backbone["pretrained_backbone_path"] = ""
    return spec
