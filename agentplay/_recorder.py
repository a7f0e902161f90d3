"""The episode being recorded, reachable from any node without threading it through state.

`run_episode` sets a context variable; asyncio copies context into every task
LangGraph starts (``Send`` fan-out included), so a `Role` running anywhere in
the graph appends its turn to the right episode even with many episodes in
flight at once. The recorder object itself is shared (not copied), which is
what makes appends from child tasks visible to the parent.
"""

from __future__ import annotations

import hashlib
import random
from contextvars import ContextVar
from dataclasses import dataclass, field

from agentplay.traces import RoleTurn


def derive_seed(*parts: object) -> int:
    """A stable 31-bit seed from any parts (same parts, same seed, on every machine)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


@dataclass
class EpisodeContext:
    """What a recipe knows about the episode it is building (given to `initial_state`)."""

    index: int
    """Position in the run, 0..N-1."""
    seed: int
    """Per-episode seed derived from the run seed and `index`: resume reproduces it."""
    run_id: str = ""
    recipe: str = ""
    group_seed: int | None = None
    """Shared by the k episodes of one `GroupBy.seed(k)` block (e.g. to pick the same target)."""
    group_block: int | None = None
    """Which block of k episodes this one belongs to."""
    rng: random.Random = field(init=False)
    """Seeded with `seed`: use it for every random choice so an episode is reproducible."""
    group_rng: random.Random = field(init=False)
    """Seeded with `group_seed` (or `seed`): the same draws in every episode of a block."""

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.group_rng = random.Random(self.seed if self.group_seed is None else self.group_seed)


@dataclass
class EpisodeRecorder:
    """Collects the RoleTurns of one episode as roles finish."""

    ctx: EpisodeContext
    turns: list[RoleTurn] = field(default_factory=list)
    _calls: int = 0

    def add(self, turn: RoleTurn) -> None:
        self.turns.append(turn)

    def next_sampling_seed(self, role: str) -> int:
        """A per-call seed so temperature>0 sampling is reproducible for a given episode seed."""
        self._calls += 1
        return derive_seed(self.ctx.seed, role, self._calls)


_CURRENT: ContextVar[EpisodeRecorder | None] = ContextVar("agentplay_episode", default=None)


def current_recorder() -> EpisodeRecorder | None:
    return _CURRENT.get()


def current_episode() -> EpisodeContext | None:
    """The context of the episode running in this task, or None outside `run_episode`."""
    rec = _CURRENT.get()
    return rec.ctx if rec else None
