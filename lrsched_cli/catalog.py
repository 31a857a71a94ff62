"""What a config may name: every scheduler, optimizer, model and dataset, with parameters,
defaults and a one-line description (torch's own signatures and docstrings for torch classes)."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass

from lrsched_cli import registry, schedule_kinds
from lrsched_cli.signatures import accepted_arguments

KINDS = ("schedulers", "optimizers", "models", "datasets")


@dataclass(frozen=True)
class Entry:
    name: str
    parameters: str  # "step_size, gamma=0.1"; required ones without a default
    description: str


def list_entries(kind: str) -> list[Entry]:
    """The entries of one kind, sorted by name."""
    if kind == "schedulers":
        entries = [
            _scheduler_entry(name, target)
            for name, target in schedule_kinds.schedule_names().items()
        ]
        entries.append(Entry("none", "", "a constant lr: the optimizer's own"))
    elif kind == "optimizers":
        entries = [_entry(name, cls) for name, cls in registry.optimizer_classes().items()]
    elif kind == "models":
        from lrsched_cli.models import MODELS

        entries = [_entry(n, s.build, skip=2, text=s.description) for n, s in MODELS.items()]
    else:
        from lrsched_cli.data import DATASETS

        entries = [_entry(n, s.load, skip=1, text=s.description) for n, s in DATASETS.items()]
    return sorted(entries, key=lambda entry: entry.name.lower())


def _scheduler_entry(name: str, target) -> Entry:
    """Its signature (torch's class, or the factory lrsched builds it with), plus what lrsched
    adds: nested blocks, expressions, the interval."""
    entry = _entry(name, target)
    spec = schedule_kinds.kind(name)
    parameters = entry.parameters.replace("lr_lambda", "lr_lambda (an expression in epoch)")
    if spec.length_key:  # filled in from the run unless the config gives it
        parameters = re.sub(
            rf"\b{spec.length_key}(=None)?(?=,|$)", f"{spec.length_key}=(from the run)", parameters
        )
    if spec.composite:
        parameters = ", ".join(p for p in ("schedulers: [blocks]", parameters) if p)
    notes = {"step": "; stepped per optimizer step", "epoch": ""}[spec.interval]
    if spec.needs_metric:
        notes = "; fed the monitored metric each epoch"
    return Entry(name, parameters, entry.description + notes)


def _entry(name: str, target, skip: int | None = None, text: str | None = None) -> Entry:
    if skip is None:
        params = accepted_arguments(target).values()
    else:
        params = list(inspect.signature(target).parameters.values())[skip:]
    parameters = ", ".join(
        p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
        for p in params
    )
    return Entry(name, parameters, text or _first_sentence(inspect.getdoc(target) or ""))


def _first_sentence(doc: str) -> str:
    paragraph = " ".join(doc.strip().split("\n\n")[0].split())
    return paragraph.split(". ")[0].rstrip(".")[:120]
