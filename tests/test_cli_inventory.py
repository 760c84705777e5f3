"""`gpushop inventory` and `gpushop check` as a user runs them, against the standalone simulator."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gpushop_tui.config import load_settings
from gpushop_tui.models import Benchmark
from gpushop_tui.store import Store
from tests.conftest import run_gpushop, sim_env

ALL = ("vastai", "tensordock", "bluelobster", "runpod", "lambda")


@pytest.fixture
def sim(standalone_sim: dict[str, Any]) -> Iterator[dict[str, Any]]:
    httpx.delete(f"{standalone_sim['control']}/faults")
    yield standalone_sim
    httpx.delete(f"{standalone_sim['control']}/faults")


def inventory(sim: dict[str, Any], *args: str, providers: tuple[str, ...] = ALL) -> Any:
    result = run_gpushop("inventory", *args, env=sim_env(sim, *providers))
    return result


def test_inventory_json_has_offers_from_all_five_with_status(sim: dict[str, Any]) -> None:
    result = inventory(sim, "-o", "json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert {o["provider"] for o in answer["offers"]} == set(ALL)
    assert {r["provider"]: r["status"] for r in answer["providers"]} == dict.fromkeys(ALL, "ok")
    sample = answer["offers"][0]
    for field in ("id", "gpu_name", "gpu_count", "vram_gb", "price_per_hour",
                  "price_per_gpu_hour", "fetched_at"):  # fmt: skip
        assert field in sample
    assert "raw" not in sample
    prices = [o["price_per_hour"] for o in answer["offers"]]
    assert prices == sorted(prices)


def test_a_query_keeps_only_cheap_4090s_cheapest_first(sim: dict[str, Any]) -> None:
    result = inventory(sim, "gpu=4090 price<=0.6 sort=price", "-o", "json")
    assert result.returncode == 0, result.stderr
    offers = json.loads(result.stdout)["offers"]
    assert offers, "the simulated market has RTX 4090s under $0.60/h"
    assert {o["gpu_name"] for o in offers} == {"RTX 4090"}
    assert all(o["price_per_hour"] <= 0.6 for o in offers)
    prices = [o["price_per_hour"] for o in offers]
    assert prices == sorted(prices)


def test_the_table_is_readable(sim: dict[str, Any]) -> None:
    result = inventory(sim, "gpu=4090", "--limit", "5")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["OFFER", "GPU", "N", "VRAM", "$/H", "$/GPU-H", "WHERE", "REL",
                                "CUDA"]  # fmt: skip
    rows = lines[1:6]
    assert all("RTX 4090" in row for row in rows)
    assert any(line.strip().startswith("vastai: ") and "offers" in line for line in lines)
    assert "matching of" in result.stdout


def test_a_misspelled_key_is_an_error_naming_the_token(sim: dict[str, Any]) -> None:
    result = inventory(sim, "prce<=1")
    assert result.returncode == 2
    assert "unknown key 'prce'" in result.stderr and "did you mean 'price'" in result.stderr
    assert "Traceback" not in result.stderr


def test_one_failing_provider_does_not_hide_the_others(sim: dict[str, Any]) -> None:
    fault = {"provider": "tensordock", "endpoint": "*", "status": 503, "body": "down"}
    httpx.post(f"{sim['control']}/faults", json=fault).raise_for_status()
    result = inventory(sim, "-o", "json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    reports = {r["provider"]: r for r in answer["providers"]}
    assert reports["tensordock"]["status"] in ("error", "stale")
    assert reports["tensordock"]["error"]
    assert {o["provider"] for o in answer["offers"]} == set(ALL) - {"tensordock"}


def test_no_configured_provider_is_one_clear_sentence(sim: dict[str, Any]) -> None:
    result = inventory(sim, providers=())
    assert result.returncode == 2
    assert "no provider is configured" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_check_reports_each_provider(sim: dict[str, Any]) -> None:
    env = sim_env(sim, "vastai", "tensordock") | {"TENSORDOCK_API_TOKEN": "wrong-token-123"}
    result = run_gpushop("check", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    checks = {c["provider"]: c for c in json.loads(result.stdout)}
    assert checks["vastai"]["works"] and checks["vastai"]["latency_ms"] is not None
    assert checks["tensordock"]["key_valid"] is False and not checks["tensordock"]["works"]
    assert "wrong-token-123" not in result.stdout
    assert checks["bluelobster"]["configured"] is False
    table = run_gpushop("check", env=env)
    assert "PROVIDER" in table.stdout and "no credential set" in table.stdout


def test_check_fails_when_no_provider_works(sim: dict[str, Any]) -> None:
    env = sim_env(sim) | {"VASTAI_API_KEY": "not-the-key-42"}
    result = run_gpushop("check", env=env)
    assert result.returncode == 1


def test_a_query_for_one_failing_provider_reports_only_that_one(sim: dict[str, Any]) -> None:
    fault = {"provider": "vastai", "endpoint": "*", "status": 503}
    httpx.post(f"{sim['control']}/faults", json=fault).raise_for_status()
    result = inventory(sim, "provider=vastai", "--refresh")
    assert "None" not in result.stdout + result.stderr
    status = [line.strip() for line in result.stdout.splitlines() if line.startswith("  ")]
    assert status and all(line.startswith("vastai: ") for line in status), result.stdout
    assert "tensordock" not in result.stdout and "bluelobster" not in result.stdout
    answer = json.loads(inventory(sim, "provider=vastai", "--refresh", "-o", "json").stdout)
    assert [r["provider"] for r in answer["providers"]] == ["vastai"]
    assert answer["providers"][0]["error"]


def test_the_briefs_inventory_flags_are_query_terms(sim: dict[str, Any]) -> None:
    result = inventory(sim, "--gpu=4090", "--max-price=0.60", "--min-vram=20", "-o", "json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["query"] == "gpu=4090 vram>=20 price<=0.6"
    assert answer["offers"] and {o["gpu_name"] for o in answer["offers"]} == {"RTX 4090"}
    assert all(o["price_per_hour"] <= 0.6 for o in answer["offers"])
    spaced = inventory(sim, "--gpu", "RTX 4090", "-o", "json")
    assert json.loads(spaced.stdout)["query"] == 'gpu="RTX 4090"'
    twice = inventory(sim, "price<=1", "--max-price=0.5")
    assert twice.returncode == 2 and "price is given twice" in twice.stderr


def test_by_gpu_groups_the_same_offers_into_one_row_per_gpu_and_count(
    sim: dict[str, Any],
) -> None:
    plain = json.loads(inventory(sim, "vram>=24", "-o", "json").stdout)["offers"]
    result = inventory(sim, "vram>=24", "--by-gpu", "-o", "json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    rows = answer["rows"]
    assert answer["matching_offers"] == len(plain) == sum(row["offers"] for row in rows)
    keys = [(row["gpu_name"], row["gpu_count"]) for row in rows]
    assert len(set(keys)) == len(keys) == len({(o["gpu_name"], o["gpu_count"]) for o in plain})
    assert {r["provider"]: r["status"] for r in answer["providers"]} == dict.fromkeys(ALL, "ok")
    assert all("truncated" in report for report in answer["providers"])
    for row in rows:
        key = (row["gpu_name"], row["gpu_count"])
        mine = [o for o in plain if (o["gpu_name"], o["gpu_count"]) == key]
        assert row["price_min"] == min(o["price_per_hour"] for o in mine)
        assert sum(best["offers"] for best in row["by_provider"].values()) == row["offers"]
        for provider, best in row["by_provider"].items():
            own = [o for o in mine if o["provider"] == provider]
            assert best["price_per_hour"] == min(o["price_per_hour"] for o in own)
            assert best["offer_id"] in {o["id"] for o in own}
        assert "usd_per_mtok" not in row
    assert any(len(row["by_provider"]) > 1 for row in rows)


def test_by_gpu_table_has_a_column_per_provider_and_limit_counts_rows(
    sim: dict[str, Any],
) -> None:
    fault = {"provider": "bluelobster", "endpoint": "*", "status": 503, "body": "down"}
    httpx.post(f"{sim['control']}/faults", json=fault).raise_for_status()
    result = inventory(sim, "limit=3", "--by-gpu", "--refresh")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    header = ["GPU", "N", "VRAM", "VASTAI", "TENSORDOCK", "BLUELOBSTER", "RUNPOD", "LAMBDA"]
    header += ["OFFERS", "$/H", "RANGE"]
    assert lines[0].split() == header
    assert lines.index("") == 4, result.stdout
    assert all(len(line.split()) >= len(header) - 1 for line in lines[1:4])
    footer = lines[5]
    every = int(footer.split()[0])
    assert every > 3 and footer.endswith(f"({every - 3} more: use --limit)"), footer
    status = [line.strip() for line in lines if line.startswith("  ")]
    assert [line.split(":")[0] for line in status] == list(ALL)
    assert status[2].startswith("bluelobster: unavailable") and "HTTP 503" in status[2]
    two = inventory(
        sim, "model=llama3.1:8b", "--by-gpu", "--limit", "2", providers=("vastai", "tensordock")
    )
    assert two.stdout.splitlines()[0].split()[3:] == ["VASTAI", "TENSORDOCK", "OFFERS", "$/H",
                                                      "RANGE", "$/Mtok"]  # fmt: skip
    assert "BLUELOBSTER" not in two.stdout.splitlines()[0]
    assert two.stdout.splitlines().index("") == 3
    as_json = json.loads(inventory(sim, "--by-gpu", "--limit", "2", "-o", "json").stdout)
    assert len(as_json["rows"]) == 2 and as_json["rows_total"] > 2


def record_own_measurement(gpu: str, model: str) -> None:
    """Store a row as gpushop keeps what it measured on a session's node."""

    async def record() -> None:
        settings = load_settings()
        settings.paths.prepare()
        store = await Store.open(settings.paths.db_file)
        ours = Benchmark(gpu_name=gpu, model=model, tokens_per_second=190,
                         source="measured", session_id="s00001")  # fmt: skip
        try:
            await store.add_benchmark(ours)
        finally:
            await store.aclose()

    asyncio.run(record())


