"""Memory of SageMaker hosting instance types (GiB as AWS lists them), for budgets such as a multi-model
instance's model cache. Unlisted sizes of a known family scale with its memory per vCPU."""

from __future__ import annotations

import re

# GiB of memory per vCPU by instance family (ml.<family>.<size>)
GIB_PER_VCPU = {
    "t2": 2.0, "t3": 2.0, "m4": 4.0, "m5": 4.0, "m5d": 4.0, "m6i": 4.0, "m6g": 4.0, "m7i": 4.0, "c4": 1.875,
    "c5": 2.0, "c5d": 2.0, "c6i": 2.0, "c6g": 2.0, "c7i": 2.0, "r5": 8.0, "r5d": 8.0, "r6i": 8.0, "r6g": 8.0,
    "g4dn": 4.0, "g5": 4.0, "g6": 4.0, "inf1": 2.0, "inf2": 4.0, "p3": 7.625,
}  # fmt: skip
VCPUS = {"medium": 2, "large": 2, "xlarge": 4}
EXACT_GIB = {"ml.t2.medium": 4.0, "ml.t3.medium": 4.0, "ml.c5.large": 4.0, "ml.c4.large": 3.75}
SIZE = re.compile(r"(\d+)xlarge")


def memory_mib(instance_type: str | None) -> int | None:
    """The instance type's memory in MiB, or None when it is not a known ml.* type."""
    if not instance_type:
        return None
    if instance_type in EXACT_GIB:
        return int(EXACT_GIB[instance_type] * 1024)
    parts = instance_type.split(".")
    if len(parts) != 3 or parts[0] != "ml" or parts[1] not in GIB_PER_VCPU:
        return None
    size = parts[2]
    match = SIZE.fullmatch(size)
    vcpus = 4 * int(match.group(1)) if match else VCPUS.get(size)
    if vcpus is None:
        return None
    return int(GIB_PER_VCPU[parts[1]] * vcpus * 1024)
