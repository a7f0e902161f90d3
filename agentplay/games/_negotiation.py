"""Simple negotiation (after SPIRAL's SimpleNegotiation): trade resources valued differently in private.

Each player holds some wood, stone and gold (public) and values each unit in
private (1 to 9). On its move a player with no offer to answer may make an offer,
``[offer 2 wood for 1 gold]`` (give two wood, get one gold), or ``[pass]``; a player
facing an offer must ``[accept]`` (only if it holds what is asked) or ``[deny]``.
After `max_moves` moves the player whose holdings gained more value by its own
prices wins (zero-sum +-1, equal gains draw).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import ClassVar

from ._base import Game, IllegalMove

__all__ = ["Negotiation", "NegotiationState", "Offer"]

RESOURCES = ("wood", "stone", "gold")
_OFFER = re.compile(r"^\[offer (\d+) (\w+) for (\d+) (\w+)\]$")


@dataclass(frozen=True)
class Offer:
    by: int
    """The seat that made it."""
    give: tuple[str, int]
    """What the maker gives: (resource, units)."""
    get: tuple[str, int]
    """What the maker asks for: (resource, units)."""


@dataclass(frozen=True)
class NegotiationState:
    holdings: tuple[tuple[int, int, int], tuple[int, int, int]]
    """Units of wood, stone, gold per seat (public)."""
    values: tuple[tuple[int, int, int], tuple[int, int, int]]
    """Each seat's private value per unit of wood, stone, gold."""
    start: tuple[tuple[int, int, int], tuple[int, int, int]]
    """Holdings when the game began (gains are measured from here)."""
    pending: Offer | None = None
    moves: int = 0
    max_moves: int = 6


