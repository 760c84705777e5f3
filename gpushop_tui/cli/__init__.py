"""The `gpushop` command line; `main` is the installed script's entry point (see `entry`)."""

from gpushop_tui.cli.entry import build_parser, main

__all__ = ["build_parser", "main"]
