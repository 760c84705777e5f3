"""The simulated Vast.ai API, exercised over real loopback HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncssh
import httpx
import pytest

from gpushop_tui.clock import FakeClock
from gpushop_tui.sim.faults import HttpFault, vast_search_quota_exhausted
from gpushop_tui.sim.http import serve
from gpushop_tui.sim.node import SshNodes
from gpushop_tui.sim.vastai import build_app
from gpushop_tui.sim.world import WORKLOAD_TIMINGS, World

V0 = "/api/v0"


@dataclass
class Vast:
    world: World
    clock: FakeClock
    http: httpx.AsyncClient  # authenticated
    anon: httpx.AsyncClient

    async def search(self, query: dict[str, Any]) -> list[dict[str, Any]]:
        r = await self.anon.post(f"{V0}/bundles/", json=query)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/json"
        return r.json()["offers"]

    async def rent(self, **body: Any) -> tuple[int, dict[str, Any]]:
        query = {"gpu_name": {"eq": "RTX 4090"}, "rentable": {"eq": True}, "limit": 1}
        offer = (await self.search(query))[0]
        r = await self.http.put(
            f"{V0}/asks/{offer['id']}/",
            json={"client_id": "me", "image": "pytorch/pytorch", **body},
        )
        assert r.status_code == 200, r.text
        return r.json()["new_contract"], offer

    async def show(self, instance_id: int) -> Any:
        r = await self.http.get(f"{V0}/instances/{instance_id}/", params={"owner": "me"})
        assert r.status_code == 200
        return r.json()["instances"]


@pytest.fixture
async def vast() -> AsyncIterator[Vast]:
    clock = FakeClock()
    world = World(seed=1, clock=clock)
    served = await serve(build_app(world))
    headers = {"Authorization": f"Bearer {world.keys['vastai']}"}
    async with (
        httpx.AsyncClient(base_url=served.origin, headers=headers) as http,
        httpx.AsyncClient(base_url=served.origin) as anon,
    ):
        yield Vast(world, clock, http, anon)
    await served.stop()


async def test_search_without_auth_returns_realistic_offers(vast: Vast) -> None:
    offers = await vast.search({"limit": 5000})
    assert 1000 <= len(offers) <= 2000
    names = {o["gpu_name"] for o in offers}
    assert {"RTX 3060", "RTX 4090", "RTX 5090", "A100 SXM4", "L40S", "RTX A6000"} <= names
    assert {"H100 SXM", "H200", "B200"} <= names
    ram = {o["gpu_name"]: o["gpu_ram"] for o in offers}
    assert (ram["RTX 4090"], ram["RTX 5090"], ram["H100 SXM"]) == (24564, 32607, 81559)
    assert {o["num_gpus"] for o in offers} == {1, 2, 4, 8}
    one = offers[0]
    for field in [
        "id",
        "ask_contract_id",
        "machine_id",
        "dph_total",
        "reliability2",
        "reliability",
        "geolocation",
        "cuda_max_good",
        "inet_down",
        "inet_up",
        "verified",
        "rentable",
        "rented",
        "external",
        "score",
        "min_bid",
    ]:
        assert field in one, field
    assert one["id"] == one["ask_contract_id"]
    assert all("," in o["geolocation"] or o["geolocation"] in ("Norway", "Sweden") for o in offers)


async def test_default_order_is_score_desc_and_default_limit(vast: Vast) -> None:
    offers = await vast.search({})
    assert 0 < len(offers) < 1000
    scores = [o["score"] for o in offers]
    assert scores == sorted(scores, reverse=True)


async def test_operators_with_string_numbers_and_spaced_names(vast: Vast) -> None:
    query = {
        "verified": {"eq": True},
        "external": {"eq": False},
        "rentable": {"eq": True},
        "gpu_name": {"eq": "RTX 4090"},
        "num_gpus": {"gte": "2", "lte": "4"},
        "reliability2": {"gt": "0.9"},
        "order": [["dph_total", "asc"]],
        "type": "on-demand",
        "allocated_storage": 5.0,
        "limit": 1000,
    }
    offers = await vast.search(query)
    assert offers
    assert all(o["gpu_name"] == "RTX 4090" for o in offers)
    assert all(2 <= o["num_gpus"] <= 4 and o["reliability2"] > 0.9 for o in offers)
    assert all(o["verified"] and not o["external"] and o["rentable"] for o in offers)
    prices = [o["dph_total"] for o in offers]
    assert prices == sorted(prices)

    names = await vast.search({"gpu_name": {"in": ["H100 SXM", "H200"]}, "limit": 1000})
    assert {o["gpu_name"] for o in names} == {"H100 SXM", "H200"}
    others = await vast.search({"gpu_name": {"notin": ["RTX 4090"]}, "limit": 5000})
    assert others and all(o["gpu_name"] != "RTX 4090" for o in others)
    neq = await vast.search({"num_gpus": {"neq": 1}, "cuda_max_good": {"gte": 12.8}})
    assert neq and all(o["num_gpus"] != 1 and o["cuda_max_good"] >= 12.8 for o in neq)
    lt = await vast.search({"dph_total": {"lt": 0.2}, "limit": 5000})
    assert lt and all(o["dph_total"] < 0.2 for o in lt)
    us = await vast.search({"geolocation": {"in": ["US"]}, "limit": 5000})
    assert us and all(o["geolocation"].endswith(", US") for o in us)


async def test_get_form_with_q_matches_post(vast: Vast) -> None:
    query = {"gpu_name": {"eq": "RTX 3090"}, "order": [["dph_total", "desc"]], "limit": 7}
    r = await vast.anon.get(f"{V0}/bundles", params={"q": json.dumps(query)})
    assert r.status_code == 200
    got = r.json()["offers"]
    assert len(got) == 7
    assert got == await vast.search(query)


async def test_allocated_storage_and_bid_pricing(vast: Vast) -> None:
    base = {"gpu_name": {"eq": "A100 SXM4"}, "order": [["id", "asc"]], "limit": 3}
    small = await vast.search({**base, "allocated_storage": 5})
    large = await vast.search({**base, "allocated_storage": 500})
    for s, big in zip(small, large, strict=True):
        assert big["dph_total"] > s["dph_total"]
        expected = s["dph_base"] + 500 * s["storage_cost"] / 720
        assert big["dph_total"] == pytest.approx(expected, abs=1e-5)
    bid = await vast.search({**base, "type": "bid", "allocated_storage": 5})
    for s, b in zip(small, bid, strict=True):
        assert b["is_bid"] is True and s["is_bid"] is False
        assert b["dph_total"] < s["dph_total"]
        assert b["dph_total"] == pytest.approx(s["min_bid"] + s["storage_total_cost"], abs=1e-5)
    ondemand = await vast.search({**base, "type": "ondemand", "allocated_storage": 5})
    assert ondemand == small


async def test_offers_are_deterministic_per_seed() -> None:
    async def offers(seed: int) -> list[dict[str, Any]]:
        served = await serve(build_app(World(seed=seed, clock=FakeClock())))
        async with httpx.AsyncClient(base_url=served.origin) as client:
            r = await client.post(f"{V0}/bundles/", json={"limit": 50})
        await served.stop()
        return r.json()["offers"]

    first, again, other = await offers(1), await offers(1), await offers(2)
    assert first == again
    assert [o["id"] for o in first] != [o["id"] for o in other]


async def test_the_market_size_is_a_knob_that_keeps_the_default_market() -> None:
    async def offers(machines: int) -> list[dict[str, Any]]:
        served = await serve(build_app(World(seed=1, clock=FakeClock(), vast_machines=machines)))
        async with httpx.AsyncClient(base_url=served.origin) as client:
            body = {"order": [["id", "asc"]], "limit": 10**6}
            r = await client.post(f"{V0}/bundles/", json=body)
        await served.stop()
        return r.json()["offers"]

    default, large = await offers(650), await offers(8000)
    assert len(large) > 20_000 and large[: len(default)] == default
    assert World(seed=1).vast_machines == 650


async def test_gpu_ram_is_filtered_in_mb(vast: Vast) -> None:
    big = await vast.search({"gpu_ram": {"gte": 80 * 1024 * 0.93}, "limit": 5000})
    assert big and all(o["gpu_ram"] >= 80 * 1024 * 0.93 for o in big)
    assert {o["gpu_name"] for o in big} >= {"H100 SXM", "A100 SXM4", "H200"}


async def test_gpu_names_and_current_user(vast: Vast) -> None:
    r = await vast.anon.get(f"{V0}/gpu_names/unique/")
    assert r.status_code == 200 and "RTX 4090" in r.json()["gpu_names"]
    r = await vast.http.get(f"{V0}/users/current")
    body = r.json()
    assert r.status_code == 200
    assert body["credit"] == vast.world.credit and "email" in body and "id" in body
    assert (await vast.anon.get(f"{V0}/users/current/")).status_code == 401


async def test_auth_failures(vast: Vast) -> None:
    r = await vast.anon.get(f"{V0}/instances/")
    assert r.status_code == 401
    assert r.json()["error"] == "auth_error" and r.json()["success"] is False
    r = await vast.anon.get(f"{V0}/instances/", headers={"Authorization": "Bearer wrong"})
    assert r.status_code == 403 and r.json()["error"] == "auth_error"
    key = vast.world.keys["vastai"]
    r = await vast.anon.get(f"{V0}/instances/", params={"api_key": key})
    assert r.status_code == 200 and r.json()["instances"] == []


async def test_create_takes_the_offer(vast: Vast) -> None:
    contract, offer = await vast.rent(disk=20, label="job-1", env={"-p 8000:8000": "1"})
    instance = vast.world.get("vastai", str(contract))
    assert instance is not None
    assert instance.label == "job-1" and instance.gpu_name == "RTX 4090"
    assert instance.extra["image"] == "pytorch/pytorch" and instance.extra["disk"] == 20
    assert instance.price_per_hour == pytest.approx(
        offer["dph_base"] + 20 * offer["storage_cost"] / 720, abs=1e-5
    )
    assert str(offer["id"]) in vast.world.taken["vastai"]
    ids = {o["id"] for o in await vast.search({"limit": 5000})}
    assert offer["id"] not in ids

    r = await vast.http.put(f"{V0}/asks/{offer['id']}/", json={"image": "x"})
    assert r.status_code == 400
    assert r.json()["error"] == "no_such_ask" and "no_such_ask" in r.json()["msg"]
    r = await vast.http.put(f"{V0}/asks/{offer['id']}", json={"image": "x", "cancel_unavail": True})
    assert r.status_code == 410 and r.json()["error"] == "no_such_ask"


async def test_unknown_ask_and_bad_requests(vast: Vast) -> None:
    r = await vast.http.put(f"{V0}/asks/1/", json={"image": "x"})
    assert r.status_code == 404 and "no_such_ask" in r.json()["msg"]
    assert r.json()["ask_id"] == 1
    r = await vast.http.put(f"{V0}/asks/abc/", json={"image": "x"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_args"
    r = await vast.anon.put(f"{V0}/asks/1/", json={"image": "x"})
    assert r.status_code == 401


async def test_attach_ssh_key(vast: Vast) -> None:
    contract, _ = await vast.rent()
    key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBx test@host"
    r = await vast.http.post(f"{V0}/instances/{contract}/ssh/", json={"ssh_key": key})
    assert r.json() == {"success": True, "msg": "SSH key attached successfully"}
    assert vast.world.get("vastai", str(contract)).authorized_keys == [key]  # type: ignore[union-attr]
    r = await vast.http.post(f"{V0}/instances/{contract}/ssh/", json={})
    assert r.status_code == 400 and r.json()["error"] == "no_ssh_key"
    r = await vast.http.post(f"{V0}/instances/999/ssh", json={"ssh_key": key})
    assert r.status_code == 404 and r.json()["error"] == "no_such_instance"


async def test_status_walks_null_loading_running(vast: Vast) -> None:
    contract, _ = await vast.rent(env={"-p 8000:8000": "1", "HF_HOME": "/w"})
    vast.world.get("vastai", str(contract)).ssh_port = 2222  # type: ignore[union-attr]
    row = await vast.show(contract)
    assert row["actual_status"] is None and row["intended_status"] == "running"
    assert row["ports"] is None and row["public_ipaddr"] is None and row["ssh_port"] is None
    assert isinstance(row["start_date"], float)
    assert row["extra_env"] == [["-p 8000:8000", "1"], ["HF_HOME", "/w"]]
    for field in [
        "label",
        "dph_total",
        "gpu_name",
        "num_gpus",
        "gpu_ram",
        "cur_state",
        "id",
        "machine_id",
    ]:
        assert field in row, field

    await vast.clock.advance(1.5)
    row = await vast.show(contract)
    assert row["actual_status"] == "loading" and row["ports"] is None

    await vast.clock.advance(2)
    row = await vast.show(contract)
    assert row["actual_status"] == "running"
    assert row["public_ipaddr"] == "127.0.0.1" and row["ssh_port"] == 2222
    assert row["ports"]["22/tcp"][0] == {"HostIp": "0.0.0.0", "HostPort": "2222"}
    assert "8000/tcp" in row["ports"]
    assert row["status_msg"].startswith("success, running")


async def _launch_vllm(vast: Vast, contract: int, public: bool) -> None:
    """Launch a vLLM stand-in on the instance's node over SSH, as gpushop does."""
    key = asyncssh.generate_private_key("ssh-ed25519")
    public_key = key.export_public_key().decode().strip()
    r = await vast.http.post(f"{V0}/instances/{contract}/ssh/", json={"ssh_key": public_key})
    assert r.status_code == 200
    row = await vast.show(contract)
    spec = {"kind": "vllm", "model": "m", "port": 8000, "env": {}, "public": public}
    async with asyncssh.connect(
        row["ssh_host"],
        port=row["ssh_port"],
        username="root",
        client_keys=[key],
        known_hosts=None,
    ) as conn:
        async with conn.start_sftp_client() as sftp:
            await sftp.mkdir(".gpushop")
            for path, text in {
                ".gpushop/workload.json": json.dumps(spec),
                ".gpushop/token": "tok",
                ".gpushop/launch.sh": "#!/bin/sh\n",
            }.items():
                async with sftp.open(path, "w") as f:
                    await f.write(text)
        assert (await conn.run("sh .gpushop/launch.sh")).exit_status == 0


