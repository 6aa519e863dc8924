"""The command line itself: help, version, suggestions, and answers that need no deep-learning import."""

import dataclasses
import json

import pytest
from transformers import TrainingArguments

import hf_recipes
from hf_recipes import cli, flag_index
from hf_recipes.config import recipe_dataclasses
from tests.conftest import run_fresh


def test_python_m_prints_the_version():
    result = run_fresh("--version", probe=False)
    assert (result.returncode, result.stdout, result.stderr) == (0, f"hf-recipes {hf_recipes.__version__}\n", "")


@pytest.mark.parametrize("argv, code, shows", [
    (["--version"], 0, f"hf-recipes {hf_recipes.__version__}"),
    (["--help"], 0, "{train,print-config,sweep,demo,predict,generate,compare,list}"),
    (["list"], 0, "sentiment\t"),
    (["train", "--help"], 0, "show this help with the flags of RECIPE"),
    (["trian", "sentiment"], 2, "error: hf-recipes: argument command: invalid choice: 'trian'"),
    (["list", "--verbose"], 2, "error: unknown argument '--verbose'"),
    (["predict", "sentiment", "--model_dir", "x", "--bach_size", "3"], 2,
     "error: unknown argument '--bach_size' (did you mean '--batch_size'?)"),
    (["predict", "--model_dir", "x", "hello", "--bach_size", "3"], 2,
     "error: unknown argument '--bach_size' (did you mean '--batch_size'?)"),
    (["generate", "--model_dir", "x", "--prompt", "hi", "--temprature", "0.7"], 2,
     "error: unknown argument '--temprature' (did you mean '--temperature'?)"),
    (["generate", "--model_dir", "x", "--prompt", "hi", "stray"], 2, "error: unknown argument 'stray'"),
    (["compare", "runs/a", "--outptu", "x.png"], 2, "error: unknown argument '--outptu' (did you mean '--output'?)"),
    (["demo", "--nope"], 2, "error: unknown argument '--nope'"),
    (["sweep", "lyrics", "--n_trials", "2", "--learning_rat", "1"], 2,
     "error: unknown argument '--learning_rat' (did you mean '--learning_rate'?)"),
])
def test_help_list_version_and_argument_errors_import_no_deep_learning_library(argv, code, shows):
    result = run_fresh(*argv)
    assert result.returncode == code, result.stderr
    assert result.stdout.splitlines()[-1] == "heavy imports: none"
    if code:
        assert result.stderr.startswith(shows) and len(result.stderr.splitlines()) == 1
    else:
        assert shows in result.stdout


def shown_flags(out: str) -> dict[str, str]:
    """``{flag: value shown}`` of the recipe's part of a --help output (one line per flag: --flag value  help)."""
    recipe_part = out.split("\nFlags of the ", 1)[1]
    flags = [line[2:].partition("  ")[0] for line in recipe_part.splitlines() if line.startswith("  --")]
    names = [flag.partition(" ")[0].removeprefix("--") for flag in flags]
    assert len(names) == len(set(names)), "a flag shown twice"
    return {name: flag.partition(" ")[2] for name, flag in zip(names, flags)}


def test_train_sentiment_help_is_short_shows_each_flag_once_with_the_values_a_run_uses(capsys):
    from hf_recipes import recipes
    from hf_recipes.help import shown

    assert cli.main(["train", "sentiment", "--help"]) == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) <= 110
    values = shown_flags(out)
    recipe = recipes.get("sentiment")
    args = recipe.parse()  # the YAML file and no flags: what a run gets
    classes, titles = recipe_dataclasses(recipe.task_args_class)
    groups = [args.model, args.peft, args.data, args.task, args.run, args.checks, args.training]
    starts = [out.index(f"\n{title}:\n") for title in titles]
    assert starts == sorted(starts)
    for cls, group in zip(classes, groups):
        for f in dataclasses.fields(cls):
            if f.init and f.name not in recipe.unused_flags and f.name in values:
                assert values[f.name] == shown(getattr(group, f.name), f.name), f.name
            elif f.init and cls is not TrainingArguments:
                assert f.name in recipe.unused_flags, f"{f.name} missing from the help"
    # the YAML's values, not the library's
    assert (values["eval_strategy"], values["lr_scheduler_type"], values["load_best_model_at_end"]) == (
        "epoch", "cosine", "true")
    assert values["learning_rate"] == "5e-05" and values["max_seq_length"] == "128"
    assert "fused_lm_loss" not in out and "--max-seq-length" not in out  # a causal LM's; one spelling each
    assert "  --max_steps -1" in out and "--ddp_backend" not in out  # the most used TrainingArguments only


