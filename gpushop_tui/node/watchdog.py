"""The node's own deadline watchdog: a kill path that works when no gpushop process is left.

Supervision from the operator's machine ends when that machine sleeps or vanishes, and the
instance would bill on. So before the user gets the node, gpushop writes a small POSIX sh script
to `.gpushop/watchdog.sh` under the login home and starts it in the background (the contract is
shared with the simulator: `notes/issue21.md`). Every 30 s it reads `.gpushop/deadline` (epoch
seconds; an extend rewrites only that file); once the node's clock passes it, it destroys its
own instance through the provider's API with the instance-scoped key (Vast), or powers the VM
off, retrying until that works. It logs each event to `.gpushop/watchdog.log`. The account key
never leaves the operator's machine; at most the key restricted to this one instance reaches
the node, where the provider injects it anyway.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from gpushop_tui.node.ssh import CommandResult, NodeError
from gpushop_tui.node.workloads import WORKLOAD_DIR, check_token

WatchdogAction = Literal["destroy", "stop", "poweroff"]
SCRIPT_FILE = f"{WORKLOAD_DIR}/watchdog.sh"
ENV_FILE = f"{WORKLOAD_DIR}/watchdog.env"
DEADLINE_FILE = f"{WORKLOAD_DIR}/deadline"
KEY_FILE = f"{WORKLOAD_DIR}/instance_key"
LOG_FILE = f"{WORKLOAD_DIR}/watchdog.log"
PID_FILE = f"{WORKLOAD_DIR}/watchdog.pid"
START_COMMAND = f"sh {SCRIPT_FILE} start"
"""The one exec request that starts the watchdog (rc 0 = started or already running)."""
CLOCK_COMMAND = "date +%s"
"""The one exec that reads the node's clock."""

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_API_BASE = re.compile(
    r"https?://(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::[0-9]{1,5})?(?:/[A-Za-z0-9._~%/-]*)?"
)


class WatchdogNode(Protocol):
    """What arming needs of a node connection (`NodeConnection` has it)."""

    async def run(self, command: str, *, timeout_s: float = ...) -> CommandResult:
        """Run one command; see `NodeConnection.run`."""
        ...

    async def write_file(self, path: str, text: str, mode: int) -> None:
        """Write one file atomically; see `NodeConnection.write_file`."""
        ...


@dataclass(frozen=True)
class WatchdogPlan:
    """What the node does at its deadline, and when.

    `destroy` (Vast) deletes instance `instance_id` through the API at `api_base` with the
    instance-scoped key; `stop` asks the same API to stop it, its disk kept (a session meant
    to keep its disk); `poweroff` (VMs) powers the machine off. Every value reaches a shell
    script, so each must be a plain word (ValueError otherwise): ids of letters, digits, `.`,
    `_` and `-`; `api_base` an http(s) URL without query or spaces; `deadline` timezone-aware.
    """

    session_id: str
    action: WatchdogAction
    deadline: datetime
    api_base: str | None = None
    instance_id: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ("destroy", "stop", "poweroff"):
            raise ValueError(
                f"unknown watchdog action {self.action!r} (destroy, stop or poweroff)."
            )
        _check_word("session id", self.session_id)
        if self.deadline.tzinfo is None:
            raise ValueError("the watchdog deadline must carry a timezone.")
        if self.action != "poweroff" and (self.api_base is None or self.instance_id is None):
            raise ValueError(
                f"a watchdog that calls the API ({self.action}) needs its base URL and the "
                "instance id."
            )
        if self.instance_id is not None:
            _check_word("instance id", self.instance_id)
        if self.api_base is not None and not _API_BASE.fullmatch(self.api_base):
            raise ValueError(f"{self.api_base!r} is not a plain http(s) API base URL.")

    def env(self) -> str:
        """The text of `.gpushop/watchdog.env`: `KEY=VALUE` lines."""
        lines = [f"GPUSHOP_SESSION={self.session_id}", f"GPUSHOP_ACTION={self.action}"]
        if self.api_base is not None:
            lines.append(f"GPUSHOP_API={self.api_base.rstrip('/')}")
        if self.instance_id is not None:
            lines.append(f"GPUSHOP_INSTANCE={self.instance_id}")
        return "".join(f"{line}\n" for line in lines)


def _check_word(what: str, value: str) -> None:
    if not _WORD.fullmatch(value):
        raise ValueError(f"the {what} {value!r} is not a plain word (letters, digits, . _ -).")


def deadline_text(deadline: datetime) -> str:
    """The text of `.gpushop/deadline`: whole epoch seconds, rounded up (never early)."""
    if deadline.tzinfo is None:
        raise ValueError("the watchdog deadline must carry a timezone.")
    return f"{math.ceil(deadline.timestamp())}\n"


def watchdog_files(plan: WatchdogPlan, instance_key: str | None) -> dict[str, tuple[str, int]]:
    """The files to write before starting: relative path -> (text, permission bits).

    `instance_key` must be printable ASCII without spaces (ValueError otherwise).
    """
    files = {
        ENV_FILE: (plan.env(), 0o600),
        DEADLINE_FILE: (deadline_text(plan.deadline), 0o600),
        SCRIPT_FILE: (script(), 0o700),
    }
    if instance_key is not None:
        try:
            check_token(instance_key)
        except ValueError:
            raise ValueError(
                "the instance key must be non-empty printable ASCII without spaces."
            ) from None
        files = {KEY_FILE: (instance_key, 0o600), **files}
    return files


