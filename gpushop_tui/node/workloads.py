"""The workload on a node: the launcher files we write, starting it, and reading how it does.

The launcher protocol is one contract shared with the simulator (`notes/issue19.md`): over SFTP
we write `.gpushop/workload.json`, `.gpushop/token` (0600), `.gpushop/launch.sh` and
`.gpushop/run.sh` under the login home, then run exactly `sh .gpushop/launch.sh`, which starts
`run.sh` in the background once (a second launch is a no-op). `run.sh` is a real POSIX sh script
that installs what is missing, starts the server on the node's loopback and writes its phase,
one line, into `.gpushop/phase` (read with exactly `cat .gpushop/phase`). Health, request
counters and the benchmark are read over HTTP through an SSH port forward. A model server
listens on the node's loopback, except a `public` vLLM server (it checks the token), which
listens on every address so that a port the provider publishes reaches it. The provider's API
key never reaches the node; only the endpoint token does.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import shlex
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import httpx

from gpushop_tui.node.ssh import CommandResult, NodeError

WorkloadKind = Literal["llm", "vllm", "custom"]
OLLAMA_PORT = 11434
VLLM_PORT = 8000
LOOPBACK = "127.0.0.1"
PUBLIC_HOST = "0.0.0.0"
"""Where a `public` vLLM server listens: every address, so a published port reaches it."""
WORKLOAD_DIR = ".gpushop"
SPEC_FILE = f"{WORKLOAD_DIR}/workload.json"
TOKEN_FILE = f"{WORKLOAD_DIR}/token"
LAUNCH_FILE = f"{WORKLOAD_DIR}/launch.sh"
RUN_FILE = f"{WORKLOAD_DIR}/run.sh"
LAUNCH_COMMAND = f"sh {LAUNCH_FILE}"
"""The one exec request that starts a workload (rc 0 = launched or already running)."""
PHASE_COMMAND = f"cat {WORKLOAD_DIR}/phase"
"""The one exec request that reads the phase (a missing file = not started yet)."""
SERVING = "serving"
FAILED_PREFIX = "failed: "
OLLAMA_KEEP_ALIVE = "24h"
"""How long Ollama keeps the model loaded after a request: past the 12 h hard maximum, so the
model stays loaded for the whole rental and `expires_at` (now + this) grows with every request."""
HTTP_TIMEOUT_S = 10.0
BENCHMARK_PROMPT = (
    "Explain in detail how a transformer language model turns a prompt into text, "
    "step by step, with examples."
)

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_METRIC_LINE = re.compile(r"(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{[^}]*\})?\s+(?P<value>\S+)")
_REQUESTS_METRIC = "vllm:request_success_total"

log = logging.getLogger(__name__)


class WorkloadNode(Protocol):
    """What the workload functions need of a node connection (`NodeConnection` has it)."""

    async def run(self, command: str, *, timeout_s: float = ...) -> CommandResult:
        """Run one command; see `NodeConnection.run`."""
        ...

    async def write_file(self, path: str, text: str, mode: int) -> None:
        """Write one file atomically; see `NodeConnection.write_file`."""
        ...

    def forward(self, port: int) -> AbstractAsyncContextManager[int]:
        """Forward a local port to the node's loopback `port`; see `NodeConnection.forward`."""
        ...


