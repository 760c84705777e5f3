"""`gpushop benchmarks` and `gpushop inventory 'model=…'` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gpushop_tui.core.benchmarks import CSV_COLUMNS
from tests.conftest import run_gpushop, sim_env


def test_cheapest_reproduces_the_seeds_headline() -> None:
    result = run_gpushop("benchmarks", "cheapest", "-m", "llama3.1:8b", "-o", "json")
    assert result.returncode == 0, result.stderr
    first = json.loads(result.stdout)[0]
    assert (first["gpu_name"], first["provider"], first["price_per_hour"]) == (
        "RTX 3090", "vastai", 0.08,
    )  # fmt: skip
    assert first["tokens_per_second"] == 145 and round(first["usd_per_mtok"], 2) == 0.15


def test_an_imported_csv_is_ranked_and_a_second_import_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "my-runs.csv"
    path.write_text(
        "gpu_name,model,tokens_per_second,price_per_hour\n"
        "NVIDIA GeForce RTX 4090,qwen2:7b,150,0.3\n"
        "RTX 3090,qwen2:7b,120,0.1\n"
    )
    imported = run_gpushop("benchmarks", "import", str(path), "-o", "json")
    assert imported.returncode == 0, imported.stderr
    assert json.loads(imported.stdout) == {"source": "my-runs.csv", "imported": 2, "replaced": 0}
    table = run_gpushop("benchmarks", "cheapest", "-m", "qwen2:7b")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "GPU", "N", "PROVIDER", "TOK/S", "$/H", "$/Mtok",
                                "SOURCE"]  # fmt: skip
    assert lines[1].split() == ["qwen2:7b", "RTX", "3090", "1", "-", "120", "0.100", "0.231",
                                "my-runs.csv"]  # fmt: skip
    again = run_gpushop("benchmarks", "import", str(path))
    assert again.stdout.strip() == (
        "Imported 2 measurements from my-runs.csv (in place of the 2 it gave before)."
    )


def test_a_bad_file_and_an_unknown_model_are_one_sentence(tmp_path: Path) -> None:
    bad = tmp_path / "result.json"
    bad.write_text('{"hardware": {"gpu_name": "RTX 4090"}, "model": {"name": "x"}}')
    result = run_gpushop("benchmarks", "import", str(bad))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "gpushop: error: result.json is not a benchmark result (results: Field required); "
        "expected hardware, model and results.avg_tokens_per_second"
    ]
    unknown = run_gpushop("benchmarks", "best", "-m", "gpt-5")
    assert unknown.returncode == 2 and "Traceback" not in unknown.stderr
    assert len(unknown.stderr.strip().splitlines()) == 1
    assert "models measured: deepseek-r1:14b, deepseek-r1:32b, llama3.1:8b" in unknown.stderr


def test_the_help_documents_every_csv_column() -> None:
    result = run_gpushop("benchmarks", "--help")
    assert result.returncode == 0
    for column in CSV_COLUMNS:
        assert f"\n                 {column} " in result.stdout


def test_inventory_ranks_live_offers_by_cost_per_million_tokens(
    standalone_sim: dict[str, Any],
) -> None:
    env = sim_env(standalone_sim, "vastai", "tensordock", "bluelobster")
    result = run_gpushop("inventory", "model=llama3.1:8b sort=usd_per_mtok", "-o", "json", env=env)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["query"] == "model=llama3.1:8b sort=usd_per_mtok"
    offers = answer["offers"]
    costs = [o["usd_per_mtok"] for o in offers]
    priced = [c for c in costs if c is not None]
    assert priced and costs[: len(priced)] == sorted(priced)  # cheapest first, unpriced last
    assert {o["gpu_name"] for o in offers if o["usd_per_mtok"] is None} >= {"H100 SXM"}
    rtx3090 = 112.5  # the seed's RTX 3090 on llama3.1:8b: 145 (Vast) and 80 (TensorDock)
    for o in offers:
        if o["gpu_name"] == "RTX 3090":  # one GPU or eight: the speed of one, for the price
            assert o["usd_per_mtok"] == round(o["price_per_hour"] / (rtx3090 * 3600) * 1e6, 6)
    assert any(o["gpu_name"] == "RTX 3090" and o["gpu_count"] > 1 for o in offers)
    table = run_gpushop("inventory", "model=llama3.1:8b", "--limit", "3", env=env)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split()[-1] == "$/Mtok"


def test_inventory_points_at_an_unmeasured_model(standalone_sim: dict[str, Any]) -> None:
    env = sim_env(standalone_sim, "vastai")
    result = run_gpushop("inventory", "gpu=4090 model=llama3:8b", env=env)
    assert result.returncode == 2
    assert "did you mean 'llama3.1:8b'?" in result.stderr
    query, caret = result.stderr.splitlines()[-2:]
    assert caret == " " * query.index("llama3:8b") + "^" * len("llama3:8b")