async def test_a_requested_port_answers_where_ports_says_only_from_a_public_server(
    vast: Vast,
) -> None:
    vast.world.nodes = nodes = SshNodes(vast.world)
    try:
        urls: dict[bool, str] = {}
        for public in (False, True):
            env = {"-p 8000:8000": "1", "-p 8081:8081/udp": "1"}
            contract, _ = await vast.rent(env=env)
            await vast.clock.advance(5)
            row = await vast.show(contract)
            instance = vast.world.get("vastai", str(contract))
            assert instance is not None and instance.extra["publish"] == [8000]
            host_port = row["ports"]["8000/tcp"][0]["HostPort"]
            assert host_port == str(instance.extra["published"]["8000"])
            assert row["ports"]["8081/udp"][0]["HostPort"] != host_port
            urls[public] = f"http://{row['public_ipaddr']}:{host_port}"
            await _launch_vllm(vast, contract, public)
        async with httpx.AsyncClient(timeout=5) as client:
            for url in urls.values():  # loading: nothing serves, the connection is reset
                with pytest.raises(httpx.TransportError):
                    await client.get(f"{url}/health")
            t = WORKLOAD_TIMINGS["fast"]["vllm"]
            await vast.clock.advance(t.installing_s + t.starting_s + t.loading_s)
            with pytest.raises(httpx.TransportError):  # serving, on the node's loopback only
                await client.get(f"{urls[False]}/health")
            assert (await client.get(f"{urls[True]}/health")).status_code == 200
            assert (await client.get(f"{urls[True]}/v1/models")).status_code == 401
            models = await client.get(
                f"{urls[True]}/v1/models", headers={"Authorization": "Bearer tok"}
            )
            assert models.status_code == 200 and models.json()["data"][0]["id"] == "m"
    finally:
        await nodes.aclose()


