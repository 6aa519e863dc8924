"""Hyperparameter search for any recipe: ``Trainer.hyperparameter_search`` with Optuna.

Searched: learning_rate, per_device_train_batch_size, num_train_epochs (unless max_steps is set), warmup_steps
(as a ratio of the total steps) and weight_decay, in ranges centred on the config's own values. Every trial
starts from the same weights and data order; its objective is its final evaluation. Results go to
``<output_dir>/sweep/``: ``trials.csv``, ``sweep.md`` and ``best.yaml``, a config that ``hf-recipes train``
runs as is.

Python API::

    from hf_recipes.sweep import sweep
    result = sweep("sentiment", "recipes/demo/sentiment.yaml", ["--max_train_samples", "256"], n_trials=8)
    result.best_params, result.best_objective, result.best_config
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Collection, Sequence

import yaml

from hf_recipes import config as config_module
from hf_recipes.errors import RecipeError
from hf_recipes.report import markdown_table

logger = logging.getLogger("hf_recipes")

INSTALL_HINT = 'hf-recipes sweep needs Optuna: pip install "hf-recipes[sweep]"'
SWEEP_DIR = "sweep"
BEST_DIR = "best"
BEST_CONFIG = "best.yaml"
OUTPUT_FILES = ("trials.csv", "sweep.md", BEST_CONFIG)
STATES = {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running", "WAITING": "waiting"}

# What every trial runs with: no checkpoints (the objective is the trial's final evaluation, not the best one),
# no evaluation of the starting model (it would become the objective of a run that never evaluates otherwise)
# and nothing pushed to the hub.
TRIAL_FLAGS = ["--save_strategy", "no", "--load_best_model_at_end", "false", "--eval_on_start", "false",
               "--push_to_hub", "false"]


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise RecipeError(INSTALL_HINT) from None
    return optuna


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


class MissingMetric(KeyError):
    """The objective metric is not among the evaluation metrics. Not a RecipeError, so no trial swallows it."""


class TrialRecorder:
    """The two hooks hyperparameter_search calls. It runs one trial at a time: ``hp_space`` marks the start of
    each, so the metrics of every evaluation can be filed under the running trial."""

    def __init__(self, space: SearchSpace, objective: Objective, trainer):
        self.space = space
        self.objective = objective
        self.trainer = trainer
        self.trial = None

    def hp_space(self, trial) -> dict[str, Any]:
        self.trial = trial
        return self.space.suggest(trial)

    def compute_objective(self, metrics: dict[str, float]) -> float:
        if self.objective.metric not in metrics:
            raise MissingMetric(self.objective.metric, sorted(k for k in metrics if k.startswith("eval_")))
        evaluated = {k: float(v) for k, v in metrics.items() if k.startswith("eval_")}
        self.trial.set_user_attr("metrics", evaluated)
        self.trial.set_user_attr("steps", self.trainer.state.global_step)
        self.trial.set_user_attr("log_history", copy.deepcopy(self.trainer.state.log_history))
        # What the Trainer actually trained with, to check against what the trial asked for.
        self.trial.set_user_attr("trained_with", {n: getattr(self.trainer.args, n) for n in self.space.names})
        return float(metrics[self.objective.metric])


@dataclass
class SweepResult:
    recipe: str
    objective: Objective
    best_trial: int
    best_objective: float
    best_params: dict[str, Any]
    best_config: Path  # best.yaml: `hf-recipes train RECIPE --config best_config`
    sweep_dir: Path
    trials: list[dict[str, Any]] = field(default_factory=list)  # one row per trial, as in trials.csv

    @property
    def command(self) -> str:
        return f"hf-recipes train {self.recipe} --config {self.best_config}"


def sweep(recipe: str, config: str | os.PathLike | None = None, argv: Sequence[str] = (), **options: Any
          ) -> SweepResult:
    """Search hyperparameters of ``recipe`` (config YAML, then argv flags) and write ``<output_dir>/sweep/``.

    ``options`` are the fields of :class:`SweepArguments`: ``n_trials`` (required), ``timeout``,
    ``learning_rate_range``, ``batch_sizes``, ``epochs_range``, ``warmup_range``, ``weight_decay_range``.
    """
    return run_sweep(recipe, config, argv, SweepArguments(**options))


def run_sweep(name: str, config: str | os.PathLike | None, argv: Sequence[str], settings: SweepArguments
              ) -> SweepResult:
    from hf_recipes import recipes

    optuna = require_optuna()
    recipe = recipes.get(name)
    argv = [str(a) for a in argv]
    user_args = recipe.parse(config, argv)
    if user_args.training.world_size > 1:
        raise RecipeError("sweeps run in one process: start hf-recipes sweep without torchrun / accelerate launch")
    space = SearchSpace.resolve(settings, user_args.training)
    groups = [type(getattr(user_args, f.name)) for f in dataclasses.fields(user_args)]
    base_config = effective_config(recipe, config, argv, config_module.field_names(groups))
    check_parses(recipe, base_config)  # best.yaml is this plus hyperparameters: it must parse, and not only at the end
    output_dir = Path(user_args.training.output_dir).resolve()
    sweep_dir = output_dir / SWEEP_DIR
    clear_sweep_dir(sweep_dir, user_args.run.overwrite_output_dir)

    args = recipe.parse(config, [*argv, "--output_dir", str(sweep_dir), *TRIAL_FLAGS])
    objective = Objective.from_training(args.training)
    trainer, prepared = recipe.build_trainer_from_args(args)
    # Every trial starts from these weights; Trainer sets the seed before model_init, so data order and dropout
    # match a plain run of the same config too.
    pristine = copy.deepcopy(prepared.model).to("cpu")
    trainer.model_init = lambda trial=None: copy.deepcopy(pristine)
    # hyperparameter_search casts each value to the type of the current one: an int warmup_steps of 0 would turn
    # every sampled ratio into 0.
    args.training.warmup_steps = float(args.training.warmup_steps)
    logger.info("Sweep of %s: %d trials, objective %s (%s)", name, settings.n_trials, objective.metric,
                objective.direction)
    study = search(optuna, trainer, TrialRecorder(space, objective, trainer), settings, name)
    best = study.best_trial
    result = SweepResult(
        recipe=name,
        objective=objective,
        best_trial=best.number,
        best_objective=float(best.value),
        best_params=space_params(best.params, space),
        best_config=sweep_dir / BEST_CONFIG,
        sweep_dir=sweep_dir,
        trials=trial_rows(study, space),
    )
    if trainer.is_world_process_zero():
        write_outputs(result, study, best_config(result, base_config, output_dir), space, settings)
        print_summary(result)
    return result


def search(optuna, trainer, recorder: TrialRecorder, settings: SweepArguments, name: str):
    """Run the trials; return the Optuna study (hyperparameter_search returns only the best run)."""
    storage = optuna.storages.InMemoryStorage()
    study_name = f"hf-recipes-{name}"
    try:
        trainer.hyperparameter_search(
            hp_space=recorder.hp_space,
            compute_objective=recorder.compute_objective,
            n_trials=settings.n_trials,
            direction=recorder.objective.direction,
            backend="optuna",
            hp_name=lambda trial: f"run-{trial.number}",
            # The rest goes to optuna.create_study and Study.optimize.
            sampler=optuna.samplers.TPESampler(seed=trainer.args.seed),
            storage=storage,
            study_name=study_name,
            timeout=settings.timeout,
            catch=(RecipeError,),  # a diverging trial (NaN loss) fails alone; the sweep goes on
        )
    except MissingMetric as err:
        metric, found = err.args
        raise RecipeError(f"metric_for_best_model: {metric} is not an evaluation metric of {name} "
                          f"(found: {', '.join(found)})") from None
    except ValueError as err:  # from study.best_trial
        if "No trials are completed" in str(err):
            raise RecipeError("no trial completed (see the log above for why they failed)") from None
        raise
    return optuna.load_study(study_name=study_name, storage=storage)


def clear_sweep_dir(sweep_dir: Path, overwrite: bool) -> None:
    """Refuse to overwrite a finished sweep unless asked; remove what an earlier (or unfinished) sweep left."""
    if sweep_dir.is_file():
        raise RecipeError(f"{sweep_dir} is a file; choose another --output_dir")
    if (sweep_dir / BEST_CONFIG).exists() and not overwrite:
        raise RecipeError(f"{sweep_dir} already holds a sweep; pass --overwrite_output_dir true or choose another "
                          "--output_dir")
    for name in OUTPUT_FILES:
        (sweep_dir / name).unlink(missing_ok=True)
    for run_dir in sweep_dir.glob("run-*"):
        if run_dir.is_dir() and re.fullmatch(r"run-\d+", run_dir.name):
            shutil.rmtree(run_dir)


def space_params(params: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    """Optuna's params in the order and types TrainingArguments uses (epochs and batch size as ints)."""
    typed = {"per_device_train_batch_size": int, "num_train_epochs": int}
    return {n: typed.get(n, float)(params[n]) for n in space.names if n in params}


