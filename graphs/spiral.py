"""SPIRAL: one model plays both seats of zero-sum games against itself; each move is a sample.

Paper: Liu et al., "SPIRAL: Self-Play on Zero-Sum Games Incentivizes Reasoning via
Multi-Agent Multi-Turn Reinforcement Learning" (2025). Games come from `agentplay.games`
(tic-tac-toe, Kuhn poker, a simple negotiation); episode i plays `games[i % len(games)]`.
Seat s is the role ``player_s``: every move is one RoleTurn of its seat's role, the
environment parses and validates it, and an illegal move (or an answer naming none)
ends the game as that seat's loss.

Rewards: every turn of seat s gets the game's outcome for s,

    R_s = +1 win, -1 loss, 0 draw          (Kuhn poker: the sign of the chips won)
    illegal move: the mover -1, the other seat `illegal_opponent_reward` (0 by default:
    winning by the opponent's mistake teaches nothing about the game)

Advantages: SPIRAL's role-conditioned advantage estimation (RAE), per role p and game G,

    A_p(τ) = R_p(τ) - b_{G,p}
    b_{G,p} <- α b_{G,p} + (1 - α) R_p(τ)      after each game, α = `rae_decay` (0.95)

kept across iterations and saved in checkpoints (`agentplay.Advantage.rae`); it removes
the bias of the first mover's advantage that a shared baseline would leave. Samples with
an advantage of exactly 0 are dropped (SPIRAL's filter).

Evaluation: `opponent="random"` or `"fixed"` lets a non-model policy (uniform random legal
move, or the game's fixed strategy) play one seat; the model plays seat i % 2 of episode i,
and the metrics ``win`` / ``draw`` / ``loss`` / ``illegal`` are the model's.

    agentplay train spiral --set games='["kuhn_poker"]'
    agentplay run spiral --set opponent='"fixed"' --episodes 100
"""

from __future__ import annotations

import random
from functools import partial
from typing import Any, Literal, TypedDict

from langgraph.graph import END, START, StateGraph
from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentplay import Advantage, EpisodeContext, EpisodeView, GroupBy, Recipe, Role
from agentplay.games import GAMES, FixedPolicy, Match, Policy, RandomPolicy
from agentplay.models import DEFAULT_MODEL_SPEC, SamplingParams
from agentplay.prompts import load_prompt
from agentplay.traces import RewardRecord, RoleTurn

__all__ = ["SpiralConfig", "SpiralState", "build", "metrics", "next_node", "seat_reward"]

SEATS = 2


# -- config ------------------------------------------------------------------------------------