def test_estimates_resting_on_gpushops_own_measurements_are_marked(sim: dict[str, Any]) -> None:
    shipped = json.loads(inventory(sim, "model=llama3.1:8b", "-o", "json").stdout)["offers"]
    assert shipped and not any(o["usd_per_mtok_measured"] for o in shipped)
    record_own_measurement("RTX 4090", "llama3.1:8b")
    offers = json.loads(inventory(sim, "model=llama3.1:8b", "-o", "json").stdout)["offers"]
    ours = {o["id"] for o in offers if o["usd_per_mtok_measured"]}
    assert ours and ours == {o["id"] for o in offers if o["gpu_name"] == "RTX 4090"}

    table = inventory(sim, "gpu=4090 model=llama3.1:8b", "--limit", "3")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[-1] == "$/Mtok"
    assert all(line.endswith("*") for line in lines[1:4]), table.stdout
    assert any(line.startswith("*: includes tokens/s gpushop measured") for line in lines)

    rows = json.loads(inventory(sim, "model=llama3.1:8b", "--by-gpu", "-o", "json").stdout)["rows"]
    assert {r["gpu_name"] for r in rows if r["usd_per_mtok_measured"]} == {"RTX 4090"}
    by_tokens = ("model=llama3.1:8b sort=usd_per_mtok", "--by-gpu", "--limit", "6")
    compared = inventory(sim, *by_tokens).stdout.splitlines()
    assert any(line.startswith("RTX 4090 ") for line in compared[1:7]), compared
    assert all(line.endswith("*") == line.startswith("RTX 4090 ") for line in compared[1:7])
    assert any(line.startswith("*: includes tokens/s gpushop measured") for line in compared)
    shipped_only = inventory(sim, "gpu=3090 model=llama3.1:8b", "--limit", "3").stdout
    assert shipped_only.splitlines()[1].split()[-1].replace(".", "").isdigit()
    assert "*" not in shipped_only


def test_check_tries_runpod_and_lambda_keys_like_the_others(sim: dict[str, Any]) -> None:
    env = sim_env(sim, "runpod") | {"LAMBDA_API_KEY": "not-the-lambda-key-7"}
    result = run_gpushop("check", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    checks = {c["provider"]: c for c in json.loads(result.stdout)}
    assert checks["runpod"]["works"] and checks["runpod"]["key_valid"] is True
    assert checks["lambda"]["key_valid"] is False and not checks["lambda"]["works"]
    assert "not-the-lambda-key-7" not in result.stdout
    assert not checks["vastai"]["configured"]
