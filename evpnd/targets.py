"""A `route_targets:` section of the config: one model for every VNI, L2 and L3 alike.

Standalone (it imports only the validators) so that both `evpnd/config.py`
and the section modules it imports (`evpnd/l3/settings.py`) can use it.
Each target is checked on its own, so an error names the bad item, not the
list. `auto` is <ASN>:<VNI> (derived by the RIB, `auto_route_target`);
imports also take `*:NN`, NN under any ASN or address.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from evpnd import validate

AUTO = "auto"


def check_route_target(value: str) -> str:
    # The encoder's own rule (evpnd/validate.py): ASCII digits, ranges, whole string.
    return validate.auto_or(value, validate.route_target, "or 'auto' for ASN:VNI")


def check_import_route_target(value: str) -> str:
    return validate.auto_or(value, validate.import_route_target,
                            "or '*:NN' for any ASN, or 'auto' for ASN:VNI")  # fmt: skip


RouteTargetItem = Annotated[str, AfterValidator(check_route_target)]
ImportRouteTargetItem = Annotated[str, AfterValidator(check_import_route_target)]


class RouteTargets(BaseModel):
    import_: list[ImportRouteTargetItem] = Field(default_factory=lambda: [AUTO], alias="import")
    export: list[RouteTargetItem] = Field(default_factory=lambda: [AUTO])

    # Unknown keys are typos an operator wants to hear about, not silently drop.
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @field_validator("import_", "export")
    @classmethod
    def _targets(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("needs at least one route target (use 'auto' for ASN:VNI)")
        return value
