"""The one nemesis interface (inject / heal, usable as a context manager) and the registry of nemeses by fault kind.

A subclass names the fault kinds it injects in ``kinds`` and builds itself for one fault in :meth:`Nemesis.for_fault`
from what the run offers (:class:`FaultContext`); defining the class registers it. What each kind is (its family,
default duration, whether Kubernetes offers it) is its row in :data:`ttg.faults.KINDS`.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from ttg.broker import Broker
    from ttg.faults import FaultSpec
    from ttg.nemesis.proxy import FaultProxy
    from ttg.plan import ChunkPlan
    from ttg.runtimes import Runtime
    from ttg.servers import PrivateServer

BUILDERS: dict[str, type[Nemesis]] = {}  # fault kind -> the nemesis class that injects it


@dataclass(frozen=True)
class FaultContext:
    """What a run offers a nemesis to act on. A nemesis that needs what is not there raises FaultNotInjected."""

    runtime: Runtime
    last_result: Mapping[str, float] = field(default_factory=dict)  # worker id -> when it last delivered (or how much)
    server: PrivateServer | None = None  # the private broker TTG started; None on a broker of the user's
    proxies: Mapping[str, FaultProxy] = field(default_factory=dict)  # worker id -> its fault proxy to the broker
    rng: random.Random = field(default_factory=lambda: random.Random(0))  # seeded by the run: a random target replays
    run: tuple[Broker, ChunkPlan] | None = None  # the run's broker connection and plan
    hit: Collection[str] = ()  # workers an earlier fault already stopped: no later fault picks them
    own_process: bool = False  # the coordinator is a `ttg run` process of its own, which may be signalled


class Nemesis(ABC):
    kinds: ClassVar[tuple[str, ...]] = ()  # the fault kinds this class injects; registered when the class is defined
    kind: str
    target: str = ""

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        for kind in cls.__dict__.get("kinds", ()):
            if kind in BUILDERS:
                raise TypeError(f"fault kind {kind!r} has two nemeses: {BUILDERS[kind].__name__} and {cls.__name__}")
            BUILDERS[kind] = cls
        if len(cls.__dict__.get("kinds", ())) == 1:
            cls.kind = cls.kinds[0]

    @classmethod
    def for_fault(cls, spec: FaultSpec, ctx: FaultContext) -> Nemesis:
        """The nemesis that injects ``spec`` into the run ``ctx`` describes; FaultNotInjected when it lacks what is needed."""
        raise NotImplementedError(f"{cls.__name__} lists kinds but does not build itself")

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
