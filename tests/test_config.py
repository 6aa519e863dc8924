from pathlib import Path

import pytest
from transformers import TrainingArguments

from hf_recipes import recipes
from hf_recipes.config import PATH_KEYS, DataArguments, ModelArguments, RunArguments, load_yaml, parse_args
from hf_recipes.errors import RecipeError

RECIPES_DIR = recipes.config_dir("sentiment")  # the built-in recipes and their YAML
ALL_YAML = sorted(RECIPES_DIR.rglob("*.yaml"))


def test_there_is_a_yaml_for_every_recipe_and_demo():
    names = {p.stem for p in ALL_YAML}
    assert {"sentiment"} <= names
    for name in recipes.available():
        assert recipes.demo_config(name).is_file(), f"no demo config for {name}"


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(RECIPES_DIR)))
def test_every_yaml_parses_against_the_code(path):
    args = recipes.get(path.stem).parse(path)
    assert isinstance(args.training, TrainingArguments)
    groups = (args.model, args.data, args.task, args.run, args.training)
    for key, value in load_yaml(path).items():
        parsed = getattr(next(g for g in groups if hasattr(g, key)), key)
        if key in PATH_KEYS and parsed != value:
            assert Path(parsed).exists(), f"{path.name}: {key} = {value} points nowhere"
        elif key == "report_to":
            assert parsed == ([] if value == "none" else [value])
        else:
            assert getattr(parsed, "value", parsed) == value, f"{path.name}: {key} parsed as {parsed!r}"


def test_flags_override_yaml_and_keywords_override_yaml(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 0.1\nnum_train_epochs: 2\nmax_train_samples: 5\n")
    classes = (ModelArguments, DataArguments, RunArguments, TrainingArguments)
    _, data, _, training = parse_args(classes, config, ["--learning_rate", "0.5"], {"max_train_samples": 7})
    assert training.learning_rate == 0.5
    assert training.num_train_epochs == 2
    assert data.max_train_samples == 7


def test_keyword_none_unsets_a_yaml_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("model_name_or_path: gpt2\n")
    model, *_ = parse_args((ModelArguments, DataArguments), config, (), {"model_name_or_path": None})
    assert model.model_name_or_path is None


def test_unknown_yaml_key_is_named(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("learning_rat: 0.1\n")
    with pytest.raises(RecipeError, match=r"unknown config key 'learning_rat'.*did you mean 'learning_rate'"):
        recipes.get("sentiment").parse(config)


def test_unknown_flag_is_named_and_not_abbreviated():
    with pytest.raises(RecipeError, match="unknown argument '--learning'"):
        recipes.get("sentiment").parse(None, ["--learning", "0.1"])


def test_bad_values_are_clear_errors(tmp_path):
    sentiment = recipes.get("sentiment")
    with pytest.raises(RecipeError, match="per_device_train_batch_size"):
        sentiment.parse(None, ["--per_device_train_batch_size", "0"])
    with pytest.raises(RecipeError, match="invalid float value"):
        sentiment.parse(None, ["--learning_rate", "fast"])
    with pytest.raises(RecipeError, match="config_overrides only applies"):
        sentiment.parse(None, ["--config_overrides", "n_layer=2"])  # the default config names gpt2
    with pytest.raises(RecipeError, match="config file not found"):
        sentiment.parse(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(RecipeError, match="must hold a mapping"):
        sentiment.parse(bad)


def test_relative_paths_in_yaml_resolve_next_to_the_file(tmp_path, monkeypatch):
    (tmp_path / "data.csv").write_text("text,label\na,b\n")
    config = tmp_path / "c.yaml"
    config.write_text("train_file: data.csv\n")
    monkeypatch.chdir("/")
    _, data = parse_args((ModelArguments, DataArguments), config)
    assert data.train_file == str(tmp_path / "data.csv")
