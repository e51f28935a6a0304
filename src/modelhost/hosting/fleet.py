"""A fleet: the instances of one production variant, kept at the desired count.

The fleet restarts crashed instances (with back-off), replaces instances that stop answering
/ping, and hands the router the least busy healthy instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

from modelhost.hosting.instances import RESTART_BACKOFF, Instance, InstanceFailed, InstanceSpec
from modelhost.hosting.logs import EndpointLog

UNHEALTHY_PINGS = 3  # consecutive failed pings before an instance is replaced
STABLE_AFTER = 60.0  # seconds up after which a crash no longer counts as part of a crash loop


class Fleet:
    def __init__(
        self, spec: InstanceSpec, count: int, run_dir: Path, log: EndpointLog, ping_interval: float
    ) -> None:
        self.spec = spec
        self.desired = count
        self.log = log
        self.ping_interval = ping_interval
        self.instances = [Instance(spec, i, run_dir, log) for i in range(count)]
        self._available = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self.stopping = False

    @property
    def healthy_count(self) -> int:
        return sum(1 for i in self.instances if i.healthy)

    async def start(self) -> None:
        """Start every instance and wait until all pass /ping; on any failure stop them all."""
        results = await asyncio.gather(*(self._start_one(i) for i in self.instances), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            await self.stop(drain_timeout=0)
            first = failures[0]
            raise (
                first
                if isinstance(first, InstanceFailed)
                else InstanceFailed(f"{type(first).__name__}: {first}")
            )
        self._available.set()
        self._tasks = [asyncio.create_task(self._supervise(i)) for i in self.instances]

    async def _start_one(self, inst: Instance) -> None:
        await inst.start()
        self._update_available()  # a request waiting in pick() may use it before its siblings are up

    async def _supervise(self, inst: Instance) -> None:
        """Restart the instance whenever it exits; replace it when it stops answering /ping."""
        failures = 0
        watchdog = asyncio.create_task(self._watch_pings(inst))
        try:
            while not self.stopping:
                assert inst.proc is not None
                up_since = time.monotonic()
                code = await inst.proc.wait()
                inst.healthy = False
                if self.stopping or inst.stopping:
                    return
                self._update_available()
                if time.monotonic() - up_since > STABLE_AFTER:
                    failures = 0  # it ran fine for a while: not a crash loop
                delay = RESTART_BACKOFF[min(failures, len(RESTART_BACKOFF) - 1)]
                self.log.write(inst.name, f"instance exited with code {code}; restarting in {delay:g}s")
                await asyncio.sleep(delay)
                if self.stopping:
                    return
                inst.restarts += 1
                failures += 1
                try:
                    await inst.start()
                except InstanceFailed as exc:
                    self.log.write(inst.name, f"restart failed: {exc}")
                    inst.kill()
                    continue
                self._update_available()
        finally:
            watchdog.cancel()

    async def _watch_pings(self, inst: Instance) -> None:
        missed = 0
        while not self.stopping:
            await asyncio.sleep(self.ping_interval)
            if not inst.healthy or inst.stopping:
                missed = 0
                continue
            if await inst.ping():
                missed = 0
                continue
            missed += 1
            if missed >= UNHEALTHY_PINGS:
                self.log.write(inst.name, f"instance failed {missed} consecutive pings; replacing it")
                missed = 0
                inst.kill()

    def _update_available(self) -> None:
        if any(i.healthy for i in self.instances):
            self._available.set()
        else:
            self._available.clear()

    def pick_now(self) -> Instance | None:
        """The healthy instance with the fewest outstanding requests (None if there is none)."""
        best: Instance | None = None
        for inst in self.instances:
            if inst.healthy and (best is None or inst.outstanding < best.outstanding):
                best = inst
        return best

    async def pick(self, wait: float) -> Instance | None:
        inst = self.pick_now()
        if inst is not None or self.stopping:
            return inst
        # Every instance is restarting: wait a little for one rather than failing at once.
        self._update_available()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._available.wait(), wait)
        return self.pick_now()

    def recycle(self, inst: Instance) -> None:
        """Kill an instance that timed out on a request (its model may be hung); it is restarted."""
        self.log.write(inst.name, "instance timed out on a request; restarting it")
        inst.kill()
        self._update_available()

    async def stop(self, drain_timeout: float = 30.0) -> None:
        self.stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*(i.stop(drain_timeout) for i in self.instances), return_exceptions=True)
