"""What provision, sessions, shutdown and transfer do (their arguments: cli/rent.py)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter

from gpushop_tui.cli.handlers import require_provider, with_shopper
from gpushop_tui.cli.output import note, print_json, print_pairs, print_table, rounded, when
from gpushop_tui.cli.rent import STORAGE
from gpushop_tui.config import load_settings
from gpushop_tui.core import Alert, SessionChanged, SessionProgress
from gpushop_tui.errors import UserError
from gpushop_tui.models import (
    CostKind,
    ExtendRequest,
    IdleAction,
    InstanceState,
    ProvisionRequest,
    SessionStatus,
    StartRequest,
    StopRequest,
    StoragePolicy,
    checked,
    parse_env,
)

if TYPE_CHECKING:
    from gpushop_tui.config import Settings
    from gpushop_tui.core import Facade, PowerStretch, SessionView, Subscription
    from gpushop_tui.models import Session

EXIT_FAILED = 1
EXIT_NOT_SETTLED = 3
HEARTBEAT_S = 5.0
"""After this many seconds without news a waiting command says what it waits for, and until."""
BY = "operator (cli)"
"""Who asks for a stop or a start from the command line, as the audit log says it."""

_S, _I = SessionStatus, InstanceState
STAGES: dict[tuple[SessionStatus, InstanceState], str] = {
    (_S.PENDING, _I.NONE): "waiting for the provider to create the instance",
    (_S.PENDING, _I.CREATING): "the provider is creating the instance",
    (_S.PROVISIONING, _I.NONE): "waiting for the provider to create the instance",
    (_S.PROVISIONING, _I.CREATING): "the provider is creating the instance",
    (_S.PROVISIONING, _I.LIVE): "the instance is up; waiting for it to answer over SSH",
    (_S.PROVISIONING, _I.UNKNOWN): "asking the provider whether the instance exists",
    (_S.RUNNING, _I.LIVE): "the session is running",
    (_S.STOPPING, _I.LIVE): "ending the session; the instance is still up",
    (_S.STOPPING, _I.CREATING): "ending the session; the provider is still creating the instance",
    (_S.STOPPING, _I.DESTROYING): "ending the session; the provider is destroying the instance",
    (_S.STOPPING, _I.UNKNOWN): "ending the session; asking the provider where the instance is",
    (_S.STOPPED, _I.LIVE): "the session is stopped; the instance is off and its disk kept",
    (_S.STOPPED, _I.UNKNOWN): "the session is stopped; asking the provider where the instance is",
    (_S.STARTING, _I.NONE): "starting the session; it has no instance to start",
    (_S.STARTING, _I.CREATING): "starting the session; the provider is still creating the instance",
    (_S.STARTING, _I.LIVE): "starting the instance on its kept disk; waiting for it to run and "
    "answer over SSH",
    (_S.STARTING, _I.DESTROYING): "starting the session; the provider is destroying the instance",
    (_S.STARTING, _I.GONE): "starting the session; the instance is gone",
    (_S.STARTING, _I.UNKNOWN): "starting the session; asking the provider where the instance is",
    (_S.ENDED, _I.GONE): "the session has ended; the instance is destroyed",
    (_S.ENDED, _I.NONE): "the session has ended; no instance was created",
    (_S.FAILED, _I.GONE): "the rental failed; the instance is destroyed",
    (_S.FAILED, _I.NONE): "the rental failed; no instance was created",
}
"""Where a session stands, as the words of a progress line."""
KEEPING: dict[InstanceState, str] = {
    _I.LIVE: "stopping the instance, keeping its disk",
    _I.UNKNOWN: "stopping the instance, keeping its disk; asking the provider where it is",
}
"""Where a stop that keeps the disk stands (`stopping` with `Session.keep_disk`), in words."""


def stage(status: SessionStatus, instance: InstanceState, *, keep_disk: bool = False) -> str:
    """Where a session with this status and instance state stands, in words; `keep_disk`:
    a stopping session keeps its disk."""
    if status == SessionStatus.STOPPING and keep_disk and instance in KEEPING:
        return KEEPING[instance]
    return STAGES.get((status, instance), f"the session is {status}; its instance is {instance}")


def _gpu_query(text: str) -> str:
    """A query as given, or `gpu=<name>` for a bare GPU name such as '4090'."""
    if any(mark in text for mark in "=<>"):
        return text
    return "gpu=" + "".join(text.split())


FLAGS = {
    "consumer": "--consumer",
    "offer_id": "--offer",
    "query": "--gpu",
    "hours": "--hours",
    "workload": "--workload",
    "workload.kind": "--workload",
    "workload.model": "--model",
    "workload.image": "--image",
    "workload.command": "--cmd",
    "workload.env": "--env",
    "workload.ports": "--port",
    "workload.benchmark": "--no-benchmark",
    "idle_timeout_min": "--idle-timeout",
    "idle_action": "--idle-action",
    "storage": "--storage",
    "keep_days": "--keep-days",
    "request_id": "--request-id",
    "override_reason": "--override-hard-max",
}
"""The flag that sets each field of a `ProvisionRequest`, `ExtendRequest`, `StopRequest` or
`StartRequest`."""


def _env(pairs: list[str]) -> dict[str, str]:
    """`--env NAME=VALUE` flags as a mapping (a flag without `=` is refused)."""
    try:
        return parse_env(pairs)
    except ValueError as err:
        raise UserError(f"--env: {err}") from None


def _provision_request(args: argparse.Namespace, settings: Settings) -> ProvisionRequest:
    return checked(
        ProvisionRequest,
        {
            "consumer": args.consumer,
            "offer_id": args.offer,
            "query": _gpu_query(args.gpu) if args.gpu is not None else None,
            "hours": args.hours if args.hours is not None else settings.default_reservation_hours,
            "workload": {
                "kind": args.workload,
                "model": args.model,
                "image": args.image,
                "command": args.cmd,
                "env": _env(args.env),
                "ports": args.ports,
                "benchmark": not args.no_benchmark,
            },
            "idle_timeout_min": args.idle_timeout,
            "idle_action": IdleAction(args.idle_action),
            "storage": StoragePolicy(STORAGE[args.storage]),
            "keep_days": args.keep_days,
            "request_id": args.request_id,
        },
        FLAGS,
    )


def _check_new_file(path: Path) -> Path:
    """A path we may create: it does not exist yet and its folder does."""
    path = path.expanduser()
    if path.exists() or path.is_symlink():
        raise UserError(f"{path} already exists; --save-key never overwrites a file")
    if not path.parent.is_dir():
        raise UserError(f"{path.parent} is not a directory")
    return path


def _save_key(source: Path, target: Path) -> None:
    """Copy the private key to a new file of mode 0600 (never over an existing one)."""
    data = source.read_bytes()
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(target, 0o600)


def run_provision(args: argparse.Namespace) -> int:
    """`provision`: rent, then (unless --no-wait) show progress until the session settles."""
    save_key = _check_new_file(args.save_key) if args.save_key is not None else None
    return int(asyncio.run(with_shopper(lambda shopper: _provision(shopper, args, save_key))))


async def _provision(shopper: Facade, args: argparse.Namespace, save_key: Path | None) -> int:
    request = _provision_request(args, shopper.settings)
    require_provider(shopper)
    with shopper.subscribe() as events:
        session = await shopper.provision(request)
        if save_key is not None:
            try:
                _save_key(await shopper.key_path(session.id), save_key)
                note(f"private key saved to {save_key}")
            except OSError as err:
                note(f"warning: the key was not saved to {save_key}: {err.strerror or err}")
        await _warn_unsupervised(shopper, session)
        if not args.no_wait and not session.closed:
            budget = shopper.provision_budget(session.provider).total_seconds()
            timeout = args.wait_timeout or budget + 60
            session = await _wait_showing(shopper, events, session.id, timeout)
    await _print_outcome(shopper, session, args.output)
    if session.status == "running" or (args.no_wait and not session.status.terminal):
        return 0
    if session.status.terminal:
        note(f"the rental did not succeed: {session.error or session.status.value}")
        return EXIT_FAILED
    note(
        f"session {session.id} is not ready yet ({session.status}); it goes on without this "
        f"command: see 'gpushop sessions get {session.id}'"
    )
    return EXIT_NOT_SETTLED


async def _warn_unsupervised(shopper: Facade, session: Session) -> None:
    if session.closed or await shopper.supervisor_lease() is not None:
        return
    note(
        f"warning: no supervisor is running; once this command exits nothing watches session "
        f"{session.id} (expiry, idle stop, hard max, the end of a kept disk). Keep 'gpushop "
        "--serve' running, or run "
        "'gpushop reconcile' from cron every few minutes."
    )


async def _wait_showing(
    shopper: Facade, events: Subscription, session_id: str, timeout_s: float
) -> Session:
    """Wait until the session settles, printing its progress on stderr meanwhile, and every
    `HEARTBEAT_S` without news what it still waits for and until when (local time)."""
    deadline = datetime.now().astimezone() + timedelta(seconds=timeout_s)
    printer = asyncio.create_task(_show_progress(shopper, events, session_id, deadline))
    try:
        return await shopper.wait_settled(session_id, timeout_s)
    finally:
        await asyncio.sleep(0)  # let the printer show what is already queued
        printer.cancel()


async def _show_progress(
    shopper: Facade, events: Subscription, session_id: str, deadline: datetime
) -> None:
    last = "no news yet"
    while True:
        try:
            event = await asyncio.wait_for(events.get(), HEARTBEAT_S)
        except TimeoutError:
            session = await shopper.session(session_id)
            where = stage(session.status, session.instance, keep_disk=session.keep_disk)
            note(
                f"still waiting: {where}; last news: {last}; "
                f"this command waits until {deadline:%H:%M:%S %Z}"
            )
            continue
        if event.session_id != session_id:
            continue
        last = event.message
        if isinstance(event, SessionChanged):
            keep = event.status == SessionStatus.STOPPING and (
                (await shopper.session(session_id)).keep_disk
            )
            note(f"{event.message} ({stage(event.status, event.instance, keep_disk=keep)})")
        elif isinstance(event, SessionProgress | Alert):
            note(last)


_TIME = TypeAdapter(datetime | None)
"""Times in JSON output, written as every stored time is (ISO 8601, UTC)."""


def _stretch_json(stretch: PowerStretch) -> dict[str, Any]:
    """One power cycle: running (compute) or stopped with its disk kept (storage)."""
    return {
        "kind": stretch.kind.value,
        "started_at": _TIME.dump_python(stretch.started_at, mode="json"),
        "ended_at": _TIME.dump_python(stretch.ended_at, mode="json"),
        "rate_per_hour": stretch.rate_per_hour,
        "hours": rounded(stretch.hours),
        "cost": rounded(stretch.cost),
    }


def _session_json(view: SessionView, now: datetime) -> dict[str, Any]:
    """A session as JSON: the stored row (`status` its raw word), plus how every face says the
    status, what a kept disk bills and until when, each power cycle as of `now`, and what
    ends the instance if nobody does (its kill paths)."""
    data: dict[str, Any] = view.session.model_dump(mode="json", exclude={"offer": {"raw"}})
    data["status_words"] = view.status_words
    data["keep_until"] = _TIME.dump_python(view.keep_until, mode="json")
    data["disk_usd_per_day"] = rounded(view.disk_usd_per_day)
    data["cycles"] = [_stretch_json(stretch) for stretch in view.cycles(now)]
    data["kill_paths"] = view.kill_paths
    return data


async def _print_json_of(shopper: Facade, session: Session) -> None:
    print_json(_session_json(await shopper.view_of(session), shopper.now()))


async def _print_outcome(shopper: Facade, session: Session, output: str) -> None:
    if output == "json":
        await _print_json_of(shopper, session)
        return
    view = await shopper.view_of(session)
    pairs = [
        ("session", session.id),
        ("status", f"{view.status_words} (instance {session.instance})"),
        ("ssh", view.ssh_command or "-"),
    ]
    if view.keep_until is not None:
        pairs.append(("disk kept until", when(view.keep_until)))
    if session.endpoint:
        where = f"{session.endpoint} on the node: gpushop sessions tunnel {session.id}"
        pairs.append(("endpoint", where))
    if session.endpoint_public:
        token = f"the token: gpushop sessions endpoint {session.id} --token"
        pairs.append(("public", f"{session.endpoint_public} ({token})"))
    if session.watchdog_error:
        pairs.append(("node watchdog", f"not armed as it should be: {session.watchdog_error}"))
    if session.error:
        pairs.append(("error", session.error))
    print_pairs(pairs)


def run_sessions(args: argparse.Namespace) -> int:
    """`sessions ACTION`: list, get, stop, start, done, delete, extend, ssh, key, endpoint or
    tunnel."""
    action: str = args.sessions_action
    if action in ("done", "delete"):
        return _run_end(args, force=action == "delete")
    if action in ("stop", "start"):
        return int(
            asyncio.run(
                with_shopper(lambda shopper: _power(shopper, args, start=action == "start"))
            )
        )
    if action == "ssh":
        return _run_ssh(args)
    if action == "tunnel":
        return _run_tunnel(args)
    handlers: dict[str, Callable[[Facade, argparse.Namespace], Awaitable[int]]] = {
        "list": _sessions_list,
        "get": _sessions_get,
        "extend": _sessions_extend,
        "key": _sessions_key,
        "endpoint": _sessions_endpoint,
    }
    handler = handlers[action]
    return int(asyncio.run(with_shopper(lambda shopper: handler(shopper, args))))


async def _sessions_list(shopper: Facade, args: argparse.Namespace) -> int:
    views = await shopper.session_views(
        consumer=args.consumer,
        status=SessionStatus(args.status) if args.status else None,
        open_only=args.open,
    )
    if args.output == "json":
        now = shopper.now()
        print_json([_session_json(view, now) for view in views])
        return 0
    if not views:
        print("no sessions")
        return 0
    print_table(
        [_list_row(view) for view in views],
        ("SESSION", "CONSUMER", "PROVIDER", "GPU", "STATUS", "INSTANCE", "$/H", "CREATED",
         "EXPIRES"),
    )  # fmt: skip
    return 0


def _list_row(view: SessionView) -> tuple[str, ...]:
    """A session's row in `sessions list`; a stopped one expires when its kept disk is
    destroyed, a closed one never."""
    s = view.session
    expires = s.expires_at if s.status != SessionStatus.STOPPED else view.keep_until
    return (
        s.id,
        s.consumer,
        s.provider,
        f"{s.offer.gpu_count}x {s.offer.gpu_name}",
        view.status_words,
        s.instance.value,
        f"{s.price_per_hour:.3f}" if s.price_per_hour is not None else "-",
        when(s.created_at),
        "-" if s.closed else when(expires),
    )


async def _sessions_get(shopper: Facade, args: argparse.Namespace) -> int:
    view = await shopper.session_view(args.id)
    s = view.session
    now = shopper.now()
    if args.output == "json":
        print_json(_session_json(view, now))
        return 0
    hard_max = when(s.hard_max_at) + (
        f" (overridden: {s.hard_max_override})" if s.hard_max_override else ""
    )
    keep_days = s.keep_days if s.keep_days is not None else shopper.settings.keep_days
    idle = f"{s.idle_action} after {s.idle_timeout_min:g} min" if s.idle_timeout_min else "never"
    pairs = [
        ("session", s.id),
        ("consumer", s.consumer),
        ("offer", f"{s.offer_id}: {s.offer.gpu_count}x {s.offer.gpu_name}"),
        ("status", f"{view.status_words} (instance {s.instance})"),
        ("instance", f"{s.provider} {s.instance_id or '-'} ({s.label})"),
        ("price", f"${s.price_per_hour:.3f}/h" if s.price_per_hour is not None else "-"),
        ("cost", f"${view.cost_at(now):.4f}" + ("" if s.closed else " so far")),
        ("created", when(s.created_at)),
        ("expires", when(s.expires_at)),
        ("hard max", hard_max),
        ("idle", idle),
        ("idle reason", s.idle_reason or "-"),
        ("storage", s.storage_policy.value),
        ("keep disk", f"{keep_days:g} days once stopped"),
        ("disk kept until", when(view.keep_until)),
        ("ssh", view.ssh_command or "-"),
        ("key", s.key_path if s.key_path and not s.closed else "-"),
        ("error", s.error or "-"),
    ]
    pairs += [
        (f"cycle {number}", _stretch_words(stretch))
        for number, stretch in enumerate(view.cycles(now), start=1)
    ]
    pairs += _kill_path_pairs(view.kill_paths)
    print_pairs(pairs)
    return 0


def _kill_path_pairs(paths: list[str]) -> list[tuple[str, str]]:
    """The "kill paths" block of `sessions get`: one line per path, the name on the first."""
    if not paths:
        return [("kill paths", "-")]
    return [("kill paths" if number == 0 else "", path) for number, path in enumerate(paths)]


def _stretch_words(stretch: PowerStretch) -> str:
    """One power cycle in words: what billed, from when to when, and what it cost."""
    what = "running" if stretch.kind == CostKind.COMPUTE else "stopped, disk kept"
    until = when(stretch.ended_at) if stretch.ended_at is not None else "now"
    return (
        f"{what} {when(stretch.started_at)} to {until}: {stretch.hours:.2f} h at "
        f"${stretch.rate_per_hour:.3f}/h = ${stretch.cost:.4f}"
    )


async def _sessions_extend(shopper: Facade, args: argparse.Namespace) -> int:
    request = checked(
        ExtendRequest, {"hours": args.hours, "override_reason": args.override_hard_max}, FLAGS
    )
    session = await shopper.extend(args.id, request.hours, request.override_reason)
    if args.output == "json":
        await _print_json_of(shopper, session)
    else:
        print(
            f"session {session.id} now expires {when(session.expires_at)} "
            f"(hard max {when(session.hard_max_at)})"
        )
    return 0


async def _sessions_key(shopper: Facade, args: argparse.Namespace) -> int:
    print(await shopper.key_path(args.id))
    return 0


async def _sessions_endpoint(shopper: Facade, args: argparse.Namespace) -> int:
    endpoint = await shopper.endpoint(args.id)
    if args.public and endpoint.public_url is None:
        raise UserError(
            f"session {endpoint.session_id} has no public endpoint: only a vLLM workload on a "
            "provider that runs images is published (its token guards it); reach this one "
            f"through gpushop sessions tunnel {endpoint.session_id}"
        )
    print(endpoint.token if args.token else endpoint.public_url if args.public else endpoint.url)
    return 0


def _run_tunnel(args: argparse.Namespace) -> int:
    """Hold the tunnel open until ctrl+c (or SIGTERM), saying where it listens."""

    async def hold(shopper: Facade) -> int:
        async with shopper.tunnel(args.id, args.local_port) as tunnel:
            vllm = (await shopper.session(args.id)).workload == "vllm"
            token = f"; its token: gpushop sessions endpoint {args.id} --token" if vllm else ""
            print(
                f"the endpoint of session {args.id} answers at {tunnel.url} until interrupted "
                f"(ctrl+c){token}",
                flush=True,
            )
            await tunnel.closed()
        note(f"the tunnel closed: the SSH connection to session {args.id}'s node went away")
        return EXIT_FAILED

    try:
        return int(asyncio.run(with_shopper(hold)))
    except KeyboardInterrupt:
        return 0


def _run_end(args: argparse.Namespace, *, force: bool) -> int:
    return int(asyncio.run(with_shopper(lambda shopper: _end(shopper, args, force=force))))


async def _end(shopper: Facade, args: argparse.Namespace, *, force: bool) -> int:
    """`sessions done|delete`, `shutdown`: ask for the end, then drive the teardown here."""
    with shopper.subscribe() as events:
        session = await (shopper.delete(args.id) if force else shopper.done(args.id))
        if not args.no_wait:
            session = await _wait_showing(shopper, events, session.id, args.wait_timeout)
    await _print_end(shopper, session, args.output)
    if args.no_wait or session.status == SessionStatus.STOPPED or session.closed:
        return 0
    note(
        f"the teardown of session {session.id} is still under way; the supervisor carries on "
        "('gpushop --serve', or 'gpushop reconcile' from cron)"
    )
    return EXIT_NOT_SETTLED


async def _print_end(shopper: Facade, session: Session, output: str) -> None:
    """The one line (or the JSON) that says where an ended or stopped session stands."""
    if output == "json":
        await _print_json_of(shopper, session)
        return
    words = (await shopper.view_of(session)).status_words
    settled = session.instance.absent or session.status == SessionStatus.STOPPED
    print(f"session {session.id}: {words}" + ("" if settled else f" (instance {session.instance})"))


async def _power(shopper: Facade, args: argparse.Namespace, *, start: bool) -> int:
    """`sessions stop|start`: ask for it, then (unless --no-wait) show progress until the
    session is stopped (its disk kept) or running again; exit codes as `provision`'s."""
    verb = "start" if start else "stop"
    with shopper.subscribe() as events:
        if start:
            asked = checked(StartRequest, {"hours": args.hours}, FLAGS)
            session = await shopper.start(args.id, by=BY, hours=asked.hours)
            budget = shopper.provision_budget(session.provider).total_seconds()
            timeout = args.wait_timeout or budget + 60
        else:
            kept = checked(StopRequest, {"keep_days": args.keep_days}, FLAGS)
            session = await shopper.stop(args.id, by=BY, keep_days=kept.keep_days)
            timeout = args.wait_timeout
        await _warn_unsupervised(shopper, session)
        if not args.no_wait:
            session = await _wait_showing(shopper, events, session.id, timeout)
    await _print_outcome(shopper, session, args.output)
    goal = SessionStatus.RUNNING if start else SessionStatus.STOPPED
    if session.status == goal or (args.no_wait and not session.status.terminal):
        return 0
    if session.status.terminal or session.status == SessionStatus.STOPPED:
        reason = (session.error or str(session.status)).removeprefix(f"{verb} failed: ")
        note(f"the {verb} did not succeed: {reason}")
        return EXIT_FAILED
    note(
        f"session {session.id} is still {session.status}; it goes on without this command: "
        f"see 'gpushop sessions get {session.id}'"
    )
    return EXIT_NOT_SETTLED


