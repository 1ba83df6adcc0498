"""The budgeted loop every training shares: budgets, learning rates, metrics, checkpoints, cancel, resume."""

import time
from pathlib import Path

import pytest
import torch

from engine.core.errors import UserInputError
from engine.core.jobs import Artifact, CancelToken, JobWarning, Metrics, Progress
from engine.core.loop import Budget, BudgetedLoop, WeightAverage, exponential_decay


def _run(loop: BudgetedLoop, body=lambda step: None, **values):
    events = []
    for step in loop:
        body(step)
        loop.done(**{k: v(step) for k, v in values.items()})
        events += list(loop.events())
    return events + list(loop.finish())


def _optimizer():
    return torch.optim.Adam([torch.zeros(1, requires_grad=True)], lr=1.0)


def test_a_step_budget_runs_exactly_that_many_steps_with_the_schedule_and_metrics_means():
    saved, rates = [], []
    optimizer = _optimizer()
    loop = BudgetedLoop(Budget(steps=10), CancelToken(), "training", save=lambda: saved.append(1) or Path("ck"),
                        optimizer=optimizer, learning_rate=exponential_decay(1e-2, 1e-3), metrics_every=5)
    events = _run(loop, lambda step: rates.append(optimizer.param_groups[0]["lr"]), loss=lambda step: float(step))
    assert loop.step == 10 and rates[0] == pytest.approx(1e-2) and rates[-1] == pytest.approx(1e-2 * 0.1 ** 0.9)
    metrics = [e for e in events if isinstance(e, Metrics)]
    assert [m.step for m in metrics] == [5, 10] and metrics[0].values["loss"] == pytest.approx(2.0)  # mean of 0..4
    progress = [e for e in events if isinstance(e, Progress)]
    assert len(progress) == 10 and progress[-1].fraction == 1.0 and progress[-1].eta_seconds == 0
    assert saved == [1] and isinstance(events[-1], Artifact)  # the last checkpoint only (none was due before)


def test_a_time_budget_counts_the_steps_own_time_not_the_consumers():
    loop = BudgetedLoop(Budget(minutes=0.2 / 60), CancelToken(), "training", save=lambda: Path("ck"))
    start = time.perf_counter()
    for _ in loop:
        time.sleep(0.02)
        loop.done()
        for _ in loop.events():
            time.sleep(0.02)  # a slow consumer between steps
    assert 0.2 <= loop.seconds < 0.3 and time.perf_counter() - start >= 0.35


def test_checkpoints_come_when_due_and_a_cancelled_run_says_how_to_resume():
    cancel = CancelToken()
    loop = BudgetedLoop(Budget(steps=100), cancel, "edit", save=lambda: Path("ck"), checkpoint_every_s=0.0)
    events = _run(loop, lambda step: step == 3 and cancel.cancel())
    assert loop.step == 4 and not loop.complete
    assert sum(isinstance(e, Artifact) for e in events) == 5  # one per step (always due), then the last one
    assert isinstance(events[-1], JobWarning) and events[-1].message.startswith("edit cancelled at step 4;")
    resumed = BudgetedLoop(Budget(steps=100), CancelToken(), "edit", save=lambda: Path("ck"), step=4, seconds=1.0)
    assert next(iter(resumed)) == 4 and resumed.fraction == pytest.approx(0.04)


def test_a_budget_must_be_given_and_positive():
    for budget, message in ((Budget(), "--steps S or --minutes M"), (Budget(steps=0), "--steps must be at least 1"),
                            (Budget(minutes=-1.0), "--minutes must be positive")):
        with pytest.raises(UserInputError, match=message):
            budget.validate("training")
    Budget(steps=5, minutes=-1.0).validate("training")  # a step count wins over the time budget


def test_the_weight_average_halves_its_distance_to_the_network_every_half_life():
    network = torch.nn.Linear(2, 1)
    torch.nn.init.zeros_(network.weight)
    average = WeightAverage(network, half_life=4, rampup=None)
    torch.nn.init.ones_(network.weight)
    for step in range(1, 9):
        average.update(network, step)
    torch.testing.assert_close(average.network.weight, torch.full((1, 2), 0.75))  # two half-lives: 1 - 1/4
    assert not average.network.weight.requires_grad


def test_the_weight_average_follows_closely_early_in_a_run():
    network = torch.nn.Linear(2, 1)
    average = WeightAverage(network, half_life=100, rampup=0.1)
    torch.nn.init.ones_(network.weight)
    average.update(network, 1)  # half-life 0.1 steps: nearly a copy
    torch.testing.assert_close(average.network.weight, torch.ones(1, 2), atol=2e-3, rtol=0)


def test_a_negative_half_life_is_refused():
    with pytest.raises(UserInputError, match="half-life of 0 steps or more, got -1"):
        WeightAverage(torch.nn.Linear(1, 1), half_life=-1)