async def arm(
    conn: WatchdogNode, plan: WatchdogPlan, instance_key: str | None, *, timeout_s: float = 30.0
) -> None:
    """Write the watchdog's files and start it (a running one keeps running, and reads the
    new files at its next check).

    NodeError('command') with the script's stderr when starting exits non-zero.
    """
    for path, (text, mode) in watchdog_files(plan, instance_key).items():
        await conn.write_file(path, text, mode)
    await _start(conn, timeout_s)


async def _start(conn: WatchdogNode, timeout_s: float) -> None:
    """`sh .gpushop/watchdog.sh start`; NodeError with its stderr when it exits non-zero."""
    result = await conn.run(START_COMMAND, timeout_s=timeout_s)
    if result.exit_status != 0:
        said = result.stderr.strip() or result.stdout.strip() or "no output"
        raise NodeError(
            "command", f"starting the node watchdog exited with {result.exit_status}: {said[-300:]}"
        )


async def node_clock(conn: WatchdogNode, *, timeout_s: float = 30.0) -> int:
    """The node's own clock, epoch seconds (`date +%s`): the watchdog compares its deadline
    with it, so a node whose clock is off gets its deadline in its own time."""
    result = await conn.run(CLOCK_COMMAND, timeout_s=timeout_s)
    text = result.stdout.strip()
    if result.exit_status != 0 or not text.isdigit():
        raise NodeError("command", f"reading the node's clock failed: {text or result.stderr}")
    return int(text)


async def move(conn: WatchdogNode, deadline: datetime, *, timeout_s: float = 30.0) -> None:
    """Move the armed watchdog's deadline (it reads the file at its next check), and start its
    loop again should the node have lost it (a reboot): `start` does nothing while it runs."""
    await conn.write_file(DEADLINE_FILE, deadline_text(deadline), 0o600)
    await _start(conn, timeout_s)


def script() -> str:
    """The text of `.gpushop/watchdog.sh`."""
    return _SCRIPT


