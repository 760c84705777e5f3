"""The offer query language, shared by the TUI filter bar, `gpushop inventory` and the API.

    gpu=4090 vram>=24 price<=0.5 n>=2 region=US provider=vastai rel>=0.98 cuda>=12.4 sort=price
    model=llama3.1:8b sort=usd_per_mtok spot=false

Terms are `key op value`, separated by spaces, all of which must hold; a value holding spaces is
quoted (`gpu="RTX 4090"`). `gpu=` matches part of a name (`gpu=4090`); `gpu==` names whole GPU
models (`gpu=="L40"` is not an L40S). `rel` is a fraction (0.98) or, above 1, a percent (`rel>=98`);
`region` is a country code, part of a region's name, or a continent (`region=europe`); `spot`
is true (interruptible offers only) or false (on-demand only).
Unknown keys, operators a key does not take and malformed values are errors that point at the bad
token: a clause is never silently dropped (users of the Vast CLI rented the wrong GPU because it
does that).
Filtering and sorting run locally on normalized offers (`select`). `model=` names the LLM whose
measured tokens/s (core/benchmarks.py) price each offer per million tokens; the caller passes
those estimates to `select` for `sort=usd_per_mtok`.
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

from pydantic import ValidationError

from gpushop_tui.config import provider_names
from gpushop_tui.errors import UserError
from gpushop_tui.models import Offer, OfferQuery, OfferSort


class QueryError(UserError):
    """A query that does not parse; the message shows the query with a caret under the fault."""

    def __init__(self, text: str, start: int, end: int, reason: str) -> None:
        caret = " " * start + "^" * max(1, end - start)
        super().__init__(f"bad query: {reason}\n  {text}\n  {caret}")
        self.text, self.start, self.end, self.reason = text, start, end, reason


@dataclass(frozen=True)
class _Key:
    """One query key: which operators it takes and the OfferQuery fields they set."""

    low: str | None = None  # field set by >= and >
    high: str | None = None  # field set by <= and <
    kind: type = float
    text_field: str | None = None  # field set by = for a text key


_KEYS: dict[str, _Key] = {
    "gpu": _Key(text_field="gpu", kind=str),
    "provider": _Key(text_field="providers", kind=str),
    "region": _Key(text_field="region", kind=str),
    "model": _Key(text_field="model", kind=str),
    "n": _Key("min_gpus", "max_gpus", int),
    "vram": _Key("min_vram_gb", "max_vram_gb"),
    "price": _Key("min_price", "max_price"),
    "gpuprice": _Key(None, "max_gpu_price"),
    "rel": _Key("min_reliability"),
    "cuda": _Key("min_cuda"),
    "spot": _Key(text_field="spot", kind=bool),
    "sort": _Key(text_field="sort", kind=str),
    "limit": _Key(text_field="limit", kind=int),
}
_ALIASES = {
    "gpus": "n", "num_gpus": "n", "count": "n", "reliability": "rel", "country": "region",
    "providers": "provider", "price_per_gpu": "gpuprice", "dph": "price",
    "interruptible": "spot",
}  # fmt: skip
_SORTS: dict[str, OfferSort] = {
    "price": "price", "gpuprice": "gpu_price", "price_per_gpu": "gpu_price",
    "vramprice": "vram_price", "price_per_vram": "vram_price",
    "vram": "vram", "rel": "reliability", "reliability": "reliability",
    "usd_per_mtok": "usd_per_mtok",
}  # fmt: skip
_SORT_NAMES: dict[OfferSort, str] = {
    "price": "price", "gpu_price": "gpuprice", "vram_price": "vramprice",
    "vram": "vram", "reliability": "rel", "usd_per_mtok": "usd_per_mtok",
}  # fmt: skip
_BOUND_SPELLING = {
    f"{field} ": f"{key}{'>=' if field == spec.low else '<='}"
    for key, spec in _KEYS.items()
    for field in (spec.low, spec.high)
    if field is not None
}
"""How a bound's field name reads in the query language, for validation messages."""
_NATURALLY_DESCENDING: frozenset[OfferSort] = frozenset({"vram", "reliability"})
_TERM = re.compile(r"([A-Za-z_]+)\s*(>=|<=|!=|==|=|>|<|:)?\s*(.*)", re.DOTALL)
_TOKEN = re.compile(r"""(?:"[^"]*(?:"|$)|'[^']*(?:'|$)|[^\s"'])+""")
"""One term: a run of non-spaces, spaces inside quotes included (an open quote runs to the end)."""
_YES_NO = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}
"""How `spot=` is answered: interruptible offers only, or on-demand ones only."""
_QUOTED = re.compile(r""""([^"]*)"|'([^']*)'""")


