"""One GPU catalogue: every provider's spelling of a card → one canonical name, VRAM, architecture.

Providers write the same card many ways ("GeForce RTX 4090", "geforcertx4090-pcie-24gb",
"RTX 4090", ["Quadro RTX 8000", "RTX 8000"], "H100 SXM5 80GB"). A spelling is reduced to a
base model ("rtx4090", "a100"), a form factor (pcie / sxm / nvl) and any memory size it states;
the catalogue then picks the entry. A name we do not know is kept verbatim and logged once.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuModel:
    """A card as gpushop names it; `known` is False for a spelling not in the catalogue."""

    name: str
    vram_gb: float
    arch: str | None
    known: bool = True


@dataclass(frozen=True)
class _Entry:
    name: str
    base: str
    vram_gb: float
    arch: str
    form: str | None = None


_CATALOGUE = (
    _Entry("GTX 1080 Ti", "gtx1080ti", 11, "Pascal"),
    _Entry("RTX 2080 Ti", "rtx2080ti", 11, "Turing"),
    _Entry("RTX 8000", "rtx8000", 48, "Turing"),
    _Entry("RTX 6000", "rtx6000", 24, "Turing"),
    _Entry("Titan RTX", "titanrtx", 24, "Turing"),
    _Entry("T4", "t4", 16, "Turing"),
    _Entry("V100", "v100", 16, "Volta"),
    _Entry("V100 32GB", "v100", 32, "Volta"),
    _Entry("RTX 3060", "rtx3060", 12, "Ampere"),
    _Entry("RTX 3060 Ti", "rtx3060ti", 8, "Ampere"),
    _Entry("RTX 3070", "rtx3070", 8, "Ampere"),
    _Entry("RTX 3080", "rtx3080", 10, "Ampere"),
    _Entry("RTX 3080 Ti", "rtx3080ti", 12, "Ampere"),
    _Entry("RTX 3090", "rtx3090", 24, "Ampere"),
    _Entry("RTX 3090 Ti", "rtx3090ti", 24, "Ampere"),
    _Entry("RTX A2000", "rtxa2000", 12, "Ampere"),
    _Entry("RTX A4000", "rtxa4000", 16, "Ampere"),
    _Entry("RTX A4500", "rtxa4500", 20, "Ampere"),
    _Entry("RTX A5000", "rtxa5000", 24, "Ampere"),
    _Entry("RTX A6000", "rtxa6000", 48, "Ampere"),
    _Entry("A10", "a10", 24, "Ampere"),
    _Entry("A16", "a16", 16, "Ampere"),
    _Entry("A40", "a40", 48, "Ampere"),
    _Entry("A100 40GB PCIe", "a100", 40, "Ampere", "pcie"),
    _Entry("A100 80GB PCIe", "a100", 80, "Ampere", "pcie"),
    _Entry("A100 80GB SXM", "a100", 80, "Ampere", "sxm"),
    _Entry("A100 40GB SXM", "a100", 40, "Ampere", "sxm"),
    _Entry("RTX 4060 Ti", "rtx4060ti", 16, "Ada"),
    _Entry("RTX 4070", "rtx4070", 12, "Ada"),
    _Entry("RTX 4070 Ti", "rtx4070ti", 12, "Ada"),
    _Entry("RTX 4080", "rtx4080", 16, "Ada"),
    _Entry("RTX 4080 Super", "rtx4080super", 16, "Ada"),
    _Entry("RTX 4090", "rtx4090", 24, "Ada"),
    _Entry("RTX 4000 Ada", "rtx4000ada", 20, "Ada"),
    _Entry("RTX 5000 Ada", "rtx5000ada", 32, "Ada"),
    _Entry("RTX 6000 Ada", "rtx6000ada", 48, "Ada"),
    _Entry("L4", "l4", 24, "Ada"),
    _Entry("L40", "l40", 48, "Ada"),
    _Entry("L40S", "l40s", 48, "Ada"),
    _Entry("H100 SXM", "h100", 80, "Hopper", "sxm"),
    _Entry("H100 PCIe", "h100", 80, "Hopper", "pcie"),
    _Entry("H100 NVL", "h100", 94, "Hopper", "nvl"),
    _Entry("GH200", "gh200", 96, "Hopper"),
    _Entry("H200", "h200", 141, "Hopper", "sxm"),
    _Entry("H200 NVL", "h200", 141, "Hopper", "nvl"),
    _Entry("RTX 5060 Ti", "rtx5060ti", 16, "Blackwell"),
    _Entry("RTX 5080", "rtx5080", 16, "Blackwell"),
    _Entry("RTX 5090", "rtx5090", 32, "Blackwell"),
    _Entry("RTX PRO 6000", "rtxpro6000", 96, "Blackwell"),
    _Entry("B200", "b200", 180, "Blackwell"),
)
"""Where one base has variants, the first listed is the default when nothing else decides."""

_BY_BASE: dict[str, list[_Entry]] = {}
for _entry in _CATALOGUE:
    _BY_BASE.setdefault(_entry.base, []).append(_entry)

_NOISE = re.compile(r"\b(?:nvidia|geforce|tesla|quadro|generation|gen|hbm\d*e?)\b|\bgpu\b")
_MEMORY = re.compile(r"(?<![a-z0-9])(\d+)\s*gb\b")
_FORM = re.compile(r"(sxm\d?|pcie|nvl|hgx)")
_ALIASES = {
    "rtx6000adageneration": "rtx6000ada",
    "a100pcie": "a100",
    "rtxa6000ada": "rtx6000ada",
    "a6000": "rtxa6000",  # Lambda's "A6000 (48 GB)"
}
_warned: set[str] = set()


def _reduce(spelling: str) -> tuple[str, str | None, float | None]:
    """(base, form factor, stated memory in GB) of one spelling."""
    text = spelling.lower().replace("_", " ")
    text = re.sub(r"geforce(?=rtx|gtx)", "", text)  # TensorDock's "geforcertx4090-…"
    text = _NOISE.sub(" ", text)
    stated: float | None = None
    if memory := _MEMORY.search(text):
        stated = float(memory.group(1))
        text = text[: memory.start()] + text[memory.end() :]
    squashed = re.sub(r"[^a-z0-9]", "", text)
    form: str | None = None
    if found := _FORM.search(squashed):
        form = "sxm" if found.group(1).startswith(("sxm", "hgx")) else found.group(1)
        squashed = squashed[: found.start()] + squashed[found.end() :]
    squashed = _ALIASES.get(squashed, squashed)
    return squashed, form, stated


@lru_cache(maxsize=4096)
def _resolve(spelling: str, vram_hint_gb: float | None) -> GpuModel | None:
    base, form, stated = _reduce(spelling)
    candidates = _BY_BASE.get(base)
    if not candidates:
        return None
    if form is not None:
        candidates = [e for e in candidates if e.form == form] or candidates
    size = stated if stated is not None else vram_hint_gb
    chosen = candidates[0]
    if size is not None:
        chosen = min(candidates, key=lambda e: abs(e.vram_gb - size))
    return GpuModel(chosen.name, chosen.vram_gb, chosen.arch)


def gpu_matches(promised: str, reported: str) -> bool:
    """Whether a node's GPU name (as `nvidia-smi` says it) is the card an offer promised.

    Same base model, and the same form factor where both names state one (the node's name often
    does not: "NVIDIA H100 80GB HBM3"). Memory is compared separately, from what the node reports.
    """
    promised_base, promised_form, _ = _reduce(promised)
    reported_base, reported_form, _ = _reduce(reported)
    if promised_base != reported_base:
        return False
    return promised_form is None or reported_form is None or promised_form == reported_form


def lookup_gpu(spelling: str | list[str], vram_hint_gb: float | None = None) -> GpuModel:
    """The catalogue entry for a provider's spelling (a list: the first one we know).

    `vram_hint_gb` (what the provider reports per GPU) picks between variants such as the 40
    and 80 GB A100. An unknown name is kept verbatim, with the hint (rounded, never truncated)
    as its VRAM, and logged once.
    """
    spellings = [spelling] if isinstance(spelling, str) else list(spelling)
    hint = round(vram_hint_gb, 3) if vram_hint_gb is not None else None
    for one in spellings:
        if model := _resolve(one.strip(), hint):
            return model
    verbatim = spellings[0].strip() if spellings else "unknown GPU"
    if verbatim not in _warned:
        _warned.add(verbatim)
        log.warning("GPU %r is not in the catalogue; kept as the provider spells it", verbatim)
    vram = float(round(vram_hint_gb)) if vram_hint_gb else 0.0
    return GpuModel(verbatim or "unknown GPU", vram, None, known=False)
