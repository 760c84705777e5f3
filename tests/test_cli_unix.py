"""The one-shot CLI behaves like a Unix tool: quiet in a closed pipe, ids by prefix, progress in
sentences, transfers with rate and ETA, and no flag in the README or `--help` that it refuses."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from gpushop_tui.cli.entry import build_parser
from gpushop_tui.cli.handlers.rent import _Progress
from tests.conftest import ROOT, run_gpushop, sim_env

FLAG = re.compile(r"(?<![\w-])--[a-z][a-z-]*")
ALL = ("vastai", "tensordock", "bluelobster")


@pytest.fixture
def sim(standalone_sim: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The shared simulator, without faults before and after the test."""
    httpx.delete(f"{standalone_sim['control']}/faults").raise_for_status()
    yield standalone_sim
    httpx.delete(f"{standalone_sim['control']}/faults").raise_for_status()


# -- a closed pipe ------------------------------------------------------------------------------


@pytest.mark.parametrize("output", [(), ("-o", "json")], ids=["table", "json"])
def test_a_reader_that_stops_early_ends_the_command_quietly(
    sim: dict[str, Any], output: tuple[str, ...]
) -> None:
    """`gpushop inventory | head -1`: the rest of a long answer meets a closed pipe."""
    env = os.environ | sim_env(sim, *ALL) | {"PYTHONPATH": str(ROOT)}
    child = subprocess.Popen(
        [sys.executable, "-m", "gpushop_tui", "inventory", *output],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None and child.stderr is not None
    assert child.stdout.readline()
    child.stdout.close()  # what `head -1` does after its line
    errors = child.stderr.read().decode()
    assert child.wait(timeout=60) in (0, 141), errors
    assert errors == ""


def test_loading_the_ssh_library_prints_no_warning() -> None:
    """A dependency's import-time warning (asyncssh naming DSA under cryptography >= 51) would sit
    above the one line a refused command prints; gpushop keeps stderr for its own words."""
    child = subprocess.run(
        [sys.executable, "-c", "import gpushop_tui, asyncssh"],
        capture_output=True,
        text=True,
        timeout=60,
        env=os.environ | {"PYTHONPATH": str(ROOT), "PYTHONWARNINGS": ""},
    )
    assert child.returncode == 0, child.stderr
    assert child.stderr == ""


# -- session ids by prefix ----------------------------------------------------------------------


def test_a_session_is_named_by_a_unique_prefix_of_its_id(sim: dict[str, Any]) -> None:
    env = sim_env(sim, "vastai")
    rented = run_gpushop("provision", "-c", "tests", "-g", "gpu=4090 provider=vastai",
                         "--no-wait", "-o", "json", env=env)  # fmt: skip
    assert rented.returncode == 0, rented.stderr
    session_id = re.search(r'"id": "(\w+)"', rented.stdout)
    assert session_id, rented.stdout
    full = session_id.group(1)
    got = run_gpushop("sessions", "get", full[:7], env=env)
    assert got.returncode == 0, got.stderr
    assert re.search(rf"^session\s+{full}$", got.stdout, re.MULTILINE), got.stdout
    ended = run_gpushop("sessions", "delete", full[:7], env=env)
    assert ended.returncode == 0, ended.stderr
    assert ended.stdout.startswith(f"session {full}: ended (destroyed)")
    # progress reads as sentences, not as status/instance pairs
    assert not re.search(r"\b[a-z]+/(none|creating|live|destroying|gone|unknown)\b", ended.stderr)


# -- transfers ----------------------------------------------------------------------------------


def test_transfer_progress_shows_rate_and_time_left(capsys: pytest.CaptureFixture[str]) -> None:
    now = iter([0.0, 2.0, 4.0])
    progress = _Progress("data.tar", live=True, clock=lambda: next(now))
    progress(4_000_000, 8_000_000)
    line = capsys.readouterr().err
    assert "data.tar: 4.0/8.0 MB (50%)" in line and "2.0 MB/s" in line and "0:02 left" in line
    progress.finish(8_000_000)
    assert capsys.readouterr().err.endswith("data.tar: 8000000 bytes copied in 0:04 (2.0 MB/s)\n")


# -- flags the words mention --------------------------------------------------------------------


def _readme_commands() -> list[list[str]]:
    """The arguments of every `gpushop ...` command in the README's shell blocks."""
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"^```sh\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    commands: list[list[str]] = []
    lines = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    for line in lines:
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words = list(lexer)
        for i, word in enumerate(words):
            if word.endswith("gpushop"):
                rest = words[i + 1 :]
                ends = [j for j, w in enumerate(rest) if set(w) <= set("();<>|&")]
                commands.append(rest[: ends[0]] if ends else rest)
    return commands


def test_every_readme_command_parses() -> None:
    commands = _readme_commands()
    assert len(commands) > 10, commands
    for words in commands:
        try:
            build_parser().parse_args(words)
        except SystemExit as refused:
            pytest.fail(f"the README's 'gpushop {shlex.join(words)}' is refused ({refused})")


def _parsers(
    parser: argparse.ArgumentParser, path: str = "gpushop"
) -> Iterator[tuple[str, argparse.ArgumentParser, set[str]]]:
    """Each parser with its words: its help, and every flag it or a subcommand under it takes."""
    flags = {o for a in parser._actions for o in a.option_strings}
    below: list[tuple[str, argparse.ArgumentParser, set[str]]] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                below.extend(_parsers(sub, f"{path} {name}"))
    for _, _, taken in below:
        flags |= taken
    yield path, parser, flags
    yield from below


def test_help_mentions_only_flags_that_are_taken() -> None:
    """A command's help may name its own flags, its subcommands' and gpushop's modes."""
    root = build_parser()
    modes = {o for a in root._actions for o in a.option_strings}
    for path, parser, flags in _parsers(root):
        mentioned = set(FLAG.findall(parser.format_help()))
        assert mentioned <= flags | modes, f"'{path} --help' mentions {mentioned - flags}"