class SpiralConfig(BaseModel):
    """Options of `build()`; each can be passed as a keyword or ``--set name=value`` (JSON)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    games: list[str] = Field(default_factory=lambda: ["tic_tac_toe", "kuhn_poker", "negotiation"], min_length=1)
    """Games played in turn (episode i plays games[i % len(games)]); names from `agentplay.games.GAMES`."""
    rae_decay: float = Field(0.95, gt=0.0, lt=1.0)
    """α of the RAE baselines."""
    illegal_opponent_reward: float = 0.0
    """What the other seat gets when a seat loses by an illegal move."""
    opponent: Literal["random", "fixed"] | None = None
    """Evaluation: a non-model policy plays one seat (None: the model plays both)."""
    max_tokens: int = Field(128, ge=1)
    """Tokens per move (thinking plus the bracketed move)."""
    temperature: float = Field(1.0, ge=0.0, le=5.0)

    @field_validator("games")
    @classmethod
    def _known(cls, games: list[str]) -> list[str]:
        unknown = [g for g in games if g not in GAMES]
        if unknown:
            raise ValueError(f"unknown game(s) {unknown}; games: {', '.join(sorted(GAMES))}")
        return games


# -- state -------------------------------------------------------------------------------------

class SpiralState(TypedDict, total=False):
    match: Match
    """The game in progress (rules, state, moves so far, how it ended)."""
    rng: random.Random
    """The episode's seeded rng (deals, the policy's choices): an episode replays exactly."""
    policy_seat: int | None
    """The seat a non-model policy plays (evaluation), else None."""
    episode_metadata: dict[str, Any]
    """`env` (the game: RAE's baseline key), the moves and the outcome per seat."""


# -- prompts -----------------------------------------------------------------------------------

PLAYER_SYSTEM = load_prompt(__file__, "spiral/player_system.jinja")
"""Variables: `game`, `rules`, `example`."""
PLAYER_USER = load_prompt(__file__, "spiral/player_user.jinja")
"""Variables: `observation`, `legal`."""

_SHOWN_MOVES = 12


def _variables(match: Match, seat: int) -> dict[str, Any]:
    game, legal = match.game, match.game.legal_moves(match.state)
    shown = " ".join(legal[:_SHOWN_MOVES]) + (" ..." if len(legal) > _SHOWN_MOVES else "")
    return {"game": game.name.replace("_", " "), "rules": game.rules(), "example": legal[0],
            "observation": game.observe(match.state, seat), "legal": shown}


# -- rewards -----------------------------------------------------------------------------------

def seat_reward(turn: RoleTurn, state: dict[str, Any], episode: EpisodeView | None, *,
                cfg: SpiralConfig) -> RewardRecord:
    """The game's outcome for the turn's seat: +1 / -1 / 0, the illegal mover -1."""
    match: Match = state["match"]
    seat = int(turn.role.rsplit("_", 1)[1])
    outcome = match.outcome(seat)
    value = {"win": 1.0, "loss": -1.0, "draw": 0.0, "illegal": -1.0,
             "opponent_illegal": cfg.illegal_opponent_reward}[outcome]
    return RewardRecord(value=value, reason=f"{match.game.name}: {outcome} ({match.reason})",
                        components={"payoff": match.payoff(seat), "illegal": float(outcome == "illegal")})


def metrics(state: dict[str, Any], turns: list[RoleTurn]) -> dict[str, float]:
    """Moves, illegal endings and draws; against a policy, the model's win / draw / loss / illegal."""
    match: Match = state["match"]
    out = {"moves": float(len(match.moves)), "illegal_end": float(match.illegal_by is not None),
           "draw": float(match.outcome(0) == "draw")}
    model_seat = None if state.get("policy_seat") is None else 1 - state["policy_seat"]
    if model_seat is None:
        out["seat0_win"] = float(match.outcome(0) in ("win", "opponent_illegal"))
    else:
        mine = match.outcome(model_seat)
        out.update({"win": float(mine in ("win", "opponent_illegal")), "loss": float(mine in ("loss", "illegal")),
                    "illegal": float(mine == "illegal")})
    return out


def next_node(state: dict[str, Any]) -> str:
    """Who moves next: a seat's node, the policy's, or the end."""
    match: Match = state["match"]
    if match.over:
        return END
    seat = match.to_move
    return "policy" if seat == state.get("policy_seat") else f"seat_{seat}"


# -- build: roles, nodes, graph ----------------------------------------------------------------

def build(model: str = DEFAULT_MODEL_SPEC, **options: Any) -> Recipe:
    """The SPIRAL recipe (options: `SpiralConfig`)."""
    cfg = SpiralConfig(**options)
    sampling = SamplingParams(max_tokens=cfg.max_tokens, temperature=cfg.temperature)
    players = [Role(name=f"player_{s}", model=model, system_prompt=PLAYER_SYSTEM, user_template=PLAYER_USER,
                    sampling=sampling) for s in range(SEATS)]
    policy: Policy | None = {"random": RandomPolicy(), "fixed": FixedPolicy(), None: None}[cfg.opponent]

    def initial_state(ctx: EpisodeContext) -> SpiralState:
        game = GAMES[cfg.games[ctx.index % len(cfg.games)]]()
        return {"match": Match.start(game, ctx.rng), "rng": ctx.rng,
                "policy_seat": None if policy is None else 1 - ctx.index % SEATS}

    def finish(match: Match) -> dict[str, Any]:
        return {"match": match, "episode_metadata": {
            "env": match.game.name, "moves": [m.move or f"(none: {str(m.text)[:40]!r})" for m in match.moves],
            "outcome": [match.outcome(s) for s in range(SEATS)] if match.over else None}}

    async def play(state: SpiralState, *, seat: int) -> dict[str, Any]:
        match = state["match"]
        turn = await players[seat].run(variables=_variables(match, seat))
        match.play(seat, turn.output if isinstance(turn.output, str) else None, turn_id=turn.turn_id)
        return finish(match)

    async def policy_move(state: SpiralState) -> dict[str, Any]:
        match = state["match"]
        assert policy is not None
        seat = match.to_move
        match.play(seat, None, parsed=policy.choose(match.game, match.state, state["rng"]))
        return finish(match)

    graph = StateGraph(SpiralState)
    nodes = [f"seat_{s}" for s in range(SEATS)] + ["policy"]
    for s in range(SEATS):
        graph.add_node(f"seat_{s}", partial(play, seat=s))
    graph.add_node("policy", policy_move)
    graph.add_conditional_edges(START, next_node, [*nodes, END])
    for node in nodes:
        graph.add_conditional_edges(node, next_node, [*nodes, END])

    rae = Advantage.rae(decay=cfg.rae_decay, env_key="env")
    longest = max(GAMES[g].max_moves for g in cfg.games)
    return Recipe(
        name="spiral",
        graph=graph,
        roles={f"seat_{s}": players[s] for s in range(SEATS)},
        rewards={p.name: partial(seat_reward, cfg=cfg) for p in players},
        groups={p.name: GroupBy.episode() for p in players},
        advantages={p.name: rae for p in players},
        initial_state=initial_state,
        metrics=metrics,
        headline_metrics=["illegal_end", "draw"],
        zero_on_parse_error=False,  # an answer naming no move is an illegal move: the game's verdict
        recursion_limit=2 * longest + 10,
        options={"model": model, **cfg.model_dump()},
    )