def test_help_all_lists_every_training_argument_and_a_config_s_values(tmp_path, capsys):
    config = tmp_path / "mine.yaml"
    config.write_text("learning_rate: 1.0e-3\nmax_length: 64\nddp_backend: gloo\n")
    assert cli.main(["train", "sentiment", "--config", str(config), "--help"]) == 0
    values = shown_flags(capsys.readouterr().out)
    assert (values["learning_rate"], values["max_seq_length"], values["ddp_backend"]) == ("0.001", "64", "gloo")
    assert values["num_train_epochs"] == "3"  # not in this YAML: the dataclass default
    assert cli.main(["train", "lyrics", "--help-all"]) == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(TrainingArguments):
        if f.init:
            assert f"\n  --{f.name} " in out, f.name
    assert "The initial learning rate for the optimizer." in out and "--few_shot_k" not in out


def test_sweep_recipe_help_lists_its_own_and_the_recipe_flags(capsys):
    assert cli.main(["sweep", "lyrics", "--help"]) == 0
    out = capsys.readouterr().out
    assert "--n_trials" in out and "--learning_rate_range" in out
    assert "task arguments (LyricsArguments)" in out and "--block_size" in out and "--learning_rate " in out


def test_misspelled_recipe_flag_names_the_closest_one(tmp_path, capsys):
    output_dir = tmp_path / "run"
    assert cli.main(["train", "sentiment", "--learning_rat", "1e-4", "--output_dir", str(output_dir)]) == 2
    assert capsys.readouterr().err == ("error: unknown argument '--learning_rat' (did you mean "
                                       "'--learning_rate'?)\n")
    assert not output_dir.exists()


def test_misspelled_flag_without_a_close_one_keeps_the_plain_message(capsys):
    assert cli.main(["train", "sentiment", "--zzzz", "1"]) == 2
    assert capsys.readouterr().err == "error: unknown argument '--zzzz'\n"


def test_train_and_sweep_without_a_recipe_or_trials_are_one_line_errors(capsys):
    assert cli.main(["train"]) == 2
    assert capsys.readouterr().err == "error: hf-recipes train: give a recipe (one of sentiment, lyrics, instruct)\n"
    assert cli.main(["sweep", "sentiment"]) == 2
    assert capsys.readouterr().err == "error: hf-recipes sweep: the following arguments are required: --n_trials\n"


@pytest.mark.parametrize("argv", [["train", "sentiment", "--help"], ["sweep", "lyrics", "--help"],
                                  ["train", "instruct", "--learning_rat", "1e-4", "--output_dir", "x"]])
def test_recipe_help_and_flag_errors_come_from_the_index_without_deep_learning_imports(argv, capsys, monkeypatch,
                                                                                       tmp_path):
    fresh = run_fresh(*argv)
    assert fresh.stdout.splitlines()[-1] == "heavy imports: none", fresh.stderr
    # The same command with no index to read: the full parser answers, identically.
    monkeypatch.setattr(flag_index, "INDEX", tmp_path / "flag_index.json")
    slow = cli.main(argv)
    captured = capsys.readouterr()
    assert fresh.returncode == slow
    assert "\n".join(fresh.stdout.splitlines()[:-1]).rstrip("\n") == captured.out.rstrip("\n")
    assert fresh.stderr == captured.err


def test_the_flag_index_matches_the_code():
    """If this fails after an argument changed: python -m hf_recipes.flag_index"""
    assert json.loads(flag_index.INDEX.read_text()) == flag_index.build()


def test_print_config_prints_the_resolved_settings_as_yaml_a_run_takes_again(tmp_path, capsys):
    import yaml

    from hf_recipes import recipes

    output_dir = tmp_path / "never-written"
    argv = ["--max_length", "64", "--learning_rate", "1e-4", "--output_dir", str(output_dir)]
    assert cli.main(["print-config", "instruct", *argv]) == 0
    printed = capsys.readouterr().out
    values = yaml.safe_load(printed)
    assert (values["max_seq_length"], values["learning_rate"], values["lr_scheduler_type"]) == (64, 1e-4, "cosine")
    assert values["prompt_template"].startswith("Below is an instruction") and "\\n\\n### Response:\\n" in printed
    assert "token" not in values and "few_shot_k" not in values and not output_dir.exists()
    recipe = recipes.get("instruct")
    config = tmp_path / "printed.yaml"
    config.write_text(printed)
    again, direct = recipe.parse(config), recipe.parse(None, argv)
    for name in ("model", "peft", "data", "task", "run", "checks"):
        assert getattr(again, name) == getattr(direct, name), name
    assert again.training.to_dict() == direct.training.to_dict()


def test_print_config_flag_errors_answer_without_deep_learning_imports():
    fresh = run_fresh("print-config", "sentiment", "--lerning_rate", "1")
    assert fresh.returncode == 2 and fresh.stdout.splitlines()[-1] == "heavy imports: none"
    assert fresh.stderr == "error: unknown argument '--lerning_rate' (did you mean '--learning_rate'?)\n"


# A base that samples, as instruct-tuned hub models ship (do_sample true, temperature 0.6, top_p 0.9).
SAMPLING_BASE = {"do_sample": True, "temperature": 0.6, "top_p": 0.9}


