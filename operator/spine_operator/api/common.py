"""Types shared by every kind: Kubernetes names, quantities, resources, conditions.

Field constraints here are what the CRD schema enforces at the API server and what the operator
re-checks, so a message names the field and says what to fix.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import Field, StringConstraints

from spine_runtime.config.base import PATTERN_HINTS, CamelModel, DnsLabel

__all__ = [
    "PATTERN_HINTS",
    "CamelModel",
    "Condition",
    "DnsLabel",
    "DnsSubdomain",
    "ImageRef",
    "Quantity",
    "ResourceRequirements",
    "parse_quantity",
]

DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
IMAGE_PATTERN = r"^[a-zA-Z0-9][a-zA-Z0-9._/:@+-]*$"

# RFC 1123 subdomain: what Kubernetes allows as a Secret or StorageClass name.
DnsSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
# A Kubernetes resource quantity such as 500m, 1Gi or 2.5G.
Quantity = Annotated[str, StringConstraints(pattern=QUANTITY_PATTERN, max_length=32)]
# registry/repository[:tag][@digest]; no spaces or control characters.
ImageRef = Annotated[str, StringConstraints(pattern=IMAGE_PATTERN, max_length=255)]

PATTERN_HINTS.update(
    {
        DNS_SUBDOMAIN_PATTERN: "must be a Kubernetes object name: lowercase letters, digits, '-' "
        "and '.', starting and ending with a letter or digit",
        QUANTITY_PATTERN: "must be a Kubernetes quantity such as 512Mi, 1Gi or 500m",
        IMAGE_PATTERN: "must be an image reference such as eclipse-mosquitto:2.0.21, "
        "without spaces",
    }
)

_SUFFIXES = {
    "m": Decimal("0.001"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}


def parse_quantity(quantity: str) -> Decimal:
    """The value of a quantity in base units (bytes, cores), for comparing sizes."""
    match = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)([a-zA-Z]*)", quantity.strip())
    if not match or match.group(2) not in _SUFFIXES:
        raise ValueError(f"not a Kubernetes quantity: {quantity!r}")
    return Decimal(match.group(1)) * _SUFFIXES[match.group(2)]


class ResourceList(CamelModel):
    cpu: Quantity | None = Field(default=None, description="CPU, e.g. 100m or 1.")
    memory: Quantity | None = Field(default=None, description="Memory, e.g. 64Mi.")


class ResourceRequirements(CamelModel):
    """Compute resources of a workload's main container, as in a Pod spec."""

    requests: ResourceList = Field(default_factory=ResourceList)
    limits: ResourceList = Field(default_factory=ResourceList)


class Condition(CamelModel):
    """A Kubernetes-style status condition."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str
    message: str = ""
    observed_generation: int | None = None
    last_transition_time: str | None = None