@dataclass(frozen=True)
class WorkloadLaunch:
    """What to run on the node: what `.gpushop/workload.json` holds.

    `llm` is Ollama serving `model`; `vllm` is vLLM's OpenAI-compatible server for `model`;
    `custom` runs `command` with `sh -c`. `env` is exported for every kind; `ports` are the ports
    the user wants exposed (for `custom`, the first one is where its server answers). `public`
    makes the vLLM server listen on every address instead of 127.0.0.1, for a port the provider
    publishes; only vLLM may, because only it refuses a request without the token.
    Invalid values raise ValueError: env keys must be shell identifiers, and nothing may hold a
    NUL (no shell can pass one on).
    """

    kind: WorkloadKind
    model: str | None = None
    command: str | None = None
    env: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[int, ...] = ()
    public: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("llm", "vllm", "custom"):
            raise ValueError(f"unknown workload kind {self.kind!r} (llm, vllm or custom).")
        if self.public and self.kind != "vllm":
            raise ValueError(
                f"the {self.kind} workload checks no token, so it cannot listen publicly."
            )
        if self.kind == "custom":
            if not (self.command or "").strip():
                raise ValueError("a custom workload needs a start command.")
        elif not (self.model or "").strip():
            raise ValueError(f"the {self.kind} workload needs a model name.")
        for key in self.env:
            if not _IDENTIFIER.fullmatch(key):
                raise ValueError(f"environment name {key!r} is not a shell identifier.")
        texts = [self.model or "", self.command or "", *self.env.values()]
        if any("\0" in text for text in texts):
            raise ValueError("workload settings cannot contain a NUL character.")
        for port in self.ports:
            if not 1 <= port <= 65535:
                raise ValueError(f"port {port} is not between 1 and 65535.")

    @property
    def port(self) -> int | None:
        """Where the server listens on the node's 127.0.0.1 (custom: the first port, if any)."""
        if self.kind == "llm":
            return OLLAMA_PORT
        if self.kind == "vllm":
            return VLLM_PORT
        return self.ports[0] if self.ports else None

    def spec(self) -> dict[str, Any]:
        """The JSON object of `.gpushop/workload.json`."""
        return {
            "kind": self.kind,
            "model": self.model,
            "port": self.port,
            "command": self.command,
            "env": dict(self.env),
            "ports": list(self.ports),
            "public": self.public,
        }


@dataclass(frozen=True)
class Health:
    """Whether the workload's server answers as it should, and in a few words what was seen."""

    healthy: bool
    detail: str


@dataclass(frozen=True)
class Measurement:
    """One streamed chat completion at concurrency 1."""

    tokens_per_second: float
    """Generation speed: tokens after the first over the time from the first to the last."""
    time_to_first_token_s: float
    completion_tokens: int


def check_token(token: str) -> None:
    """ValueError unless `token` is non-empty printable ASCII without spaces (a header value)."""
    if not token or not all("!" <= ch <= "~" for ch in token):
        raise ValueError("the endpoint token must be non-empty printable ASCII without spaces.")


def launch_files(launch: WorkloadLaunch, token: str) -> dict[str, tuple[str, int]]:
    """The files to write before launching: relative path -> (text, permission bits)."""
    check_token(token)
    return {
        SPEC_FILE: (json.dumps(launch.spec(), indent=2) + "\n", 0o600),
        TOKEN_FILE: (token, 0o600),
        RUN_FILE: (run_script(launch), 0o700),
        LAUNCH_FILE: (LAUNCH_SCRIPT, 0o700),
    }


LAUNCH_SCRIPT = """\
#!/bin/sh
# gpushop launcher: starts .gpushop/run.sh in the background, once. If .gpushop/pid names a
# live run.sh this exits 0 and changes nothing; otherwise it starts run.sh under nohup (in its
# own session where setsid exists, so the whole workload can be stopped as one process group)
# with its output in .gpushop/workload.log, writes its pid to .gpushop/pid and exits 0. Two
# launches at once: the second waits on the first's lock (flock, released at exit or reboot).
cd "$(dirname "$0")/.." || exit 1
exec 9>.gpushop/launch.lock
if command -v flock >/dev/null 2>&1; then
  flock 9
fi
if [ -f .gpushop/pid ]; then
  pid=$(cat .gpushop/pid)
  case "$pid" in
    ''|*[!0-9]*) ;;
    *) if kill -0 "$pid" 2>/dev/null && grep -q run.sh "/proc/$pid/cmdline" 2>/dev/null; then
         exit 0
       fi ;;
  esac
fi
rm -f .gpushop/phase
if command -v setsid >/dev/null 2>&1; then
  setsid nohup sh .gpushop/run.sh >.gpushop/workload.log 2>&1 </dev/null 9>&- &
else
  nohup sh .gpushop/run.sh >.gpushop/workload.log 2>&1 </dev/null 9>&- &
fi
echo "$!" >.gpushop/pid
"""

