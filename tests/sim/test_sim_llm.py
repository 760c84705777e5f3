"""Workloads on simulated nodes: the launcher protocol over real SSH, phases on the fake world
clock, and the stand-in model server reached only through SSH port forwarding."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import asyncssh
import httpx
import pytest

from gpushop_tui.sim.control import build_control_app
from gpushop_tui.sim.llm import DEFAULT_MAX_TOKENS, DEFAULT_TOKENS_PER_S, tokens_per_second
from gpushop_tui.sim.world import FAST_STREAM_SPEEDUP, WORKLOAD_TIMINGS, SimInstance
from tests.sim.conftest import Env

TOKEN = "s3cret-token"
LLM = {"kind": "llm", "model": "llama3.1:8b", "port": 11434, "command": None, "env": {}}
VLLM = {"kind": "vllm", "model": "Qwen/Qwen2.5-7B-Instruct", "port": 8000, "env": {}}
CHAT = {"messages": [{"role": "user", "content": "say something"}]}


async def _running(env: Env, gpu: str = "RTX 4090", provider: str = "vastai") -> SimInstance:
    instance = await env.world.create_instance(
        provider,
        instance_id="1",
        offer_id="o1",
        label="l",
        gpu_name=gpu,
        gpu_count=1,
        vram_mb=24564,
        cuda=12.4,
        price_per_hour=0.5,
        authorized_keys=[env.key.export_public_key().decode().strip()],
    )
    await env.clock.advance(instance.boot_s)
    return instance


def _connect(env: Env, instance: SimInstance) -> Any:
    assert instance.ssh_port is not None
    return asyncssh.connect(
        "127.0.0.1",
        port=instance.ssh_port,
        username=instance.ssh_user,
        client_keys=[env.key],
        known_hosts=None,
        connect_timeout=10,
    )


async def _upload(
    conn: asyncssh.SSHClientConnection,
    spec: dict[str, Any] | str | None,
    token: str | None = TOKEN,
) -> None:
    """What gpushop writes before launching (a str spec is written as is)."""
    async with conn.start_sftp_client() as sftp:
        if not await sftp.exists(".gpushop"):
            await sftp.mkdir(".gpushop")
        files = {".gpushop/launch.sh": "#!/bin/sh\n"}
        if spec is not None:
            files[".gpushop/workload.json"] = spec if isinstance(spec, str) else json.dumps(spec)
        if token is not None:
            files[".gpushop/token"] = token + "\n"
        for path, text in files.items():
            async with sftp.open(path, "w") as f:
                await f.write(text)


async def _launch(conn: asyncssh.SSHClientConnection, script: str = ".gpushop/launch.sh") -> Any:
    return await conn.run(f"sh {script}")


async def _phase(conn: asyncssh.SSHClientConnection) -> str:
    result = await conn.run("cat .gpushop/phase")
    assert result.exit_status == 0, result.stderr
    return str(result.stdout).strip()


def _total(kind: str) -> float:
    t = WORKLOAD_TIMINGS["fast"][kind]
    return t.installing_s + t.starting_s + (t.pulling_s if kind == "llm" else 0) + t.loading_s


async def _serving(
    env: Env, conn: asyncssh.SSHClientConnection, spec: dict[str, Any], token: str | None = TOKEN
) -> None:
    await _upload(conn, spec, token)
    assert (await _launch(conn)).exit_status == 0
    await env.clock.advance(_total(str(spec["kind"])))
    assert await _phase(conn) == "serving"


async def _refused(conn: asyncssh.SSHClientConnection, host: str, port: int) -> None:
    with pytest.raises(asyncssh.ChannelOpenError) as caught:
        await conn.open_connection(host, port)
    assert caught.value.code == asyncssh.OPEN_CONNECT_FAILED


class _Tunnel:
    """An httpx client through `forward_local_port` to 127.0.0.1:`port` on the node."""

    def __init__(self, conn: asyncssh.SSHClientConnection, port: int) -> None:
        self.conn = conn
        self.port = port

    async def __aenter__(self) -> httpx.AsyncClient:
        self.listener = await self.conn.forward_local_port("127.0.0.1", 0, "127.0.0.1", self.port)
        self.client = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.listener.get_port()}", timeout=10
        )
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        self.listener.close()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _served(metrics: str) -> float:
    """Requests served: the sum of every `vllm:request_success_total` series."""
    pattern = r"^vllm:request_success_total\{[^}]*\} (\S+)$"
    return sum(float(v) for v in re.findall(pattern, metrics, re.MULTILINE))


async def test_phases_follow_the_world_clock_and_the_port_opens_at_serving(env: Env) -> None:
    instance = await _running(env)
    t = WORKLOAD_TIMINGS["fast"]["llm"]
    async with _connect(env, instance) as conn:
        missing = await conn.run("cat .gpushop/phase")
        assert missing.exit_status == 1
        await _upload(conn, LLM)
        assert (await _launch(conn)).exit_status == 0
        seen = [await _phase(conn)]
        for seconds in (t.installing_s, t.starting_s, t.pulling_s):
            await _refused(conn, "127.0.0.1", 11434)
            await env.clock.advance(seconds)
            seen.append(await _phase(conn))
        await _refused(conn, "127.0.0.1", 11434)
        await env.clock.advance(t.loading_s)
        seen.append(await _phase(conn))
        assert seen == ["installing", "starting", "pulling model", "loading", "serving"]
        assert (await conn.run("cat .gpushop/pid")).exit_status == 0
        async with _Tunnel(conn, 11434) as http:
            tags = (await http.get("/api/tags")).json()
            assert [m["name"] for m in tags["models"]] == ["llama3.1:8b"]
            assert (await http.get("/api/version")).json()["version"]
            listed = (await http.get("/v1/models")).json()
            assert listed["data"][0]["id"] == "llama3.1:8b"
            chat = await http.post("/v1/chat/completions", json={**CHAT, "model": "llama3.1:8b"})
            assert chat.status_code == 200  # Ollama has no auth: the tunnel is the guard


async def test_launch_is_idempotent_and_found_by_home_and_absolute_paths(env: Env) -> None:
    instance = await _running(env)
    t = WORKLOAD_TIMINGS["fast"]["llm"]
    async with _connect(env, instance) as conn:
        await _upload(conn, LLM)
        assert (await _launch(conn, "~/.gpushop/launch.sh")).exit_status == 0
        first = env.nodes.workload(instance)
        await env.clock.advance(t.installing_s)
        for script in (".gpushop/launch.sh", "/.gpushop/launch.sh"):
            again = await _launch(conn, script)
            assert (again.exit_status, again.stdout, again.stderr) == (0, "", "")
        assert env.nodes.workload(instance) is first
        assert await _phase(conn) == "starting"


async def test_missing_or_invalid_spec_fails_like_a_shell(env: Env) -> None:
    instance = await _running(env)
    async with _connect(env, instance) as conn:
        nothing = await _launch(conn)
        assert nothing.exit_status == 2
        assert "cannot open .gpushop/launch.sh" in nothing.stderr
        await _upload(conn, None)
        missing = await _launch(conn)
        assert missing.exit_status == 1
        assert "workload.json" in missing.stderr
        for bad in ("{not json", json.dumps({"kind": "tgi"}), json.dumps({"kind": "vllm"})):
            await _upload(conn, bad)
            result = await _launch(conn)
            assert result.exit_status == 1, bad
            assert "workload.json" in result.stderr
        assert env.nodes.workload(instance) is None
        other = await conn.run("sh setup.sh")
        assert other.exit_status == 2
        assert "runs only .gpushop/launch.sh" in other.stderr
        assert (await conn.run("sh -c 'echo ok'")).stdout == "ok\n"


async def test_only_the_workload_port_on_loopback_is_forwarded(env: Env) -> None:
    instance = await _running(env)
    async with _connect(env, instance) as conn:
        await _refused(conn, "127.0.0.1", 8000)
        await _serving(env, conn, VLLM)
        await _refused(conn, "127.0.0.1", 22)
        await _refused(conn, "10.0.0.7", 8000)
        reader, writer = await conn.open_connection("localhost", 8000)
        writer.write(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert (await reader.read()).startswith(b"HTTP/1.1 200")
        writer.close()


async def test_vllm_chat_needs_the_token(env: Env) -> None:
    instance = await _running(env)
    async with _connect(env, instance) as conn:
        await _serving(env, conn, VLLM)
        async with _Tunnel(conn, 8000) as http:
            assert (await http.get("/health")).status_code == 200
            body = {**CHAT, "model": VLLM["model"], "max_tokens": 12}
            for headers in ({}, _auth("wrong")):
                refused = await http.post("/v1/chat/completions", json=body, headers=headers)
                assert refused.status_code == 401
                assert refused.json()["error"]["message"]
                assert (await http.get("/v1/models", headers=headers)).status_code == 401
            models = await http.get("/v1/models", headers=_auth(TOKEN))
            assert models.json() == {
                "object": "list",
                "data": [models.json()["data"][0] | {"id": VLLM["model"], "object": "model"}],
            }
            ok = await http.post("/v1/chat/completions", json=body, headers=_auth(TOKEN))
            assert ok.status_code == 200
            answer = ok.json()
            assert answer["choices"][0]["message"]["role"] == "assistant"
            assert len(answer["choices"][0]["message"]["content"].split()) == 12
            assert answer["usage"]["completion_tokens"] == 12
            assert answer["usage"]["prompt_tokens"] > 0
            default = await http.post(
                "/v1/chat/completions", json={**CHAT, "model": VLLM["model"]}, headers=_auth(TOKEN)
            )
            assert default.json()["usage"]["completion_tokens"] == DEFAULT_MAX_TOKENS
            unknown = await http.post(
                "/v1/chat/completions", json={**CHAT, "model": "other"}, headers=_auth(TOKEN)
            )
            assert unknown.status_code == 404


async def test_stream_yields_chunks_then_done(env: Env) -> None:
    instance = await _running(env)
    async with _connect(env, instance) as conn:
        await _serving(env, conn, VLLM)
        body = {**CHAT, "model": VLLM["model"], "max_tokens": 20}
        async with _Tunnel(conn, 8000) as http:
            whole = await http.post("/v1/chat/completions", json=body, headers=_auth(TOKEN))
            lines: list[str] = []
            streamed = {**body, "stream": True}
            async with http.stream(
                "POST", "/v1/chat/completions", json=streamed, headers=_auth(TOKEN)
            ) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                lines = [line async for line in response.aiter_lines() if line]
        assert all(line.startswith("data: ") for line in lines)
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
        pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks]
        assert sum(1 for p in pieces if p) == 20
        assert "".join(pieces) == whole.json()["choices"][0]["message"]["content"]
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_stream_keeps_the_benchmark_pace(env: Env) -> None:
    """RTX 3090 with deepseek-r1:32b is 3.6 tok/s at Vast: 18 tokens take 0.25 s in fast timing."""
    instance = await _running(env, gpu="RTX 3090")
    spec = {**LLM, "model": "deepseek-r1:32b"}
    async with _connect(env, instance) as conn:
        await _serving(env, conn, spec)
        async with _Tunnel(conn, 11434) as http:
            loop = asyncio.get_running_loop()
            started = loop.time()
            body = {**CHAT, "model": "deepseek-r1:32b", "max_tokens": 18, "stream": True}
            async with http.stream("POST", "/v1/chat/completions", json=body) as response:
                lines = [line async for line in response.aiter_lines() if line]
            elapsed = loop.time() - started
    assert lines[-1] == "data: [DONE]"
    assert elapsed >= 18 / (3.6 * FAST_STREAM_SPEEDUP) * 0.95


def test_tokens_per_second_reads_the_shipped_benchmarks() -> None:
    assert tokens_per_second("tensordock", "RTX 4090", "deepseek-r1:32b") == 13
    assert tokens_per_second("vastai", "RTX 4090", "deepseek-r1:32b") == 44.5
    assert tokens_per_second("bluelobster", "RTX 4090", "mistral:7b") == 179
    assert tokens_per_second("vastai", "H200", "Qwen/Qwen2.5-7B-Instruct") == DEFAULT_TOKENS_PER_S


async def test_metrics_count_each_request(env: Env) -> None:
    instance = await _running(env)
    async with _connect(env, instance) as conn:
        await _serving(env, conn, VLLM)
        body = {**CHAT, "model": VLLM["model"], "max_tokens": 3}
        async with _Tunnel(conn, 8000) as http:
            first = (await http.get("/metrics")).text
            assert 'vllm:request_success_total{finished_reason="stop"' in first
            assert f'model_name="{VLLM["model"]}"' in first
            assert _served(first) == 0
            await http.post("/v1/chat/completions", json=body, headers=_auth(TOKEN))
            await http.post("/v1/chat/completions", json=body)  # 401: not served
            async with http.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}, headers=_auth(TOKEN)
            ) as response:
                await response.aread()
            assert _served((await http.get("/metrics")).text) == 2


async def test_ollama_ps_expiry_moves_on_each_request(env: Env) -> None:
    instance = await _running(env)
    async with _connect(env, instance) as conn:
        await _serving(env, conn, LLM)
        body = {**CHAT, "model": "llama3.1:8b", "max_tokens": 2}
        async with _Tunnel(conn, 11434) as http:

            async def expires() -> str:
                models = (await http.get("/api/ps")).json()["models"]
                assert [m["name"] for m in models] == ["llama3.1:8b"]
                return str(models[0]["expires_at"])

            before = await expires()
            assert await expires() == before  # reading it is no activity
            await http.post("/v1/chat/completions", json=body)
            after = await expires()
            await env.clock.advance(60)
            await http.post("/v1/chat/completions", json=body)
            later = await expires()
    assert before < after < later


async def test_fault_never_loads(env: Env) -> None:
    env.world.faults.node("vastai").workload_never_loads = True
    instance = await _running(env)
    async with _connect(env, instance) as conn:
        await _upload(conn, VLLM)
        assert (await _launch(conn)).exit_status == 0
        await env.clock.advance(_total("vllm") + 3600)
        assert await _phase(conn) == "loading"
        await _refused(conn, "127.0.0.1", 8000)


async def test_fault_server_dies_and_a_new_launch_starts_again(env: Env) -> None:
    env.world.faults.node("vastai").workload_dies_after_s = 30
    instance = await _running(env)
    async with _connect(env, instance) as conn:
        await _serving(env, conn, VLLM)
        async with _Tunnel(conn, 8000) as http:
            assert (await http.get("/health")).status_code == 200
            await env.clock.advance(30)
            assert await _phase(conn) == "failed: the server exited"
            await _refused(conn, "127.0.0.1", 8000)
            assert (await http.get("/health")).status_code >= 500
        assert "failed: the server exited" in (await conn.run("cat .gpushop/workload.log")).stdout
        assert (await _launch(conn)).exit_status == 0
        assert await _phase(conn) == "installing"


async def test_fault_wrong_token(env: Env) -> None:
    env.world.faults.node("vastai").workload_wrong_token = True
    instance = await _running(env)
    async with _connect(env, instance) as conn:
        await _serving(env, conn, VLLM)
        async with _Tunnel(conn, 8000) as http:
            assert (await http.get("/health")).status_code == 200
            chat = await http.post(
                "/v1/chat/completions", json={**CHAT, "model": VLLM["model"]}, headers=_auth(TOKEN)
            )
            assert chat.status_code == 401


async def test_workload_faults_through_the_control_endpoint(env: Env) -> None:
    transport = httpx.ASGITransport(app=build_control_app(env.world))
    async with httpx.AsyncClient(transport=transport, base_url="http://control") as control:
        answer = await control.put(
            "/faults/nodes/vastai",
            json={"workload_dies_after_s": 5, "workload_wrong_token": True},
        )
    assert answer.status_code == 200
    faults = env.world.faults.node("vastai")
    assert (faults.workload_dies_after_s, faults.workload_wrong_token) == (5, True)


async def test_destroy_stops_the_model_server(env: Env) -> None:
    instance = await _running(env)
    async with _connect(env, instance) as conn:
        await _serving(env, conn, LLM)
    workload = env.nodes.workload(instance)
    assert workload is not None and workload.server is not None
    port = workload.server.port
    assert port is not None
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()
    await env.world.destroy("vastai", instance.id)
    with pytest.raises(OSError):
        await asyncio.open_connection("127.0.0.1", port)


async def test_a_reboot_ends_the_workload_until_launched_again(env: Env) -> None:
    instance = await _running(env)
    async with _connect(env, instance) as conn:
        await _serving(env, conn, VLLM)
    instance.stopped = True
    instance.power_on(env.world.now())
    await env.clock.advance(instance.boot_s)
    async with _connect(env, instance) as conn:
        assert await _phase(conn) == "serving"  # what run.sh last wrote before it was killed
        await _refused(conn, "127.0.0.1", 8000)
        assert (await _launch(conn)).exit_status == 0
        assert await _phase(conn) == "installing"
