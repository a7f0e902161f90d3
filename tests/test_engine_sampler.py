"""`RowSampler`'s draw (inverse CDF with each row's own generator, issue #21): it samples the
distribution it is given, never a token top_p removed, and a seed reproduces it."""

from __future__ import annotations

import math

import torch

from agentplay.models._sampler import RowControl, RowSampler

PROBS = [0.5, 0.25, 0.15, 0.07, 0.03]


def _draw(seed: int, steps: int, top_p: float = 1.0, temperature: float = 1.0) -> list[int]:
    row = RowControl(temperature=temperature, top_p=top_p, max_tokens=steps + 1, seed=seed, stop=[])
    logits = torch.tensor([PROBS]).log()
    for _ in range(steps):
        RowSampler([row], eos_ids=set(), tokenizer=None, device=torch.device("cpu"),
                   logprobs_mode="temperature").pick(logits)
    return row.tokens


def test_frequencies_follow_the_probabilities():
    tokens = _draw(seed=1, steps=20000)
    for token, p in enumerate(PROBS):
        freq = tokens.count(token) / len(tokens)
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / len(tokens)) + 1e-3, (token, freq, p)


def test_temperature_and_top_p_shape_what_is_drawn():
    tokens = _draw(seed=2, steps=4000, top_p=0.7)  # nucleus {0, 1}: 0.5 + 0.25 reaches 0.7
    assert set(tokens) == {0, 1}
    assert abs(tokens.count(0) / len(tokens) - 2 / 3) < 0.03
    hot = _draw(seed=3, steps=4000, temperature=3.0)
    assert hot.count(4) / len(hot) > 0.1  # flattened: the 3% token becomes common


def test_a_seed_reproduces_its_draws_and_other_seeds_differ():
    assert _draw(seed=5, steps=50) == _draw(seed=5, steps=50)
    assert _draw(seed=5, steps=50) != _draw(seed=6, steps=50)
