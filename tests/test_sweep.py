import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from hf_recipes import recipes
from hf_recipes.cli import main
from hf_recipes.config import load_yaml
from hf_recipes.errors import RecipeError
from hf_recipes.sweep import SweepArguments, sweep
from tests.conftest import cli_args

DEMO = recipes.demo_config("sentiment")
TRAIN_ROWS = 32
HYPERPARAMETERS = ["learning_rate", "per_device_train_batch_size", "num_train_epochs", "warmup_steps", "weight_decay"]


@pytest.fixture
def small(tiny_model_args):
    """The sentiment demo, tiny: 32 train, validation and test rows, one epoch at batch 16."""
    return {
        **tiny_model_args,
        "max_train_samples": TRAIN_ROWS,
        "max_eval_samples": 32,
        "max_test_samples": 32,
        "num_train_epochs": 1,
        "per_device_train_batch_size": 16,
        "learning_rate": 0.002,
    }


def error_lines(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.strip()]


@pytest.mark.slow
def test_cli_sweep_writes_trials_and_a_best_config_that_trains_to_the_same_score(small, capsys):
    overrides = {**small, "metric_for_best_model": "accuracy"}
    output_dir = Path(overrides["output_dir"])
    assert main(["sweep", "sentiment", "--config", str(DEMO), "--n_trials", "2", *cli_args(overrides)]) == 0
    sweep_dir = output_dir / "sweep"
    printed = capsys.readouterr().out
    assert f"hf-recipes train sentiment --config {sweep_dir / 'best.yaml'}" in printed

    trials = pd.read_csv(sweep_dir / "trials.csv")
    assert list(trials["trial"]) == [0, 1]
    assert list(trials["state"]) == ["complete", "complete"]
    # Default ranges, centred on the flags above: lr 0.002 / 10 .. * 10, batch 16 / 2, 16, 16 * 2, epochs 1 .. 2.
    assert trials["learning_rate"].between(0.0002, 0.02).all()
    assert set(trials["per_device_train_batch_size"]) <= {8, 16, 32}
    assert set(trials["num_train_epochs"]) <= {1, 2}
    assert trials["warmup_steps"].between(0, 0.2).all()
    assert trials["weight_decay"].between(0, 0.1).all()
    assert (trials["objective"] == trials["eval_accuracy"]).all()
    # Each trial really trained at its own batch size for its own epochs.
    expected_steps = [math.ceil(TRAIN_ROWS / bs) * epochs for bs, epochs in
                      zip(trials["per_device_train_batch_size"], trials["num_train_epochs"])]
    assert list(trials["steps"]) == expected_steps
    for number in (0, 1):
        record = json.loads((sweep_dir / f"run-{number}" / "trial.json").read_text())
        assert record["eval_accuracy"] == pytest.approx(trials["eval_accuracy"][number])
    assert not list(output_dir.rglob("*.safetensors")), "trials keep no weights"
    assert "| trial | state |" in (sweep_dir / "sweep.md").read_text()

    best = trials.loc[trials["objective"].idxmax()]
    best_yaml = sweep_dir / "best.yaml"
    args = recipes.get("sentiment").parse(best_yaml)
    assert args.training.learning_rate == best["learning_rate"]
    assert args.training.per_device_train_batch_size == best["per_device_train_batch_size"]
    assert args.training.num_train_epochs == best["num_train_epochs"]
    assert args.training.warmup_steps == best["warmup_steps"]
    assert args.training.weight_decay == best["weight_decay"]
    assert args.data.max_train_samples == TRAIN_ROWS  # the command-line flags are kept
    assert Path(args.training.output_dir) == output_dir / "best"
    assert args.run.overwrite_output_dir is True

    # Same weights, seed and data order as the trial: the same score, not just a close one.
    assert main(["train", "sentiment", "--config", str(best_yaml)]) == 0
    assert (output_dir / "best" / "model.safetensors").is_file()
    metrics = json.loads((output_dir / "best" / "eval_results.json").read_text())
    assert metrics["eval_accuracy"] == pytest.approx(best["objective"], abs=1e-6)
    assert metrics["eval_loss"] == pytest.approx(best["eval_loss"], abs=1e-6)