async def test_stop_start_and_label(vast: Vast) -> None:
    contract, _ = await vast.rent()
    await vast.clock.advance(10)
    r = await vast.http.put(f"{V0}/instances/{contract}/", json={"state": "stopped"})
    assert r.json() == {"success": True}
    row = await vast.show(contract)
    assert row["actual_status"] == "stopped" and row["intended_status"] == "stopped"
    assert row["ports"] is None
    r = await vast.http.put(f"{V0}/instances/{contract}", json={"state": "running"})
    assert r.status_code == 200
    booting = await vast.show(contract)  # a start boots the container again
    assert (booting["actual_status"], booting["intended_status"]) == ("loading", "running")
    assert booting["ssh_port"] is None
    await vast.clock.advance(vast.world.timing["vastai"].boot_s)
    assert (await vast.show(contract))["actual_status"] == "running"

    r = await vast.http.put(f"{V0}/instances/{contract}/", json={"label": "new"})
    assert r.json() == {"success": True, "msg": f"label for {contract} set to 'new'"}
    assert (await vast.show(contract))["label"] == "new"
    r = await vast.http.put(f"{V0}/instances/{contract}/", json={"label": "x" * 1025})
    assert r.status_code == 400 and r.json()["error"] == "label_too_long"
    r = await vast.http.put(f"{V0}/instances/42/", json={"label": "y"})
    assert r.status_code == 404 and r.json()["error"] == "no_such_instance"


