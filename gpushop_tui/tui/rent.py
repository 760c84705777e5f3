"""The rent dialog: what a rental will be, what it costs at most, and which budgets it meets.

On confirm it hands the `ProvisionRequest` to the inventory pane, which rents in its own worker
(so closing the dialog never cuts a rental short) and then either closes the dialog or, when the
rental was refused (a budget, the balance, a stale offer), tells it why: the dialog stays open
with its fields filled and the reason under them. Every change of consumer or hours asks the
budgets' `preview` again in a worker (a read: no alert, no provider call); a budget that would
refuse says so here and the rent button stays disabled. Only `ctrl+r` or the button rents:
`enter` in a field moves to the next one.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, get_args

from pydantic import TypeAdapter, ValidationError
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Grid, Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Select, Static
from textual.worker import Worker

from gpushop_tui.core import BudgetCheck, Facade, describe_budget
from gpushop_tui.models import (
    IdleAction,
    Offer,
    ProvisionRequest,
    ReservationHours,
    StoragePolicy,
    Workload,
    parse_env,
    validation_problem,
)
from gpushop_tui.tui import fmt
from gpushop_tui.tui.pane import tell_failure

WORKLOADS: tuple[str, ...] = get_args(Workload)
LABELS = {
    "consumer": "Consumer",
    "hours": "Hours",
    "workload": "Workload",
    "workload.model": "Model",
    "workload.image": "Image",
    "workload.command": "Command",
    "workload.env": "Env",
    "workload.ports": "Ports",
    "idle_timeout_min": "Idle stop",
    "idle_action": "When idle",
    "storage": "When done",
}
"""The dialog's words for the `ProvisionRequest` fields it fills in."""
WORKLOAD_FIELDS: dict[str, tuple[str, str, frozenset[str]]] = {
    "model": (
        "workload.model",
        "llama3.1:8b, or Qwen/Qwen2.5-0.5B-Instruct",
        frozenset({"llm", "vllm"}),
    ),
    "command": (
        "workload.command",
        "what starts it, e.g. python3 -m http.server 8080",
        frozenset({"custom"}),
    ),
    "env": ("workload.env", "NAME=VALUE NAME=VALUE", frozenset({"llm", "vllm", "custom"})),
    "ports": ("workload.ports", "8080 (the first is checked)", frozenset({"custom"})),
    "image": ("workload.image", "an image, where the provider runs images", frozenset({"custom"})),
}
"""The workload's own fields: their label, a placeholder, and the kinds that use them."""
HOURS: TypeAdapter[float] = TypeAdapter(ReservationHours)


def offer_summary(offer: Offer) -> str:
    """`vastai:123 · 2x RTX 4090 (24 GB each) · $0.700/h ($0.350/GPU-h) · Texas, US`."""
    parts = [
        offer.id,
        f"{offer.gpu_count}x {offer.gpu_name} ({offer.vram_gb:g} GB each)",
        f"{fmt.rate(offer.price_per_hour)} ({fmt.usd(offer.price_per_gpu_hour, 3)}/GPU-h)",
        offer.region or offer.country or "region unknown",
    ]
    if offer.reliability is not None:
        parts.append(f"reliability {offer.reliability:.1%}")
    if offer.cuda is not None:
        parts.append(f"CUDA {offer.cuda:g}")
    return " · ".join(parts)


def check_line(check: BudgetCheck) -> Content:
    """One budget and what this rental does to it: within it, warns, or refused."""
    if check.refuses:
        verdict = ("REFUSED", "bold $error")
    elif check.crosses:
        verdict = ("warns, rents anyway", "bold $warning")
    else:
        verdict = ("within", "$success")
    return Content.assemble(verdict, f" — {describe_budget(check.budget)}: {check.would()}")


