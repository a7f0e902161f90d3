"""Turn-based games with seats: the environment side of multi-turn self-play.

A `Game` is pure rules over immutable states: who moves, which moves are legal,
what a move does, what each seat sees and what each seat scores at the end. A
`Match` is one game being played: it takes each seat's answer text, parses and
validates the move, and ends the game with the mover's loss at the first illegal
move (SPIRAL's rule), so a model can never act outside the rules. Policies that
are not models (a random and a fixed strategy) play through the same `Match`,
which is how a recipe evaluates against them.

Written here rather than taken from TextArena: its environments run a game loop
of their own around an agent callback, while a LangGraph recipe needs each move
as its own node step (one RoleTurn per move) with the state in the graph.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol

from agentplay.errors import AgentplayError

__all__ = ["FixedPolicy", "Game", "IllegalMove", "Match", "MoveRecord", "Outcome", "Policy", "RandomPolicy",
           "parse_move"]

Outcome = Literal["win", "loss", "draw", "illegal", "opponent_illegal"]
"""How a game ended for one seat; `illegal`: this seat made the illegal move that ended it."""

_BRACKETED = re.compile(r"\[([^\[\]\n]{1,80})\]")


class IllegalMove(AgentplayError, ValueError):
    """A move the rules do not allow in this state (the message says why and what is legal)."""


def parse_move(text: str | None) -> str:
    """The move an answer names, in canonical form ``[words]`` (lower case, single spaces).

    The last bracketed chunk wins (models often think aloud first); an answer of at
    most five words without brackets is taken whole. Raises ValueError when the
    answer names no move, which a Role records as a parse error.
    """
    text = (text or "").strip()
    found = _BRACKETED.findall(text)
    if found:
        body = found[-1]
    elif text and len(text.split()) <= 5:
        body = text.strip(".!").strip()
    else:
        raise ValueError("no move in brackets, e.g. [4] or [check]")
    body = " ".join(body.lower().split())
    if not body:
        raise ValueError("empty move")
    return f"[{body}]"


class Game(ABC):
    """The rules of a turn-based game for `seats` players over immutable states."""

    name: ClassVar[str]
    """Short identifier (the environment key of RAE baselines, e.g. ``tic_tac_toe``)."""
    seats: ClassVar[int] = 2
    max_moves: ClassVar[int]
    """Most moves one game can take (bounds the graph's recursion)."""

    @abstractmethod
    def new(self, rng: random.Random) -> Any:
        """A fresh state (chance events such as a deal are drawn from `rng`)."""

    @abstractmethod
    def to_move(self, state: Any) -> int:
        """The seat that moves next (only asked while the game is not over)."""

    @abstractmethod
    def legal_moves(self, state: Any) -> list[str]:
        """Every legal move, canonical form, in a fixed order."""

    @abstractmethod
    def apply(self, state: Any, move: str) -> Any:
        """The state after `move` by the seat to move; raises IllegalMove when not legal."""

    @abstractmethod
    def is_over(self, state: Any) -> bool:
        """True when nobody moves any more."""

    @abstractmethod
    def returns(self, state: Any) -> list[float]:
        """Each seat's payoff at the end (zero-sum: they add up to 0)."""

    @abstractmethod
    def observe(self, state: Any, seat: int) -> str:
        """What `seat` sees: the public state plus its own private information."""

    @abstractmethod
    def rules(self) -> str:
        """The rules in a few sentences, for the players' prompt."""

    @abstractmethod
    def fixed_move(self, state: Any) -> str:
        """A fixed, reasonable strategy for evaluation (e.g. win, else block, else centre)."""

    def check(self, state: Any, move: str) -> None:
        """Raise IllegalMove unless `move` is legal now (the message lists the legal ones)."""
        if self.is_over(state):
            raise IllegalMove(f"{self.name}: the game is over; no move is legal")
        legal = self.legal_moves(state)
        if move not in legal:
            shown = " ".join(legal) if len(legal) <= 12 else " ".join(legal[:12]) + " ..."
            raise IllegalMove(f"{self.name}: {move} is not legal here; legal: {shown}")


class Policy(Protocol):
    """A player that is not a model (an evaluation opponent)."""

    name: str

    def choose(self, game: Game, state: Any, rng: random.Random) -> str:
        """The move to play in `state` (canonical form)."""


@dataclass
class RandomPolicy:
    """Plays a uniformly random legal move (SPIRAL's random opponent)."""

    name: str = "random"

    def choose(self, game: Game, state: Any, rng: random.Random) -> str:
        return rng.choice(game.legal_moves(state))


@dataclass
class FixedPolicy:
    """Plays the game's own fixed strategy (`Game.fixed_move`)."""

    name: str = "fixed"

    def choose(self, game: Game, state: Any, rng: random.Random) -> str:
        return game.fixed_move(state)


@dataclass
class MoveRecord:
    """One move as the match saw it."""

    seat: int
    text: str | None
    """What the player answered (None when a policy moved or the answer named no move)."""
    move: str | None
    """The canonical move, or None when no move could be read."""
    legal: bool
    turn_id: str | None = None
    """The RoleTurn that made it (None for policies)."""


@dataclass
class Match:
    """One game in progress: the state, the moves so far, and how it ended."""

    game: Game
    state: Any
    moves: list[MoveRecord] = field(default_factory=list)
    illegal_by: int | None = None
    """The seat whose illegal move ended the game."""
    reason: str = ""
    """Why the game ended (the rules' verdict, or the illegal move and why)."""

    @classmethod
    def start(cls, game: Game, rng: random.Random) -> Match:
        return cls(game=game, state=game.new(rng))

    @property
    def over(self) -> bool:
        return self.illegal_by is not None or self.game.is_over(self.state)

    @property
    def to_move(self) -> int:
        if self.over:
            raise IllegalMove(f"{self.game.name}: the game is over; nobody moves")
        return self.game.to_move(self.state)

    def play(self, seat: int, answer: str | None, *, turn_id: str | None = None, parsed: str | None = None) -> bool:
        """Play `seat`'s answer (text, or `parsed` if already parsed); False when it was illegal,
        which ends the game with that seat's loss."""
        if seat != self.to_move:
            raise IllegalMove(f"{self.game.name}: seat {seat} moved out of turn (seat {self.to_move} is to move)")
        move = parsed
        if move is None:
            try:
                move = parse_move(answer)
            except ValueError as exc:
                return self._illegal(seat, answer, None, turn_id, f"seat {seat} named no move: {exc}")
        try:
            self.state = self.game.apply(self.state, move)
        except IllegalMove as exc:
            return self._illegal(seat, answer, move, turn_id, f"seat {seat}: {exc}")
        self.moves.append(MoveRecord(seat=seat, text=answer, move=move, legal=True, turn_id=turn_id))
        if self.game.is_over(self.state):
            self.reason = "game over"
        return True

    def _illegal(self, seat: int, answer: str | None, move: str | None, turn_id: str | None, why: str) -> bool:
        self.moves.append(MoveRecord(seat=seat, text=answer, move=move, legal=False, turn_id=turn_id))
        self.illegal_by, self.reason = seat, why
        return False

    def outcome(self, seat: int) -> Outcome:
        """How the game ended for `seat` (asked once it is over)."""
        if not self.over:
            raise IllegalMove(f"{self.game.name}: the game is not over yet")
        if self.illegal_by is not None:
            return "illegal" if self.illegal_by == seat else "opponent_illegal"
        mine = self.game.returns(self.state)[seat]
        return "win" if mine > 0 else "loss" if mine < 0 else "draw"

    def payoff(self, seat: int) -> float:
        """The rules' payoff for `seat` (chips in poker, +1/-1/0 elsewhere); 0 after an illegal move."""
        return 0.0 if self.illegal_by is not None else float(self.game.returns(self.state)[seat])
