"""Refuse to train on rollouts whose token ids did not come from the server.

GRPO needs the ids the model sampled; a server that returns text only (llama.cpp's
server, hosted APIs) leaves turns with no ids, or with ids re-tokenized from text
(`token_exact = false`), and the advantages would then be computed over too few
samples to mean anything. Stopping with the fix beats a run of silent no-op steps.
"""

from __future__ import annotations

from typing import Any

from agentplay.models._token_ids import MISSING_IDS_FIX

__all__ = ["MIN_TOKEN_ID_FRACTION", "token_id_problem"]

MIN_TOKEN_ID_FRACTION = 0.5
"""Below this fraction of model turns with exact server ids, the iteration is refused."""


def token_id_problem(episodes: list[Any], iteration: int) -> str | None:
    """The refusal message when too few model turns of finished episodes carry exact ids."""
    turns = [t for e in episodes if e.status != "error" for t in e.turns if t.generations]
    exact = sum(1 for t in turns if t.token_exact and t.token_ids)
    if not turns or exact >= MIN_TOKEN_ID_FRACTION * len(turns):
        return None
    return (
        f"iteration {iteration}: only {exact} of {len(turns)} model turns carry token ids from the "
        f"server that sampled them (at least {MIN_TOKEN_ID_FRACTION:.0%} needed to train); to fix, "
        f"{MISSING_IDS_FIX} (re-tokenized ids are recorded with token_exact = false: fit for "
        "inspecting traces, not for training)"
    )
