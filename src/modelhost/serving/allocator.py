"""glibc malloc settings for a model instance: a heap that keeps what inference frees.

A forward pass allocates and frees tens of MB (activations). With glibc's defaults (a dynamic mmap
threshold, the trim threshold twice it: a few MB) the top of the heap goes back to the kernel after
every call and is faulted back in on the next: on all-MiniLM-L6-v2 at batch 32 that is ~160 page
faults and ~1 ms of CPU per item (15% of the model's time). A fixed mmap threshold of 32 MiB
(glibc's own ceiling for the dynamic one) and a trim threshold of 64 MiB keep it, at the cost of
holding up to that much freed memory per arena. Multi-model instances keep glibc's defaults (worker.py):
their cache budgets each model by the resident memory its load adds.

Left alone when the user chose an allocator: one of glibc's ``MALLOC_*`` variables or malloc
``GLIBC_TUNABLES``, an ``LD_PRELOAD`` (jemalloc, tcmalloc), or ``MODELHOST_MALLOC_TUNING=0``; and on a C
library other than glibc.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from collections.abc import Mapping

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 64 * 1024 * 1024
SWITCH = "MODELHOST_MALLOC_TUNING"
GLIBC_MALLOC_VARIABLES = (
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_MMAP_MAX_",
    "MALLOC_ARENA_MAX",
    "MALLOC_ARENA_TEST",
)

log = logging.getLogger(__name__)


def user_chose(env: Mapping[str, str]) -> bool:
    """Whether the environment already decides the allocator's behaviour."""
    if env.get(SWITCH, "").strip().lower() in ("0", "false", "off", "no"):
        return True
    if env.get("LD_PRELOAD", "").strip():
        return True
    if "glibc.malloc." in env.get("GLIBC_TUNABLES", ""):
        return True
    return any(name in env for name in GLIBC_MALLOC_VARIABLES)


def keep_freed_memory(env: Mapping[str, str] = os.environ) -> bool:
    """Apply the settings (see the module); whether they were applied."""
    if user_chose(env) or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(None)
        ok = libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1 and ok
    except (OSError, AttributeError):
        return False
    if not ok:
        log.warning("mallopt refused the instance's malloc settings; glibc defaults stay")
    return ok