@pytest.fixture(scope="module")
def sampling_base(tmp_path_factory) -> str:
    from tests.conftest import save_pretrained_base

    return save_pretrained_base(tmp_path_factory.mktemp("sampling-base"), "gpt2", SAMPLING_BASE)


def test_generate_on_a_folder_without_recipe_json_decodes_as_python_generate(sampling_base, capsys):
    from hf_recipes.generation import settings_of_run
    from hf_recipes.recipes import instruct

    # One set of defaults: the recipe's (instruct: 256 greedy tokens), for the command and for Python alike.
    assert settings_of_run(instruct.InstructArguments, {}).decoding_settings() == {
        "do_sample": False, "max_new_tokens": 256, "repetition_penalty": 1.0}
    assert cli.main(["generate", "--model_dir", sampling_base, "--instruction", "Name a day."]) == 0
    assert capsys.readouterr().out.strip() == instruct.generate(sampling_base, "Name a day.")


def test_sampling_takes_the_base_models_settings_unless_set_and_greedy_takes_none(sampling_base, monkeypatch):
    from hf_recipes.generation import SAMPLING_DEFAULTS, generate, load_causal_lm, settings_of_run
    from hf_recipes.recipes.instruct import InstructArguments

    model, tokenizer = load_causal_lm(sampling_base)
    used = []
    real_generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: used.append(kw["generation_config"]) or real_generate(**kw))
    for given in ({"do_sample": True}, {"do_sample": True, "temperature": 1.2}, {}):
        generate(model, tokenizer, ["Hi"], settings_of_run(InstructArguments, {}, max_new_tokens=2, **given))
    sampled, chosen, greedy = ((c.do_sample, c.temperature, c.top_p, c.top_k) for c in used)
    assert sampled == (True, 0.6, 0.9, SAMPLING_DEFAULTS["top_k"])  # the user's > the base's > the library's
    assert chosen == (True, 1.2, 0.9, SAMPLING_DEFAULTS["top_k"])
    assert greedy == (False, None, None, None)
    assert model.generation_config.temperature == 0.6  # the model's own config is put back
    model.generation_config.do_sample = False  # a base that does not sample lends nothing
    generate(model, tokenizer, ["Hi"], settings_of_run(InstructArguments, {}, max_new_tokens=2, do_sample=True))
    assert (used[-1].temperature, used[-1].top_p) == (SAMPLING_DEFAULTS["temperature"], SAMPLING_DEFAULTS["top_p"])


def test_a_run_from_a_sampling_base_samples_with_its_settings_and_scores_greedily(sampling_base, tmp_path):
    from hf_recipes.recipes import instruct
    from tests.conftest import SAMPLES, tiny_overrides

    run = {**tiny_overrides(tmp_path / "run"), "model_name_or_path": sampling_base, "model_type": None,
           "config_overrides": None, "tokenizer_name": None, "max_steps": 1,
           "train_file": str(SAMPLES / "instructions" / "instructions.json")}
    _, sampled = instruct.build_trainer(**run, do_sample=True, top_p=0.5)
    config = sampled.model.generation_config
    assert (config.do_sample, config.temperature, config.top_p, config.top_k) == (True, 0.6, 0.5, 50)
    _, greedy = instruct.build_trainer(**{**run, "output_dir": str(tmp_path / "greedy")})
    config = greedy.model.generation_config
    assert (config.do_sample, config.temperature, config.top_p, config.top_k) == (False, None, None, None)
    config.validate(strict=True)


def test_help_and_print_config_show_what_a_yaml_null_gives(tmp_path, capsys):
    config = tmp_path / "nulls.yaml"
    config.write_text("attn_implementation: null\nlearning_rate: null\nmax_seq_length: 64\n")
    assert cli.main(["train", "sentiment", "--config", str(config), "--help"]) == 0
    values = shown_flags(capsys.readouterr().out)
    assert (values["attn_implementation"], values["learning_rate"], values["max_seq_length"]) == ("unset", "5e-05",
                                                                                                 "64")
    assert cli.main(["print-config", "sentiment", "--config", str(config)]) == 0
    printed = capsys.readouterr().out
    assert "\nattn_implementation: null\n" in printed and "\nlearning_rate: 5.0e-05\n" in printed


def test_print_config_checks_each_setting_once(monkeypatch, capsys):
    from hf_recipes import config as config_module
    from hf_recipes.config import PeftArguments, RunArguments

    calls = []
    for cls in (PeftArguments, RunArguments):
        monkeypatch.setattr(cls, "__post_init__", lambda self, check=cls.__post_init__: calls.append(
            type(self).__name__) or check(self))
    monkeypatch.setattr(config_module, "check_training", lambda training, check=config_module.check_training:
                        calls.append("check_training") or check(training))
    assert cli.main(["print-config", "sentiment", "--use_peft", "true", "--lora_r", "4"]) == 0
    assert sorted(calls) == ["PeftArguments", "RunArguments", "check_training"]