async def test_list_v0_and_v1_paging(vast: Vast) -> None:
    offers = await vast.search({"rentable": {"eq": True}, "order": [["id", "asc"]], "limit": 30})
    contracts = []
    for offer in offers:
        r = await vast.http.put(f"{V0}/asks/{offer['id']}/", json={"image": "img", "label": "L"})
        contracts.append(r.json()["new_contract"])
    r = await vast.http.get(f"{V0}/instances/", params={"owner": "me"})
    assert r.json()["instances_found"] == 30
    assert sorted(i["id"] for i in r.json()["instances"]) == sorted(contracts)

    seen: list[int] = []
    params: dict[str, str] = {
        "select_filters": "{}",
        "order_by": json.dumps([{"col": "id", "dir": "asc"}]),
        "limit": "25",
    }
    pages = 0
    while True:
        r = await vast.http.get("/api/v1/instances/", params=params)
        assert r.status_code == 200, r.text
        body = r.json()
        pages += 1
        assert body["total_instances"] == 30 and body["label_counts"] == {"L": 30}
        seen += [i["id"] for i in body["instances"]]
        if not body["next_token"]:
            break
        params["after_token"] = body["next_token"]
    assert pages == 2 and seen == sorted(contracts)

    r = await vast.http.get(
        "/api/v1/instances",
        params={"limit": "3", "order_by": json.dumps([{"col": "id", "dir": "desc"}])},
    )
    assert [i["id"] for i in r.json()["instances"]] == sorted(contracts, reverse=True)[:3]
    r = await vast.http.get(
        "/api/v1/instances/",
        params={"select_filters": json.dumps({"id": {"eq": contracts[4]}})},
    )
    assert [i["id"] for i in r.json()["instances"]] == [contracts[4]]
    assert r.json()["next_token"] is None
    r = await vast.http.get("/api/v1/instances/", params={"after_token": "garbage!"})
    assert r.status_code == 400 and r.json()["error"] == "invalid_token"
    r = await vast.http.get(
        "/api/v1/instances/", params={"select_filters": json.dumps({"dph_total": {"lt": 1}})}
    )
    assert r.status_code == 400


