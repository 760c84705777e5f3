"""The query language: parse, format back, point at faults; local filtering and sorting."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from gpushop_tui.models import Offer, OfferQuery
from gpushop_tui.query import QueryError, format_query, parse_query, select

NOW = datetime(2026, 11, 1, tzinfo=UTC)


def offer(oid: str, **fields: Any) -> Offer:
    provider = fields.pop("provider", "vastai")
    base: dict[str, Any] = {
        "gpu_name": "RTX 4090", "gpu_count": 1, "vram_gb": 24, "price_per_hour": 0.5,
        "country": "US", "region": "Texas, US", "reliability": 0.99, "cuda": 12.4,
    }  # fmt: skip
    return Offer(id=f"{provider}:{oid}", provider=provider, fetched_at=NOW, **(base | fields))


def test_the_design_example_parses_to_every_bound() -> None:
    query = parse_query(
        "gpu=4090 vram>=24 price<=0.5 n>=2 region=US provider=vastai rel>=0.98 "
        "cuda>=12.4 sort=price"
    )
    assert query == OfferQuery(
        gpu="4090", min_vram_gb=24, max_price=0.5, min_gpus=2, region="US",
        providers=("vastai",), min_reliability=0.98, min_cuda=12.4, sort="price",
    )  # fmt: skip


@pytest.mark.parametrize(
    "text",
    [
        "",
        "gpu=4090 vram>=24 price<=0.5 n>=2 region=US provider=vastai rel>=0.98 cuda>=12.4",
        "price<1 vram>16 sort=vram",
        "n=8 gpu=h100,a100 sort=-price limit=5",
        "gpuprice<=0.4 provider=tensordock,bluelobster sort=rel",
        "vram>=20 vram<=48 price>=0.1 sort=vramprice",
        "model=llama3.1:8b sort=usd_per_mtok",
        "gpu=4090 model=mistral:7b sort=-usd_per_mtok limit=3",
        'gpu=="L40,RTX 3060" n=1',
        "provider=runpod,lambda spot=false",
        "gpu=4090 spot=true sort=gpuprice",
    ],
)
def test_format_is_the_inverse_of_parse(text: str) -> None:
    query = parse_query(text)
    assert parse_query(format_query(query)) == query


def test_strict_and_inclusive_bounds_differ() -> None:
    offers = [offer("a", price_per_hour=0.5), offer("b", price_per_hour=0.4)]
    assert [o.id for o in select(offers, parse_query("price<=0.5"))] == ["vastai:b", "vastai:a"]
    assert [o.id for o in select(offers, parse_query("price<0.5"))] == ["vastai:b"]
    assert parse_query("n>2").min_gpus == 3


@pytest.mark.parametrize(
    ("text", "reason", "caret"),
    [
        ("prce<=1", "unknown key 'prce' (did you mean 'price'?)", "^^^^"),
        ("gpu=4090 vram>=lots", "'lots' is not a number", "               ^^^^"),
        ("gpu>3", "gpu does not take '>'", "^^^^^"),
        ("gpu=4090 4090", "'4090' is not key, operator, value", "         ^^^^"),
        ("provider=aws", "unknown provider 'aws'", "         ^^^"),
        ("sort=cheapest", "cannot sort by 'cheapest'", "     ^^^^^^^^"),
        ("n>=2.5", "'2.5' is not a whole number", "   ^^^"),
        ("price<=-1", "'-1' must not be negative", "       ^^"),
        ("price<=1 price<=2", "price is given twice", "         ^^^^^^^^"),
        ("price>=2 price<=1", "price>=2 is above price<=1", "^"),
        ("rel>=101", "rel is a fraction", "     ^^^"),
        ("n>=2 sort=usd_per_mtok", "sort=usd_per_mtok needs model=NAME", "          ^^^^^^^^^^^^"),
        ("model>7b", "model does not take '>'", "^^^^^^^^"),
    ],
)
def test_errors_name_and_point_at_the_bad_token(text: str, reason: str, caret: str) -> None:
    with pytest.raises(QueryError) as caught:
        parse_query(text)
    message = caught.value.message
    assert reason in message
    lines = message.splitlines()
    assert lines[1] == f"  {text}"
    assert lines[2].startswith(f"  {caret}")


def test_filters_match_what_each_key_says() -> None:
    offers = [
        offer("4090", gpu_name="RTX 4090", price_per_hour=0.35),
        offer("h100", gpu_name="H100 SXM", vram_gb=80, gpu_count=8, price_per_hour=16.0,
              country="DE", region="Bavaria, DE"),
        offer("a6000", provider="bluelobster", gpu_name="RTX A6000", vram_gb=48,
              price_per_hour=0.55, reliability=None, cuda=None),
        offer("3090", provider="tensordock", gpu_name="RTX 3090", price_per_hour=0.2,
              reliability=0.66, country="CA", region="Montreal, Quebec"),
    ]  # fmt: skip

    def ids(text: str) -> list[str]:
        return sorted(o.id.split(":")[1] for o in select(offers, parse_query(text)))

    assert ids("gpu=4090") == ["4090"]
    assert ids("gpu=rtx") == ["3090", "4090", "a6000"]
    assert ids("gpu=h100sxm") == ["h100"]
    assert ids("gpu=h100,a6000") == ["a6000", "h100"]
    assert ids("vram>=48") == ["a6000", "h100"]
    assert ids("n>=2") == ["h100"]
    assert ids("region=DE") == ["h100"]
    assert ids("region=us,ca") == ["3090", "4090", "a6000"]
    assert ids("region=montreal") == ["3090"]
    assert ids("provider=tensordock,bluelobster") == ["3090", "a6000"]
    assert ids("rel>=0.9") == ["4090", "h100"]  # unknown reliability does not pass a bound
    assert ids("cuda>=12") == ["3090", "4090", "h100"]
    assert ids("gpuprice<2") == ["3090", "4090", "a6000"]
    assert ids("gpuprice<=2") == ["3090", "4090", "a6000", "h100"]


def test_a_double_equals_names_whole_gpu_models() -> None:
    offers = [
        offer("l40", gpu_name="L40"),
        offer("l40s", gpu_name="L40S"),
        offer("3060", gpu_name="RTX 3060"),
        offer("3060ti", gpu_name="RTX 3060 Ti"),
    ]

    def ids(text: str) -> list[str]:
        return sorted(o.id.split(":")[1] for o in select(offers, parse_query(text)))

    assert ids("gpu=l40") == ["l40", "l40s"]
    assert ids('gpu=="L40"') == ["l40"]
    assert ids('gpu=="rtx 3060",l40') == ["3060", "l40"]
    assert format_query(parse_query('gpu=="L40"')) == "gpu==L40"
    assert not parse_query("gpu=l40").gpu_exact


def test_sorts_put_the_best_first_and_unknowns_last() -> None:
    offers = [
        offer("cheap", price_per_hour=0.2, vram_gb=16, reliability=None),
        offer("big", price_per_hour=2.0, gpu_count=4, vram_gb=48, reliability=0.9),
        offer("mid", price_per_hour=0.6, vram_gb=24, reliability=0.999),
    ]

    def order(text: str) -> list[str]:
        return [o.id.split(":")[1] for o in select(offers, parse_query(text))]

    assert order("") == ["cheap", "mid", "big"]
    assert order("sort=-price") == ["big", "mid", "cheap"]
    assert order("sort=gpuprice") == ["cheap", "big", "mid"]
    assert order("sort=vramprice") == ["big", "cheap", "mid"]  # $/GB-h: 0.010, 0.013, 0.025
    assert order("sort=vram") == ["big", "mid", "cheap"]
    assert order("sort=rel") == ["mid", "big", "cheap"]
    assert order("sort=price limit=2") == ["cheap", "mid"]


def test_identical_offers_are_shown_once_and_demoted_ones_last() -> None:
    twins = [offer("a"), offer("b"), offer("c", price_per_hour=0.9)]
    assert [o.id for o in select(twins, OfferQuery())] == ["vastai:a", "vastai:c"]
    chosen = select(twins, OfferQuery(), demoted={"vastai:a"})
    assert [o.id for o in chosen] == ["vastai:b", "vastai:c"]  # the twin that did not fail
    alone = select([offer("a"), offer("c", price_per_hour=0.9)], OfferQuery(), demoted={"vastai:a"})
    assert [o.id for o in alone] == ["vastai:c", "vastai:a"]


MEASURED = {"llama3.1:8b", "mistral:7b"}


def test_a_model_is_a_text_key_checked_against_the_measured_models() -> None:
    query = parse_query("model=Llama3.1:8B sort=usd_per_mtok", MEASURED)
    assert (query.model, query.sort, query.descending) == ("llama3.1:8b", "usd_per_mtok", False)
    assert parse_query("model=anything").model == "anything"  # not checked without the models
    with pytest.raises(QueryError) as caught:
        parse_query("gpu=4090 model=llama3:8b", MEASURED)
    lines = caught.value.message.splitlines()
    assert "no benchmark measurements for model 'llama3:8b'" in lines[0]
    assert "did you mean 'llama3.1:8b'?" in lines[0]
    assert "models measured: llama3.1:8b, mistral:7b" in lines[0]
    assert lines[2] == "                 ^^^^^^^^^"


def test_sorting_by_cost_per_token_needs_a_model_outside_the_parser_too() -> None:
    with pytest.raises(ValidationError, match="sort=usd_per_mtok needs model=NAME"):
        OfferQuery(sort="usd_per_mtok")


def test_sort_by_cost_per_token_puts_offers_without_an_estimate_last() -> None:
    offers = [offer("dear", price_per_hour=0.9), offer("none", price_per_hour=0.1),
              offer("cheap", price_per_hour=0.5), offer("mid", price_per_hour=0.3)]  # fmt: skip
    estimates = {"vastai:dear": 0.4, "vastai:cheap": 0.2, "vastai:mid": 0.3}

    def order(text: str) -> list[str]:
        chosen = select(offers, parse_query(text), usd_per_mtok=estimates)
        return [o.id.split(":")[1] for o in chosen]

    assert order("model=m sort=usd_per_mtok") == ["cheap", "mid", "dear", "none"]
    assert order("model=m sort=-usd_per_mtok") == ["dear", "mid", "cheap", "none"]
    assert order("model=m sort=usd_per_mtok limit=2") == ["cheap", "mid"]
    assert order("model=m") == ["none", "mid", "cheap", "dear"]  # a model alone keeps the price


def under(text: str, fault: str) -> str:
    """The end of a query error's message: the query, a caret under `fault` in it."""
    return f"\n  {text}\n  {' ' * text.index(fault)}{'^' * len(fault)}"


