from pathlib import Path

import pytest
from transformers import TrainingArguments

from hf_recipes import recipes
from hf_recipes.config import (PATH_KEYS, DataArguments, ModelArguments, PeftArguments, RunArguments, load_yaml,
                               parse_args)
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


def test_yaml_null_unsets_a_key_whose_default_is_set(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("attn_implementation: null\nreport_to: null\nlearning_rate: null\nmax_seq_length: null\n")
    args = recipes.get("sentiment").parse(config)
    assert args.model.attn_implementation is None  # not its default, sdpa
    assert args.training.report_to == []  # no tracker
    assert args.training.learning_rate == TrainingArguments(output_dir="x").learning_rate  # may not be None: default
    assert args.data.max_seq_length is None  # the recipe YAML's 128, unset


def test_keywords_override_flags_which_override_yaml_and_values_keep_their_types(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("learning_rate: 1\nnum_train_epochs: 2\nlora_target_modules: c_attn\nuse_peft: true\n"
                      "model_name_or_path: gpt2\nmax_train_samples: 5\n")
    classes = (ModelArguments, PeftArguments, DataArguments, TrainingArguments)
    _, peft, data, training = parse_args(classes, config, ["--learning_rate", "0.5", "--max_train_samples", "6"],
                                         {"max_train_samples": 7})
    assert training.learning_rate == 0.5 and data.max_train_samples == 7
    assert training.num_train_epochs == 2.0 and isinstance(training.num_train_epochs, float)
    assert peft.lora_target_modules == ["c_attn"]  # one value for a list setting is a list of one
    model, *_ = parse_args(classes, config, ["--attn_implementation", ""])
    assert model.attn_implementation is None  # "" on the command line unsets, as null does


@pytest.mark.parametrize("text, message", [
    ("save_strategy: no\n", "config key 'save_strategy' in {config} takes one of no, steps, epoch, best, got false "
                            "(YAML reads an unquoted yes/no/on/off as true/false: quote it)"),
    ("dtype: fp32\n", "config key 'dtype' in {config}: invalid choice: 'fp32' (choose from float32, bfloat16, "
                      "float16, auto)"),
    ("max_steps: 2.5\n", "config key 'max_steps' in {config} takes a whole number, got 2.5"),
    ("learning_rate: fast\n", "config key 'learning_rate' in {config}: invalid float value: 'fast'"),
])
def test_yaml_values_are_checked_as_flags_are(tmp_path, text, message):
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(RecipeError) as refused:
        recipes.get("sentiment").parse(config)
    assert str(refused.value) == message.format(config=config)


def test_each_setting_is_checked_once_per_parse(monkeypatch):
    from hf_recipes import config as config_module

    calls = {name: 0 for name in ("PeftArguments", "RunArguments", "check_peft", "check_early_stopping")}

    def counted(name, function):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)
        return wrapper

    for cls in (PeftArguments, RunArguments):
        monkeypatch.setattr(cls, "__post_init__", counted(cls.__name__, cls.__post_init__))
    for name in ("check_peft", "check_early_stopping"):
        monkeypatch.setattr(config_module, name, counted(name, getattr(config_module, name)))
    recipes.get("sentiment").parse(None, ["--lora_r", "4", "--use_peft", "true", "--early_stopping_patience", "2"])
    assert calls == {"PeftArguments": 1, "RunArguments": 1, "check_peft": 1, "check_early_stopping": 1}