@pytest.mark.slow
def test_the_best_trial_has_the_lowest_eval_loss_without_a_metric(small, tmp_path):
    # A config without warmup_steps: its default is the int 0, which must not turn sampled ratios into 0.
    config = tmp_path / "no_warmup.yaml"
    values = load_yaml(DEMO)
    del values["warmup_steps"]
    config.write_text(yaml.safe_dump(values))
    assert recipes.get("sentiment").parse(config).training.warmup_steps == 0
    # Evaluating each epoch, the objective comes from the evaluation inside training (the last one is the final).
    argv = cli_args({**small, "eval_strategy": "epoch"})
    result = sweep("sentiment", config, argv, n_trials=3, batch_sizes=[16, 32], epochs_range=(1, 1))
    trials = pd.read_csv(result.sweep_dir / "trials.csv")
    for row in trials.itertuples():
        trained_with = json.loads((result.sweep_dir / f"run-{row.trial}" / "trial.json").read_text())["trained_with"]
        assert trained_with == {name: getattr(row, name) for name in HYPERPARAMETERS}
        assert trained_with["warmup_steps"] > 0
    assert len(trials) == 3 and result.objective.metric == "eval_loss"
    assert trials["eval_loss"].nunique() == 3, "the trials should differ"
    assert result.best_trial == trials.loc[trials["objective"].idxmin(), "trial"]
    assert result.best_objective == trials["objective"].min()
    assert set(trials["per_device_train_batch_size"]) <= {16, 32}
    assert list(trials["num_train_epochs"]) == [1, 1, 1]
    assert result.best_params["learning_rate"] == trials.loc[result.best_trial, "learning_rate"]
    assert recipes.get("sentiment").parse(result.best_config).training.learning_rate == result.best_params[
        "learning_rate"]


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--n_trials", "0"], "n_trials must be at least 1"),
        (["--n_trials", "2", "--learning_rate_range", "1e-3", "1e-5"], "learning_rate_range: MIN 0.001 is above MAX"),
        (["--n_trials", "2", "--learning_rate_range", "0", "1e-3"], "learning_rate_range must lie in (0, inf]"),
        (["--n_trials", "2", "--warmup_range", "0", "1"], "warmup_range must lie in [0, 1)"),
        (["--n_trials", "2", "--batch_sizes", "0", "8"], "batch_sizes must be whole numbers of at least 1"),
        (["--n_trials", "2", "--max_steps", "5", "--epochs_range", "1", "3"], "epochs_range does not apply"),
    ],
)
def test_bad_sweep_input_is_one_error_line_and_writes_nothing(small, capsys, flags, message):
    argv = ["sweep", "sentiment", "--config", str(DEMO), *flags, *cli_args(small)]
    assert main(argv) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
    assert not Path(small["output_dir"]).exists()


def test_missing_optuna_names_the_install_command(small, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)
    assert main(["sweep", "sentiment", "--config", str(DEMO), "--n_trials", "2", *cli_args(small)]) == 2
    assert error_lines(capsys) == ['error: hf-recipes sweep needs Optuna: pip install "hf-recipes[sweep]"']
    assert not Path(small["output_dir"]).exists()


def test_a_finished_sweep_is_not_overwritten_unless_asked(small):
    sweep_dir = Path(small["output_dir"]) / "sweep"
    sweep_dir.mkdir(parents=True)
    (sweep_dir / "best.yaml").write_text("seed: 1\n")
    with pytest.raises(RecipeError, match="already holds a sweep"):
        sweep("sentiment", DEMO, cli_args({**small, "overwrite_output_dir": False}), n_trials=1)
    assert (sweep_dir / "best.yaml").read_text() == "seed: 1\n"


@pytest.mark.slow
def test_recipe_flags_are_not_taken_for_range_flags_and_keep_their_values(small):
    # --learning_rate and --weight_decay are prefixes of range flags; they must reach the recipe untouched.
    from hf_recipes.cli import build_parser

    opts, extra = build_parser().parse_known_args(
        ["sweep", "sentiment", "--n_trials", "1", "--learning_rate", "1e-4", "--weight_decay", "0.05"])
    assert opts.learning_rate_range is None and opts.weight_decay_range == (0.0, 0.1)
    assert extra == ["--learning_rate", "1e-4", "--weight_decay", "0.05"]
    # Every spelling the parser takes (dashes, --key=value, --no_flag, several values) reaches best.yaml as the
    # value it parses to, and best.yaml parses to the command line with the best hyperparameters.
    argv = [*cli_args(small), "--labels", "negative", "neutral", "positive", "--seed=3", "--no_report",
            "--max-eval-samples", "16"]
    result = sweep("sentiment", DEMO, argv, n_trials=1, batch_sizes=[32], epochs_range=(1, 1))
    values = load_yaml(result.best_config)
    assert values["labels"] == ["negative", "neutral", "positive"] and values["seed"] == 3
    assert values["report"] is False and values["max_eval_samples"] == 16 and values["model_name_or_path"] is None
    sentiment = recipes.get("sentiment")
    best = {**result.best_params, "output_dir": str(result.sweep_dir.parent / "best"), "overwrite_output_dir": True}
    assert sentiment.parse(result.best_config) == sentiment.parse(DEMO, [*argv, *cli_args(best)])


