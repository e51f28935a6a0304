"""CPU and memory of a SageMaker instance type (``ml.<family>.<size>``), and the Fargate task size
that fits it (Fargate accepts only certain CPU/memory pairs)."""

from __future__ import annotations

import re
from dataclasses import dataclass

# GiB of memory per vCPU by family (the EC2 families behind the ml.* types).
MEMORY_PER_VCPU = {"c": 2, "m": 4, "r": 8, "t": 2, "g": 4, "p": 8, "inf": 2, "trn": 4, "x": 16}
SIZES = {"medium": 2, "large": 2, "xlarge": 4, "metal": 96}
FARGATE_CPU = (256, 512, 1024, 2048, 4096, 8192, 16384)
# Fargate: memory range (MiB) and step for each CPU value
FARGATE_MEMORY = {
    256: (512, 2048, 512),
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
    8192: (16384, 61440, 4096),
    16384: (32768, 122880, 8192),
}


@dataclass(frozen=True)
class Size:
    vcpus: int
    memory_mib: int


def instance_size(instance_type: str) -> Size:
    """``ml.m5.xlarge`` -> 4 vCPU, 16 GiB. An unknown name is sized as ml.m5.large (2 vCPU, 8 GiB)."""
    m = re.fullmatch(r"ml\.([a-z]+)(\d*)[a-z]*\.(\d*)(medium|large|xlarge|metal)", instance_type or "")
    if not m:
        return Size(2, 8192)
    family, count, size = m.group(1), m.group(3), m.group(4)
    vcpus = SIZES[size] * (int(count) if count else 1)
    per = next((v for k, v in sorted(MEMORY_PER_VCPU.items(), key=lambda kv: -len(kv[0])) if family.startswith(k)), 4)
    memory = vcpus * per * 1024
    if instance_type.startswith(("ml.t2.medium", "ml.t3.medium")):
        memory = 4096
    return Size(vcpus, memory)


def fargate_size(size: Size) -> tuple[int, int]:
    """(cpu units, memory MiB) of the smallest valid Fargate task with at least the instance's vCPUs
    (at most 16) and as much of its memory as that CPU allows."""
    cpu = next((c for c in FARGATE_CPU if c >= min(size.vcpus, 16) * 1024), FARGATE_CPU[-1])
    low, high, step = FARGATE_MEMORY[cpu]
    memory = min(max(size.memory_mib, low), high)
    memory = low + ((memory - low) // step) * step
    return cpu, memory
