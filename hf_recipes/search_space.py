"""What a sweep searches: the settings of ``hf-recipes sweep`` (:class:`SweepArguments`), the bounds they resolve to
around a config's own values (:class:`SearchSpace`) and the objective read off each trial's evaluation."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from hf_recipes.errors import RecipeError

Range = tuple[float, float]


@dataclass
class SweepArguments:
    """How many trials, and optional bounds for each hyperparameter (default: centred on the config's value)."""

    n_trials: int
    timeout: float | None = None  # seconds; no new trial starts after it (the running one finishes)
    learning_rate_range: Range | None = None  # log-uniform; default [lr / 10, lr * 10]
    batch_sizes: list[int] | None = None  # default {bs / 2, bs, bs * 2}
    epochs_range: tuple[int, int] | None = None  # default [1, max(2, 2 * epochs)]
    warmup_range: Range = (0.0, 0.2)  # share of the total steps
    weight_decay_range: Range = (0.0, 0.1)

    def __post_init__(self):
        if self.n_trials is None or self.n_trials < 1:
            raise RecipeError(f"n_trials must be at least 1, got {self.n_trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise RecipeError(f"timeout must be a positive number of seconds, got {self.timeout}")
        if self.learning_rate_range is not None:
            self.learning_rate_range = check_range("learning_rate_range", self.learning_rate_range, low=0,
                                                   open_low=True)
        if self.batch_sizes is not None:
            if not self.batch_sizes or any(int(b) != b or b < 1 for b in self.batch_sizes):
                raise RecipeError(f"batch_sizes must be whole numbers of at least 1, got {list(self.batch_sizes)}")
            self.batch_sizes = sorted({int(b) for b in self.batch_sizes})
        if self.epochs_range is not None:
            low, high = check_range("epochs_range", self.epochs_range, low=1)
            if int(low) != low or int(high) != high:
                raise RecipeError(f"epochs_range must hold whole numbers, got {list(self.epochs_range)}")
            self.epochs_range = (int(low), int(high))
        self.warmup_range = check_range("warmup_range", self.warmup_range, low=0, high=1, open_high=True)
        self.weight_decay_range = check_range("weight_decay_range", self.weight_decay_range, low=0)


def check_range(name: str, bounds: Sequence[float], low: float, high: float = math.inf,
                open_low: bool = False, open_high: bool = False) -> Range:
    if len(bounds) != 2:
        raise RecipeError(f"{name} takes two numbers, MIN MAX; got {list(bounds)}")
    lo, hi = (float(b) for b in bounds)
    if lo > hi:
        raise RecipeError(f"{name}: MIN {lo:g} is above MAX {hi:g}")
    if lo < low or (open_low and lo == low) or hi > high or (open_high and hi == high):
        where = f"{'(' if open_low else '['}{low:g}, {high:g}{')' if open_high else ']'}"
        raise RecipeError(f"{name} must lie in {where}, got {lo:g} {hi:g}")
    return lo, hi


@dataclass(frozen=True)
class SearchSpace:
    """The resolved bounds of one sweep."""

    learning_rate: Range
    batch_sizes: tuple[int, ...]
    epochs: tuple[int, int] | None  # None: max_steps fixes the length of training
    warmup: Range
    weight_decay: Range

    @classmethod
    def resolve(cls, settings: SweepArguments, training) -> SearchSpace:
        lr = training.learning_rate
        if settings.learning_rate_range is None and lr <= 0:
            raise RecipeError(f"learning_rate must be positive to centre the sweep on it, got {lr}")
        bs = training.per_device_train_batch_size
        if training.max_steps > 0:
            if settings.epochs_range is not None:
                raise RecipeError("epochs_range does not apply: the config sets max_steps, which fixes the length")
            epochs = None
        else:
            epochs = settings.epochs_range or (1, max(2, math.ceil(2 * training.num_train_epochs)))
        return cls(
            learning_rate=settings.learning_rate_range or (lr / 10, lr * 10),
            batch_sizes=tuple(settings.batch_sizes or sorted({max(1, bs // 2), bs, bs * 2})),
            epochs=epochs,
            warmup=settings.warmup_range,
            weight_decay=settings.weight_decay_range,
        )

    @property
    def names(self) -> list[str]:
        names = ["learning_rate", "per_device_train_batch_size", "num_train_epochs", "warmup_steps", "weight_decay"]
        return [n for n in names if n != "num_train_epochs" or self.epochs is not None]

    def suggest(self, trial) -> dict[str, Any]:
        params = {
            "learning_rate": trial.suggest_float("learning_rate", *self.learning_rate, log=True),
            "per_device_train_batch_size": trial.suggest_categorical("per_device_train_batch_size", self.batch_sizes),
        }
        if self.epochs is not None:
            params["num_train_epochs"] = trial.suggest_int("num_train_epochs", *self.epochs)
        params["warmup_steps"] = trial.suggest_float("warmup_steps", *self.warmup)
        params["weight_decay"] = trial.suggest_float("weight_decay", *self.weight_decay)
        return params

    def describe(self) -> list[dict[str, str]]:
        rows = [
            {"hyperparameter": "learning_rate", "searched": f"log-uniform {self.learning_rate[0]:.3g} to "
                                                           f"{self.learning_rate[1]:.3g}"},
            {"hyperparameter": "per_device_train_batch_size",
             "searched": "one of " + ", ".join(map(str, self.batch_sizes))},
        ]
        if self.epochs is not None:
            rows.append({"hyperparameter": "num_train_epochs", "searched": f"{self.epochs[0]} to {self.epochs[1]}"})
        rows += [
            {"hyperparameter": "warmup_steps", "searched": f"ratio {self.warmup[0]:g} to {self.warmup[1]:g}"},
            {"hyperparameter": "weight_decay", "searched": f"{self.weight_decay[0]:g} to {self.weight_decay[1]:g}"},
        ]
        return rows


@dataclass(frozen=True)
class Objective:
    metric: str  # e.g. eval_accuracy
    direction: str  # maximize / minimize

    @classmethod
    def from_training(cls, training) -> Objective:
        name = training.metric_for_best_model
        if not name:
            return cls("eval_loss", "minimize")
        metric = name if name.startswith("eval_") else f"eval_{name}"
        greater = training.greater_is_better
        if greater is None:
            greater = not metric.endswith("loss")
        return cls(metric, "maximize" if greater else "minimize")