_RUN_PRELUDE = """\
#!/bin/sh
# gpushop workload ({kind}). Writes its phase, one line, into .gpushop/phase as it goes:
# installing -> starting -> [pulling model ->] loading -> serving; on a failure
# "failed: <reason>" and a non-zero exit. Output goes to .gpushop/workload.log.
cd "$(dirname "$0")/.." || exit 1
phase() {{ printf '%s\\n' "$1" >.gpushop/phase.tmp && mv -f .gpushop/phase.tmp .gpushop/phase; }}
fail() {{ phase "failed: $1"; echo "gpushop: $1" >&2; exit 1; }}
as_root() {{
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo -n "$@"
  else return 1; fi
}}
apt_install() {{  # apt_install PACKAGE...: waits for the dpkg lock (held at boot on cloud VMs)
  command -v apt-get >/dev/null 2>&1 || return 1
  as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=1200 -qq update &&
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=1200 -qq \\
      install -y --no-install-recommends "$@"
}}
http() {{  # http URL ok|up: "ok" wants a 2xx answer, "up" any answer below 500
  if command -v curl >/dev/null 2>&1; then
    code=$(curl -s -o /dev/null -w '%{{http_code}}' --max-time 5 "$1") || return 1
  elif command -v python3 >/dev/null 2>&1; then
    code=$(python3 -c '
import sys, urllib.error, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).status)
except urllib.error.HTTPError as exc:
    print(exc.code)
' "$1" 2>/dev/null) || return 1
  else
    return 0  # nothing here speaks HTTP: gpushop's own health check decides
  fi
  case "$2:$code" in ok:2??|up:[1-4]??) return 0 ;; esac
  return 1
}}
await_http() {{  # await_http PID URL ok|up WHAT: until URL answers, failing if PID exits first
  until http "$2" "$3"; do
    if ! kill -0 "$1" 2>/dev/null; then
      wait "$1"
      fail "$4 exited with status $? before it answered (see .gpushop/workload.log)"
    fi
    sleep 1
  done
}}
serve() {{  # serve PID WHAT: serving until the server exits
  phase serving
  wait "$1"
  fail "$2 exited with status $? (see .gpushop/workload.log)"
}}
"""

_LLM_BODY = """\
export OLLAMA_HOST=127.0.0.1:{port}
phase installing
if ! command -v curl >/dev/null 2>&1; then
  apt_install curl ca-certificates || fail "curl is missing and could not be installed"
fi
if ! command -v ollama >/dev/null 2>&1; then
  if ! command -v zstd >/dev/null 2>&1; then
    apt_install zstd || fail "zstd (for the Ollama installer) is missing and could not be installed"
  fi
  curl -fsSL https://ollama.com/install.sh | sh
  command -v ollama >/dev/null 2>&1 || fail "installing Ollama failed"
fi
phase starting
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet ollama 2>/dev/null; then
  as_root systemctl disable --now ollama >/dev/null 2>&1  # the installer's service; ours serves
fi
OLLAMA_KEEP_ALIVE={keep_alive} ollama serve &
server=$!
await_http "$server" "http://127.0.0.1:{port}/api/version" ok "ollama serve"
phase "pulling model"
ollama pull "$MODEL" || fail "pulling $MODEL failed"
phase loading
curl -fsS --max-time 1800 "http://127.0.0.1:{port}/api/generate" -d {load_body} >/dev/null ||
  fail "loading $MODEL failed"
serve "$server" "ollama serve"
"""

