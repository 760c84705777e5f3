"""Small modal dialogs shared by the panes: confirm (with an explicit key) and read-only text."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class ConfirmScreen(ModalScreen[bool]):
    """Ask one question; `y` (or the confirm button) answers yes, `n`/`escape` no."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", show=True),
        Binding("n,escape", "answer(False)", "No", show=True),
    ]

    def __init__(self, title: str, body: str, *, yes: str = "Yes", danger: bool = False) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.body = body
        self.yes = yes
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box" + (" danger" if self.danger else "")):
            yield Static(self.title_text, classes="dialog-title")
            yield Static(self.body, classes="dialog-body")
            with Horizontal(classes="dialog-buttons"):
                yield Button(
                    f"{self.yes} (y)",
                    id="yes",
                    variant="error" if self.danger else "primary",
                )
                yield Button("Cancel (n)", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, yes: bool) -> None:
        self.dismiss(yes)


class TextScreen(ModalScreen[None]):
    """Show a block of text (help, an ssh command, a timeline); any of `escape`/`q` closes."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, title: str, body: str) -> None:
        super().__init__(classes="dialog")
        self.title_text = title
        self.body = body

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog-box wide"):
            # The close key rides on the title line: a long body (the help) never hides it.
            yield Static(
                Content.assemble(f"{self.title_text}   ", ("escape close", "$text-muted")),
                classes="dialog-title",
            )
            with VerticalScroll(classes="dialog-scroll"):
                yield Static(self.body, classes="dialog-body")
