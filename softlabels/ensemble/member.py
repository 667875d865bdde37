"""`teacher:NAME` or `teacher:INDEX`: one member alone."""

from __future__ import annotations

import numpy as np

from softlabels.ensemble.base import Rule

PREFIX = "teacher:"


class Member(Rule):
    name = "teacher"
    form = "teacher:NAME|INDEX"

    def __init__(self, member: int):
        self.member = member

    @classmethod
    def claims(cls, text: str) -> bool:
        return text.startswith(PREFIX)

    @classmethod
    def parse(cls, text: str, names: list[str]) -> Rule:
        wanted = text[len(PREFIX) :]
        if wanted.isdigit() and int(wanted) < len(names):
            return cls(int(wanted))
        if wanted in names:
            return cls(names.index(wanted))
        members = ", ".join(f"{i}: {n}" for i, n in enumerate(names))
        raise ValueError(f"--ensemble {text}: no such teacher; members: {members}")

    def combine(self, logits: np.ndarray, temperature: float) -> np.ndarray:
        return logits[..., self.member, :]
