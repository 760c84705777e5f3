"""The simulated world: its clock, seed, credentials, fault plan and every instance ever created.

Instance state is derived from the world clock at read time (no background tasks): an instance
boots for `boot_s` after its create call (or after a `power_on`), then runs until stopped or
destroyed. A stop (`World.power_off`) keeps the node's disk and host key but ends its workload and
connections; a start (`World.power_on`) boots it again. Provider servers map this common life onto
their own status words; SSH nodes read the same objects live, so a key attached through an API is
accepted by the node at once. With a state dir, every change is saved, so a standalone simulator
killed and restarted keeps its instances.

A node's deadline watchdog (`sh .gpushop/watchdog.sh start`, see `sim/node.py`) is registered
here and acts lazily too: `fire_watchdogs`, awaited at the start of every sim HTTP request, does
what the script's loop would have done by now. Watchdogs are not saved: they are processes on the
nodes, whose files do not survive a restart of the simulator either.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import httpx

from gpushop_tui.clock import Clock, FakeClock, SystemClock
from gpushop_tui.sim.faults import FaultPlan

PROVIDERS = ("vastai", "tensordock", "bluelobster", "runpod", "lambda")
SSH_USERS = {
    "vastai": "root",
    "tensordock": "user",
    "bluelobster": "ubuntu",
    "runpod": "root",
    "lambda": "ubuntu",
}
Phase = Literal["booting", "running", "stopped", "destroyed"]
WatchdogAction = Literal["destroy", "stop", "poweroff"]


@dataclass(frozen=True)
class Timing:
    """How long an instance of one provider takes to change state."""

    boot_s: float
    """From a create (or a start) to running."""
    dpkg_lock_s: float
    """How long the dpkg lock stays held after the first boot."""
    stop_s: float = 0.0
    """How long a stop reads as under way (TensorDock's `stopping`) before it reads stopped."""
    release_s: float | None = None
    """How long a stopped instance keeps its GPU before the provider releases it (TensorDock's
    `StoppedDisassociated`, [INFER] delay); None: it keeps it for as long as it is stopped."""


TIMINGS: dict[str, dict[str, Timing]] = {
    "fast": {
        "vastai": Timing(boot_s=3, dpkg_lock_s=0),
        "tensordock": Timing(boot_s=4, dpkg_lock_s=2, stop_s=2, release_s=60),
        "bluelobster": Timing(boot_s=5, dpkg_lock_s=3),
        "runpod": Timing(boot_s=3, dpkg_lock_s=0, stop_s=1, release_s=60),
        "lambda": Timing(boot_s=5, dpkg_lock_s=2),
    },
    "real": {
        "vastai": Timing(boot_s=240, dpkg_lock_s=0),
        "tensordock": Timing(boot_s=90, dpkg_lock_s=150, stop_s=20, release_s=300),
        "bluelobster": Timing(boot_s=60, dpkg_lock_s=900),
        "runpod": Timing(boot_s=90, dpkg_lock_s=0, stop_s=10, release_s=600),
        "lambda": Timing(boot_s=300, dpkg_lock_s=120),
    },
}


FAST_STREAM_SPEEDUP = 20.0
"""How many times faster than its benchmark a stand-in model server streams in fast timing."""


@dataclass(frozen=True)
class WorkloadTiming:
    """How long a launched workload spends in each phase before it serves (0 skips the phase),
    and how many times faster than the shipped benchmark its model server streams tokens."""

    installing_s: float
    starting_s: float
    pulling_s: float
    loading_s: float
    speedup: float = 1.0


WORKLOAD_TIMINGS: dict[str, dict[str, WorkloadTiming]] = {
    "fast": {
        "llm": WorkloadTiming(2, 1, 3, 2, FAST_STREAM_SPEEDUP),
        "vllm": WorkloadTiming(3, 1, 0, 4, FAST_STREAM_SPEEDUP),
        "custom": WorkloadTiming(1, 1, 0, 0, FAST_STREAM_SPEEDUP),
    },
    "real": {
        "llm": WorkloadTiming(45, 5, 240, 30),
        "vllm": WorkloadTiming(120, 10, 0, 420),
        "custom": WorkloadTiming(30, 10, 0, 0),
    },
}


@dataclass
class SimInstance:
    """One instance at one provider, with what its node will report about itself."""

    provider: str
    id: str
    offer_id: str
    label: str
    gpu_name: str
    gpu_count: int
    vram_mb: int
    cuda: float
    price_per_hour: float
    created_at: float
    boot_s: float
    dpkg_lock_s: float
    ssh_user: str
    authorized_keys: list[str] = field(default_factory=list)
    node_gpu_name: str = ""
    node_gpu_count: int = 0
    node_cuda: float = 0.0
    driver: str = "550.54.15"
    ssh_refuse_until: float = 0.0
    gpu_util: int = 0
    stopped: bool = False
    destroyed_at: float | None = None
    ssh_port: int | None = None
    powered_on_at: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    stop_s: float = 0.0
    """The provider's `Timing.stop_s`, fixed at create."""
    release_s: float | None = None
    """The provider's `Timing.release_s`, fixed at create."""
    stopped_at: float | None = None
    """When the last stop was asked for (None: never, or set `stopped` by hand)."""
    released_at: float | None = None
    """While stopped: when the provider releases (or released) the instance's GPU."""
    vanishes_at: float | None = None
    """While stopped: when the provider reclaims the instance (`stopped_vanishes_after_s`)."""
    start_held: bool = False
    """A start was accepted but does not complete (no GPU for it, or a fault): the instance
    stays booting until it is stopped or destroyed."""

    def phase(self, now: float) -> Phase:
        if self.destroyed_at is not None and now >= self.destroyed_at:
            return "destroyed"
        if self.stopped and self.vanishes_at is not None and now >= self.vanishes_at:
            return "destroyed"
        if self.stopped:
            return "stopped"
        if self.start_held:
            return "booting"
        boot_from = self.created_at if self.powered_on_at is None else self.powered_on_at
        return "running" if now >= boot_from + self.boot_s else "booting"

    def stopping(self, now: float) -> bool:
        """Whether a stop is still under way (`stop_s` after it was asked for)."""
        return self.stopped and self.stopped_at is not None and now < self.stopped_at + self.stop_s

    def released(self, now: float) -> bool:
        """Whether the instance is stopped and its GPU has gone back to the provider."""
        return self.stopped and self.released_at is not None and now >= self.released_at

    def power_off(self, now: float, *, vanish_after_s: float | None = None) -> None:
        """Stop the instance, keeping its disk; a start still held is cancelled. Its GPU is
        released `release_s` after the stop completes; it vanishes `vanish_after_s` after the
        stop was asked for, if set."""
        self.stopped = True
        self.start_held = False
        self.stopped_at = now
        done = now + self.stop_s
        self.released_at = None if self.release_s is None else done + self.release_s
        self.vanishes_at = None if vanish_after_s is None else now + vanish_after_s

    def power_on(self, now: float, *, held: bool = False) -> None:
        """Start a stopped instance again, as a VM does: it boots for `boot_s` from `now`, or
        stays booting for ever when `held` (the start is accepted but never completes)."""
        self.stopped = False
        self.powered_on_at = now
        self.start_held = held
        self.stopped_at = self.released_at = self.vanishes_at = None

    def dpkg_locked(self, now: float) -> bool:
        return now < self.created_at + self.boot_s + self.dpkg_lock_s


WATCHDOG_AGENT = "gpushop-sim-watchdog/1"
"""The User-Agent of a watchdog's own API call: the request middleware lets it pass without
firing watchdogs again (firing is under way and waits for this very answer)."""
WATCHDOG_RETRY_S = 60.0
"""How long a watchdog waits before it tries a failed action again (as the script does)."""
LOOPBACK = ("127.0.0.1", "localhost", "::1")
TERMINATE_AFTER = "terminate_after"
"""The `SimInstance.extra` entry of a provider's own time limit on an instance (RunPod's
`terminateAfter`), in epoch seconds: the world ends the instance then, running or stopped."""
INSTANCE_KEY = "instance_api_key"
"""The `SimInstance.extra` entry of a Vast instance's own API key (create's `instance_api_key`,
its container's `CONTAINER_API_KEY`)."""


def _stamp(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class SimWatchdog:
    """A node's deadline watchdog, as the world runs it: what `watchdog.env` said at start, and
    the node's home (`root`), whose `.gpushop/deadline` is read again each time it is checked."""

    provider: str
    instance_id: str
    root: Path
    action: WatchdogAction
    deadline: float
    """The last deadline read (epoch seconds)."""
    api: str | None = None
    """Destroy: the Vast API base URL (`GPUSHOP_API`)."""
    target: str | None = None
    """Destroy: the instance id to delete (`GPUSHOP_INSTANCE`)."""
    key: str | None = field(default=None, repr=False)
    """Destroy: the instance-scoped API key (never logged)."""
    unreadable: bool = False
    """Whether the last read of the deadline file failed (logged once per failure run)."""
    next_try: float = 0.0
    """After a failed action: not before this world time."""

    @property
    def log_path(self) -> Path:
        return self.root / ".gpushop" / "watchdog.log"

    def log(self, now: float, text: str) -> None:
        """Append one line to the node's `watchdog.log`, as the script does."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as out:
            out.write(f"{_stamp(now)} {text}\n")

    def read_deadline(self, now: float) -> float:
        """The deadline in the node's file now; an unreadable one keeps the last (logged)."""
        try:
            value = int((self.root / ".gpushop" / "deadline").read_text().strip())
        except (OSError, ValueError):
            if not self.unreadable:
                self.log(now, f"deadline unreadable; keeping {_stamp(self.deadline)}")
            self.unreadable = True
            return self.deadline
        if self.unreadable or value != self.deadline:
            self.log(now, f"deadline {_stamp(value)}")
        self.unreadable = False
        self.deadline = float(value)
        return self.deadline

    async def call_api(self, now: float) -> bool:
        """The script's API call with the instance key, logged: `DELETE {api}/instances/
        {target}/` (destroy) or `PUT` `{"state": "stopped"}` (stop); whether it got a 2xx.
        Only loopback APIs are called: the simulator never reaches a real provider."""
        method, body = (
            ("PUT", b'{"state":"stopped"}') if self.action == "stop" else ("DELETE", b"{}")
        )
        action = self.action
        url = f"{(self.api or '').rstrip('/')}/instances/{self.target}/"
        try:
            host = httpx.URL(url).host
        except httpx.InvalidURL:
            host = ""
        if host not in LOOPBACK:
            self.log(now, f"{action}: {method} {url} failed: not a loopback address")
            return False
        headers = {
            "Authorization": f"Bearer {self.key or ''}",
            "Content-Type": "application/json",
            "User-Agent": WATCHDOG_AGENT,
        }
        try:
            async with httpx.AsyncClient(timeout=30.0) as client:
                answer = await client.request(method, url, headers=headers, content=body)
        except httpx.HTTPError as exc:
            self.log(now, f"{action}: {method} {url} failed: {type(exc).__name__}")
            return False
        shown = " ".join(answer.text.split())[:200]
        self.log(now, f"{action}: {method} {url} -> {answer.status_code} {shown}")
        refused = '"success": false' in answer.text or '"success":false' in answer.text
        if refused:  # as the script reads Vast's refusals that come with HTTP 200
            return False
        return answer.is_success


class NodeHost(Protocol):
    """Runs the SSH endpoints of instances (see `sim/node.py`)."""

    async def attach(self, instance: SimInstance) -> int:
        """Start (or restart) the node of `instance` on loopback; returns its port."""
        ...

    async def detach(self, instance: SimInstance) -> None:
        """Stop the node of `instance` for good (the instance is destroyed)."""
        ...

    async def power_off(self, instance: SimInstance) -> None:
        """Power the node of `instance` off: end its workload and open connections, keep its
        files and host key (it refuses connections while the instance is not running)."""
        ...


class World:
    """Everything the simulated providers share."""

    def __init__(
        self,
        *,
        seed: int = 0,
        clock: Clock | None = None,
        timing: Literal["fast", "real"] = "fast",
        state_dir: Path | None = None,
        credit: float = 100.0,
        vast_machines: int = 650,
    ) -> None:
        self.seed = seed
        self.clock = clock or SystemClock()
        self.timing = TIMINGS[timing]
        self.workload_timing = WORKLOAD_TIMINGS[timing]
        self.state_dir = state_dir
        self.faults = FaultPlan()
        self.keys = {
            p: f"sim-{p}-{random.Random(f'{seed}:key:{p}').getrandbits(64):016x}" for p in PROVIDERS
        }
        self.credit = credit
        self.vast_machines = vast_machines
        """Machines on the simulated Vast market; each lists one to four offers (about 1,650 in
        all at the default, 20,000 at 8,000)."""
        self.instances: dict[str, dict[str, SimInstance]] = {p: {} for p in PROVIDERS}
        self.taken: dict[str, set[str]] = {p: set() for p in PROVIDERS}
        self.counters: dict[str, int] = dict.fromkeys(PROVIDERS, 0)
        self.nodes: NodeHost | None = None
        self.rate_limited = True
        """Whether the simulated APIs refuse calls over their provider's rate limit (429); core
        tests whose adapters skip their own limiters turn it off."""
        self.watchdogs: dict[tuple[str, str], SimWatchdog] = {}
        """The node watchdogs running now, by (provider, instance id)."""
        self._firing = asyncio.Lock()
        if state_dir is not None:
            self._load()

    def now(self) -> float:
        """World time as epoch seconds."""
        return self.clock.now().timestamp()

    def rng(self, provider: str, purpose: str = "offers") -> random.Random:
        """A generator fixed by the seed, so offers are the same on every start."""
        return random.Random(f"{self.seed}:{provider}:{purpose}")

    def next_id(self, provider: str) -> int:
        """A new id for `provider`, saved at once so that a restart never hands it out again."""
        self.counters[provider] += 1
        self.save()
        return self.counters[provider]

    async def create_instance(
        self,
        provider: str,
        *,
        instance_id: str,
        offer_id: str,
        label: str,
        gpu_name: str,
        gpu_count: int,
        vram_mb: int,
        cuda: float,
        price_per_hour: float,
        authorized_keys: list[str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> SimInstance:
        """Record a new instance (booting from now), apply node faults, start its node."""
        timing = self.timing[provider]
        faults = self.faults.node(provider)
        now = self.now()
        instance = SimInstance(
            provider=provider,
            id=instance_id,
            offer_id=offer_id,
            label=label,
            gpu_name=gpu_name,
            gpu_count=gpu_count,
            vram_mb=vram_mb,
            cuda=cuda,
            price_per_hour=price_per_hour,
            created_at=now,
            boot_s=timing.boot_s,
            dpkg_lock_s=timing.dpkg_lock_s,
            ssh_user=SSH_USERS[provider],
            authorized_keys=list(authorized_keys or []),
            node_gpu_name=faults.wrong_gpu or gpu_name,
            node_gpu_count=faults.fewer_gpus or gpu_count,
            node_cuda=faults.old_cuda or cuda,
            ssh_refuse_until=now + timing.boot_s + faults.ssh_refuse_s,
            extra=dict(extra or {}),
            stop_s=timing.stop_s,
            release_s=timing.release_s,
        )
        self.instances[provider][instance_id] = instance
        self.taken[provider].add(offer_id)
        if self.nodes is not None:
            instance.ssh_port = await self.nodes.attach(instance)
        self.save()
        return instance

    def get(self, provider: str, instance_id: str) -> SimInstance | None:
        """The instance, destroyed or not; None if it never existed here."""
        return self.instances[provider].get(instance_id)

    def live(self, provider: str) -> list[SimInstance]:
        """Instances not yet destroyed, oldest first."""
        now = self.now()
        return [i for i in self.instances[provider].values() if i.phase(now) != "destroyed"]

    async def destroy(self, provider: str, instance_id: str, *, linger_s: float = 0.0) -> bool:
        """Destroy an instance. False if unknown or already destroyed.

        A `destroy_noop` fault makes the call report success while nothing happens; a
        `destroy_stuck` one leaves the instance being destroyed for ever (`destroyed_at` is
        infinite: set, never reached). `linger_s` keeps the instance visible (as "destroyed"
        only after that delay); a provider shows an instance in that window as being destroyed
        (`destroyed_at` set, phase not yet "destroyed").
        """
        instance = self.get(provider, instance_id)
        if instance is None or instance.phase(self.now()) == "destroyed":
            return False
        faults = self.faults.node(provider)
        if faults.destroy_noop > 0:
            faults.destroy_noop -= 1
            return True
        if faults.destroy_stuck > 0:
            faults.destroy_stuck -= 1
            linger_s = math.inf
        if instance.destroyed_at is None:
            instance.destroyed_at = self.now() + linger_s
        self.watchdogs.pop((provider, instance_id), None)
        self.taken[provider].discard(instance.offer_id)
        if self.nodes is not None:
            await self.nodes.detach(instance)
        self.save()
        return True

    async def power_off(self, provider: str, instance_id: str) -> bool:
        """Stop a live instance, keeping its disk: its node's workload ends, its connections
        drop, its files stay. False if unknown or destroyed; a stopped one is left as it is.

        A `stopped_vanishes_after_s` fault, read now, makes the provider reclaim the instance
        that long after this stop.
        """
        now = self.now()
        instance = self.get(provider, instance_id)
        if instance is None or instance.phase(now) == "destroyed":
            return False
        if instance.stopped:
            return True
        instance.power_off(now, vanish_after_s=self.faults.node(provider).stopped_vanishes_after_s)
        self.watchdogs.pop((provider, instance_id), None)
        if self.nodes is not None:
            await self.nodes.power_off(instance)
        self.save()
        return True

    def power_on(self, provider: str, instance_id: str, *, held: bool = False) -> bool:
        """Start a stopped instance: it boots for `boot_s`, then its node answers again with
        the same files and host key (its workload runs only once launched again). False if it
        is unknown, destroyed or not stopped.

        `held` (the provider has no GPU for it), or a `start_never_completes` fault read now,
        accepts the start but never completes it.
        """
        now = self.now()
        instance = self.get(provider, instance_id)
        if instance is None or instance.phase(now) == "destroyed" or not instance.stopped:
            return False
        instance.power_on(now, held=held or self.faults.node(provider).start_never_completes)
        self.save()
        return True

    async def vanish(self, provider: str, instance_id: str) -> bool:
        """The provider reclaims an instance on its own (it is gone at once, no linger)."""
        instance = self.get(provider, instance_id)
        if instance is None or instance.destroyed_at is not None:
            return False
        instance.destroyed_at = self.now()
        self.watchdogs.pop((provider, instance_id), None)
        if self.nodes is not None:
            await self.nodes.detach(instance)
        self.save()
        return True

    def watch(self, watchdog: SimWatchdog) -> bool:
        """Register a node's watchdog; False (nothing changes) while that instance has one."""
        ident = (watchdog.provider, watchdog.instance_id)
        if ident in self.watchdogs:
            return False
        self.watchdogs[ident] = watchdog
        watchdog.log(self.now(), f"started: {watchdog.action} at {_stamp(watchdog.deadline)}")
        return True

    async def fire_watchdogs(self) -> None:
        """Do what every node's watchdog loop would have done by now (and what the providers'
        own time limits did, `expire_limits`): each watchdog whose deadline (read
        again from its node) has passed destroys its instance through the Vast API with the
        instance key, or powers its VM off. A failed destroy stays armed and is tried again
        `WATCHDOG_RETRY_S` later; a watchdog whose machine is stopped or gone is dropped.

        One firing at a time; the watchdog's own API call passes the request middleware without
        waiting (see `WATCHDOG_AGENT`).
        """
        await self.expire_limits()
        if not self.watchdogs:
            return
        async with self._firing:
            for ident, dog in list(self.watchdogs.items()):
                now = self.now()
                instance = self.get(*ident)
                if instance is None or instance.phase(now) in ("stopped", "destroyed"):
                    self.watchdogs.pop(ident, None)
                    continue
                on_node = now + self.faults.node(ident[0]).clock_skew_s  # the node's own clock
                if dog.read_deadline(now) > on_node or now < dog.next_try:
                    continue
                if dog.action == "poweroff":
                    dog.log(now, "deadline passed: poweroff")
                    await self.power_off(*ident)
                elif await dog.call_api(now):
                    self.watchdogs.pop(ident, None)
                else:
                    dog.next_try = now + WATCHDOG_RETRY_S

    async def expire_limits(self) -> None:
        """End every instance whose provider time limit (`TERMINATE_AFTER`) has passed,
        running or stopped, as of that very time (the provider acts on its own clock)."""
        now = self.now()
        for provider, instances in self.instances.items():
            due = [
                i
                for i in instances.values()
                if (ttl := i.extra.get(TERMINATE_AFTER)) is not None
                and ttl <= now
                and i.destroyed_at is None
                and i.phase(now) != "destroyed"  # the costly check last: this runs per request
            ]
            for instance in due:
                await self.vanish(provider, instance.id)
                instance.destroyed_at = instance.extra[TERMINATE_AFTER]
                self.save()

    async def advance_clock(self, seconds: float) -> None:
        """Move a fake world clock on by `seconds`, stopping at every watchdog deadline on the
        way so that each acts at its own time (as the script on a real node does), not when
        the world is next looked at."""
        clock = self.clock
        assert isinstance(clock, FakeClock)
        end = self.now() + seconds
        while True:
            now = self.now()
            due = [
                d
                for (provider, _), w in self.watchdogs.items()
                if (d := w.read_deadline(now) - self.faults.node(provider).clock_skew_s) > now
            ]
            step_to = min([end, *due])
            await clock.advance(step_to - now)
            await self.fire_watchdogs()
            if step_to >= end:
                return

    async def restore_nodes(self) -> None:
        """After a restart from the state dir: bring back the nodes of live instances."""
        if self.nodes is None:
            return
        for provider in PROVIDERS:
            for instance in self.live(provider):
                instance.ssh_port = await self.nodes.attach(instance)
        self.save()

    def save(self) -> None:
        """Write the world's instances to the state dir (atomically), if it has one."""
        if self.state_dir is None:
            return
        data = {
            "seed": self.seed,
            "credit": self.credit,
            "counters": self.counters,
            "taken": {p: sorted(t) for p, t in self.taken.items()},
            "instances": {
                p: [asdict(i) for i in items.values()] for p, items in self.instances.items()
            },
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        target = self.state_dir / "world.json"
        scratch = target.with_suffix(".tmp")
        scratch.write_text(json.dumps(data))
        os.replace(scratch, target)

    def _load(self) -> None:
        assert self.state_dir is not None
        path = self.state_dir / "world.json"
        if not path.exists():
            return
        data = json.loads(path.read_text())
        self.credit = data["credit"]
        self.counters.update(data["counters"])
        self.taken = {p: set(data["taken"].get(p, [])) for p in PROVIDERS}
        for provider, items in data["instances"].items():
            self.instances[provider] = {i["id"]: SimInstance(**i) for i in items}