def squash(text: str) -> str:
    """Lowercase letters and digits only: how GPU names and regions are compared."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def unknown_model(model: str, models: Collection[str]) -> str:
    """Why `model` cannot be priced: it has no measurements; names the models that have."""
    close = difflib.get_close_matches(model, list(models), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    known = ", ".join(sorted(models)) or "none"
    return f"no benchmark measurements for model {model!r}{hint}; models measured: {known}"


def parse_query(text: str, models: Collection[str] | None = None) -> OfferQuery:
    """Parse the query language into an `OfferQuery`; raises `QueryError` pointing at the fault.

    With `models` (those with benchmark measurements), `model=` must name one of them.
    """
    fields: dict[str, Any] = {}
    strict: list[str] = []
    seen: dict[str, int] = {}
    values: dict[str, tuple[int, int]] = {}
    for token in _TOKEN.finditer(text):
        start, end = token.span()
        match = _TERM.fullmatch(token.group())
        if match is None or not match.group(3) or not match.group(2):
            raise QueryError(
                text, start, end, f"{token.group()!r} is not key, operator, value (gpu=4090)"
            )
        raw_key, op, value = match.groups()
        value = _unquote(text, value, (start + match.start(3), end))
        key = _ALIASES.get(raw_key.lower(), raw_key.lower())
        spec = _KEYS.get(key)
        if spec is None:
            close = difflib.get_close_matches(key, [*_KEYS, *_ALIASES], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            known = ", ".join(_KEYS)
            raise QueryError(
                text, start, start + len(raw_key), f"unknown key {raw_key!r}{hint}; keys: {known}"
            )
        value_start = start + match.start(3)
        _apply(text, spec, key, op, value, (value_start, end), (start, end), fields, strict)
        values[key] = (value_start, end)
        slot = f"{key}{'>' if op in ('>', '>=') else '<' if op in ('<', '<=') else '='}"
        if slot in seen:
            raise QueryError(text, start, end, f"{key} is given twice")
        seen[slot] = start
    if strict:
        fields["strict"] = tuple(sorted(strict))
    _finish_sort(fields)
    model = fields.get("model")
    if model is not None and models is not None and model not in models:
        raise QueryError(text, *values["model"], unknown_model(model, models))
    if fields.get("sort") == "usd_per_mtok" and model is None:
        raise QueryError(
            text, *values["sort"], "sort=usd_per_mtok needs model=NAME (e.g. model=llama3.1:8b)"
        )
    try:
        return OfferQuery(**fields)
    except ValidationError as err:
        reason = "; ".join(e["msg"].removeprefix("Value error, ") for e in err.errors())
        for name, spelled in _BOUND_SPELLING.items():
            reason = reason.replace(name, spelled)
        raise QueryError(text, 0, len(text), reason) from None


def _apply(
    text: str,
    spec: _Key,
    key: str,
    op: str,
    value: str,
    value_span: tuple[int, int],
    term_span: tuple[int, int],
    fields: dict[str, Any],
    strict: list[str],
) -> None:
    if op in ("=", "==", ":") and spec.text_field is not None:
        fields[spec.text_field] = _text_value(text, key, value, value_span)
        if key == "gpu":
            fields["gpu_exact"] = op == "=="
        return
    if op in ("=", "==", ":") and spec.low and spec.high:
        number = _number(text, spec.kind, value, value_span)
        fields[spec.low] = fields[spec.high] = number
        return
    field = spec.low if op in (">=", ">") else spec.high if op in ("<=", "<") else None
    if field is None:
        takes = _operators(spec)
        raise QueryError(
            text, *term_span, f"{key} does not take {op!r}; use {key}{takes} followed by a value"
        )
    number = _number(text, spec.kind, value, value_span)
    if key == "rel":
        number = _fraction(text, number, value_span)
    if op in (">", "<"):
        if spec.kind is int:
            number += 1 if op == ">" else -1
        else:
            strict.append(field)
    fields[field] = number


def _operators(spec: _Key) -> str:
    if spec.text_field is not None:
        return "="
    ops = [*([">=", ">"] if spec.low else []), *(["<=", "<"] if spec.high else [])]
    return " or ".join(ops + (["="] if spec.low and spec.high else []))


def _number(text: str, kind: type, value: str, span: tuple[int, int]) -> float | int:
    try:
        number = kind(value)
    except ValueError:
        what = "a whole number" if kind is int else "a number"
        raise QueryError(text, *span, f"{value!r} is not {what}") from None
    if number < 0:
        raise QueryError(text, *span, f"{value!r} must not be negative")
    return number  # type: ignore[no-any-return]


def _unquote(text: str, value: str, span: tuple[int, int]) -> str:
    """`value` without its quotes; an unclosed quote is an error pointing at the value."""
    unquoted = _QUOTED.sub(lambda m: m.group(1) if m.group(1) is not None else m.group(2), value)
    if '"' in unquoted or "'" in unquoted:
        raise QueryError(text, *span, 'a quote is not closed; quote a value as gpu="RTX 4090"')
    return unquoted


def _fraction(text: str, number: float, span: tuple[int, int]) -> float:
    """Reliability as a fraction: up to 1 it is one already, above 1 it is a percent (99 → 0.99)."""
    if number <= 1:
        return number
    if number > 100:
        raise QueryError(text, *span, "rel is a fraction (0.99) or a percent up to 100 (rel>=99)")
    return number / 100


def _text_value(text: str, key: str, value: str, span: tuple[int, int]) -> Any:
    if key == "provider":
        names = [v for v in value.lower().split(",") if v]
        known = provider_names()
        for name in names:
            if name not in known:
                raise QueryError(
                    text, *span, f"unknown provider {name!r}; providers: {', '.join(known)}"
                )
        return tuple(dict.fromkeys(names))
    if key == "sort":
        descending = value.startswith("-")
        name = value.removeprefix("-").lower()
        if name not in _SORTS:
            raise QueryError(
                text, *span, f"cannot sort by {name!r}; sorts: {', '.join(_SORT_NAMES.values())}"
            )
        return name if not descending else "-" + name
    if key == "limit":
        number = _number(text, int, value, span)
        if number < 1:
            raise QueryError(text, *span, "limit must be at least 1")
        return number
    if key == "model":
        return value.lower()
    if key == "spot":
        answer = _YES_NO.get(value.lower())
        if answer is None:
            raise QueryError(text, *span, f"spot is true or false, not {value!r}")
        return answer
    return value


def _finish_sort(fields: dict[str, Any]) -> None:
    """Turn `sort=-vram` into (sort, descending): a '-' flips the key's natural direction."""
    raw = fields.pop("sort", None)
    if raw is None:
        return
    flipped = raw.startswith("-")
    sort = _SORTS[raw.removeprefix("-")]
    fields["sort"] = sort
    fields["descending"] = (sort in _NATURALLY_DESCENDING) != flipped


