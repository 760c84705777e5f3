"""The one rule set of a workload, the same in every face (issue 19 §1)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from gpushop_tui.models import ProvisionRequest, WorkloadSpec, validation_problem


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"kind": "llm"}, "the llm workload needs a model"),
        ({"kind": "vllm"}, "the vllm workload needs a model"),
        ({"kind": "custom"}, "the custom workload needs a command"),
        ({"kind": "interactive", "model": "llama3.1:8b"}, "a model needs the llm or vllm"),
        ({"kind": "llm", "model": "m", "command": "x"}, "a command needs the custom workload"),
        ({"kind": "llm", "model": "m", "ports": [80]}, "ports need the custom workload"),
        ({"kind": "interactive", "env": {"A": "1"}}, "an environment needs a workload"),
        ({"kind": "interactive", "benchmark": False}, "nothing to turn off"),
        ({"kind": "custom", "command": "x", "env": {"BAD-NAME": "1"}}, "BAD-NAME"),
        ({"kind": "custom", "command": "x", "ports": [0]}, "greater than or equal to 1"),
        ({"kind": "custom", "command": "x", "ports": [80, 80]}, "each port once"),
        ({"kind": "llm", "model": "bad model"}, "pattern"),
        ({"kind": "custom", "command": "a\0b"}, "NUL"),
        ({"kind": "tgi", "model": "m"}, "Input should be"),
    ],
)
def test_what_a_kind_does_not_use_is_refused(fields: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        WorkloadSpec.model_validate(fields)
    assert words in str(refused.value)


def test_a_nested_problem_is_named_in_the_faces_words() -> None:
    flags = {"workload": "--workload", "workload.model": "--model", "workload.ports": "--port"}
    with pytest.raises(ValidationError) as refused:
        ProvisionRequest.model_validate(
            {
                "consumer": "a",
                "offer_id": "vastai:1",
                "workload": {"kind": "custom", "command": "x", "ports": [70000]},
            }
        )
    assert validation_problem(refused.value, flags).startswith("--port: ")
    with pytest.raises(ValidationError) as refused:
        ProvisionRequest.model_validate(
            {"consumer": "a", "offer_id": "vastai:1", "workload": {"kind": "llm"}}
        )
    assert validation_problem(refused.value, flags) == "--model: the llm workload needs a model"


def test_every_preset_and_the_custom_form_are_accepted() -> None:
    assert WorkloadSpec(kind="llm", model="llama3.1:8b").serves
    gated = WorkloadSpec(kind="vllm", model="meta-llama/Llama-3.1-8B", env={"HF_TOKEN": "x"})
    assert (
        gated.env == {"HF_TOKEN": "x"}
        and not WorkloadSpec(kind="vllm", model="m", benchmark=False).benchmark
    )
    assert WorkloadSpec(kind="vllm", model="Qwen/Qwen2.5-0.5B-Instruct").serves
    custom = WorkloadSpec(kind="custom", command="python3 -m http.server 8080", env={"A": "1"},
                          ports=(8080,), image="python:3.12")  # fmt: skip
    assert custom.serves and custom.ports == (8080,)
    assert not WorkloadSpec().serves
