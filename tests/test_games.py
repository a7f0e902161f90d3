"""Game environments: exhaustive legality and payoffs, checked against numbers known independently.

Tic-tac-toe is walked through every game that can be played (255,168, a known
count with its win/loss/draw split); Kuhn poker's payoff is checked for every
terminal history of every deal against a table written out by hand.
"""

from __future__ import annotations

import random
from itertools import permutations

import pytest

from agentplay.games import (
    FixedPolicy,
    IllegalMove,
    KuhnPoker,
    KuhnState,
    Match,
    Negotiation,
    NegotiationState,
    RandomPolicy,
    TicTacToe,
    TicTacToeState,
    parse_move,
)

# every string a model could send that names no cell, or a cell out of range
_NOT_CELLS = ["[9]", "[-1]", "[10]", "[a]", "[x]", "[]", "[4 ]", "[04]", "4", "[1.0]"]


def test_every_illegal_tic_tac_toe_move_is_rejected_in_every_reachable_position():
    game = TicTacToe()
    seen: set[TicTacToeState] = set()
    games = {"x": 0, "o": 0, "draw": 0}

    def walk(state: TicTacToeState) -> None:
        if state not in seen:
            seen.add(state)
            legal = set(game.legal_moves(state))
            for cell in range(9):
                move = f"[{cell}]"
                assert (move in legal) == (not game.is_over(state) and not state.board[cell])
                if move not in legal:
                    with pytest.raises(IllegalMove):
                        game.apply(state, move)
            for move in _NOT_CELLS:
                with pytest.raises(IllegalMove):
                    game.apply(state, move)
        if game.is_over(state):
            r = game.returns(state)
            games["x" if r == [1.0, -1.0] else "o" if r == [-1.0, 1.0] else "draw"] += 1
            assert sum(r) == 0
            return
        for move in game.legal_moves(state):
            nxt = game.apply(state, move)
            assert state.board.count("") == nxt.board.count("") + 1  # apply never changes its input
            walk(nxt)

    walk(game.new(random.Random(0)))
    assert len(seen) == 5478  # reachable positions, the empty board included
    assert games == {"x": 131184, "o": 77904, "draw": 46080}  # 255,168 complete games


# seat 0's payoff for each terminal history, by who holds the higher card
_KUHN = {  # history: (payoff to seat 0 if seat 0 has the higher card, ... if lower)
    ("check", "check"): (1, -1),
    ("bet", "call"): (2, -2),
    ("bet", "fold"): (1, 1),
    ("check", "bet", "call"): (2, -2),
    ("check", "bet", "fold"): (-1, -1),
}
_ORDER = "JQK"


def test_kuhn_poker_pays_every_terminal_history_of_every_deal():
    game = KuhnPoker()
    checked = 0
    for c0, c1 in permutations(_ORDER, 2):
        for history, (if_high, if_low) in _KUHN.items():
            state = KuhnState(cards=(c0, c1))
            for i, action in enumerate(history):
                assert not game.is_over(state) and game.to_move(state) == i % 2
                state = game.apply(state, f"[{action}]")
            assert game.is_over(state) and game.legal_moves(state) == []
            expected = if_high if _ORDER.index(c0) > _ORDER.index(c1) else if_low
            assert game.returns(state) == [expected, -expected], (c0, c1, history)
            checked += 1
    assert checked == 30


def test_kuhn_poker_rejects_every_move_not_allowed_at_each_point():
    game = KuhnPoker()
    moves = ["[check]", "[bet]", "[call]", "[fold]", "[raise]", "[4]"]
    legal_at = {(): {"[check]", "[bet]"}, ("check",): {"[check]", "[bet]"}, ("bet",): {"[call]", "[fold]"},
                ("check", "bet"): {"[call]", "[fold]"}}
    for history, legal in legal_at.items():
        state = KuhnState(cards=("K", "J"), history=history)
        assert set(game.legal_moves(state)) == legal
        for move in moves:
            if move in legal:
                game.apply(state, move)
            else:
                with pytest.raises(IllegalMove):
                    game.apply(state, move)
    with pytest.raises(IllegalMove, match="over"):
        game.apply(KuhnState(cards=("K", "J"), history=("bet", "fold")), "[check]")