def trial_rows(study, space: SearchSpace) -> list[dict[str, Any]]:
    rows = []
    for trial in study.get_trials(deepcopy=False):
        state = STATES.get(trial.state.name, trial.state.name.lower())
        row: dict[str, Any] = {"trial": trial.number, "state": state}
        params = space_params(trial.params, space)
        row.update({n: params.get(n) for n in space.names})
        row["objective"] = float(trial.value) if state == "complete" else None
        row["steps"] = trial.user_attrs.get("steps")
        row.update(trial.user_attrs.get("metrics", {}))
        rows.append(row)
    return rows


def summary_columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every column of the rows, minus the timing metrics, which only crowd a table read by people."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns and not c.endswith(("_runtime", "_per_second"))]
    return columns


def argv_to_dict(argv: Sequence[str], known: Collection[str] = ()) -> dict[str, Any]:
    """``--key value [value ...]``, ``--key=value`` and bare ``--flag`` as {key: value(s)}, values as given.

    The parser's other spellings become config keys too: ``--learning-rate`` is learning_rate, and ``--no_flag``
    (of a ``known`` boolean key) is flag: false.
    """
    values: dict[str, Any] = {}
    key = None
    for token in argv:
        if token.startswith("--"):
            key, sep, value = token[2:].partition("=")
            key = key.replace("-", "_")
            if key not in known and key.startswith("no_") and key[3:] in known:
                values[key[3:]] = False
                key = None
                continue
            values[key] = value if sep else True
            if sep:
                key = None
        elif key is not None:
            current = values[key]
            if current is True:
                values[key] = token
            elif isinstance(current, list):
                current.append(token)
            else:
                values[key] = [current, token]
    return values


