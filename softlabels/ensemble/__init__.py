"""Mixing the teachers of a several-teacher cache into one target, at train time.

A cache built with several `--teacher`s (or joined with `softlabels merge --teachers`) stores each
teacher's outputs on the same views: (..., M, C). The student's target is chosen when it trains, by a
rule (`RULES`, one module each): `mean-prob` (the default), `mean-logit`, weights such as `0.7,0.3`,
or `teacher:NAME|INDEX`. A new rule is a `Rule` subclass in its own module plus one line in `RULES`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from softlabels.ensemble.base import Rule
from softlabels.ensemble.mean_logit import MeanLogit
from softlabels.ensemble.mean_prob import MeanProb
from softlabels.ensemble.member import Member
from softlabels.ensemble.weighted import Weighted

RULES: tuple[type[Rule], ...] = (MeanProb, MeanLogit, Weighted, Member)  # the first is the default
KINDS = tuple(rule.name for rule in RULES)


@dataclass(frozen=True)
class Ensemble:
    """A rule with the distillation temperature it mixes at."""

    rule: Rule = field(default_factory=MeanProb)
    temperature: float = 1.0

    @classmethod
    def parse(cls, text: str | None, names: list[str], temperature: float = 1.0) -> Ensemble:
        """The rule `text` names (default: the first of `RULES`) for a cache whose members are `names`."""
        text = (text or RULES[0].name).strip()
        for rule in RULES:
            if rule.claims(text):
                return cls(rule.parse(text, names), temperature)
        raise ValueError(
            f"unknown --ensemble {text!r}; use {', '.join(rule.form for rule in RULES)} (members: {', '.join(names)})"
        )

    def combine(self, logits: np.ndarray) -> np.ndarray:
        """(..., M, C) float32 teacher logits -> (..., C) target logits."""
        return self.rule.combine(logits, self.temperature)

    @property
    def member(self) -> int | None:
        """The one teacher this rule takes (`teacher:NAME|INDEX`), else None: embeddings are never mixed."""
        return self.rule.member if isinstance(self.rule, Member) else None


def check_form(text: str | None) -> None:
    """Refuse an `--ensemble` that no cache could take (weights `nan,1`, an unknown rule), before any data is
    read; what depends on the cache's members (their count, a teacher's name) is checked when it opens."""
    text = (text or RULES[0].name).strip()
    rule = next((rule for rule in RULES if rule.claims(text)), None)
    if rule is None:
        raise ValueError(f"unknown --ensemble {text!r}; use {', '.join(rule.form for rule in RULES)}")
    rule.check_form(text)


def check_one_teacher(text: str | None, path) -> None:
    """Refuse an `--ensemble` other than the default for the cache at `path`, which holds one teacher."""
    if text not in (None, RULES[0].name):
        raise ValueError(f"--ensemble {text}: {path} holds one teacher's outputs")


__all__ = ["Ensemble", "KINDS", "RULES", "Rule", "check_form", "check_one_teacher"]