def _run_ssh(args: argparse.Namespace) -> int:
    async def argv(shopper: Facade) -> list[str]:
        session = await shopper.session(args.id)
        if session.closed:
            raise UserError(f"session {session.id} is closed ({session.status})")
        return await shopper.ssh_argv(session.id, *args.remote_command)

    command: list[str] = asyncio.run(with_shopper(argv))
    if args.print:
        print(shlex.join(command))
        return 0
    try:
        os.execvp(command[0], command)
    except OSError as err:
        raise UserError(f"cannot run {command[0]}: {err.strerror or err}") from None


def run_shutdown(args: argparse.Namespace) -> int:
    """`shutdown`: `sessions done`, or with --force `sessions delete`."""
    return _run_end(args, force=args.force)


def run_transfer(args: argparse.Namespace) -> int:
    """`transfer upload|download`: one file over SFTP, progress on stderr."""
    session_id, sep, remote = args.remote.partition(":")
    if not sep or not session_id or not remote:
        raise UserError(f"{args.remote!r} should look like SESSION:REMOTE_PATH")
    if args.direction == "upload" and not args.local.is_file():
        raise UserError(f"{args.local} is not a file")
    progress = _Progress(args.local.name if args.direction == "upload" else remote)
    copied = asyncio.run(
        with_shopper(
            lambda shopper: shopper.transfer(
                session_id, args.direction, args.local, remote, progress
            )
        )
    )
    progress.finish(int(copied))
    return 0