def test_reliability_above_one_is_read_as_percent() -> None:
    assert parse_query("rel>=99").min_reliability == pytest.approx(0.99)
    assert parse_query("rel>=99.5").min_reliability == pytest.approx(0.995)
    assert parse_query("rel>=0.9").min_reliability == 0.9
    assert parse_query("rel>=1").min_reliability == 1
    with pytest.raises(QueryError) as err:
        parse_query("gpu=4090 rel>=150")
    assert "rel" in err.value.reason and "percent" in err.value.reason
    assert err.value.message.endswith(under("gpu=4090 rel>=150", "150"))


def test_a_quoted_value_may_hold_spaces_and_carets_stay_under_the_fault() -> None:
    assert parse_query('gpu="RTX 4090" price<=0.5').gpu == "RTX 4090"
    assert parse_query("gpu='RTX 4090'").gpu == "RTX 4090"
    offers = [offer("a"), offer("b", gpu_name="RTX 3090")]
    assert [o.id for o in select(offers, parse_query('gpu="RTX 4090"'))] == ["vastai:a"]
    query = parse_query('gpu="RTX 4090" n>=2')
    assert parse_query(format_query(query)) == query
    with pytest.raises(QueryError) as err:
        parse_query('gpu="RTX 4090" vram>=big')
    assert err.value.message.endswith(under('gpu="RTX 4090" vram>=big', "big"))
    with pytest.raises(QueryError) as err:
        parse_query('gpu="RTX 4090 n>=2')
    assert "quote" in err.value.reason