def format_query(query: OfferQuery) -> str:
    """The canonical text of a query; `parse_query(format_query(q)) == q`."""
    terms: list[str] = []
    if query.gpu:
        terms.append(f"gpu{'==' if query.gpu_exact else '='}{_quoted(query.gpu)}")
    for key, spec in _KEYS.items():
        if spec.text_field is not None:
            continue
        low = getattr(query, spec.low) if spec.low else None
        high = getattr(query, spec.high) if spec.high else None
        if low is not None and low == high and not ({spec.low, spec.high} & set(query.strict)):
            terms.append(f"{key}={_num(low)}")
            continue
        if low is not None:
            terms.append(f"{key}{'>' if spec.low in query.strict else '>='}{_num(low)}")
        if high is not None:
            terms.append(f"{key}{'<' if spec.high in query.strict else '<='}{_num(high)}")
    if query.region:
        terms.append(f"region={_quoted(query.region)}")
    if query.providers:
        terms.append(f"provider={','.join(query.providers)}")
    if query.model:
        terms.append(f"model={query.model}")
    if query.spot is not None:
        terms.append(f"spot={'true' if query.spot else 'false'}")
    if query.sort != "price" or query.descending:
        flipped = (query.sort in _NATURALLY_DESCENDING) != query.descending
        terms.append(f"sort={'-' if flipped else ''}{_SORT_NAMES[query.sort]}")
    if query.limit is not None:
        terms.append(f"limit={query.limit}")
    return " ".join(terms)


def _num(value: float) -> str:
    return f"{value:g}"


def _quoted(value: str) -> str:
    """A text value as a query spells it: in quotes where it holds spaces."""
    return f'"{value}"' if any(c.isspace() for c in value) else value


# --------------------------------------------------------------------------- local selection