def _negotiation(**kw) -> NegotiationState:
    base = {"holdings": ((2, 0, 1), (1, 3, 0)), "values": ((1, 5, 9), (9, 1, 2)), "start": ((2, 0, 1), (1, 3, 0))}
    return NegotiationState(**(base | kw))


def test_negotiation_legality_trades_and_outcome():
    game = Negotiation()
    s = _negotiation()
    legal = game.legal_moves(s)
    assert "[pass]" in legal and "[offer 2 wood for 3 stone]" in legal
    # every legal offer gives what seat 0 holds and asks for what seat 1 holds, two different resources
    assert len(legal) == 1 + (2 * (3 + 0) + 1 * (1 + 3))
    for bad in ("[offer 3 wood for 1 stone]", "[offer 1 stone for 1 wood]", "[offer 1 wood for 1 gold]",
                "[offer 1 wood for 4 stone]", "[offer 1 wood for 1 wood]", "[offer 0 wood for 1 stone]",
                "[accept]", "[deny]", "[offer 1 iron for 1 stone]"):
        assert bad not in legal
        with pytest.raises(IllegalMove):
            game.apply(s, bad)
    s = game.apply(s, "[offer 2 wood for 3 stone]")
    assert game.legal_moves(s) == ["[accept]", "[deny]"]
    with pytest.raises(IllegalMove, match="answer the pending offer"):
        game.apply(s, "[pass]")
    s = game.apply(s, "[accept]")
    assert s.holdings == ((0, 3, 1), (3, 0, 0)) and sum(map(sum, s.holdings)) == 7  # conserved
    # seat 0 gained 3*5 - 2*1 = 13, seat 1 gained 2*9 - 3*1 = 15: seat 1 wins
    assert (game.gain(s, 0), game.gain(s, 1)) == (13, 15)
    for _ in range(4):
        s = game.apply(s, "[pass]")
    assert game.is_over(s) and game.returns(s) == [-1.0, 1.0] and game.legal_moves(s) == []
    # an offer asking for more than the responder holds now cannot be accepted
    short = _negotiation(holdings=((2, 0, 1), (1, 0, 0)), pending=None)
    with pytest.raises(IllegalMove, match="holds 0 stone"):
        game.apply(short, "[offer 1 wood for 1 stone]")


def test_match_parses_answers_and_an_illegal_move_loses():
    m = Match.start(TicTacToe(), random.Random(0))
    assert m.play(0, "I take the centre: [4]")
    assert not m.play(1, "[4]")  # taken
    assert m.over and m.illegal_by == 1 and "taken" in m.reason
    assert (m.outcome(0), m.outcome(1)) == ("opponent_illegal", "illegal")
    with pytest.raises(IllegalMove, match="over"):
        _ = m.to_move
    m = Match.start(KuhnPoker(), random.Random(0))
    assert not m.play(0, "I think I will wait and see what happens next here")  # names no move
    assert m.illegal_by == 0 and m.moves[0].move is None
    assert parse_move("Bet! [ Check ]") == "[check]" and parse_move("check") == "[check]"
    with pytest.raises(ValueError):
        parse_move("")


@pytest.mark.parametrize("game", [TicTacToe(), KuhnPoker(), Negotiation()], ids=lambda g: g.name)
def test_random_and_fixed_policies_only_play_legal_moves(game):
    rng = random.Random(7)
    chips = {"random": 0.0, "fixed": 0.0}
    for i in range(200):
        players = {0: RandomPolicy(), 1: FixedPolicy()} if i % 2 else {0: FixedPolicy(), 1: RandomPolicy()}
        m = Match.start(game, rng)
        while not m.over:
            seat = m.to_move
            assert m.play(seat, None, parsed=players[seat].choose(game, m.state, rng))
        assert len(m.moves) <= game.max_moves
        for seat, p in players.items():
            chips[p.name] += m.payoff(seat)
    if game.name != "negotiation":  # the fixed strategies beat chance at the board and card games
        assert chips["fixed"] > chips["random"] + 20