_VLLM_BODY = """\
phase installing
if ! python3 -c 'import vllm' >/dev/null 2>&1; then
  if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3-pip || fail "pip is missing and could not be installed"
  fi
  python3 -m pip install -q vllm || python3 -m pip install -q --break-system-packages vllm ||
    fail "installing vLLM failed"
fi
phase starting
python3 -m vllm.entrypoints.openai.api_server --model "$MODEL" --host {host} --port {port} \\
  --api-key "$(cat .gpushop/token)" &
server=$!
phase loading
await_http "$server" "http://127.0.0.1:{port}/health" ok "the vLLM server"
serve "$server" "the vLLM server"
"""

_CUSTOM_BODY = """\
phase installing
phase starting
sh -c "$COMMAND" &
server=$!
"""

_CUSTOM_WAIT = """\
phase loading
await_http "$server" "http://127.0.0.1:{port}/" up "the start command"
"""

_CUSTOM_SERVE = 'serve "$server" "the start command"\n'


def run_script(launch: WorkloadLaunch) -> str:
    """The text of `.gpushop/run.sh` for `launch`; every value is quoted for the shell."""
    lines = [_RUN_PRELUDE.format(kind=launch.kind)]
    lines += [f"export {key}={shlex.quote(value)}\n" for key, value in launch.env.items()]
    if launch.model is not None:
        lines.append(f"MODEL={shlex.quote(launch.model)}\n")
    if launch.kind == "llm":
        load = json.dumps({"model": launch.model, "keep_alive": OLLAMA_KEEP_ALIVE})
        lines.append(
            _LLM_BODY.format(
                port=OLLAMA_PORT, keep_alive=OLLAMA_KEEP_ALIVE, load_body=shlex.quote(load)
            )
        )
    elif launch.kind == "vllm":
        host = PUBLIC_HOST if launch.public else LOOPBACK
        lines.append(_VLLM_BODY.format(host=host, port=VLLM_PORT))
    else:
        lines.append(f"COMMAND={shlex.quote(launch.command or '')}\n")
        lines.append(_CUSTOM_BODY)
        if launch.port is not None:
            lines.append(_CUSTOM_WAIT.format(port=launch.port))
        lines.append(_CUSTOM_SERVE)
    return "".join(lines)


async def launch(
    conn: WorkloadNode, launch: WorkloadLaunch, token: str, *, timeout_s: float = 30.0
) -> None:
    """Write the launcher files and start the workload (a no-op while it already runs).

    NodeError('command') with the launcher's stderr when it exits non-zero.
    """
    for path, (text, mode) in launch_files(launch, token).items():
        await conn.write_file(path, text, mode)
    result = await conn.run(LAUNCH_COMMAND, timeout_s=timeout_s)
    if result.exit_status != 0:
        said = result.stderr.strip() or result.stdout.strip() or "no output"
        raise NodeError(
            "command", f"the workload launcher exited with {result.exit_status}: {said[-300:]}"
        )


async def read_phase(conn: WorkloadNode, *, timeout_s: float = 30.0) -> str | None:
    """The workload's phase line ('loading', 'serving', 'failed: ...'); None = not started yet."""
    result = await conn.run(PHASE_COMMAND, timeout_s=timeout_s)
    phase = result.stdout.strip()
    return phase if result.exit_status == 0 and phase else None