class Negotiation(Game):
    name: ClassVar[str] = "negotiation"
    max_moves: ClassVar[int] = 6

    def new(self, rng: random.Random) -> NegotiationState:
        holdings = tuple(tuple(rng.randint(1, 5) for _ in RESOURCES) for _ in range(2))
        values = tuple(tuple(rng.randint(1, 9) for _ in RESOURCES) for _ in range(2))
        return NegotiationState(holdings=holdings, values=values, start=holdings,  # type: ignore[arg-type]
                                max_moves=self.max_moves)

    def to_move(self, state: NegotiationState) -> int:
        return state.moves % 2

    def is_over(self, state: NegotiationState) -> bool:
        return state.moves >= state.max_moves

    def legal_moves(self, state: NegotiationState) -> list[str]:
        if self.is_over(state):
            return []
        seat = self.to_move(state)
        if state.pending is not None:
            return (["[accept]"] if self._affordable(state, state.pending) else []) + ["[deny]"]
        mine, theirs = state.holdings[seat], state.holdings[1 - seat]
        offers = [f"[offer {n} {give} for {m} {get}]"
                  for i, give in enumerate(RESOURCES) for n in range(1, mine[i] + 1)
                  for j, get in enumerate(RESOURCES) if j != i for m in range(1, theirs[j] + 1)]
        return offers + ["[pass]"]

    def _affordable(self, state: NegotiationState, offer: Offer) -> bool:
        res, units = offer.get
        return state.holdings[1 - offer.by][RESOURCES.index(res)] >= units

    def check(self, state: NegotiationState, move: str) -> None:
        if self.is_over(state):
            raise IllegalMove("negotiation: the game is over; no move is legal")
        seat = self.to_move(state)
        if state.pending is not None:
            if move == "[deny]":
                return
            if move == "[accept]":
                if not self._affordable(state, state.pending):
                    res, units = state.pending.get
                    raise IllegalMove(f"negotiation: cannot accept, the offer asks for {units} {res} and you hold "
                                      f"{state.holdings[seat][RESOURCES.index(res)]}")
                return
            raise IllegalMove(f"negotiation: answer the pending offer with [accept] or [deny], not {move}")
        if move == "[pass]":
            return
        found = _OFFER.match(move)
        if not found:
            raise IllegalMove(f"negotiation: {move} is not a move; use [offer N resource for M resource] or [pass]")
        n, give, m, get = int(found.group(1)), found.group(2), int(found.group(3)), found.group(4)
        if give not in RESOURCES or get not in RESOURCES or give == get:
            raise IllegalMove(f"negotiation: trade two different resources of {', '.join(RESOURCES)}, not {move}")
        if not 1 <= n <= state.holdings[seat][RESOURCES.index(give)]:
            raise IllegalMove(f"negotiation: you hold {state.holdings[seat][RESOURCES.index(give)]} {give}, "
                              f"cannot give {n}")
        if not 1 <= m <= state.holdings[1 - seat][RESOURCES.index(get)]:
            raise IllegalMove(f"negotiation: the other player holds {state.holdings[1 - seat][RESOURCES.index(get)]} "
                              f"{get}, cannot ask for {m}")

    def apply(self, state: NegotiationState, move: str) -> NegotiationState:
        self.check(state, move)
        seat, holdings, pending = self.to_move(state), [list(h) for h in state.holdings], None
        if move == "[accept]":
            assert state.pending is not None
            (give, n), (get, m), maker = state.pending.give, state.pending.get, state.pending.by
            holdings[maker][RESOURCES.index(give)] -= n
            holdings[1 - maker][RESOURCES.index(give)] += n
            holdings[1 - maker][RESOURCES.index(get)] -= m
            holdings[maker][RESOURCES.index(get)] += m
        elif move.startswith("[offer"):
            found = _OFFER.match(move)
            assert found is not None
            pending = Offer(by=seat, give=(found.group(2), int(found.group(1))), get=(found.group(4), int(found.group(3))))
        return NegotiationState(holdings=tuple(tuple(h) for h in holdings), values=state.values,  # type: ignore[arg-type]
                                start=state.start, pending=pending, moves=state.moves + 1, max_moves=state.max_moves)

    def gain(self, state: NegotiationState, seat: int) -> int:
        """Value gained by `seat` at its own prices since the start."""
        return sum(v * (now - then) for v, now, then in zip(state.values[seat], state.holdings[seat], state.start[seat]))

    def returns(self, state: NegotiationState) -> list[float]:
        g0, g1 = self.gain(state, 0), self.gain(state, 1)
        return [0.0, 0.0] if g0 == g1 else [1.0, -1.0] if g0 > g1 else [-1.0, 1.0]

    def observe(self, state: NegotiationState, seat: int) -> str:
        def show(units: tuple[int, ...]) -> str:
            return ", ".join(f"{u} {r}" for r, u in zip(RESOURCES, units))

        lines = [f"You are player {seat}. You hold {show(state.holdings[seat])}.",
                 f"Your private value per unit: {show(state.values[seat])}.",
                 f"The other player holds {show(state.holdings[1 - seat])}.",
                 f"Moves left in the game: {state.max_moves - state.moves}."]
        if state.pending is not None and state.pending.by != seat:
            (give, n), (get, m) = state.pending.give, state.pending.get
            lines.append(f"Offer to you: they give {n} {give} for {m} {get}. Answer [accept] or [deny].")
        return "\n".join(lines)

    def rules(self) -> str:
        return ("Negotiation over wood, stone and gold. Each player values the resources differently and in private. "
                "On your move make an offer such as [offer 2 wood for 1 gold] (you give 2 wood, you get 1 gold) or "
                "[pass]; when an offer is made to you, reply [accept] or [deny]. At the end, the player whose "
                "holdings gained more value by their own prices wins.")

    def fixed_move(self, state: NegotiationState) -> str:
        """Accept offers that gain value at its own prices; offer 1 of its cheapest for 1 of its dearest."""
        seat = self.to_move(state)
        values = state.values[seat]
        if state.pending is not None:
            (give, n), (get, m) = state.pending.give, state.pending.get
            gain = n * values[RESOURCES.index(give)] - m * values[RESOURCES.index(get)]
            return "[accept]" if gain > 0 and self._affordable(state, state.pending) else "[deny]"
        order = sorted(range(len(RESOURCES)), key=lambda i: values[i])
        cheap, dear = order[0], order[-1]
        if values[cheap] < values[dear] and state.holdings[seat][cheap] and state.holdings[1 - seat][dear]:
            return f"[offer 1 {RESOURCES[cheap]} for 1 {RESOURCES[dear]}]"
        return "[pass]"