def effective_config(recipe, config: str | os.PathLike | None, argv: Sequence[str], known: Collection[str]
                     ) -> dict[str, Any]:
    """The YAML values with the command-line flags on top, local paths made absolute so the file works anywhere.
    Secrets (``token``, ``hub_token``) are left out: the file is written to disk."""
    values = config_module.load_yaml(config or recipe.default_config)
    values.update(argv_to_dict(argv, known))
    for key in config_module.SECRET_KEYS:
        values.pop(key, None)
    for key in config_module.PATH_KEYS & values.keys():
        value = values[key]
        if isinstance(value, str) and value and Path(value).exists():
            values[key] = str(Path(value).resolve())
    return values


def check_parses(recipe, values: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / BEST_CONFIG
        path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
        try:
            recipe.parse(path)
        except RecipeError as err:
            raise RecipeError(f"the command line cannot be written as a config file: {err}") from None


def best_config(result: SweepResult, base_config: dict[str, Any], output_dir: Path) -> dict[str, Any]:
    values = dict(base_config)
    values.update(result.best_params)
    values["output_dir"] = str(output_dir / BEST_DIR)
    values["overwrite_output_dir"] = True
    return values


def write_outputs(result: SweepResult, study, best_values: dict[str, Any], space: SearchSpace,
                  settings: SweepArguments) -> None:
    import pandas as pd

    sweep_dir = result.sweep_dir
    sweep_dir.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(result.trials).to_csv(sweep_dir / "trials.csv", index=False)
    for trial in study.get_trials(deepcopy=False):
        run_dir = sweep_dir / f"run-{trial.number}"
        run_dir.mkdir(exist_ok=True)
        row = next(r for r in result.trials if r["trial"] == trial.number)
        record = {**row, "trained_with": trial.user_attrs.get("trained_with"),
                  "log_history": trial.user_attrs.get("log_history", [])}
        (run_dir / "trial.json").write_text(json.dumps(record, indent=1) + "\n")

    header = (f"# Best of {len(result.trials)} trial(s) of `hf-recipes sweep {result.recipe}`: trial "
              f"{result.best_trial}, {result.objective.metric} = {result.best_objective:.6g}\n"
              f"# Run it: {result.command}\n")
    result.best_config.write_text(header + yaml.safe_dump(best_values, sort_keys=False), encoding="utf-8")
    (sweep_dir / "sweep.md").write_text(sweep_markdown(result, space, settings), encoding="utf-8")


def sweep_markdown(result: SweepResult, space: SearchSpace, settings: SweepArguments) -> str:
    best = ", ".join(f"{k} {format_param(v)}" for k, v in result.best_params.items())
    parts = [
        f"# Hyperparameter sweep: {result.recipe}",
        "",
        f"{len(result.trials)} trial(s) of {settings.n_trials} asked; objective: {result.objective.metric} "
        f"({result.objective.direction}) of each trial's final evaluation.",
        "",
        "## Search space",
        "",
        markdown_table(space.describe()),
        "",
        "## Trials",
        "",
        markdown_table(result.trials, summary_columns(result.trials)),
        "",
        "## Best",
        "",
        f"Trial {result.best_trial}: {result.objective.metric} = {result.best_objective:.6g} with {best}.",
        "",
        f"Train with it: `{result.command}`",
        "",
    ]
    return "\n".join(parts)


def format_param(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def print_summary(result: SweepResult) -> None:
    print(markdown_table(result.trials, summary_columns(result.trials)))
    print(f"best: trial {result.best_trial}, {result.objective.metric} = {result.best_objective:.6g}")
    print(f"best config: {result.best_config}")
    print(f"train it: {result.command}")
