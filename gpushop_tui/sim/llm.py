"""Workloads on simulated nodes: the launcher protocol's node side and a stand-in model server.

`sh .gpushop/launch.sh` on a sim node reads `.gpushop/workload.json` and `.gpushop/token` from
the node's root and calls `launch`. The workload's phase is derived from the world clock at read
time (no timers) and written into `.gpushop/phase` whenever a command runs on the node or a
tunnel is asked for (an SFTP read sees the phase of the last such moment). Its stand-in server
(vLLM- or Ollama-like, a real HTTP server on an ephemeral loopback port) is reached through the
node's SSH direct-tcpip forwarding and, when the spec says `public` (a server listening on every
address), through a port the provider publishes too; either only once the phase is `serving`.
Tokens stream at the shipped benchmark's tokens/s for the node's GPU and the model (times the
timing's speedup); the words are deterministic.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import re
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from gpushop_tui.sim.faults import NodeFaults
from gpushop_tui.sim.http import Served, json_body, json_response, serve
from gpushop_tui.sim.world import SimInstance, WorkloadTiming

Kind = Literal["llm", "vllm", "custom"]
KINDS: tuple[Kind, ...] = ("llm", "vllm", "custom")
STATE_DIR = ".gpushop"
SERVING = "serving"
EXITED = "failed: the server exited"
DEFAULT_MAX_TOKENS = 200
"""Completion tokens of an answer when the request sets no `max_tokens`."""
DEFAULT_TOKENS_PER_S = 60.0
"""Streaming speed (before the timing's speedup) when no shipped benchmark matches."""
KEEP_ALIVE_S = 24 * 3600.0
"""The keep-alive gpushop's `run.sh` gives Ollama (24h, past any rental): `/api/ps` says the
model expires this long after its last use, so it never unloads during a rental."""
SIM_PID = 4242
WORDS = (
    "the", "model", "answers", "with", "simulated", "words", "from", "a", "small", "fixed",
    "vocabulary", "so", "that", "every", "run", "is", "alike", "and", "each", "word", "counts",
    "as", "one", "token", "of", "the", "stream",
)  # fmt: skip


@dataclass(frozen=True)
class WorkloadSpec:
    """The parts of `.gpushop/workload.json` the simulator acts on."""

    kind: Kind
    model: str | None
    port: int | None
    public: bool = False
    """The server listens on every address, not only 127.0.0.1 (a published port reaches it)."""

    @classmethod
    def parse(cls, text: str) -> WorkloadSpec:
        """Read the spec; ValueError says what is wrong with it."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        kind = data.get("kind")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
        model = data.get("model")
        port = data.get("port")
        if model is not None and not isinstance(model, str):
            raise ValueError("model must be a string or null")
        if port is not None and (not isinstance(port, int) or not 0 < port < 65536):
            raise ValueError("port must be a TCP port or null")
        if kind != "custom" and (not model or port is None):
            raise ValueError(f"a {kind} workload needs a model and a port")
        public = data.get("public", False)
        if not isinstance(public, bool):
            raise ValueError("public must be true or false")
        return cls(kind, model, port, public)


@cache
def _benchmarks() -> tuple[tuple[str, str, str, float], ...]:
    """(provider, GPU, model, tokens/s) of every shipped measurement, lower-cased names."""
    text = (resources.files("gpushop_tui") / "data" / "benchmarks.csv").read_text("utf-8")
    return tuple(
        (
            row["provider"].lower(),
            row["gpu_name"].lower(),
            row["model"].lower(),
            float(row["tokens_per_second"]),
        )
        for row in csv.DictReader(text.splitlines())
    )


def tokens_per_second(provider: str, gpu: str, model: str) -> float:
    """The shipped benchmark's speed for this GPU and model (this provider's rows first)."""
    gpu, model, provider = gpu.lower(), model.lower(), provider.lower()
    rows = [r for r in _benchmarks() if r[1] == gpu and r[2] == model]
    ours = [r for r in rows if r[0] == provider] or rows
    return sum(r[3] for r in ours) / len(ours) if ours else DEFAULT_TOKENS_PER_S


def answer(prompt: str, count: int) -> list[str]:
    """`count` deterministic tokens (one word each, space-led after the first) for `prompt`."""
    start = zlib.crc32(prompt.encode())
    return [("" if n == 0 else " ") + WORDS[(start + n) % len(WORDS)] for n in range(count)]


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _prompt(messages: list[Any]) -> str:
    """The text of chat messages (string contents and text parts)."""
    parts: list[str] = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts += [str(p.get("text", "")) for p in content if isinstance(p, dict)]
    return " ".join(parts)


def _model_bytes(model: str) -> int:
    """A plausible download size: about 0.6 bytes a parameter (4-bit quantized)."""
    match = re.search(r"(\d+(?:\.\d+)?)b\b", model.lower())
    return int(float(match.group(1)) * 0.6e9) if match else 4_700_000_000


def _openai_error(status: int, message: str, kind: str, code: str | None = None) -> Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return json_response(body, status)


class _AliveGate:
    """Answers 503 once the workload has exited (to connections kept alive from before)."""

    def __init__(self, app: ASGIApp, alive: Callable[[], bool]) -> None:
        self.app = app
        self.alive = alive

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.alive():
            await PlainTextResponse("server exited", 503)(scope, receive, send)
            return
        await self.app(scope, receive, send)


class ModelServer:
    """The stand-in model server of one workload: vLLM-like, Ollama-like or a bare custom app."""

    def __init__(
        self,
        spec: WorkloadSpec,
        *,
        token: str | None,
        tokens_per_s: float,
        now: Callable[[], float],
        loaded_at: float,
        alive: Callable[[], bool],
    ) -> None:
        self.spec = spec
        self.model = spec.model or ""
        self.token = token
        self.tokens_per_s = tokens_per_s
        self.now = now
        self.served_requests = 0
        self.running = 0
        self.loaded_at = loaded_at
        self.expires_at = loaded_at + KEEP_ALIVE_S
        self.served: Served | None = None
        self._ids = 0
        self.app = Starlette(
            routes=self._routes(), middleware=[Middleware(_AliveGate, alive=alive)]
        )

    @property
    def port(self) -> int | None:
        """The real loopback port, once started."""
        return self.served.port if self.served else None

    async def start(self) -> None:
        """Listen on an ephemeral loopback port."""
        self.served = await serve(self.app)

    async def stop(self) -> None:
        """Stop listening (bounded: a stuck stream does not hold up a node's teardown)."""
        served, self.served = self.served, None
        if served is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(served.stop(), 5)

    def _routes(self) -> list[Route]:
        kind = self.spec.kind
        if kind == "custom":
            return [Route("/", self._custom_root)]
        common = [
            Route("/v1/models", self._models),
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
        ]
        if kind == "vllm":
            return [
                *common,
                Route("/health", self._health),
                Route("/version", self._version),
                Route("/metrics", self._metrics),
            ]
        return [
            *common,
            Route("/", self._ollama_root),
            Route("/api/version", self._version),
            Route("/api/tags", self._tags),
            Route("/api/ps", self._ps),
        ]

    # -- shared --------------------------------------------------------------------------

    def _refused(self, request: Request) -> Response | None:
        """vLLM's `--api-key` check on `/v1`: the 401 to send, or None when the token is right."""
        if self.spec.kind != "vllm" or self.token is None:
            return None
        if request.headers.get("authorization", "") == f"Bearer {self.token}":
            return None
        return _openai_error(401, "Incorrect API key provided.", "invalid_request_error", "401")

    async def _models(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        owner = "vllm" if self.spec.kind == "vllm" else "library"
        entry = {"id": self.model, "object": "model", "created": int(self.now()), "owned_by": owner}
        return json_response({"object": "list", "data": [entry]})

    async def _chat(self, request: Request) -> Response:
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = await json_body(request)
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            return _openai_error(400, "messages: a list is required", "BadRequestError")
        if body.get("model") != self.model:
            unknown = f"The model `{body.get('model')}` does not exist."
            return _openai_error(404, unknown, "NotFoundError", "404")
        limit = body.get("max_tokens", body.get("max_completion_tokens"))
        if limit is None:
            limit = DEFAULT_MAX_TOKENS
        if not isinstance(limit, int) or limit < 1:
            return _openai_error(400, "max_tokens must be a positive integer", "BadRequestError")
        prompt = _prompt(body["messages"])
        tokens = answer(prompt, limit)
        usage = {
            "prompt_tokens": max(1, len(prompt.split())),
            "completion_tokens": len(tokens),
            "total_tokens": max(1, len(prompt.split())) + len(tokens),
        }
        self._ids += 1
        head = {"id": f"chatcmpl-sim{self._ids}", "created": int(self.now()), "model": self.model}
        if body.get("stream") is True:
            options = body.get("stream_options")
            with_usage = isinstance(options, dict) and options.get("include_usage") is True
            return StreamingResponse(
                self._stream(head, tokens, usage if with_usage else None),
                media_type="text/event-stream",
            )
        self.running += 1
        try:
            await asyncio.sleep(len(tokens) / self.tokens_per_s)
        finally:
            self.running -= 1
        self._served()
        message = {"role": "assistant", "content": "".join(tokens)}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return json_response(
            {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
        )

    async def _stream(
        self, head: dict[str, Any], tokens: list[str], usage: dict[str, int] | None
    ) -> AsyncIterator[str]:
        """SSE chunks paced at the server's tokens/s, then `data: [DONE]`."""

        def chunk(delta: dict[str, str], finish: str | None = None) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish}
            data = {**head, "object": "chat.completion.chunk", "choices": [choice]}
            return f"data: {json.dumps(data)}\n\n"

        self.running += 1
        try:
            yield chunk({"role": "assistant", "content": ""})
            loop = asyncio.get_running_loop()
            started = loop.time()
            for n, token in enumerate(tokens):
                await asyncio.sleep(max(0.0, started + (n + 1) / self.tokens_per_s - loop.time()))
                yield chunk({"content": token})
            yield chunk({}, "stop")
            if usage is not None:
                yield f"data: {json.dumps({**head, 'choices': [], 'usage': usage})}\n\n"
        finally:
            self.running -= 1
        self._served()
        yield "data: [DONE]\n\n"

    def _served(self) -> None:
        """Count a finished request; Ollama keeps the model loaded a while longer.

        The expiry moves strictly later even on a clock that stands still (a fake one), so that
        each request is visible as activity.
        """
        self.served_requests += 1
        self.expires_at = max(self.now() + KEEP_ALIVE_S, self.expires_at + 0.001)

    async def _version(self, request: Request) -> Response:
        return json_response({"version": "0.6.3" if self.spec.kind == "vllm" else "0.5.7"})

    # -- vLLM ----------------------------------------------------------------------------

    async def _health(self, request: Request) -> Response:
        return Response(b"", 200)

    async def _metrics(self, request: Request) -> Response:
        """Prometheus text: the success counter per finish reason and the running gauge."""
        model = self.model.replace("\\", "\\\\").replace('"', '\\"')
        counts = {"stop": self.served_requests, "length": 0, "abort": 0}
        lines = [
            "# HELP vllm:num_requests_running Number of requests in model execution batches.",
            "# TYPE vllm:num_requests_running gauge",
            f'vllm:num_requests_running{{model_name="{model}"}} {float(self.running)}',
            "# HELP vllm:request_success_total Count of successfully processed requests.",
            "# TYPE vllm:request_success_total counter",
            *(
                f'vllm:request_success_total{{finished_reason="{reason}",model_name="{model}"}} '
                f"{float(count)}"
                for reason, count in counts.items()
            ),
        ]
        return PlainTextResponse("\n".join(lines) + "\n", media_type="text/plain; version=0.0.4")

    # -- Ollama --------------------------------------------------------------------------

    async def _ollama_root(self, request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    def _ollama_model(self) -> dict[str, Any]:
        digest = f"{zlib.crc32(self.model.encode()):08x}" * 8
        return {
            "name": self.model,
            "model": self.model,
            "size": _model_bytes(self.model),
            "digest": digest,
            "details": {"format": "gguf", "quantization_level": "Q4_K_M"},
        }

    async def _tags(self, request: Request) -> Response:
        modified = _rfc3339(self.loaded_at)
        return json_response({"models": [{**self._ollama_model(), "modified_at": modified}]})

    async def _ps(self, request: Request) -> Response:
        entry = self._ollama_model()
        entry |= {"expires_at": _rfc3339(self.expires_at), "size_vram": entry["size"]}
        return json_response({"models": [entry]})

    # -- custom --------------------------------------------------------------------------

    async def _custom_root(self, request: Request) -> Response:
        return PlainTextResponse("ok")


@dataclass
class Workload:
    """One launched workload: its phases on the world clock and its stand-in server."""

    spec: WorkloadSpec
    launched_at: float
    timing: WorkloadTiming
    faults: NodeFaults
    boot: float | None
    """The instance's `powered_on_at` at launch: a later power-on (a reboot) ends the process."""
    server: ModelServer | None = None
    written: str = ""

    def serving_from(self) -> float:
        """World time at which the phase becomes `serving` (unless a fault keeps it loading)."""
        t = self.timing
        pulling = t.pulling_s if self.spec.kind == "llm" else 0.0
        return self.launched_at + t.installing_s + t.starting_s + pulling + t.loading_s

    def phase(self, now: float) -> str:
        """The phase line `run.sh` would have written by `now`."""
        t = self.timing
        steps = [("installing", t.installing_s), ("starting", t.starting_s)]
        if self.spec.kind == "llm":
            steps.append(("pulling model", t.pulling_s))
        elapsed = now - self.launched_at
        for name, seconds in steps:
            if elapsed < seconds:
                return name
            elapsed -= seconds
        if self.faults.workload_never_loads or elapsed < t.loading_s:
            return "loading"
        died = self.faults.workload_dies_after_s
        if died is not None and elapsed - t.loading_s >= died:
            return EXITED
        return SERVING

    def running(self, instance: SimInstance) -> bool:
        """Whether the process still lives: the node has not been rebooted since the launch."""
        return instance.powered_on_at == self.boot

    def sync(self, root: Path, now: float) -> None:
        """Write the current phase into `.gpushop/phase` (and the log) when it changed."""
        phase = self.phase(now)
        if phase == self.written:
            return
        state = root / STATE_DIR
        state.mkdir(exist_ok=True)
        (state / "phase").write_text(phase + "\n")
        with (state / "workload.log").open("a") as log:
            log.write(f"[{_rfc3339(now)}] {phase}\n")
        self.written = phase

    def forward_port(self, dest_port: int, now: float) -> int | None:
        """The real port behind the workload's `dest_port`, or None while it is not open."""
        if self.spec.port is None or dest_port != self.spec.port or self.server is None:
            return None
        return self.server.port if self.phase(now) == SERVING else None

    def published_port(self, dest_port: int, now: float) -> int | None:
        """The real port a port published on the instance reaches: only a server that listens on
        every address is reached from outside the node."""
        return self.forward_port(dest_port, now) if self.spec.public else None

    async def stop(self) -> None:
        """Stop the stand-in server."""
        if self.server is not None:
            await self.server.stop()


async def launch(
    root: Path,
    instance: SimInstance,
    *,
    now: Callable[[], float],
    timings: Mapping[str, WorkloadTiming],
    faults: NodeFaults,
) -> Workload:
    """Start the workload described by `.gpushop/workload.json` under `root`.

    ValueError (with the message `launch.sh` prints) when the spec is missing or invalid.
    """
    state = root / STATE_DIR
    try:
        text = (state / "workload.json").read_text()
    except OSError:
        raise ValueError(f"{STATE_DIR}/workload.json: No such file or directory") from None
    try:
        spec = WorkloadSpec.parse(text)
    except ValueError as exc:
        raise ValueError(f"{STATE_DIR}/workload.json: {exc}") from None
    token_file = state / "token"
    token = token_file.read_text().strip() if token_file.is_file() else None
    if faults.workload_wrong_token:
        token = f"{token or ''}-expected-by-someone-else"
    timing = timings[spec.kind]
    started = now()
    workload = Workload(spec, started, timing, replace(faults), instance.powered_on_at)
    if spec.port is not None:
        speed = tokens_per_second(instance.provider, instance.node_gpu_name, spec.model or "")
        server = ModelServer(
            spec,
            token=token,
            tokens_per_s=speed * timing.speedup,
            now=now,
            loaded_at=workload.serving_from(),
            alive=lambda: workload.phase(now()) == SERVING,
        )
        await server.start()
        workload.server = server
    (state / "pid").write_text(f"{SIM_PID}\n")
    workload.sync(root, started)
    return workload
