"""The instance's malloc settings (serving/allocator.py): freed memory stays in the heap (no page faults
when the next call allocates the same again), and a user's own allocator choice is left alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

from modelhost.serving import allocator

# 10 x 3 MB allocated, touched and freed, twice: the minor page faults of the second pass. With glibc's
# defaults the first free of an mmapped 3 MB chunk sets the trim threshold to 6 MB, so freeing 30 MB at
# the heap's top hands it back and the second pass faults it all in again (~7,500 faults).
PROBE = textwrap.dedent(
    """
    import ctypes, resource, sys
    from modelhost.serving import allocator
    applied = allocator.keep_freed_memory()
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    SIZE = 3 * 1024 * 1024
    def one_pass():
        chunks = [libc.malloc(SIZE) for _ in range(10)]
        for c in chunks:
            ctypes.memset(c, 1, SIZE)
        for c in reversed(chunks):
            libc.free(c)
    one_pass()
    one_pass()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    one_pass()
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")


def probe(extra_env: dict[str, str]) -> tuple[bool, int]:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "GLIBC_TUNABLES", allocator.SWITCH)}
    env = {k: v for k, v in env.items() if k not in allocator.GLIBC_MALLOC_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**env, **extra_env}, capture_output=True, text=True, timeout=60, check=True
    )
    applied, faults = out.stdout.split()
    return applied == "True", int(faults)


@glibc_only
def test_freed_memory_is_kept_for_the_next_call() -> None:
    applied, faults = probe({})
    assert applied
    assert faults < 500, f"{faults} page faults re-allocating a freed 30 MB working set"
    off_applied, off_faults = probe({allocator.SWITCH: "0"})
    assert not off_applied
    assert off_faults > 5000, f"glibc's defaults should give the heap back ({off_faults} faults)"


@pytest.mark.parametrize(
    "env",
    [
        {"MODELHOST_MALLOC_TUNING": "off"},
        {"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"},
        {"MALLOC_ARENA_MAX": "2"},
        {"MALLOC_TRIM_THRESHOLD_": "1000000"},
        {"GLIBC_TUNABLES": "glibc.malloc.trim_threshold=1000000"},
    ],
)
def test_a_users_own_allocator_choice_is_left_alone(env: dict[str, str]) -> None:
    assert allocator.user_chose(env)
    assert not allocator.keep_freed_memory(env)


def test_default_environment_is_tuned() -> None:
    assert not allocator.user_chose({"PATH": "/usr/bin", "GLIBC_TUNABLES": "glibc.rtld.nns=2"})
