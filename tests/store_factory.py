"""Realistic episodes for the trace-store tests (also imported by their writer subprocesses)."""

from __future__ import annotations

import random

from agentplay.traces import Episode, Generation, RewardRecord, RoleTurn, ToolCallRecord

WORDS = [
    "paris",
    "capital",
    "river",
    "search",
    "proof",
    "integer",
    "ocean",
    "zürich",
    "日本",
    "graph",
]


def make_turn(
    rng: random.Random, role: str, n_tokens: int, group_id: str | None, reward: float | None
) -> RoleTurn:
    prompt = [rng.randrange(50_000) for _ in range(n_tokens // 4)]
    ids = [rng.randrange(150_000) for _ in range(n_tokens)]
    mask = [1 if rng.random() < 0.7 else 0 for _ in range(n_tokens)]
    logprobs = [-rng.random() * 5 if m else 0.0 for m in mask]
    text = " ".join(rng.choice(WORDS) for _ in range(8))
    return RoleTurn(
        role=role,
        node=f"{role}_node",
        group_id=group_id,
        messages=[
            {"role": "system", "content": f"You are the {role}."},
            {"role": "user", "content": text},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "search", "arguments": '{"q": "x"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "result: " + text[:20]},
            {"role": "assistant", "content": [{"type": "text", "text": "done"}]},
        ],
        prompt_token_ids=prompt,
        token_ids=ids,
        mask=mask,
        logprobs=logprobs,
        token_exact=rng.random() < 0.9,
        generations=[
            Generation(
                prompt_token_ids=prompt,
                completion_token_ids=ids[:5],
                logprobs=logprobs[:5],
                text="g1",
                finish_reason="tool_calls",
                weight_version=3,
                model="local:smollm2",
            ),
            Generation(
                prompt_token_ids=None,
                completion_token_ids=[],
                logprobs=None,
                text="",
                finish_reason="length",
            ),
        ],
        tool_calls=[
            ToolCallRecord(
                call_id="c1",
                name="search",
                arguments={"q": text, "k": 3},
                raw_arguments='{"q":"x"}',
                result="r" * 50,
                truncated=True,
                latency_s=0.25,
                sandboxed=True,
            ),
            ToolCallRecord(
                call_id="c2",
                name="python",
                arguments=None,
                raw_arguments="{bad json",
                error="arguments are not valid JSON",
            ),
        ],
        weight_version=3,
        output={"answer": text.split()[0], "nested": [1, 2.5, None, "é"]},
        parse_error=None if rng.random() < 0.8 else "expected JSON object",
        reward=None
        if reward is None
        else RewardRecord(value=reward, reason="exact match", components={"em": reward}),
        latency_s=rng.random(),
    )


def make_episode(
    run_id: str, index: int, *, n_turns: int = 3, n_tokens: int = 64, seed: int | None = None
) -> Episode:
    rng = random.Random(index if seed is None else seed)
    turns = [
        make_turn(
            rng,
            "proposer" if i == 0 else "solver",
            n_tokens,
            f"g{index // 2}",
            round(rng.random(), 3),
        )
        for i in range(n_turns)
    ]
    return Episode(
        run_id=run_id,
        index=index,
        recipe="search-selfplay",
        seed=rng.randrange(2**31),
        status="ok",
        turns=turns,
        metrics={"solve_rate": rng.random(), "valid_proposal": 1.0},
        metadata={"target": "Paris", "hops": 2, "tags": ["a", "b"]},
    )
