"""The run's time budget: iterations stop before the budget would be passed, and time
spent evaluating in `on_iteration` does not count against self-play and training."""

from __future__ import annotations

from agentplay.trainers._loop import TimeBudget


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_budget_stops_before_an_iteration_would_pass_it():
    clock = Clock()
    budget = TimeBudget(60.0, clock=clock)
    assert budget.allows_another()  # nothing spent, no estimate yet
    clock.now += 25
    budget.last_iteration_s = 25.0
    assert budget.spent_s == 25.0 and budget.allows_another()  # 25 + 25 <= 60
    clock.now += 25
    assert not budget.allows_another()  # 50 + 25 > 60: the next one would end past the budget


def test_callback_time_is_not_spent():
    clock = Clock()
    budget = TimeBudget(60.0, clock=clock)
    clock.now += 20
    budget.last_iteration_s = 20.0
    clock.now += 300  # a long held-out evaluation in on_iteration
    budget.pause(300.0)
    assert budget.spent_s == 20.0 and budget.allows_another()
    assert TimeBudget(None, clock=clock).allows_another()  # no budget: never stops
