"""The gpushop Textual application (for now: the home screen that shows what is set up)."""

from __future__ import annotations

from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import ClassVar

from rich.markup import escape
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import BindingType
from textual.message import Message
from textual.widgets import Footer, Header, Static

from gpushop_tui import __version__
from gpushop_tui.config import Settings
from gpushop_tui.core.shopper import Shopper
from gpushop_tui.errors import UserError
from gpushop_tui.tui.styles import styles_dir


class GpushopApp(App[None]):
    """The cockpit. Opens the `Shopper` in a worker; never blocks the UI on I/O."""

    CSS_PATH = str(styles_dir() / "app.tcss")
    TITLE = "gpushop"
    BINDINGS: ClassVar[list[BindingType]] = [("q", "quit", "Quit")]

    @dataclass
    class ShopperReady(Message):
        """The core is open."""

        shopper: Shopper

    @dataclass
    class ShopperFailed(Message):
        """The core could not be opened; `reason` is one sentence for the user."""

        reason: str

    def __init__(self, settings: Settings, *, demo: bool = False) -> None:
        super().__init__()
        self.settings = settings
        self.demo = demo
        self.shopper: Shopper | None = None
        self._resources = AsyncExitStack()

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("Opening gpushop…", id="welcome")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = f"v{__version__}"
        if self.demo:
            self.title = "gpushop — DEMO"
            self.sub_title = "simulated marketplace, no real money"
        self.open_shopper()

    @work(exclusive=True, group="open")
    async def open_shopper(self) -> None:
        try:
            secrets = None
            if self.demo:
                from gpushop_tui.demo import demo_marketplace

                demo = await self._resources.enter_async_context(demo_marketplace(self.settings))
                self.settings, secrets = demo.settings, demo.secrets
            shopper = await Shopper.open(self.settings, secrets=secrets)
        except UserError as exc:
            self.post_message(self.ShopperFailed(exc.message))
            return
        self.post_message(self.ShopperReady(shopper))

    @on(ShopperReady)
    def show_home(self, message: ShopperReady) -> None:
        self.shopper = message.shopper
        message.shopper.start_supervisor()
        rows, problem = message.shopper.credentials()
        lines = [
            *(
                ["[b reverse] DEMO [/] every provider here is simulated on this machine", ""]
                if self.demo
                else []
            ),
            f"[b]gpushop {__version__}[/b] — install {message.shopper.install_id}",
            f"Data: {escape(str(self.settings.paths.data_dir))}",
            "",
            "Provider credentials:",
        ]
        for row in rows:
            where = row.source or f"not set (gpushop keys set {row.provider}, or {row.env_var})"
            lines.append(f"  {row.provider:<12} {where}")
        if problem:
            lines += ["", f"[yellow]{escape(problem)}[/yellow]"]
        self.query_one("#welcome", Static).update("\n".join(lines))

    @on(ShopperFailed)
    def show_failure(self, message: ShopperFailed) -> None:
        welcome = self.query_one("#welcome", Static)
        welcome.add_class("error")
        welcome.update(f"gpushop cannot start: {escape(message.reason)}")
        self.notify(message.reason, severity="error", timeout=10)

    async def on_unmount(self) -> None:
        if self.shopper is not None:
            await self.shopper.aclose()
        await self._resources.aclose()
