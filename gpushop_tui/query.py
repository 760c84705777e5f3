"""The offer query language, shared by the TUI filter bar, `gpushop inventory` and the API.

    gpu=4090 vram>=24 price<=0.5 n>=2 region=US provider=vastai rel>=0.98 cuda>=12.4 sort=price

Terms are `key op value`, separated by spaces, all of which must hold. Unknown keys, operators a
key does not take and malformed values are errors that point at the bad token: a clause is never
silently dropped (users of the Vast CLI rented the wrong GPU because it does that).
Filtering and sorting run locally on normalized offers (`select`).
"""

from __future__ import annotations

import difflib
import math
import operator
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass
from operator import attrgetter, itemgetter
from typing import Any

from pydantic import ValidationError

from gpushop_tui.errors import UserError
from gpushop_tui.models import PROVIDERS, Offer, OfferQuery, OfferSort


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
    "n": _Key("min_gpus", "max_gpus", int),
    "vram": _Key("min_vram_gb", "max_vram_gb"),
    "price": _Key("min_price", "max_price"),
    "gpuprice": _Key(None, "max_gpu_price"),
    "rel": _Key("min_reliability"),
    "cuda": _Key("min_cuda"),
    "sort": _Key(text_field="sort", kind=str),
    "limit": _Key(text_field="limit", kind=int),
}
_ALIASES = {
    "gpus": "n", "num_gpus": "n", "count": "n", "reliability": "rel", "country": "region",
    "providers": "provider", "price_per_gpu": "gpuprice", "dph": "price",
}  # fmt: skip
_SORTS: dict[str, OfferSort] = {
    "price": "price", "gpuprice": "gpu_price", "price_per_gpu": "gpu_price",
    "vramprice": "vram_price", "price_per_vram": "vram_price",
    "vram": "vram", "rel": "reliability", "reliability": "reliability",
}  # fmt: skip
_SORT_NAMES: dict[OfferSort, str] = {
    "price": "price", "gpu_price": "gpuprice", "vram_price": "vramprice",
    "vram": "vram", "reliability": "rel",
}  # fmt: skip
_BOUND_SPELLING = {
    f"{field} ": f"{key}{'>=' if field == spec.low else '<='}"
    for key, spec in _KEYS.items()
    for field in (spec.low, spec.high)
    if field is not None
}
"""How a bound's field name reads in the query language, for validation messages."""
_NATURALLY_DESCENDING: frozenset[OfferSort] = frozenset({"vram", "reliability"})
_TERM = re.compile(r"([A-Za-z_]+)\s*(>=|<=|!=|==|=|>|<|:)?\s*(\S*)")


