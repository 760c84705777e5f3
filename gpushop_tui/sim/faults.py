"""The fault plan: what goes wrong, where, and how many times.

HTTP faults are matched per provider and endpoint name (or "*") and consumed in order; node and
lifecycle faults (destroys that do nothing, wrong GPUs, refused SSH, workloads that never load,
die or expect another token, starts that never complete or find no GPU, stopped instances that
vanish) are per provider and read by the provider servers and the SSH nodes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

FaultKind = Literal["latency", "status", "timeout", "malformed", "empty"]


@dataclass
class HttpFault:
    """One HTTP misbehaviour.

    latency: answer normally, `delay_s` (real seconds) after the request arrived.
    status: answer `status` with `body` as `media_type` (plain text by default, like Vast's
        usual 429), plus `headers` (e.g. a `Retry-After`, which the usual Vast 429 lacks).
    timeout: hold the request for `delay_s` (default 3600 s) without answering.
    malformed: answer 200 with a body that is not JSON.
    empty: answer 200 with an empty body.
    `times` None means every matching request; otherwise the fault is used up after `times`.
    """

    provider: str
    endpoint: str = "*"
    kind: FaultKind = "status"
    status: int = 500
    body: str = "Internal Server Error"
    media_type: str = "text/plain"
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    times: int | None = None


def vast_search_quota_exhausted(times: int | None = None) -> HttpFault:
    """Vast's daily search quota: a JSON 429 that only UTC midnight clears (not worth retrying)."""
    body = {"error": "search_quota_exceeded", "msg": "Daily search quota exceeded."}
    return HttpFault(
        provider="vastai",
        endpoint="search",
        status=429,
        body=json.dumps(body),
        media_type="application/json",
        times=times,
    )


@dataclass
class NodeFaults:
    """Per-provider faults of the instances created from now on."""

    destroy_noop: int = 0
    """The next N destroy calls are accepted (success answer) but change nothing."""
    destroy_stuck: int = 0
    """The next N destroy calls are accepted and the instance then reads as being destroyed
    (Lambda `terminating`, RunPod still listed) for ever: its node is gone, it never is."""
    wrong_gpu: str | None = None
    """New nodes report this GPU name instead of the offer's."""
    old_cuda: float | None = None
    """New nodes report this (older) CUDA version instead of the offer's."""
    fewer_gpus: int | None = None
    """New nodes report this many GPUs instead of the offer's count."""
    ssh_refuse_s: float = 0.0
    """New nodes refuse SSH auth for this many seconds after they boot."""
    workload_never_loads: bool = False
    """Workloads launched from now on stay `loading` for ever; their port is never open."""
    workload_dies_after_s: float | None = None
    """Workloads launched from now on exit after serving this long (world clock): their phase
    becomes `failed: the server exited` and their port is closed."""
    clock_skew_s: float = 0.0
    """Nodes' clocks run this many seconds ahead of the world's (behind, if negative): what
    `date +%s` answers and what their watchdogs compare their deadline with."""
    workload_wrong_token: bool = False
    """vLLM workloads launched from now on expect another token: every authed request is 401."""
    start_never_completes: bool = False
    """Starts asked for from now on are accepted but never complete: the instance stays booting
    (Vast: `scheduling`; TensorDock: `starting`; Blue Lobster: booting, SSH never answers)
    until it is stopped or destroyed. Read at each start call."""
    start_no_capacity: bool = False
    """Starts asked for from now on find no GPU. TensorDock: the stopped instance's GPU is gone
    (it reads `StoppedDisassociated`) and the start is refused with a capacity error; Vast: the
    start waits for GPUs (`scheduling`) until stopped; Blue Lobster: as `start_never_completes`.
    Read at each start call."""
    stopped_vanishes_after_s: float | None = None
    """Instances stopped from now on are reclaimed by the provider (gone, 404) this long (world
    clock) after the stop was asked for, unless started before. Read at each stop call."""


@dataclass
class FaultPlan:
    http: list[HttpFault] = field(default_factory=list)
    nodes: dict[str, NodeFaults] = field(default_factory=dict)

    def add(self, fault: HttpFault) -> None:
        self.http.append(fault)

    def take(self, provider: str, endpoint: str) -> HttpFault | None:
        """The first fault matching this request, consuming one use of it."""
        for fault in self.http:
            if fault.provider in (provider, "*") and fault.endpoint in (endpoint, "*"):
                if fault.times is not None:
                    fault.times -= 1
                    if fault.times <= 0:
                        self.http.remove(fault)
                return fault
        return None

    def node(self, provider: str) -> NodeFaults:
        return self.nodes.setdefault(provider, NodeFaults())

    def clear(self) -> None:
        self.http.clear()
        self.nodes.clear()

    def to_json(self) -> dict[str, Any]:
        return {
            "http": [asdict(f) for f in self.http],
            "nodes": {p: asdict(n) for p, n in self.nodes.items()},
        }