def test_a_continent_selects_its_countries() -> None:
    offers = [
        offer("us"),
        offer("de", country="DE", region="Hesse, DE"),
        offer("no", country="NO", region=None),
        offer("jp", country="JP", region="Tokyo, JP"),
    ]
    europe = [o.id for o in select(offers, parse_query("region=europe"))]
    assert sorted(europe) == ["vastai:de", "vastai:no"]
    assert [o.id for o in select(offers, parse_query("region=Asia"))] == ["vastai:jp"]
    north = select(offers, parse_query("region=north_america"))
    assert [o.id for o in north] == ["vastai:us"]
    assert len(select(offers, parse_query("region=europe,asia"))) == 3


def test_spot_selects_interruptible_or_on_demand_offers_and_refuses_other_words() -> None:
    offers = [
        offer("a", provider="runpod", price_per_hour=0.69),
        offer("b", provider="runpod", price_per_hour=0.35, interruptible=True),
        offer("c", provider="lambda", price_per_hour=0.75),
    ]
    on_demand = select(offers, parse_query("spot=false"))
    assert [o.id for o in on_demand] == ["runpod:a", "lambda:c"]
    assert [o.id for o in select(offers, parse_query("spot=true"))] == ["runpod:b"]
    assert [o.id for o in select(offers, parse_query("interruptible=no provider=runpod"))] == [
        "runpod:a"
    ]
    assert [o.id for o in select(offers, parse_query("provider=lambda"))] == ["lambda:c"]
    assert len(select(offers, parse_query(""))) == 3
    with pytest.raises(QueryError) as caught:
        parse_query("spot=perhaps")
    assert caught.value.reason == "spot is true or false, not 'perhaps'"
    with pytest.raises(QueryError, match="spot does not take '>='"):
        parse_query("spot>=1")