def test_sweep_arguments_dedupe_batch_sizes_and_need_trials():
    assert SweepArguments(n_trials=1, batch_sizes=[32, 8, 8]).batch_sizes == [8, 32]
    with pytest.raises(RecipeError, match="timeout must be a positive"):
        SweepArguments(n_trials=1, timeout=0)


def fail_trial(monkeypatch, failing: set[str]):
    """Make the named trials stop as a diverging run does: a RecipeError from a training step."""
    from hf_recipes.trainer import RecipeTrainer

    real_step = RecipeTrainer.training_step

    def training_step(self, *args, **kwargs):
        if self.state.trial_name in failing:
            raise RecipeError("training loss became nan")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(RecipeTrainer, "training_step", training_step)


@pytest.mark.slow
def test_a_failed_trial_is_recorded_and_the_sweep_goes_on(small, monkeypatch):
    fail_trial(monkeypatch, {"run-0"})
    result = sweep("sentiment", DEMO, cli_args(small), n_trials=2, batch_sizes=[32], epochs_range=(1, 1))
    trials = pd.read_csv(result.sweep_dir / "trials.csv")
    assert list(trials["state"]) == ["failed", "complete"]
    assert math.isnan(trials["objective"][0]) and trials["learning_rate"].notna().all()
    assert result.best_trial == 1
    assert recipes.get("sentiment").parse(result.best_config).training.learning_rate == trials["learning_rate"][1]


def test_a_sweep_where_every_trial_fails_is_an_error(small, monkeypatch):
    fail_trial(monkeypatch, {"run-0", "run-1"})
    with pytest.raises(RecipeError, match="no trial completed"):
        sweep("sentiment", DEMO, cli_args(small), n_trials=2, batch_sizes=[32], epochs_range=(1, 1))
    assert not (Path(small["output_dir"]) / "sweep" / "best.yaml").exists()


def test_an_unknown_objective_metric_stops_the_sweep(small):
    with pytest.raises(RecipeError, match="eval_f2 is not an evaluation metric of sentiment.*eval_accuracy"):
        sweep("sentiment", DEMO, cli_args({**small, "metric_for_best_model": "f2"}), n_trials=2, batch_sizes=[64],
              epochs_range=(1, 1))


@pytest.mark.slow
def test_a_sweep_repeats_exactly_with_the_same_seed(small, tmp_path):
    def run(name: str) -> pd.DataFrame:
        argv = cli_args({**small, "output_dir": str(tmp_path / name)})
        result = sweep("sentiment", DEMO, argv, n_trials=2, batch_sizes=[32], epochs_range=(1, 1))
        return pd.read_csv(result.sweep_dir / "trials.csv")[["trial", *HYPERPARAMETERS, "objective", "eval_loss"]]

    first, second = run("first"), run("second")
    assert first["learning_rate"].nunique() == 2
    pd.testing.assert_frame_equal(first, second)


def test_a_sweep_parses_its_settings_once_and_derives_the_trials_from_them(small, monkeypatch):
    from hf_recipes import config, recipe, sweep as sweep_module

    parses = []
    real_parse = config.parse_args
    monkeypatch.setattr(config, "parse_args", lambda *a, **k: parses.append(a) or real_parse(*a, **k))
    built = []

    def stop(self, args):
        built.append(args)
        raise RecipeError("stop before training")

    monkeypatch.setattr(recipe.Recipe, "build_trainer_from_args", stop)
    with pytest.raises(RecipeError, match="stop before training"):
        sweep("sentiment", DEMO, [*cli_args(small), "--save_strategy", "epoch", "--eval_strategy", "epoch",
                                  "--load_best_model_at_end", "true"], n_trials=1)
    assert len(parses) == 1
    (trial,) = built
    user = recipes.get("sentiment").parse(DEMO, [*cli_args(small), "--save_strategy", "epoch", "--eval_strategy",
                                                  "epoch", "--load_best_model_at_end", "true"])
    assert (trial.model, trial.data, trial.task, trial.run, trial.peft) == (user.model, user.data, user.task,
                                                                           user.run, user.peft)
    assert trial.training.output_dir == str(Path(small["output_dir"]).resolve() / "sweep")
    changed = {k for k, v in trial.training.to_dict().items() if v != user.training.to_dict()[k]}
    assert changed == {"output_dir", "save_strategy", "load_best_model_at_end"}
    assert trial.training.learning_rate == small["learning_rate"] and isinstance(trial.training.warmup_steps, float)
    assert set(sweep_module.TRIAL_SETTINGS) <= set(trial.training.to_dict())