class OfferIndex:
    """Offers laid out for fast queries: one small tuple per offer, built once per refresh.

    Reading a field of 20,000 pydantic offers scattered over the heap costs a cache miss each;
    the tuples here sit together, so every query (a keystroke in the filter bar) stays fast.
    """

    __slots__ = ("rows",)

    def __init__(self, offers: Iterable[Offer] = ()) -> None:
        self.rows: list[tuple[Any, ...]] = [
            (
                o.price_per_hour, o.gpu_count, o.vram_gb, o.price_per_hour / o.gpu_count,
                o.reliability, o.cuda, o.provider, o.gpu_name, o.region, o.vcpus, o.ram_gb,
                o.disk_gb, o.inet_down_mbps, o.country, o.id, o,
            )
            for o in offers
        ]  # fmt: skip

    @classmethod
    def merge(cls, indexes: Iterable[OfferIndex]) -> OfferIndex:
        merged = cls()
        merged.rows = [row for index in indexes for row in index.rows]
        return merged

    def without(self, offer_ids: Collection[str]) -> OfferIndex:
        """The same index less the offers with these ids."""
        kept = OfferIndex()
        kept.rows = [row for row in self.rows if row[_ID] not in offer_ids]
        return kept

    def find(self, offer_id: str) -> Offer | None:
        """The offer with this id, if the index holds it."""
        for row in self.rows:
            if row[_ID] == offer_id:
                return row[_OFFER]  # type: ignore[no-any-return]
        return None

    def __len__(self) -> int:
        return len(self.rows)

    def __iter__(self) -> Iterator[Offer]:
        return (row[_OFFER] for row in self.rows)


_PRICE, _COUNT, _VRAM, _GPU_PRICE, _REL, _CUDA, _PROVIDER, _GPU, _REGION = range(9)
_IDENTITY_END, _COUNTRY, _ID, _OFFER = 13, 13, 14, 15
"""Row fields; row[:_IDENTITY_END] is what a user sees of an offer (its identity)."""

_BOUNDS: tuple[tuple[str, int, Callable[[Any, Any], bool]], ...] = (
    ("min_gpus", _COUNT, operator.ge),
    ("max_gpus", _COUNT, operator.le),
    ("min_vram_gb", _VRAM, operator.ge),
    ("max_vram_gb", _VRAM, operator.le),
    ("min_price", _PRICE, operator.ge),
    ("max_price", _PRICE, operator.le),
    ("max_gpu_price", _GPU_PRICE, operator.le),
    ("min_reliability", _REL, operator.ge),
    ("min_cuda", _CUDA, operator.ge),
)
_STRICT = {operator.ge: operator.gt, operator.le: operator.lt}


def _filter(rows: list[tuple[Any, ...]], query: OfferQuery) -> list[tuple[Any, ...]]:
    """The rows passing every bound; one pass per bound, each narrowing the pool."""
    pool = rows
    for field, column, compare in _BOUNDS:
        limit = getattr(query, field)
        if limit is not None:
            op = _STRICT[compare] if field in query.strict else compare
            pool = [r for r in pool if (v := r[column]) is not None and op(v, limit)]
    if query.providers:
        wanted = set(query.providers)
        pool = [r for r in pool if r[_PROVIDER] in wanted]
    if query.spot is not None:
        pool = [r for r in pool if r[_OFFER].interruptible == query.spot]
    if query.gpu:
        matches = gpu_matcher(query.gpu, exact=query.gpu_exact)
        names = {name: matches(name) for name in {r[_GPU] for r in pool}}
        pool = [r for r in pool if names[r[_GPU]]]
    if query.region:
        regions = [r.strip().lower() for r in query.region.split(",") if r.strip()]
        pool = [r for r in pool if any(_in_region(r, wanted) for wanted in regions)]
    return pool


def gpu_matcher(text: str, *, exact: bool = False) -> Callable[[str], bool]:
    """Whether a canonical GPU name is one `text` asks for: it contains any comma-separated
    part of `text`, compared as `squash`ed ("4090", "h100 sxm", "h100,a100"); with `exact`, it
    is one of the parts ("L40" is not "L40S")."""
    parts = [squash(p) for p in text.split(",") if squash(p)]
    if exact:
        return lambda name: squash(name) in parts
    return lambda name: any(p in squash(name) for p in parts)


