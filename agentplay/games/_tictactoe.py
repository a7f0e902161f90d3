"""Tic-tac-toe: seat 0 plays X and moves first; a move names a free cell, [0] to [8]."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import ClassVar

from ._base import Game, IllegalMove

__all__ = ["TicTacToe", "TicTacToeState"]

_LINES = ((0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6))
_MARKS = ("X", "O")


@dataclass(frozen=True)
class TicTacToeState:
    board: tuple[str, ...] = ("",) * 9
    """Cell 0..8 (row by row): "X", "O" or "" (free)."""

    @property
    def mover(self) -> int:
        return sum(1 for c in self.board if c) % 2

    def winner(self) -> int | None:
        for a, b, c in _LINES:
            if self.board[a] and self.board[a] == self.board[b] == self.board[c]:
                return _MARKS.index(self.board[a])
        return None


class TicTacToe(Game):
    name: ClassVar[str] = "tic_tac_toe"
    max_moves: ClassVar[int] = 9

    def new(self, rng: random.Random) -> TicTacToeState:
        return TicTacToeState()

    def to_move(self, state: TicTacToeState) -> int:
        return state.mover

    def is_over(self, state: TicTacToeState) -> bool:
        return state.winner() is not None or all(state.board)

    def legal_moves(self, state: TicTacToeState) -> list[str]:
        if self.is_over(state):
            return []
        return [f"[{i}]" for i, c in enumerate(state.board) if not c]

    def apply(self, state: TicTacToeState, move: str) -> TicTacToeState:
        self.check(state, move)
        cell = int(move[1:-1])
        board = list(state.board)
        board[cell] = _MARKS[state.mover]
        return TicTacToeState(tuple(board))

    def check(self, state: TicTacToeState, move: str) -> None:
        if self.is_over(state):
            raise IllegalMove("tic_tac_toe: the game is over; no move is legal")
        body = move[1:-1] if move.startswith("[") and move.endswith("]") else ""
        if not (body.isdigit() and len(body) == 1 and int(body) <= 8):
            raise IllegalMove(f"tic_tac_toe: {move} is not a cell; name a cell [0] to [8]")
        if state.board[int(body)]:
            raise IllegalMove(f"tic_tac_toe: cell {body} is taken by {state.board[int(body)]}; "
                              f"free: {' '.join(self.legal_moves(state))}")

    def returns(self, state: TicTacToeState) -> list[float]:
        w = state.winner()
        return [0.0, 0.0] if w is None else [1.0, -1.0] if w == 0 else [-1.0, 1.0]

    def observe(self, state: TicTacToeState, seat: int) -> str:
        rows = [" | ".join(state.board[r * 3 + c] or str(r * 3 + c) for c in range(3)) for r in range(3)]
        return (f"You play {_MARKS[seat]}. The board (numbers are free cells):\n" + "\n".join(rows))

    def rules(self) -> str:
        return ("Tic-tac-toe on cells 0 to 8. X moves first, then players alternate. Three of your marks in a "
                "row, column or diagonal wins; a full board without a line is a draw. Move by naming a free cell, "
                "for example [4].")

    def fixed_move(self, state: TicTacToeState) -> str:
        """Win if possible, else block the opponent's line, else centre, corners, edges."""
        me, them = _MARKS[state.mover], _MARKS[1 - state.mover]
        for mark in (me, them):
            for line in _LINES:
                cells = [state.board[i] for i in line]
                if cells.count(mark) == 2 and cells.count("") == 1:
                    return f"[{line[cells.index('')]}]"
        for cell in (4, 0, 2, 6, 8, 1, 3, 5, 7):
            if not state.board[cell]:
                return f"[{cell}]"
        raise IllegalMove("tic_tac_toe: the board is full")
