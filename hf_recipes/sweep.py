"""Hyperparameter search for any recipe: ``Trainer.hyperparameter_search`` with Optuna.

Searched: learning_rate, per_device_train_batch_size, num_train_epochs (unless max_steps is set), warmup_steps
(as a ratio of the total steps) and weight_decay, in ranges centred on the config's own values. Every trial
starts from the same weights and data order; its objective is its final evaluation. Results go to
``<output_dir>/sweep/``: ``trials.csv``, ``sweep.md`` and ``best.yaml``, a config that ``hf-recipes train``
runs as is.

Python API::

    from hf_recipes.sweep import sweep
    result = sweep("sentiment", "hf_recipes/recipes/demo/sentiment.yaml", ["--max_train_samples", "256"], n_trials=8)
    result.best_params, result.best_objective, result.best_config
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from hf_recipes import config as config_module
from hf_recipes.config import RecipeArgs
from hf_recipes.errors import RecipeError
from hf_recipes.run_folder import check_creatable
from hf_recipes.report import Report, format_value, is_run_measurement, markdown_table
from hf_recipes.search_space import Objective, SearchSpace, SweepArguments  # noqa: F401 - SweepArguments re-exported

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
TRIAL_SETTINGS = {"save_strategy": "no", "load_best_model_at_end": False, "eval_on_start": False, "push_to_hub": False}


def trial_args(args: RecipeArgs, sweep_dir: Path) -> RecipeArgs:
    """The parsed settings every trial starts from: the user's, with :data:`TRIAL_SETTINGS`, writing to
    ``sweep_dir``."""
    # hyperparameter_search casts each value to the type of the current one: an int warmup_steps of 0 would turn
    # every sampled ratio into 0.
    training = dataclasses.replace(args.training, **TRIAL_SETTINGS, output_dir=str(sweep_dir),
                                   warmup_steps=float(args.training.warmup_steps))
    return dataclasses.replace(args, training=training)


def require_optuna():
    try:
        import optuna
    except ImportError:
        raise RecipeError(INSTALL_HINT) from None
    return optuna


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
    user_args = recipe.parse(config, [str(a) for a in argv])  # the only parse: trials and best.yaml derive from it
    if user_args.training.world_size > 1:
        raise RecipeError("sweeps run in one process: start hf-recipes sweep without torchrun / accelerate launch")
    space = SearchSpace.resolve(settings, user_args.training)
    check_creatable(Path(user_args.training.output_dir) / SWEEP_DIR)
    output_dir = Path(user_args.training.output_dir).resolve()
    sweep_dir = output_dir / SWEEP_DIR
    clear_sweep_dir(sweep_dir, user_args.run.overwrite_output_dir)
    base_values = config_module.resolved_values(user_args, recipe.unused_flags)  # before the trials change anything

    args = trial_args(user_args, sweep_dir)
    objective = Objective.from_training(args.training)
    trainer, prepared = recipe.build_trainer_from_args(args)
    # Every trial starts from these weights; Trainer sets the seed before model_init, so data order and dropout
    # match a plain run of the same config too.
    pristine = copy.deepcopy(prepared.model).to("cpu")
    trainer.model_init = lambda trial=None: copy.deepcopy(pristine)
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
        write_outputs(result, study, best_config(result, base_values, output_dir), space, settings)
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
    """Every column of the rows but the run's measurements (runtimes, throughputs), which crowd a table."""
    return [c for c in dict.fromkeys(c for row in rows for c in row) if not is_run_measurement(c)]


def best_config(result: SweepResult, base_values: dict[str, dict[str, Any]], output_dir: Path
                ) -> dict[str, dict[str, Any]]:
    """The swept run's settings (grouped as print-config groups them) with the best hyperparameters, training into
    ``output_dir/best``; local paths absolute, so the file works from anywhere."""
    groups = {title: dict(values) for title, values in base_values.items()}
    for values in groups.values():
        for key in config_module.PATH_KEYS & values.keys():
            if isinstance(values[key], str) and values[key] and Path(values[key]).exists():
                values[key] = str(Path(values[key]).resolve())
        if "output_dir" in values:
            values["output_dir"] = str(output_dir / BEST_DIR)
        if "overwrite_output_dir" in values:
            values["overwrite_output_dir"] = True
    list(groups.values())[-1].update(result.best_params)  # the TrainingArguments, last
    return groups


def write_outputs(result: SweepResult, study, best_values: dict[str, dict[str, Any]], space: SearchSpace,
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
    result.best_config.write_text(header + config_module.settings_yaml(best_values), encoding="utf-8")
    (sweep_dir / "sweep.md").write_text(sweep_markdown(result, space, settings), encoding="utf-8")


def sweep_markdown(result: SweepResult, space: SearchSpace, settings: SweepArguments) -> str:
    best = ", ".join(f"{k} {format_value(v)}" for k, v in result.best_params.items())
    report = Report(f"Hyperparameter sweep: {result.recipe}")
    report.add("Objective", f"{len(result.trials)} trial(s) of {settings.n_trials} asked; objective: "
               f"{result.objective.metric} ({result.objective.direction}) of each trial's final evaluation.")
    report.add("Search space", markdown_table(space.describe()))
    report.add("Trials", markdown_table(result.trials, summary_columns(result.trials)))
    report.add("Best", f"Trial {result.best_trial}: {result.objective.metric} = {result.best_objective:.6g} with "
               f"{best}.\n\nTrain with it: `{result.command}`")
    return report.markdown()


def print_summary(result: SweepResult) -> None:
    print(markdown_table(result.trials, summary_columns(result.trials)))
    print(f"best: trial {result.best_trial}, {result.objective.metric} = {result.best_objective:.6g}")
    print(f"best config: {result.best_config}")
    print(f"train it: {result.command}")
