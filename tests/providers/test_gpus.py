"""The GPU catalogue: every provider spelling of a card lands on one canonical name and VRAM."""

from __future__ import annotations

import logging

import pytest

from gpushop_tui.providers.gpus import lookup_gpu

SPELLINGS = [
    # (spelling as a provider writes it, VRAM hint in GB, canonical name, VRAM)
    ("RTX 4090", 24564 / 1024, "RTX 4090", 24),  # Vast
    ("GeForce RTX 4090", None, "RTX 4090", 24),
    ("geforcertx4090-pcie-24gb", None, "RTX 4090", 24),  # TensorDock v0Name
    ("NVIDIA GeForce RTX 4090 PCIe 24GB", None, "RTX 4090", 24),  # TensorDock displayName
    ("RTX 5090", 32607 / 1024, "RTX 5090", 32),  # 31.8 GB reported: the card is 32
    ("Quadro RTX 8000", None, "RTX 8000", 48),
    (["Quadro RTX 8000", "RTX 8000"], None, "RTX 8000", 48),  # Blue Lobster list form
    ("H100 SXM5 80GB", None, "H100 SXM", 80),
    ("H100 SXM", 81559 / 1024, "H100 SXM", 80),
    ("H100 PCIE", 81559 / 1024, "H100 PCIe", 80),
    ("H100 NVL", 95830 / 1024, "H100 NVL", 94),
    ("A100 PCIE", 40960 / 1024, "A100 40GB PCIe", 40),
    ("A100 SXM4", 81920 / 1024, "A100 80GB SXM", 80),
    ("a100-pcie-80gb", None, "A100 80GB PCIe", 80),
    ("RTX 6000Ada", 49140 / 1024, "RTX 6000 Ada", 48),
    ("RTX 6000 Ada Generation", None, "RTX 6000 Ada", 48),
    ("Tesla V100", 16384 / 1024, "V100", 16),
    ("NVIDIA Tesla V100 PCIe 16GB", None, "V100", 16),
    ("rtxa4000-pcie-16gb", None, "RTX A4000", 16),
    ("RTX A4000", None, "RTX A4000", 16),
    ("RTX 2080 Ti", None, "RTX 2080 Ti", 11),
    ("l4-pcie-24gb", None, "L4", 24),
    ("L40S", 46068 / 1024, "L40S", 48),
    ("H200", 143771 / 1024, "H200", 141),
    ("B200", 183359 / 1024, "B200", 180),
]


@pytest.mark.parametrize(("spelling", "hint", "name", "vram"), SPELLINGS)
def test_every_spelling_has_one_canonical_name(
    spelling: str | list[str], hint: float | None, name: str, vram: float
) -> None:
    model = lookup_gpu(spelling, hint)
    assert (model.name, model.vram_gb, model.known) == (name, vram, True)


def test_an_unknown_gpu_is_kept_verbatim_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        first = lookup_gpu("Radeon Instinct MI300X", 191.5)
        again = lookup_gpu("Radeon Instinct MI300X", 191.5)
    assert first == again
    assert (first.name, first.vram_gb, first.known) == ("Radeon Instinct MI300X", 192, False)
    assert sum("MI300X" in r.message for r in caplog.records) == 1
