"""Kuhn poker: three cards (J < Q < K), one each, an ante of 1, one round of betting with bets of 1.

Seat 0 acts first: [check] or [bet]. Facing a bet a player may [call] or [fold];
after a check the other may [check] (showdown) or [bet]. The higher card wins the
pot at a showdown. Payoffs are chips won or lost (+-1 or +-2), zero-sum.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

from ._base import Game, IllegalMove

__all__ = ["KuhnPoker", "KuhnState"]

CARDS = ("J", "Q", "K")
_TERMINAL = {("check", "check"), ("bet", "call"), ("bet", "fold"), ("check", "bet", "call"), ("check", "bet", "fold")}
_PAST = {"check": "checked", "bet": "bet 1 chip", "call": "called", "fold": "folded"}


@dataclass(frozen=True)
class KuhnState:
    cards: tuple[str, str]
    """The card of seat 0 and of seat 1 (each sees only its own)."""
    history: tuple[str, ...] = ()
    """Actions so far, seat 0 first, alternating."""


class KuhnPoker(Game):
    name: ClassVar[str] = "kuhn_poker"
    max_moves: ClassVar[int] = 3

    def new(self, rng: random.Random) -> KuhnState:
        c0, c1 = rng.sample(CARDS, 2)
        return KuhnState(cards=(c0, c1))

    def to_move(self, state: KuhnState) -> int:
        return len(state.history) % 2

    def is_over(self, state: KuhnState) -> bool:
        return state.history in _TERMINAL

    def legal_moves(self, state: KuhnState) -> list[str]:
        if self.is_over(state):
            return []
        facing_bet = bool(state.history) and state.history[-1] == "bet"
        return ["[call]", "[fold]"] if facing_bet else ["[check]", "[bet]"]

    def apply(self, state: KuhnState, move: str) -> KuhnState:
        self.check(state, move)
        return KuhnState(cards=state.cards, history=(*state.history, move[1:-1]))

    def returns(self, state: KuhnState) -> list[float]:
        if not self.is_over(state):
            raise IllegalMove("kuhn_poker: the hand is not over")
        h = state.history
        if h[-1] == "fold":
            folder = (len(h) - 1) % 2
            return [-1.0, 1.0] if folder == 0 else [1.0, -1.0]
        stake = 2.0 if "bet" in h else 1.0
        seat0_wins = CARDS.index(state.cards[0]) > CARDS.index(state.cards[1])
        return [stake, -stake] if seat0_wins else [-stake, stake]

    def pot(self, state: KuhnState) -> int:
        return 2 + sum(1 for a in state.history if a in ("bet", "call"))

    def observe(self, state: KuhnState, seat: int) -> str:
        said = [f"player {i % 2} {_PAST[a]}" for i, a in enumerate(state.history)]
        return (f"You are player {seat}. Your card: {state.cards[seat]}. Pot: {self.pot(state)} chips.\n"
                f"So far: {', '.join(said) if said else 'nothing (you act first)'}.")

    def rules(self) -> str:
        return ("Kuhn poker with three cards, J < Q < K. Each player antes 1 chip and gets one card. Player 0 acts "
                "first: [check] or [bet] (1 chip). Facing a bet you may [call] or [fold]; after a check you may "
                "[check] or [bet]. If nobody folds, the higher card wins the pot.")

    def fixed_move(self, state: KuhnState) -> str:
        """Bet or call with the K, call with the Q, fold the J to a bet; otherwise check."""
        card = state.cards[self.to_move(state)]
        if "[call]" in self.legal_moves(state):
            return "[fold]" if card == "J" else "[call]"
        return "[bet]" if card == "K" else "[check]"
