"""Multi-turn environments with seats: turn-based games a model plays against itself or a policy.

    from agentplay.games import GAMES, Match, RandomPolicy

    game = GAMES["kuhn_poker"]()
    match = Match.start(game, rng)
    while not match.over:
        seat = match.to_move
        match.play(seat, answer_text)     # parsed and validated; an illegal move ends the game
    match.outcome(0)                      # "win" | "loss" | "draw" | "illegal" | "opponent_illegal"

`graphs/spiral.py` is the recipe that trains on them (one model, one role per seat).
"""

from ._base import (
    FixedPolicy,
    Game,
    IllegalMove,
    Match,
    MoveRecord,
    Outcome,
    Policy,
    RandomPolicy,
    parse_move,
)
from ._kuhn import KuhnPoker, KuhnState
from ._negotiation import Negotiation, NegotiationState, Offer
from ._tictactoe import TicTacToe, TicTacToeState

GAMES: dict[str, type[Game]] = {g.name: g for g in (TicTacToe, KuhnPoker, Negotiation)}
"""Game name -> class, for recipes and the CLI (``--set game=kuhn_poker``)."""

__all__ = [
    "GAMES",
    "FixedPolicy",
    "Game",
    "IllegalMove",
    "KuhnPoker",
    "KuhnState",
    "Match",
    "MoveRecord",
    "Negotiation",
    "NegotiationState",
    "Offer",
    "Outcome",
    "Policy",
    "RandomPolicy",
    "TicTacToe",
    "TicTacToeState",
    "parse_move",
]