async def check_health(conn: WorkloadNode, launch: WorkloadLaunch, token: str) -> Health:
    """Whether the server answers as the contract says, through an SSH forward to its port.

    vllm: `GET /health` is 200; llm: `GET /api/tags` lists the model; custom: `GET /` answers
    below 500, or, with no port, the phase is `serving`. A port that does not answer or a 5xx is
    an unhealthy Health with the reason; only a dropped SSH connection raises (NodeError).
    """
    port = launch.port
    if port is None:
        phase = await read_phase(conn)
        return Health(phase == SERVING, f"phase {phase or 'not started'}")
    path = {"llm": "/api/tags", "vllm": "/health", "custom": "/"}[launch.kind]
    async with conn.forward(port) as local, _client(local, token) as client:
        try:
            answer = await client.get(path)
            models = await client.get("/v1/models") if launch.kind == "vllm" else None
        except httpx.HTTPError as exc:
            log.debug("port %s on the node: %s", port, _why(exc))
            return Health(False, f"waiting for the server on node port {port} (not listening yet)")
    said = f"GET {path} answered {answer.status_code}"
    if models is not None:
        if answer.status_code != 200:
            return Health(False, said)
        if models.status_code == 401:
            return Health(False, "the server refuses the endpoint token (GET /v1/models: 401)")
        return Health(models.status_code == 200, f"GET /v1/models answered {models.status_code}")
    if launch.kind == "custom":
        return Health(answer.status_code < 500, said)
    if answer.status_code != 200:
        return Health(False, said)
    model = launch.model or ""
    listed = _json_field(answer, "models")
    names = {m.get("name") for m in listed} if isinstance(listed, list) else set()
    if model in names or (":" not in model and f"{model}:latest" in names):
        return Health(True, f"{model} is listed by /api/tags")
    return Health(False, f"{model} is not listed by /api/tags yet")


async def requests_served(conn: WorkloadNode, launch: WorkloadLaunch, token: str) -> float | None:
    """The server's own activity counter, read through an SSH forward; None = unreadable.

    vllm: the sum of every `vllm:request_success_total` series in `/metrics` (requests served).
    llm: the latest `expires_at` in Ollama's `/api/ps` as a POSIX timestamp, which moves later
    on every request (0.0 when no model is loaded: nothing was served for a keep-alive).
    Either way the value grows when requests are served. custom has no counter: None. Nothing
    raises: an unreadable signal counts as busy, and must not stop the other signals.
    """
    if launch.kind == "custom" or launch.port is None:
        return None
    path, parse = ("/metrics", _vllm_requests) if launch.kind == "vllm" else ("/api/ps", _expiry)
    try:
        async with conn.forward(launch.port) as local, _client(local, token) as client:
            answer = await client.get(path)
    except (httpx.HTTPError, NodeError):
        return None
    return parse(answer) if answer.status_code == 200 else None


def _vllm_requests(answer: httpx.Response) -> float | None:
    """Sum of the `vllm:request_success_total` series in Prometheus text (0 before the first
    request, when vLLM lists other `vllm:` metrics but no series yet); None when the page has
    no vLLM metric at all (another server): a counter that is not there cannot say idle."""
    total = 0.0
    from_vllm = False
    for line in answer.text.splitlines():
        match = _METRIC_LINE.match(line.strip())
        if match is None:
            continue
        from_vllm = from_vllm or match["name"].startswith("vllm:")
        if match["name"] != _REQUESTS_METRIC:
            continue
        try:
            value = float(match["value"])
        except ValueError:
            return None
        if not math.isfinite(value):
            return None
        total += value
    return total if from_vllm else None


def _expiry(answer: httpx.Response) -> float | None:
    """The latest `expires_at` of Ollama's running models, as a POSIX timestamp."""
    models = _json_field(answer, "models")
    if not isinstance(models, list):
        return None
    latest = 0.0
    for model in models:
        try:
            moment = datetime.fromisoformat(model["expires_at"])
        except (TypeError, KeyError, ValueError):
            return None
        if moment.tzinfo is None:
            return None
        latest = max(latest, moment.timestamp())
    return latest