def squash(text: str) -> str:
    """Lowercase letters and digits only: how GPU names and regions are compared."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def parse_query(text: str) -> OfferQuery:
    """Parse the query language into an `OfferQuery`; raises `QueryError` pointing at the fault."""
    fields: dict[str, Any] = {}
    strict: list[str] = []
    seen: dict[str, int] = {}
    for token in re.finditer(r"\S+", text):
        start, end = token.span()
        match = _TERM.fullmatch(token.group())
        if match is None or not match.group(3) or not match.group(2):
            raise QueryError(
                text, start, end, f"{token.group()!r} is not key, operator, value (gpu=4090)"
            )
        raw_key, op, value = match.groups()
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
        slot = f"{key}{'>' if op in ('>', '>=') else '<' if op in ('<', '<=') else '='}"
        if slot in seen:
            raise QueryError(text, start, end, f"{key} is given twice")
        seen[slot] = start
    if strict:
        fields["strict"] = tuple(sorted(strict))
    _finish_sort(fields)
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


def _text_value(text: str, key: str, value: str, span: tuple[int, int]) -> Any:
    if key == "provider":
        names = [v for v in value.lower().split(",") if v]
        for name in names:
            if name not in PROVIDERS:
                raise QueryError(
                    text, *span, f"unknown provider {name!r}; providers: {', '.join(PROVIDERS)}"
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
        terms.append(f"gpu={query.gpu}")
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
        terms.append(f"region={query.region}")
    if query.providers:
        terms.append(f"provider={','.join(query.providers)}")
    if query.sort != "price" or query.descending:
        flipped = (query.sort in _NATURALLY_DESCENDING) != query.descending
        terms.append(f"sort={'-' if flipped else ''}{_SORT_NAMES[query.sort]}")
    if query.limit is not None:
        terms.append(f"limit={query.limit}")
    return " ".join(terms)


def _num(value: float) -> str:
    return f"{value:g}"


# --------------------------------------------------------------------------- local selection


_BOUND_GETTERS: tuple[tuple[str, Callable[[Offer], Any], Callable[[Any, Any], bool]], ...] = (
    ("min_gpus", attrgetter("gpu_count"), operator.ge),
    ("max_gpus", attrgetter("gpu_count"), operator.le),
    ("min_vram_gb", attrgetter("vram_gb"), operator.ge),
    ("max_vram_gb", attrgetter("vram_gb"), operator.le),
    ("min_price", attrgetter("price_per_hour"), operator.ge),
    ("max_price", attrgetter("price_per_hour"), operator.le),
    ("max_gpu_price", attrgetter("price_per_gpu_hour"), operator.le),
    ("min_reliability", attrgetter("reliability"), operator.ge),
    ("min_cuda", attrgetter("cuda"), operator.ge),
)
_STRICT = {operator.ge: operator.gt, operator.le: operator.lt}


def _filter(offers: Iterable[Offer], query: OfferQuery) -> list[Offer]:
    """The offers passing every bound; one pass per bound, each narrowing the pool (fast)."""
    pool = list(offers)
    for field, get, compare in _BOUND_GETTERS:
        limit = getattr(query, field)
        if limit is not None:
            op = _STRICT[compare] if field in query.strict else compare
            pool = [o for o in pool if (v := get(o)) is not None and op(v, limit)]
    if query.providers:
        wanted = set(query.providers)
        pool = [o for o in pool if o.provider in wanted]
    if query.gpu:
        parts = [squash(p) for p in query.gpu.split(",") if squash(p)]
        names = {name: any(p in squash(name) for p in parts) for name in {o.gpu_name for o in pool}}
        pool = [o for o in pool if names[o.gpu_name]]
    if query.region:
        regions = [r.strip().lower() for r in query.region.split(",") if r.strip()]
        pool = [o for o in pool if any(_in_region(o, r) for r in regions)]
    return pool


def _in_region(offer: Offer, wanted: str) -> bool:
    if offer.country and offer.country.lower() == wanted:
        return True
    return len(wanted) > 2 and offer.region is not None and wanted in offer.region.lower()


_SORT_VALUE: dict[OfferSort, Callable[[Offer], float | None]] = {
    "price": attrgetter("price_per_hour"),
    "gpu_price": attrgetter("price_per_gpu_hour"),
    "vram_price": lambda o: o.price_per_hour / (o.gpu_count * o.vram_gb) if o.vram_gb else None,
    "vram": lambda o: o.vram_gb * o.gpu_count,
    "reliability": attrgetter("reliability"),
}


_FIRST = itemgetter(0)
_SECOND = itemgetter(1)


def _identity(offer: Offer) -> tuple[Any, ...]:
    """What a user can see of an offer: two offers alike in all of it are one line."""
    return (
        offer.provider, offer.gpu_name, offer.gpu_count, offer.vram_gb, offer.price_per_hour,
        offer.region, offer.vcpus, offer.ram_gb, offer.disk_gb, offer.reliability, offer.cuda,
        offer.inet_down_mbps,
    )  # fmt: skip


def select(
    offers: Iterable[Offer], query: OfferQuery, demoted: Collection[str] = ()
) -> list[Offer]:
    """The offers matching `query`, sorted (ties by price; unknown values last; offers in
    `demoted` after all others), de-duplicated, cut to `query.limit`."""
    pool = _filter(offers, query)
    value = _SORT_VALUE[query.sort]
    sign = -1.0 if query.descending else 1.0
    # One visit per offer, in memory order; later steps work on small tuples with float keys
    # (20,000 offers do not fit in the CPU cache, and hopping between them is what is slow).
    rows = []
    for offer in pool:
        v = value(offer)
        rows.append((offer.price_per_hour, math.inf if v is None else sign * v, offer))
    rows.sort(key=_FIRST)
    if query.sort != "price" or query.descending:
        rows.sort(key=_SECOND)  # stable: equal values stay cheapest first
    if demoted:
        rows = [r for r in rows if r[2].id not in demoted] + [r for r in rows if r[2].id in demoted]
    return _distinct(rows, query.limit)


def _distinct(ranked: list[tuple[Any, ...]], limit: int | None) -> list[Offer]:
    """The offers of `ranked` ((price, key, offer) rows), leaving out any identical to
    one ranked above it. Identical offers share a price, so only a repeated price is compared."""
    chosen: list[Offer] = []
    first: dict[float, Offer] = {}
    seen: dict[float, set[tuple[Any, ...]]] = {}
    for price, _, offer in ranked:
        prior = first.setdefault(price, offer)
        if prior is not offer:
            identities = seen.get(price)
            if identities is None:
                identities = seen[price] = {_identity(prior)}
            identity = _identity(offer)
            if identity in identities:
                continue
            identities.add(identity)
        chosen.append(offer)
        if limit is not None and len(chosen) == limit:
            break
    return chosen
