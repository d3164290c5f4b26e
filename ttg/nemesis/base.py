"""The one nemesis interface: inject / heal, usable as a context manager."""

from __future__ import annotations

from abc import ABC, abstractmethod


class Nemesis(ABC):
    kind: str
    target: str = ""

    @abstractmethod
    def inject(self) -> None: ...

    def heal(self) -> None:  # noqa: B027 - optional hook: a kill has nothing to undo, a pause does
        """Undo the fault. A worker kill cannot be undone: the run's survivors take over. Safe to call twice."""

    def evidence(self) -> str:
        """What shows the fault really happened (for the run record); empty when nothing does, and then the run
        records the fault as "not injected" rather than recovered from."""
        return ""

    def __enter__(self) -> Nemesis:
        self.inject()
        return self

    def __exit__(self, *exc: object) -> None:
        self.heal()
