"""The headless JSON API (`gpushop --serve`): FastAPI over the same `Shopper` as the TUI.

Kept out of the TUI's and the CLI's import path: only `gpushop --serve` imports it.
"""