_EUROPE = (
    "AD AL AT BA BE BG BY CH CY CZ DE DK EE ES FI FR GB GR HR HU IE IS IT LI LT LU LV MC MD ME "
    "MK MT NL NO PL PT RO RS RU SE SI SK SM UA VA"
)
_ASIA = (
    "AE AF AM AZ BD BH BN BT CN GE HK ID IL IN IQ IR JO JP KG KH KR KW KZ LA LB LK MM MN MO MV "
    "MY NP OM PH PK PS QA SA SG SY TH TJ TL TM TR TW UZ VN YE"
)
_AFRICA = (
    "AO BF BI BJ BW CD CF CG CI CM CV DJ DZ EG ER ET GA GH GM GN GQ GW KE KM LR LS LY MA MG ML "
    "MR MU MW MZ NA NE NG RW SC SD SL SN SO SS ST SZ TD TG TN TZ UG ZA ZM ZW"
)
_NORTH_AMERICA = "AG BS BB BZ CA CR CU DM DO GD GT HN HT JM KN LC MX NI PA PR SV TT US VC"
_SOUTH_AMERICA = "AR BO BR CL CO EC GY PE PY SR UY VE"
_OCEANIA = "AU FJ FM KI MH NR NZ PG PW SB TO TV VU WS"
CONTINENTS: dict[str, frozenset[str]] = {
    name: frozenset(codes.split())
    for name, codes in {
        "europe": _EUROPE,
        "asia": _ASIA,
        "africa": _AFRICA,
        "northamerica": _NORTH_AMERICA,
        "southamerica": _SOUTH_AMERICA,
        "americas": f"{_NORTH_AMERICA} {_SOUTH_AMERICA}",
        "oceania": _OCEANIA,
    }.items()
}
"""`region=` words for continents (compared `squash`ed: 'north_america', 'North America')
and the ISO country codes offers carry there."""


def _in_region(row: tuple[Any, ...], wanted: str) -> bool:
    country, region = row[_COUNTRY], row[_REGION]
    continent = CONTINENTS.get(squash(wanted))
    if continent is not None:
        return country is not None and country.upper() in continent
    if country and country.lower() == wanted:
        return True
    return len(wanted) > 2 and region is not None and wanted in region.lower()


_SORT_VALUE: dict[OfferSort, Callable[[tuple[Any, ...]], float | None]] = {
    "price": itemgetter(_PRICE),
    "gpu_price": itemgetter(_GPU_PRICE),
    "vram_price": lambda r: r[_PRICE] / (r[_COUNT] * r[_VRAM]) if r[_VRAM] else None,
    "vram": lambda r: r[_VRAM] * r[_COUNT],
    "reliability": itemgetter(_REL),
}
_FIRST = itemgetter(0)


def _by_offer_id(values: Mapping[str, float]) -> Callable[[tuple[Any, ...]], float | None]:
    return lambda row: values.get(row[_ID])


def select(
    offers: Iterable[Offer] | OfferIndex,
    query: OfferQuery,
    demoted: Collection[str] = (),
    usd_per_mtok: Mapping[str, float] | None = None,
) -> list[Offer]:
    """The offers matching `query`, sorted (ties by price; unknown values last; offers in
    `demoted` after all others), de-duplicated, cut to `query.limit`.

    `usd_per_mtok` (offer id → estimated $ per million tokens of `query.model`) is what
    `sort=usd_per_mtok` ranks by; an offer without an estimate sorts last.
    """
    index = offers if isinstance(offers, OfferIndex) else OfferIndex(offers)
    pool = _filter(index.rows, query)
    value = (
        _by_offer_id(usd_per_mtok or {})
        if query.sort == "usd_per_mtok"
        else _SORT_VALUE[query.sort]
    )
    sign = -1.0 if query.descending else 1.0
    pool = sorted(pool, key=_FIRST)  # by price; the stable sort below keeps it for ties
    if query.sort != "price" or query.descending:
        keyed = [(math.inf if (v := value(r)) is None else sign * v, r) for r in pool]
        keyed.sort(key=_FIRST)
        pool = [r for _, r in keyed]
    if demoted:
        pool = [r for r in pool if r[_ID] not in demoted] + [r for r in pool if r[_ID] in demoted]
    return _distinct(pool, query.limit)


def _distinct(ranked: list[tuple[Any, ...]], limit: int | None) -> list[Offer]:
    """The offers of `ranked`, leaving out any identical to one ranked above it. Identical
    offers share a price, so whole rows are compared only where a price repeats."""
    chosen: list[Offer] = []
    first: dict[float, tuple[Any, ...]] = {}
    seen: dict[float, set[tuple[Any, ...]]] = {}
    for row in ranked:
        price = row[_PRICE]
        prior = first.setdefault(price, row)
        if prior is not row:
            identities = seen.get(price)
            if identities is None:
                identities = seen[price] = {prior[:_IDENTITY_END]}
            identity = row[:_IDENTITY_END]
            if identity in identities:
                continue
            identities.add(identity)
        chosen.append(row[_OFFER])
        if limit is not None and len(chosen) == limit:
            break
    return chosen
