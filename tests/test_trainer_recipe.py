"""The trainer tests' recipe, `examples/short_answers.py` (one role, short answers, a graded reward)."""

from __future__ import annotations

import pytest
from _recipes import short_answers

from agentplay import EpisodeContext


def test_recipe_compiles_with_one_trainable_role():
    compiled = short_answers().compile()
    assert compiled.recipe.role_names() == {"answerer": True}


def test_questions_cycle_through_the_chosen_count():
    recipe = short_answers(questions=6)
    asked = [recipe.initial_state(EpisodeContext(index=i, seed=i))["question"] for i in range(7)]
    assert len(set(asked[:6])) == 6 and asked[6] == asked[0]
    assert short_answers().initial_state(EpisodeContext(index=4, seed=0)) == short_answers().initial_state(
        EpisodeContext(index=0, seed=0))
    with pytest.raises(ValueError, match="questions: 7"):
        short_answers(questions=7)
