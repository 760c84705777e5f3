"""What the command families' arguments share: the `Command` entry, argument types, flags.

Standard library only, like the family modules that use it, so `gpushop --help` stays fast;
bounds that `gpushop_tui.models` sets are read from it only when a value is parsed (`Bounded`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One subcommand: its name, help line, argument set-up and handler.

    `run` names the handler as 'module:function'. It is imported only when the command runs, so
    building the parser loads no handler module nor anything a handler imports.
    """

    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: str


def add_output(parser: argparse.ArgumentParser) -> None:
    """The `-o table|json` flag."""
    parser.add_argument(
        "-o", "--output", choices=("table", "json"), default="table", help="output format"
    )


def add_wait(parser: argparse.ArgumentParser, default: float | None, what: str) -> None:
    """`--no-wait` and `--wait-timeout S` for a command that waits for `what`."""
    parser.add_argument(
        "--no-wait", action="store_true", help=f"answer at once instead of waiting for {what}"
    )
    parser.add_argument(
        "--wait-timeout",
        type=positive,
        default=default,
        metavar="S",
        help=f"wait at most S seconds for {what}"
        + (f" (default {default:g})" if default else " (default: the provider's budget)"),
    )


@dataclass(frozen=True)
class Bounded:
    """An argparse type: a number in `unit` within the bounds `gpushop_tui.models` sets.

    `bounds` imports them when a value is parsed or a help text shows them (`%(type)s` prints
    'LOW to HIGH UNIT'), never when the parser is built, so `gpushop --help` loads no pydantic.
    """

    unit: str
    bounds: Callable[[], tuple[float, float]]
    above_low: bool = False
    """The low bound itself is out of range (a value must be more than it)."""

    def __call__(self, text: str) -> float:
        value = number(text)
        low, high = self.bounds()
        inside = low < value if self.above_low else low <= value
        if not inside or value > high:
            raise argparse.ArgumentTypeError(f"{text} {self.unit} is out of range; give {self}")
        return value

    def __str__(self) -> str:
        low, high = self.bounds()
        if self.above_low:
            return f"more than {low:g} up to {high:g} {self.unit}"
        return f"{low:g} to {high:g} {self.unit}"


def port_number(text: str) -> int:
    """A TCP port to listen on; 0 lets the system pick a free one."""
    if not text.isdigit() or not 0 <= int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port (0-65535; 0 picks a free one)")
    return int(text)


def positive_int(text: str) -> int:
    """A whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def number(text: str) -> float:
    """A finite number."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number")
    return value


def non_negative(text: str) -> float:
    """A finite number of at least 0."""
    value = number(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def positive(text: str) -> float:
    """A finite number above 0."""
    value = number(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value