async def measure(
    base_url: str,
    model: str,
    token: str,
    *,
    max_tokens: int = 256,
    timeout_s: float = 60.0,
) -> Measurement:
    """Time one streamed chat completion at concurrency 1 against an OpenAI-compatible API.

    `base_url` ends in `/v1` (a forwarded local port). Tokens are the usage's
    `completion_tokens` when the server sends it, else the streamed content chunks. The whole
    run is bounded by `timeout_s`: at the limit, what has arrived is measured; with nothing yet,
    NodeError('timeout'). An error answer or a stream without content is NodeError('command').
    """
    body = {
        "model": model,
        "messages": [{"role": "user", "content": BENCHMARK_PROMPT}],
        "max_tokens": max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    stream = _Stream(time.perf_counter())
    try:
        async with asyncio.timeout(timeout_s):
            await _stream_completion(base_url, token, body, stream.add)
    except TimeoutError:
        if stream.chunks == 0:
            raise NodeError(
                "timeout", f"no token from {model} within {timeout_s:g} s of asking."
            ) from None
    except httpx.HTTPError as exc:
        raise NodeError("command", f"the benchmark request failed ({_why(exc)}).") from exc
    return stream.result(model)


@dataclass
class _Stream:
    """What a streamed completion delivered so far, and when."""

    started: float
    chunks: int = 0
    usage_tokens: int | None = None
    first: float = 0.0
    last: float = 0.0

    def add(self, chunk: dict[str, Any]) -> None:
        """Count one SSE chunk: content deltas, and the usage when it comes."""
        usage = chunk.get("usage")
        if isinstance(usage, dict) and isinstance(usage.get("completion_tokens"), int):
            self.usage_tokens = usage["completion_tokens"]
        choices = chunk.get("choices")
        first = choices[0] if isinstance(choices, list) and choices else None
        delta = first.get("delta") if isinstance(first, dict) else None
        if isinstance(delta, dict) and delta.get("content"):
            now = time.perf_counter()
            if self.chunks == 0:
                self.first = now
            self.last = now
            self.chunks += 1

    def result(self, model: str) -> Measurement:
        """The measurement; NodeError('command') when no content came."""
        if self.chunks == 0:
            raise NodeError("command", f"{model} streamed no content to measure.")
        tokens = self.usage_tokens if self.usage_tokens else self.chunks
        decoding = self.last - self.first
        if tokens > 1 and decoding > 0:
            speed = (tokens - 1) / decoding
        else:
            speed = tokens / max(self.last - self.started, 1e-9)
        return Measurement(speed, self.first - self.started, tokens)


async def _stream_completion(
    base_url: str, token: str, body: dict[str, Any], add: Callable[[dict[str, Any]], None]
) -> None:
    """POST a streaming chat completion and hand each `data:` chunk to `add` until [DONE]."""
    url = base_url.rstrip("/") + "/chat/completions"
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, trust_env=False) as client,
        client.stream("POST", url, json=body, headers=headers) as answer,
    ):
        if answer.status_code != 200:
            await answer.aread()
            raise NodeError(
                "command",
                f"the endpoint answered {answer.status_code} to the benchmark request: "
                f"{answer.text.strip()[:200]}",
            )
        async for line in answer.aiter_lines():
            data = line.removeprefix("data:").strip() if line.startswith("data:") else ""
            if data == "[DONE]":
                return
            if data:
                try:
                    chunk = json.loads(data)
                except ValueError as exc:
                    raise NodeError("command", "the stream sent a chunk that is not JSON.") from exc
                if isinstance(chunk, dict):
                    add(chunk)


@asynccontextmanager
async def _client(port: int, token: str) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for a forwarded local port, sending the endpoint token."""
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=HTTP_TIMEOUT_S,
        trust_env=False,
    ) as client:
        yield client


def _json_field(answer: httpx.Response, name: str) -> Any:
    """`answer`'s JSON object's field `name`, or None when the body is not such an object."""
    try:
        body = answer.json()
    except ValueError:
        return None
    return body.get(name) if isinstance(body, dict) else None


def _why(exc: BaseException) -> str:
    """A short reason for an HTTP failure."""
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
