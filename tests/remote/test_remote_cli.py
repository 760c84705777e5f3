"""One-shot commands with `--remote` against a real `gpushop --serve` on loopback: the same JSON
as run on the server's own database, consumer tokens scoped, errors in one sentence."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ROOT, run_gpushop
from tests.remote.conftest import Served, wait_for


def _json(result: object) -> object:
    assert result.returncode == 0, result.stderr  # type: ignore[attr-defined]
    return json.loads(result.stdout)  # type: ignore[attr-defined]


def _one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


def test_a_rental_through_the_server_reads_the_same_as_on_it(
    served: Served, client_home: Path
) -> None:
    rented = _json(served.remote("provision", "-c", "alice", "-g", "4090", "-o", "json"))
    assert isinstance(rented, dict)
    session_id = rented["id"]
    assert rented["status"] == "running"
    assert rented["consumer"] == "alice"
    listed = _json(served.remote("sessions", "list", "-o", "json"))
    assert session_id in {s["id"] for s in listed}  # type: ignore[union-attr]
    ended = served.remote("sessions", "done", session_id, "-o", "json")
    assert ended.returncode == 0, ended.stderr

    def closed() -> bool:
        got = _json(served.remote("sessions", "get", session_id, "-o", "json"))
        return got["status"] == "ended"  # type: ignore[index]

    wait_for(closed, what="the end of the session")
    remote = _json(served.remote("sessions", "get", session_id, "-o", "json"))
    local = _json(served.local("sessions", "get", session_id, "-o", "json"))
    assert remote == local
    remote_list = _json(served.remote("sessions", "list", "-s", "ended", "-o", "json"))
    local_list = _json(served.local("sessions", "list", "-s", "ended", "-o", "json"))
    assert remote_list == local_list
    for words in (("costs", "-o", "json"), ("budgets", "list", "-o", "json")):
        assert _json(served.remote(*words)) == _json(served.local(*words))
    audit = served.remote("sessions", "get", session_id)
    assert audit.returncode == 0 and session_id in audit.stdout
    menu = _json(served.remote("inventory", "gpu=4090", "-o", "json"))
    assert menu  # the server's menu, as the local command prints it


def test_a_consumer_token_sees_only_its_consumer(served: Served, client_home: Path) -> None:
    bob = _json(served.remote("provision", "-c", "bob", "-g", "4090", "--no-wait", "-o", "json"))
    mine = _json(served.remote("sessions", "list", "-o", "json", token=served.alice_token))
    assert bob["id"] not in {s["id"] for s in mine}  # type: ignore[index,union-attr]
    assert all(s["consumer"] == "alice" for s in mine)  # type: ignore[union-attr]
    hidden = served.remote("sessions", "get", bob["id"], token=served.alice_token)  # type: ignore[index]
    assert hidden.returncode != 0
    assert "request id" in _one_line(hidden.stderr)
    refused = served.remote(
        "provision", "-c", "bob", "-g", "4090", "--no-wait", token=served.alice_token
    )
    assert refused.returncode != 0
    assert "only for consumer 'alice'" in _one_line(refused.stderr)
    served.remote("sessions", "delete", bob["id"])  # type: ignore[index]


def test_a_server_error_is_one_sentence_with_the_request_id(
    served: Served, client_home: Path
) -> None:
    result = served.remote("sessions", "get", "nosuchsession")
    assert result.returncode != 0
    line = _one_line(result.stderr)
    assert "no session 'nosuchsession'" in line
    assert "(request id " in line


def test_a_wrong_token_or_no_server_is_one_sentence(served: Served, client_home: Path) -> None:
    wrong = served.remote("sessions", "list", token="gps_wrong")
    assert wrong.returncode != 0
    line = _one_line(wrong.stderr)
    assert served.url in line and "refused the token" in line
    down = run_gpushop("--remote", "http://127.0.0.1:9", "--token", "x", "sessions", "list")
    assert down.returncode != 0
    assert "cannot reach the gpushop server at http://127.0.0.1:9" in _one_line(down.stderr)


def test_the_token_comes_from_a_private_file_or_the_keyring(
    served: Served, client_home: Path
) -> None:
    missing = run_gpushop("--remote", served.url, "sessions", "list")
    assert missing.returncode != 0
    assert "gpushop keys set remote" in _one_line(missing.stderr)
    token_file = client_home / "remote_token"
    token_file.parent.mkdir(parents=True, exist_ok=True)
    token_file.write_text(served.token + "\n")
    os.chmod(token_file, 0o644)
    loose = run_gpushop("--remote", served.url, "sessions", "list")
    assert loose.returncode != 0
    assert "readable by others" in _one_line(loose.stderr)
    os.chmod(token_file, 0o600)
    assert run_gpushop("--remote", served.url, "sessions", "list").returncode == 0
    token_file.unlink()
    stored = run_gpushop("keys", "set", "remote", stdin=served.token + "\n")
    assert stored.returncode == 0, stored.stderr
    via_env = run_gpushop("sessions", "list", env={"GPUSHOP_REMOTE": served.url})
    assert via_env.returncode == 0, via_env.stderr


def test_local_commands_refuse_remote(served: Served, client_home: Path) -> None:
    for words in (("paths",), ("config",), ("keys", "list"), ("serve-token",)):
        result = run_gpushop("--remote", served.url, *words)
        assert result.returncode == 2
        assert "works on this machine only" in _one_line(result.stderr)


def test_key_ssh_and_a_prefix_work_through_the_server_as_on_it(
    served: Served, client_home: Path
) -> None:
    rented = _json(served.remote("provision", "-c", "alice", "-g", "4090", "-o", "json"))
    session_id = rented["id"]  # type: ignore[index]
    key = served.remote("sessions", "key", session_id[:6])
    assert key.returncode == 0, key.stderr
    path = Path(key.stdout.strip())
    assert path.is_relative_to(client_home) and path.name == f"{session_id}.key", path
    assert path.stat().st_mode & 0o777 == 0o600
    local = Path(served.local("sessions", "key", session_id).stdout.strip())
    assert path.read_bytes() == local.read_bytes()
    login = served.remote("sessions", "ssh", session_id[:6], "--print", "--", "echo", "a b")
    assert login.returncode == 0, login.stderr
    assert login.stdout.startswith(f"ssh -i {path} ") and login.stdout.strip().endswith(
        "echo 'a b'"
    ), login.stdout
    alices = served.remote("sessions", "key", session_id[:6], token=served.alice_token)
    assert alices.returncode == 0, alices.stderr
    bob = _json(served.remote("provision", "-c", "bob", "-g", "4090", "--no-wait", "-o", "json"))
    hidden = served.remote("sessions", "key", bob["id"][:6], token=served.alice_token)  # type: ignore[index]
    assert hidden.returncode != 0
    assert bob["id"] not in _one_line(hidden.stderr)  # type: ignore[index]
    for ended in (session_id, bob["id"]):  # type: ignore[index]
        served.remote("sessions", "delete", ended)


def test_an_endpoint_and_its_tunnel_work_through_the_server(
    served: Served, client_home: Path
) -> None:
    """A model endpoint rented through the server: its URL and token come from the server, and
    the tunnel goes from this machine straight to the node with the key fetched from it."""
    rented = _json(
        served.remote(
            "provision", "-c", "alice", "-g", "gpu=4090", "--workload", "llm",
            "--model", "llama3.1:8b", "--no-benchmark", "-o", "json",
        )
    )  # fmt: skip
    assert isinstance(rented, dict) and rented["endpoint"]
    session_id = rented["id"]
    try:
        shown = served.remote("sessions", "endpoint", session_id[:6])
        assert shown.returncode == 0, shown.stderr
        assert shown.stdout.strip() == rented["endpoint"]
        token = served.remote("sessions", "endpoint", session_id, "--token").stdout.strip()
        assert token == served.local("sessions", "endpoint", session_id, "--token").stdout.strip()
        env = os.environ | {"PYTHONPATH": str(ROOT), "GPUSHOP_HOME": str(client_home)}
        tunnel = subprocess.Popen(
            [sys.executable, "-m", "gpushop_tui", "--remote", served.url, "--token",
             served.token, "sessions", "tunnel", session_id],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        try:
            assert tunnel.stdout is not None
            line = tunnel.stdout.readline()
            local = [word for word in line.split() if word.startswith("http://127.0.0.1:")]
            assert local, (line, tunnel.stderr.read() if tunnel.poll() is not None else "")
            body = {"model": "llama3.1:8b", "messages": [{"role": "user", "content": "hi"}]}
            answered = httpx.post(
                f"{local[0].rstrip('/')}/chat/completions",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert answered.status_code == 200, answered.text
            assert answered.json()["choices"][0]["message"]["content"]
        finally:
            tunnel.send_signal(signal.SIGINT)
            assert tunnel.wait(timeout=30) == 0
        assert "Traceback" not in (tunnel.stderr.read() if tunnel.stderr else "")
    finally:
        served.remote("sessions", "delete", session_id)