async def test_destroy_then_instances_null(vast: Vast) -> None:
    contract, offer = await vast.rent()
    r = await vast.http.request("DELETE", f"{V0}/instances/{contract}/", json={})
    assert r.status_code == 200 and r.json() == {"success": True}
    r = await vast.http.get(f"{V0}/instances/{contract}/")
    assert r.status_code == 200 and r.json() == {"instances": None}
    r = await vast.http.delete(f"{V0}/instances/{contract}")
    assert r.status_code == 404 and r.json()["error"] == "no_such_instance"
    assert (await vast.http.get(f"{V0}/instances/")).json()["instances"] == []
    ids = {o["id"] for o in await vast.search({"limit": 5000})}
    assert offer["id"] in ids  # the machine is back on the market


async def test_injected_429_has_no_retry_after(vast: Vast) -> None:
    vast.world.faults.add(
        HttpFault(
            provider="vastai", endpoint="search", status=429, body="API requests too frequent"
        )
    )
    r = await vast.anon.post(f"{V0}/bundles/", json={})
    assert r.status_code == 429
    assert r.text == "API requests too frequent"
    assert "retry-after" not in r.headers
    # the fault only hits the search endpoint
    assert (await vast.anon.get(f"{V0}/gpu_names/unique/")).status_code == 200


async def test_injected_429_forms_of_the_newer_client(vast: Vast) -> None:
    vast.world.faults.add(vast_search_quota_exhausted(times=1))
    vast.world.faults.add(
        HttpFault(provider="vastai", status=429, body="", headers={"Retry-After": "7"}, times=1)
    )
    quota = await vast.anon.post(f"{V0}/bundles/", json={})
    assert quota.status_code == 429
    assert quota.headers["content-type"] == "application/json"
    assert quota.json()["error"] == "search_quota_exceeded"
    throttled = await vast.http.get(f"{V0}/instances/")
    assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "7")
    assert (await vast.anon.post(f"{V0}/bundles/", json={})).status_code == 200


async def test_injected_malformed_json(vast: Vast) -> None:
    vast.world.faults.add(HttpFault(provider="vastai", endpoint="get", kind="malformed", times=1))
    contract, _ = await vast.rent()
    r = await vast.http.get(f"{V0}/instances/{contract}/")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        r.json()
    assert (await vast.show(contract))["id"] == contract  # used up after one request


async def test_bad_query_is_invalid_args(vast: Vast) -> None:
    r = await vast.anon.post(f"{V0}/bundles/", content=b"{not json")
    assert r.status_code == 400 and r.json()["error"] == "invalid_args"
    r = await vast.anon.post(f"{V0}/bundles/", json={"num_gpus": {"gte": "lots"}})
    assert r.status_code == 400