class RentScreen(ModalScreen[None]):
    """Rent one offer: fill in who it is for and its limits, then confirm with ctrl+r.

    `submit` starts the rental; the caller answers with `went_through()` or `refused(reason)`.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+r", "rent", "Rent", key_display="ctrl+r"),
        Binding("escape", "cancel", "Cancel"),
    ]

    @dataclass
    class Previewed(Message):
        """The budgets a rental by `consumer` for `hours` counts against."""

        consumer: str
        hours: float
        checks: list[BudgetCheck]

    def __init__(
        self,
        shopper: Facade,
        offer: Offer,
        submit: Callable[[ProvisionRequest, RentScreen], None],
        *,
        consumer: str | None = None,
        can_stop: bool,
    ) -> None:
        super().__init__(classes="dialog")
        self.shopper = shopper
        self.offer = offer
        self.submit = submit
        self.renting = False
        """A confirmed rental is on its way: the rent button waits for its outcome."""
        self.failure: str | None = None
        """Why the last confirmed rental did not go through, until a field changes."""
        self.closing = False
        """The rental went through while another screen was on top: close on return."""
        self.consumer = consumer
        self.can_stop = can_stop
        self.checks: list[BudgetCheck] | None = None
        """The preview for `checked`; None until the first one arrives."""
        self.checked: tuple[str, float] | None = None

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        tell_failure(self, event)

    def compose(self) -> ComposeResult:
        settings = self.shopper.settings
        offer = self.offer
        with Vertical(classes="dialog-box", id="rent-box"):
            yield Static(
                Content(f"Rent {offer.gpu_count}x {offer.gpu_name} on {offer.provider}"),
                classes="dialog-title",
            )
            with VerticalScroll(id="rent-body"):
                yield Static(Content(offer_summary(offer)), id="rent-offer")
                with Grid(id="rent-fields"):
                    yield Label(LABELS["consumer"])
                    yield Input(
                        self.consumer or "",
                        placeholder="who it is for, e.g. alice",
                        id="rent-consumer",
                        compact=True,
                    )
                    yield Label(LABELS["hours"])
                    yield Input(
                        f"{settings.default_reservation_hours:g}",
                        id="rent-hours",
                        type="number",
                        compact=True,
                    )
                    yield Label(LABELS["workload"])
                    yield Select(
                        [(w, w) for w in WORKLOADS],
                        value="interactive",
                        allow_blank=False,
                        id="rent-workload",
                        compact=True,
                    )
                    for name, (label, hint, _kinds) in WORKLOAD_FIELDS.items():
                        yield Label(LABELS[label], id=f"rent-{name}-label")
                        yield Input(placeholder=hint, id=f"rent-{name}", compact=True)
                    yield Label(f"{LABELS['idle_timeout_min']}, min")
                    yield Input(
                        f"{settings.default_idle_timeout_min:g}",
                        id="rent-idle",
                        type="number",
                        compact=True,
                    )
                    yield Label(LABELS["idle_action"])
                    yield Select(
                        [
                            ("destroy the instance", IdleAction.DESTROY),
                            ("stop it, keep its disk", IdleAction.STOP),
                        ],
                        value=IdleAction.DESTROY,
                        allow_blank=False,
                        disabled=not self.can_stop,
                        id="rent-idle-action",
                        compact=True,
                    )
                    yield Label(LABELS["storage"])
                    yield Select(
                        [
                            ("destroy the instance", StoragePolicy.DESTROY),
                            ("stop it, keep its disk", StoragePolicy.KEEP),
                        ],
                        value=StoragePolicy.DESTROY,
                        allow_blank=False,
                        disabled=not self.can_stop,
                        id="rent-storage",
                        compact=True,
                    )
                yield Static(id="rent-notes", classes="muted")
            yield Static(id="rent-total")
            yield Static(id="rent-budgets")
            yield Static(id="rent-problem")
            with Horizontal(classes="dialog-buttons"):
                yield Button(
                    "Rent (ctrl+r)",
                    id="rent-confirm",
                    variant="primary",
                    disabled=True,
                    compact=True,
                )
                yield Button("Cancel (esc)", id="rent-cancel", compact=True)

    def on_mount(self) -> None:
        notes = ["0 minutes of idle stop disables it."]
        if not self.can_stop:
            notes.append(
                f"{self.offer.provider} cannot stop an instance and keep its disk, so 'done' "
                "and an idle stop destroy it."
            )
        self.query_one("#rent-notes", Static).update(Content(" ".join(notes)))
        self.query_one("#rent-hours" if self.consumer else "#rent-consumer", Input).focus()
        self.show_workload_fields()
        self.changed()

    # ------------------------------------------------------------------ reading the fields

    def value(self, field: str) -> str:
        return self.query_one(f"#rent-{field}", Input).value.strip()

    def kind(self) -> str:
        return str(self.query_one("#rent-workload", Select).value)

    def workload(self) -> dict[str, object]:
        """The workload the fields describe: the kind, and the fields that kind uses (env as
        NAME=VALUE words, ports as numbers; anything else is left for the rule set to name)."""
        kind = self.kind()
        spec: dict[str, object] = {"kind": kind}
        for name, (_label, _hint, kinds) in WORKLOAD_FIELDS.items():
            text = self.value(name)
            if kind not in kinds or not text:
                continue
            if name == "env":
                try:
                    spec["env"] = parse_env(shlex.split(text))
                except ValueError as err:
                    raise ValueError(f"{LABELS['workload.env']}: {err}") from None
            elif name == "ports":
                spec["ports"] = text.replace(",", " ").split()
            else:
                spec[name] = text
        return spec

    def show_workload_fields(self) -> None:
        """Only the fields the chosen kind uses are shown."""
        kind = self.kind()
        for name, (_label, _hint, kinds) in WORKLOAD_FIELDS.items():
            for widget in self.query(f"#rent-{name}, #rent-{name}-label"):
                widget.display = kind in kinds

    def hours(self) -> float | None:
        """The hours field, where it is a reservation's length (the model's bounds)."""
        try:
            return HOURS.validate_python(self.value("hours"))
        except ValidationError:
            return None

    def request(self) -> tuple[ProvisionRequest | None, str | None]:
        """The rental the fields describe, or the one sentence that says what to fix."""
        consumer = self.value("consumer")
        if not consumer:
            return None, "Fill in the consumer: who the rental is for."
        try:
            workload = self.workload()
        except ValueError as err:
            return None, str(err)
        try:
            request = ProvisionRequest.model_validate(
                {
                    "consumer": consumer,
                    "offer_id": self.offer.id,
                    "hours": self.value("hours"),
                    "workload": workload,
                    "idle_timeout_min": self.value("idle"),
                    "idle_action": self.query_one("#rent-idle-action", Select).value,
                    "storage": self.query_one("#rent-storage", Select).value,
                }
            )
        except ValidationError as err:
            return None, validation_problem(err, LABELS)
        return request, None

    @on(Input.Changed)
    @on(Select.Changed)
    def changed(self) -> None:
        """Show the most the rental can cost, ask the budgets again, say what to fix."""
        self.show_workload_fields()
        self.failure = None
        hours = self.hours()
        total = self.query_one("#rent-total", Static)
        if hours is None:
            total.update("At most: — (give the hours)")
        else:
            total.update(
                Content.assemble(
                    ("At most ", "bold"),
                    (f"{fmt.usd(self.offer.price_per_hour * hours)} ", "bold"),
                    f"for {hours:g} h at {fmt.rate(self.offer.price_per_hour)}"
                    " (ending sooner costs less)",
                )
            )
        request, _ = self.request()
        if request is not None and self.checked != (request.consumer, request.hours):
            self.checks = None
            self.preview(request.consumer, request.hours)
        self.show_state()

    @on(Input.Submitted)
    def next_field(self, event: Input.Submitted) -> None:
        """`enter` in a field moves on; it never rents."""
        event.stop()
        self.focus_next()

    # ------------------------------------------------------------------ budgets

    @work(exclusive=True, group="rent-preview", exit_on_error=False)
    async def preview(self, consumer: str, hours: float) -> None:
        checks = await self.shopper.preview_budgets(consumer, self.offer, hours)
        self.post_message(self.Previewed(consumer, hours, checks))

    @on(Previewed)
    def previewed(self, message: Previewed) -> None:
        request, _ = self.request()
        if request is None or (request.consumer, request.hours) != (
            message.consumer,
            message.hours,
        ):
            return  # the fields moved on; a newer preview is on its way
        self.checked = (message.consumer, message.hours)
        self.checks = message.checks
        self.show_state()

    def show_state(self) -> None:
        """The budget lines, what to fix, and whether the rent button is live."""
        request, problem = self.request()
        budgets = self.query_one("#rent-budgets", Static)
        current = request is not None and self.checked == (request.consumer, request.hours)
        if request is None:
            budgets.update(Content.styled("Budgets: fill in the fields first.", "$text-muted"))
        elif not current or self.checks is None:
            budgets.update(Content.styled("Budgets: checking…", "$text-muted"))
        else:
            lines = [check_line(check) for check in self.checks] or [
                Content(f"No budget counts against {request.consumer}.")
            ]
            lines.append(
                Content.styled("The provider's balance is checked when you rent.", "$text-muted")
            )
            budgets.update(Content("\n").join(lines))
        shown = self.query_one("#rent-problem", Static)
        if self.renting:
            shown.update(Content.styled("Renting…", "bold $accent"))
        else:
            shown.update(Content.styled(problem or self.failure or "", "$error"))
        shown.display = self.renting or bool(problem or self.failure)
        refused = current and any(check.refuses for check in self.checks or ())
        self.query_one("#rent-confirm", Button).disabled = not current or refused or self.renting

    def went_through(self) -> None:
        """The rental went through: close, now or as soon as this dialog is on top again."""
        if self.app.screen is self:
            self.dismiss()
        else:
            self.closing = True

    def on_screen_resume(self) -> None:
        if self.closing:
            self.dismiss()

    def refused(self, reason: str) -> None:
        """The rental did not go through: say why beside the fields, which stay as they were."""
        self.renting = False
        self.failure = reason
        self.show_state()

    # ------------------------------------------------------------------ answering

    @on(Button.Pressed, "#rent-confirm")
    def action_rent(self) -> None:
        if self.renting:
            return
        request, problem = self.request()
        if request is None:
            self.notify(problem or "Check the fields.", severity="error")
            return
        if self.checked != (request.consumer, request.hours) or self.checks is None:
            self.notify("Still checking the budgets; try again in a moment.", severity="warning")
            return
        refusing = [check for check in self.checks if check.refuses]
        if refusing:
            check = refusing[0]
            self.notify(
                f"Refused by {describe_budget(check.budget)}: {check.would()}. Nothing was rented.",
                severity="error",
            )
            return
        self.renting = True
        self.failure = None
        self.show_state()
        self.submit(request, self)

    @on(Button.Pressed, "#rent-cancel")
    def action_cancel(self) -> None:
        """Close the dialog; a rental already confirmed goes on (its outcome is a toast)."""
        self.dismiss()