def _megabytes(size: float) -> str:
    return f"{size / 1e6:.1f}"


def _duration(seconds: float) -> str:
    """A duration as M:SS, or H:MM:SS from an hour on."""
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


class _Progress:
    """Transfer progress on stderr, with rate and time left: a line redrawn in place on a
    terminal, else one at the end. `clock` (seconds) is time.monotonic but in tests."""

    def __init__(
        self, name: str, *, live: bool | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.name = name
        self.live = sys.stderr.isatty() if live is None else live
        self.clock = clock
        self.started = clock()

    def __call__(self, done: int, total: int) -> None:
        if not self.live:
            return
        elapsed = self.clock() - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        share = f" ({done * 100 // total}%)" if total else ""
        left = f", {_duration((total - done) / rate)} left" if rate else ""
        print(
            f"\r{self.name}: {_megabytes(done)}/{_megabytes(total)} MB{share} "
            f"{_megabytes(rate)} MB/s{left}",
            end="",
            file=sys.stderr,
        )

    def finish(self, copied: int) -> None:
        elapsed = self.clock() - self.started
        rate = copied / elapsed if elapsed > 0 else 0.0
        end = "\n" if self.live else ""
        print(
            f"{end}{self.name}: {copied} bytes copied in {_duration(elapsed)} "
            f"({_megabytes(rate)} MB/s)",
            file=sys.stderr,
        )


DEMO_MODELS = {"vllm": "Qwen/Qwen2.5-0.5B-Instruct", "llm": "llama3.1:8b"}
"""What `demo-endpoint` serves when no model is named."""
DEMO_READY_WITHIN_S = 300.0


def run_demo_endpoint(args: argparse.Namespace) -> int:
    """From nothing to a model endpoint on the demo marketplace: rent, wait, tunnel, and print
    the curl that reaches it; ctrl+c ends the session and the simulator (a throw-away home)."""
    import tempfile

    from gpushop_tui.logs import configure_logging

    with tempfile.TemporaryDirectory(prefix="gpushop-demo-") as home:
        settings = load_settings({**os.environ, "GPUSHOP_HOME": home, "GPUSHOP_CONFIG": ""})
        settings.paths.prepare()
        configure_logging(settings)
        try:
            return asyncio.run(_demo_endpoint(settings, args))
        except KeyboardInterrupt:
            return 0


def _check_port_free(port: int) -> None:
    """Refuse a busy local port before anything is rented (0 is always free: any port)."""
    import socket

    if port == 0:
        return
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise UserError(
                f"--port {port} is in use on this machine: pick another, or --port 0 for any "
                "free one"
            ) from None


async def _demo_endpoint(settings: Settings, args: argparse.Namespace) -> int:
    from gpushop_tui.core import Shopper
    from gpushop_tui.demo import demo_marketplace

    model = args.model or DEMO_MODELS[args.workload]
    _check_port_free(args.local_port)
    async with demo_marketplace(settings) as demo:
        shopper = await Shopper.open(demo.settings, secrets=demo.secrets)
        async with shopper:
            request = checked(
                ProvisionRequest,
                {
                    "consumer": "demo",
                    "query": "gpu=4090 provider=vastai",
                    "hours": 1,
                    "workload": {"kind": args.workload, "model": model},
                },
                FLAGS,
            )
            note(f"renting a simulated RTX 4090 to serve {model} with {args.workload}")
            session = await shopper.wait_settled(
                (await shopper.provision(request)).id, DEMO_READY_WITHIN_S
            )
            if session.status != SessionStatus.RUNNING:
                note(f"the demo rental did not become ready: {session.error or session.status}")
                return 1
            token = (await shopper.endpoint(session.id)).token
            async with shopper.tunnel(session.id, args.local_port) as tunnel:
                auth = f"-H 'Authorization: Bearer {token}' " if args.workload == "vllm" else ""
                body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
                print(
                    f"curl {auth}-H 'Content-Type: application/json' "
                    f"-d '{json.dumps(body)}' {tunnel.url}/chat/completions",
                    flush=True,
                )
                note(f"the endpoint answers at {tunnel.url} until ctrl+c (simulated, no cost)")
                try:
                    await tunnel.closed()
                finally:
                    await shopper.delete(session.id)
            note("the tunnel closed: the demo node went away")
            return EXIT_FAILED
