"""Store errors: messages written for the person at the terminal, not for a debugger."""

from __future__ import annotations

from agentplay.errors import AgentplayError


class StoreError(AgentplayError):
    """The trace store cannot do what was asked; the message says why and what to do."""


class DuplicateEpisode(StoreError):
    """An episode with this (run_id, index) is already stored.

    A resumed run treats this as "already done": the store never keeps an index twice.
    """

    def __init__(self, run_id: str, index: int, episode_id: str | None = None) -> None:
        self.run_id = run_id
        self.index = index
        self.episode_id = episode_id
        where = f"run {run_id!r} already has episode index {index}"
        if episode_id:
            where += f" (stored as episode {episode_id})"
        super().__init__(f"{where}; the store keeps each index once (resume skips stored indexes)")