_SCRIPT = """\
#!/bin/sh
# gpushop node watchdog: ends this instance at its deadline even when no gpushop process is left.
#   sh .gpushop/watchdog.sh start   starts the loop in the background once (a live pid in
#                                   .gpushop/watchdog.pid running watchdog.sh: nothing to do).
#   sh .gpushop/watchdog.sh run     the loop: every GPUSHOP_CHECK_S (30) seconds it reads
#                                   .gpushop/deadline (epoch seconds; a bad file keeps the last
#                                   one). Once `date +%s` reaches it, it acts as
#                                   .gpushop/watchdog.env says: destroy = DELETE the instance
#                                   through the provider API with the instance-scoped key
#                                   ($CONTAINER_API_KEY, else .gpushop/instance_key), then exit;
#                                   stop = the same key asks the API to stop the instance, its
#                                   disk kept (a session meant to keep its disk), then exit;
#                                   poweroff = `sudo -n poweroff`, else `poweroff`. A failure is
#                                   retried every GPUSHOP_RETRY_S (60) seconds, for ever.
#   `start` refuses (exit 1, a line on stderr) a watchdog that could not act: no curl or no key
#   for the API, or for poweroff neither root (GPUSHOP_UID, else `id -u`) nor passwordless sudo.
# Each event is one line in .gpushop/watchdog.log, UTC timestamps first; the key never is.
cd "$(dirname "$0")/.." || exit 1
session='' action='' api='' instance='' deadline='' bad_deadline=''

say() { printf '%s %s\\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >>.gpushop/watchdog.log; }

seconds() {  # seconds VALUE DEFAULT: VALUE when it is a whole positive number, else DEFAULT
  case "$1" in
    ''|*[!0-9]*) echo "$2" ;;
    *) if [ "$1" -gt 0 ]; then echo "$1"; else echo "$2"; fi ;;
  esac
}

load_env() {  # the plan's KEY=VALUE lines; a missing file keeps what was read before
  [ -r .gpushop/watchdog.env ] || return 1
  while IFS='=' read -r name value; do
    case "$name" in
      GPUSHOP_SESSION) session=$value ;;
      GPUSHOP_ACTION) action=$value ;;
      GPUSHOP_API) api=$value ;;
      GPUSHOP_INSTANCE) instance=$value ;;
    esac
  done <.gpushop/watchdog.env
}

read_deadline() {  # a non-numeric or missing deadline file keeps the last deadline read
  line=$(cat .gpushop/deadline 2>/dev/null)
  case "$line" in
    ''|*[!0-9]*)
      if [ -z "$bad_deadline" ]; then
        say "cannot read a deadline from .gpushop/deadline; keeping ${deadline:-none}"
        bad_deadline=1
      fi
      return ;;
  esac
  bad_deadline=''
  if [ "$line" != "$deadline" ]; then
    deadline=$line
    say "deadline is $deadline (epoch seconds)"
  fi
}

running() {
  [ -f .gpushop/watchdog.pid ] || return 1
  pid=$(cat .gpushop/watchdog.pid)
  case "$pid" in ''|*[!0-9]*) return 1 ;; esac
  kill -0 "$pid" 2>/dev/null && grep -q watchdog.sh "/proc/$pid/cmdline" 2>/dev/null
}

one_line() {  # one_line TEXT [SECRET]: TEXT on one line, at most 300 characters, SECRET removed
  text=$1 kept=''
  if [ -n "$2" ]; then
    while case "$text" in *"$2"*) true ;; *) false ;; esac; do
      kept="$kept${text%%"$2"*}[key]"
      text=${text#*"$2"}
    done
  fi
  printf '%s' "$kept$text" | tr '\\n\\r' '  ' | cut -c1-300
}

call_api() {  # call_api METHOD BODY DONE DOING: one API call on this instance with its key
  key=${CONTAINER_API_KEY:-}
  [ -n "$key" ] || key=$(cat .gpushop/instance_key 2>/dev/null)
  if [ -z "$key" ]; then
    say "cannot $4 instance $instance: no CONTAINER_API_KEY and no .gpushop/instance_key"
    return 1
  fi
  # the key goes to curl on its stdin (printf is a builtin): never on a command line in `ps`
  if answer=$(printf 'header = "Authorization: Bearer %s"\n' "$key" | curl -fsS -m 30 -K - \\
      -X "$1" -H 'Content-Type: application/json' -d "$2" "$api/instances/$instance/" 2>&1); then
    case "$answer" in
      *'"success": false'*|*'"success":false'*) ;;  # Vast's refusals often come with HTTP 200
      *) say "$3 instance $instance: $(one_line "$answer" "$key")"; return 0 ;;
    esac
  fi
  say "$4 instance $instance failed, retrying in ${retry_s}s: $(one_line "$answer" "$key")"
  return 1
}

power_off() {
  if answer=$(sudo -n poweroff 2>&1); then
    say "powering off (sudo -n poweroff): $(one_line "$answer")"
  elif answer=$(poweroff 2>&1); then
    say "powering off (poweroff): $(one_line "$answer")"
  else
    say "powering off failed, retrying in ${retry_s}s: $(one_line "$answer")"
  fi
  return 1  # still here: the machine is not down yet, so try again after the retry period
}

run() {
  check_s=$(seconds "${GPUSHOP_CHECK_S:-}" 30)
  retry_s=$(seconds "${GPUSHOP_RETRY_S:-}" 60)
  trap 'say "stopped by a signal"; exit 143' TERM INT
  load_env
  say "watching session $session (pid $$): $action at the deadline, checked every ${check_s}s"
  while :; do
    read_deadline
    wait_s=$check_s
    if [ -n "$deadline" ] && [ "$(date +%s)" -ge "$deadline" ]; then
      load_env
      case "$action" in
        destroy) if call_api DELETE '{}' destroyed destroying; then exit 0; fi ;;
        stop) if call_api PUT '{"state":"stopped"}' stopped stopping; then exit 0; fi ;;
        poweroff) power_off ;;
        *) say "unknown action '$action' in .gpushop/watchdog.env" ;;
      esac
      wait_s=$retry_s
    fi
    sleep "$wait_s"
  done
}

start() {
  exec 9>.gpushop/watchdog.lock
  if command -v flock >/dev/null 2>&1; then
    flock 9
  fi
  if running; then
    exit 0
  fi
  load_env || { echo "gpushop watchdog: .gpushop/watchdog.env is missing" >&2; exit 1; }
  case "$action" in  # refuse to start what could not act at the deadline: said, not armed
    destroy|stop)
      command -v curl >/dev/null 2>&1 || { echo "gpushop watchdog: curl is missing" >&2; exit 1; }
      if [ -z "${CONTAINER_API_KEY:-}" ] && [ ! -s .gpushop/instance_key ]; then
        echo "gpushop watchdog: no instance key (CONTAINER_API_KEY or .gpushop/instance_key)" >&2
        exit 1
      fi ;;
    poweroff)
      if [ "${GPUSHOP_UID:-$(id -u)}" != 0 ] && ! sudo -n true >/dev/null 2>&1; then
        echo "gpushop watchdog: cannot power off: not root and no passwordless sudo" >&2
        exit 1
      fi ;;
    *) echo "gpushop watchdog: unknown action '$action' in .gpushop/watchdog.env" >&2; exit 1 ;;
  esac
  if command -v setsid >/dev/null 2>&1; then
    setsid nohup sh .gpushop/watchdog.sh run >>.gpushop/watchdog.log 2>&1 </dev/null 9>&- &
  else
    nohup sh .gpushop/watchdog.sh run >>.gpushop/watchdog.log 2>&1 </dev/null 9>&- &
  fi
  echo "$!" >.gpushop/watchdog.pid
}

case "${1:-}" in
  start) start ;;
  run) run ;;
  *) echo "usage: sh .gpushop/watchdog.sh start|run" >&2; exit 2 ;;
esac
"""
