"""`RowSampler`'s draws (torch.multinomial, the default, and the bf16 engine's inverse CDF, issue
#21), each with the row's own generator: they sample the distribution they are given, never a
token top_p removed, and a seed reproduces them."""

from __future__ import annotations

import math

import pytest
import torch

from agentplay.models._sampler import RowControl, RowSampler

PROBS = [0.5, 0.25, 0.15, 0.07, 0.03]


DRAWS = ["multinomial", "inverse_cdf"]


def _draw(seed: int, steps: int, top_p: float = 1.0, temperature: float = 1.0, draw: str = "inverse_cdf") -> list[int]:
    row = RowControl(temperature=temperature, top_p=top_p, max_tokens=steps + 1, seed=seed, stop=[])
    logits = torch.tensor([PROBS]).log()
    for _ in range(steps):
        RowSampler([row], eos_ids=set(), tokenizer=None, device=torch.device("cpu"),
                   logprobs_mode="temperature", draw=draw).pick(logits)  # type: ignore[arg-type]
    return row.tokens


@pytest.mark.parametrize("draw", DRAWS)
def test_frequencies_follow_the_probabilities(draw):
    tokens = _draw(seed=1, steps=20000, draw=draw)
    for token, p in enumerate(PROBS):
        freq = tokens.count(token) / len(tokens)
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / len(tokens)) + 1e-3, (token, freq, p)


@pytest.mark.parametrize("draw", DRAWS)
def test_temperature_and_top_p_shape_what_is_drawn(draw):
    tokens = _draw(seed=2, steps=4000, top_p=0.7, draw=draw)  # nucleus {0, 1}: 0.5 + 0.25 reaches 0.7
    assert set(tokens) == {0, 1}
    assert abs(tokens.count(0) / len(tokens) - 2 / 3) < 0.03
    hot = _draw(seed=3, steps=4000, temperature=3.0, draw=draw)
    assert hot.count(4) / len(hot) > 0.1  # flattened: the 3% token becomes common


@pytest.mark.parametrize("draw", DRAWS)
def test_a_seed_reproduces_its_draws_and_other_seeds_differ(draw):
    assert _draw(seed=5, steps=50, draw=draw) == _draw(seed=5, steps=50, draw=draw)
    assert _draw(seed=5, steps=50, draw=draw) != _draw(seed=6, steps=50, draw=draw)


def test_the_default_draw_is_torch_multinomial_with_the_row_generator():
    """Seeded runs from before the inverse-CDF draw reproduce: the default is still multinomial's stream."""
    probs = torch.tensor(PROBS)
    gen = torch.Generator().manual_seed(11)
    expected = [int(torch.multinomial(probs, 1, generator=gen)) for _ in range(30)]
    assert _draw(seed=11, steps=30, draw="multinomial") == expected
    assert _draw(seed=11, steps=30, draw="inverse_cdf") != expected
