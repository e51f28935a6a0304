"""InstanceType -> Ray Serve replica resources (``ray_actor_options``).

| InstanceType family | vCPUs | memory (GiB) | GPUs |
|---|---|---|---|
| ml.t2/t3.medium | 2 | 4 | 0 |
| ml.*.large | 2 | 4 (c), 8 (m, t), 16 (r) | 0 |
| ml.*.xlarge | 4 | 8 (c), 16 (m, t, g), 32 (r) | 1 for g4dn/g5/g6/p3 |
| ml.*.Nxlarge | 4N | 2 GiB per vCPU (c), 4 (m, t, g), 8 (r) | 1 for g/p (p3.8x and up: 4) |

A replica reserves ``num_cpus = vCPUs x MODELHOST_RAY_CPUS_PER_VCPU`` (default 1) and
``memory = GiB x MODELHOST_RAY_MEMORY_SHARE`` (default 1; 0 reserves none), so a small test cluster
can hold several "ml.m5.large" replicas with e.g. 0.1 and 0.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 1024**3
_MEMORY_PER_VCPU = {"c": 2, "r": 8}  # GiB; every other family 4
_GPU_FAMILIES = ("g4dn", "g5", "g6", "p3", "p4d", "p5")
_SIZE = re.compile(r"^(\d+)?(medium|large|xlarge)$")


@dataclass(frozen=True)
class ReplicaResources:
    vcpus: int
    memory_gib: int
    gpus: int

    def actor_options(self, cpus_per_vcpu: float, memory_share: float) -> dict[str, float]:
        out: dict[str, float] = {"num_cpus": round(self.vcpus * cpus_per_vcpu, 4)}
        if memory_share > 0:
            out["memory"] = float(int(self.memory_gib * GIB * memory_share))
        if self.gpus:
            out["num_gpus"] = float(self.gpus)
        return out


def resources_for(instance_type: str) -> ReplicaResources:
    """The table above; an unrecognised type is sized as ml.m5.large (2 vCPUs, 8 GiB)."""
    parts = instance_type.split(".")
    if len(parts) != 3 or parts[0] != "ml":
        return ReplicaResources(2, 8, 0)
    family, size = parts[1], parts[2]
    m = _SIZE.match(size)
    if m is None:
        return ReplicaResources(2, 8, 0)
    mult, word = int(m.group(1) or 1), m.group(2)
    vcpus = 2 if word in ("medium", "large") else 4 * mult
    per_vcpu = _MEMORY_PER_VCPU.get(family[0], 4)
    memory = 4 if word == "medium" else vcpus * per_vcpu
    gpus = 0
    if family.startswith(_GPU_FAMILIES) and word == "xlarge":
        gpus = 4 if family.startswith("p") and mult >= 8 else 1
    return ReplicaResources(vcpus, memory, gpus)
