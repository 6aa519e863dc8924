"""TRL's option names work in YAML and on the command line, each mapped to ours with one log line; other trainers'
names are suggested in errors."""

import pytest

from hf_recipes import cli
from hf_recipes.errors import RecipeError
from hf_recipes.recipes import instruct, lyrics, sentiment
from tests.conftest import run_fresh, SAMPLES

INSTRUCTIONS = str(SAMPLES / "instructions" / "instructions.json")


def test_trl_names_on_the_command_line_set_our_settings_and_say_so(tiny_model_args):
    args = instruct.RECIPE.parse(None, ["--max_length", "96", "--packing", "--completion_only_loss", "false",
                                        "--dataset_num_proc=2"],
                                 **tiny_model_args)
    notes = args.renamed
    assert (args.data.max_seq_length, args.task.padding_free, args.task.train_on_inputs) == (96, True, True)
    assert args.data.preprocessing_num_workers == 2
    assert notes == ["--max_length is TRL's name for --max_seq_length",
                     "--packing is TRL's name for --padding_free",
                     "--completion_only_loss is TRL's name for --train_on_inputs with the opposite value",
                     "--dataset_num_proc is TRL's name for --preprocessing_num_workers"]
    # the flag alone is true; TRL's default (loss on the completion only) is ours
    assert instruct.RECIPE.parse(None, ["--assistant_only_loss"], **tiny_model_args).task.train_on_inputs is False


def test_trl_names_in_yaml_and_the_peft_rank_of_llama_factory(tmp_path, tiny_model_args):
    config = tmp_path / "trl.yaml"
    config.write_text("max_length: 64\npacking: false\ncompletion_only_loss: true\nuse_peft: true\nlora_rank: 4\n"
                      "model_name_or_path: gpt2\n")
    tiny = {k: v for k, v in tiny_model_args.items() if k not in {"model_name_or_path", "model_type",
                                                                  "config_overrides"}}
    args = instruct.RECIPE.parse(config, [], **tiny)
    assert (args.data.max_seq_length, args.task.padding_free, args.task.train_on_inputs) == (64, False, False)
    assert args.peft.lora_r == 4 and "--lora_rank is LLaMA-Factory's name for --lora_r" in args.renamed
    config.write_text("max_length: 64\nmax_seq_length: 32\n")
    with pytest.raises(RecipeError, match="^give max_length or max_seq_length, not both$"):
        instruct.RECIPE.parse(config, [], **tiny_model_args)


def test_lyrics_maps_max_length_to_its_block_size_and_always_packs(tiny_model_args):
    args = lyrics.RECIPE.parse(None, ["--max_length", "48", "--packing", "true", "--dataset_text_field", "lyrics"],
                               **tiny_model_args)
    assert (args.task.block_size, args.data.text_column) == (48, "lyrics")
    assert args.renamed == ["--max_length is TRL's name for --block_size",
                            "packing: the lyrics recipe always packs whole songs into blocks of block_size tokens",
                            "--dataset_text_field is TRL's name for --text_column"]
    with pytest.raises(RecipeError, match="^packing false cannot apply: the lyrics recipe always packs whole songs"):
        lyrics.RECIPE.parse(None, ["--packing", "false"], **tiny_model_args)


@pytest.mark.parametrize("recipe, argv, message", [
    (sentiment, ["--packing"], "packing (TRL's name for padding_free) does not apply to this recipe"),
    (lyrics, ["--completion_only_loss"], "completion_only_loss (TRL's name for train_on_inputs) does not apply to "
                                         "this recipe"),
    (instruct, ["--completion_only_loss", "maybe"], "completion_only_loss takes true or false, got 'maybe'"),
])
def test_a_trl_name_without_an_equivalent_is_one_error_line(recipe, argv, message, tiny_model_args, capsys):
    with pytest.raises(RecipeError) as refused:
        recipe.RECIPE.parse(None, argv, **tiny_model_args)
    assert str(refused.value) == message


@pytest.mark.parametrize("recipe, flag, suggestion", [
    ("sentiment", "--cutoff_len", "(LLaMA-Factory's cutoff_len is --max_seq_length here)"),
    ("lyrics", "--sequence_len", "(axolotl's sequence_len is --block_size here)"),
    ("instruct", "--micro_batch_size", "(axolotl's micro_batch_size is --per_device_train_batch_size here)"),
    ("instruct", "--pakcing", "(did you mean '--packing'?)"),
    ("sentiment", "--lora_rnak", "(did you mean '--lora_rank'?)"),
])
def test_other_trainers_names_are_suggested_without_any_deep_learning_import(recipe, flag, suggestion):
    fresh = run_fresh("train", recipe, flag, "8")
    assert fresh.returncode == 2 and fresh.stdout.splitlines()[-1] == "heavy imports: none"
    assert fresh.stderr == f"error: unknown argument '{flag}' {suggestion}\n"


def test_a_trl_name_in_a_yaml_of_the_wrong_recipe_and_a_misspelled_key(tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text("cutoff_len: 128\n")
    assert cli.main(["train", "sentiment", "--config", str(config)]) == 2
    assert capsys.readouterr().err == (f"error: unknown config key 'cutoff_len' in {config} (LLaMA-Factory's "
                                       "cutoff_len is max_seq_length here)\n")


def test_a_sweep_keeps_the_trl_names_of_its_command_line_in_its_best_config(tiny_model_args):
    from hf_recipes.config import resolved_values  # what best.yaml (and print-config) hold

    args = instruct.RECIPE.parse(None, ["--max_length", "64", "--completion_only_loss", "false"], **tiny_model_args)
    values = {key: value for group in resolved_values(args).values() for key, value in group.items()}
    assert (values["max_seq_length"], values["train_on_inputs"]) == (64, True)
    assert "max_length" not in values and "completion_only_loss" not in values
