"""The Sessions pane's detail panel: everything about the session under the cursor.

The panel is a column of sections (`DetailSection`), each a few labelled lines the pane writes:
how to reach the session, what it costs, what will end it and when, its node, its last events.
A section repaints only when its text changed, and without a new layout while its line count
stays the same, so the one-second tick costs a few string comparisons. A later section (a
workload's endpoint) is one more `DetailSection` in `SessionDetail.compose`.
"""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widget import Widget

LABEL_WIDTH = 10
"""Every line starts with its label padded to this width, so the values line up."""


def labelled(lines: Iterable[tuple[str, Text | str]]) -> Text:
    """`label     value` lines, labels dimmed and padded so every value starts in one column."""
    text = Text(no_wrap=True, overflow="ellipsis", end="")
    for n, (label, value) in enumerate(lines):
        if n:
            text.append("\n")
        text.append(f"{label:<{LABEL_WIDTH}}", style="dim")
        text.append(value)
    return text


class DetailSection(Widget):
    """A few lines of the panel; rewritten only when what they say changed."""

    DEFAULT_CSS = """
    DetailSection {
        height: auto;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.text = Text(end="")

    def show(self, text: Text) -> None:
        """Show `text`; a new layout only when its number of lines changed."""
        if text == self.text:
            return
        relayout = text.plain.count("\n") != self.text.plain.count("\n")
        self.text = text
        self.refresh(layout=relayout)

    def render(self) -> Text:
        return self.text


class SessionDetail(Vertical):
    """The selected session's access, money, deadlines with what ends it, node and events."""

    DEFAULT_CSS = """
    SessionDetail {
        height: auto;
        padding: 0 1;
        border-top: hkey $panel-lighten-2;
        border-title-color: $text-muted;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.access = DetailSection(id="detail-access")
        self.money = DetailSection(id="detail-money")
        self.deadlines = DetailSection(id="detail-deadlines")
        self.node = DetailSection(id="detail-node")
        self.events = DetailSection(id="detail-events")

    def compose(self) -> ComposeResult:
        yield self.access
        yield self.money
        yield self.deadlines
        yield self.node
        yield self.events

    @property
    def text(self) -> str:
        """Every section's plain text, top to bottom (what a reader of the panel sees)."""
        return "\n".join(
            section.text.plain for section in self.query(DetailSection) if section.text.plain
        )
