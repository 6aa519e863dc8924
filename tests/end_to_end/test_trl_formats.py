"""TRL's dataset formats in the instruct recipe, told apart by their columns: prompt/completion text (the prompt as
given, loss on the completion), conversational prompt/completion (loss on the completion's turns), messages and
ShareGPT conversations; and a plain run prompted as given by generate, the CLI and the Python API."""

import json
import logging
from pathlib import Path

import pytest

from hf_recipes import cli
from hf_recipes.chat import IM_END
from hf_recipes.errors import RecipeError
from hf_recipes.generation import GenerationArguments, generate as generate_text, load_causal_lm
from hf_recipes.recipes import instruct
from tests.conftest import cli_args, expected_chatml, ids_of, needs_shared, SAMPLES, SHARED_DATA, tiny_overrides

SAMPLE = json.loads((SAMPLES / "instructions" / "instructions.json").read_text())


def user_turn(record: dict) -> str:
    return instruct.user_message(record["instruction"], record["input"])


def plain_prompt(record: dict) -> str:
    """A prompt of its own making, nothing like the Alpaca template: it must reach the model as it is."""
    return f"Q: {user_turn(record)}\nA:"


def to_format(records: list[dict], layout: str) -> list[dict]:
    """Alpaca records in one of TRL's formats (and ShareGPT's)."""
    if layout == "prompt-completion":
        return [{"prompt": plain_prompt(r), "completion": " " + r["output"]} for r in records]
    if layout == "conversational prompt-completion":  # every other prompt holds an earlier exchange
        return [{"prompt": ([{"role": "user", "content": "Ready?"}, {"role": "assistant", "content": "Yes."}]
                            if i % 2 else []) + [{"role": "user", "content": user_turn(r)}],
                 "completion": [{"role": "assistant", "content": r["output"]}]} for i, r in enumerate(records)]
    if layout == "messages":
        return [{"messages": [{"role": "user", "content": user_turn(r)},
                              {"role": "assistant", "content": r["output"]}]} for r in records]
    if layout == "ShareGPT conversations":
        return [{"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": user_turn(r)},
                                   {"from": "gpt", "value": r["output"]}]} for r in records]
    raise AssertionError(layout)


def write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return str(path)


@pytest.fixture
def tiny(tmp_path):
    return {**tiny_overrides(tmp_path / "run"), "max_steps": 2, "per_device_train_batch_size": 4,
            "max_new_tokens": 6, "max_test_samples": 4, "learning_rate": 1e-3}


def test_plain_prompt_completion_uses_the_prompt_verbatim_and_trains_on_the_completion_only(tmp_path, tiny):
    train_file = write_jsonl(tmp_path / "pc.jsonl", to_format(SAMPLE, "prompt-completion"))
    _, prepared = instruct.build_trainer(**tiny, train_file=train_file)
    assert prepared.facts["records"] == "prompt-completion (from the columns; prompt_format plain)"
    assert prepared.facts["loss on"] == "response tokens and EOS only"
    tokenizer, raw, examples = prepared.tokenizer, prepared.raw["train"], prepared.datasets["train"]
    eos = tokenizer.eos_token_id
    for index in range(5):
        prompt, completion = raw[index]["prompt"], raw[index]["completion"]
        prompt_ids, completion_ids = ids_of(tokenizer, prompt), ids_of(tokenizer, completion)
        assert examples[index]["input_ids"] == prompt_ids + completion_ids + [eos]
        assert examples[index]["labels"] == [-100] * len(prompt_ids) + completion_ids + [eos]
        assert tokenizer.decode(examples[index]["input_ids"]) == prompt + completion + tokenizer.eos_token
    assert "### Instruction" not in tokenizer.decode(examples[0]["input_ids"])


def test_conversational_prompt_completion_trains_on_the_completion_turn_only(tmp_path, tiny):
    train_file = write_jsonl(tmp_path / "cpc.jsonl", to_format(SAMPLE, "conversational prompt-completion"))
    _, prepared = instruct.build_trainer(**tiny, train_file=train_file)
    assert prepared.facts["records"] == "conversational prompt-completion (from the columns; prompt_format chat)"
    tokenizer, raw, examples = prepared.tokenizer, prepared.raw["train"], prepared.datasets["train"]
    index = next(i for i, prompt in enumerate(raw["prompt"]) if len(prompt) == 3)  # with an earlier exchange
    messages = raw[index]["prompt"] + raw[index]["completion"]
    ids, labels = expected_chatml(tokenizer, messages)
    earlier_answer = labels.index(ids_of(tokenizer, "Yes.")[0])
    labels[earlier_answer:earlier_answer + len(ids_of(tokenizer, "Yes.")) + 1] = [-100] * (
        len(ids_of(tokenizer, "Yes.")) + 1)  # the prompt's own assistant turn is context
    assert (examples[index]["input_ids"], examples[index]["labels"]) == (ids, labels)
    targets = tokenizer.decode([t for t in examples[index]["labels"] if t != -100])
    assert targets == raw[index]["completion"][0]["content"] + IM_END


def test_sharegpt_turns_become_messages_with_the_loss_on_gpt_turns(tmp_path, tiny):
    train_file = write_jsonl(tmp_path / "sharegpt.jsonl", to_format(SAMPLE, "ShareGPT conversations"))
    _, prepared = instruct.build_trainer(**tiny, train_file=train_file)
    assert prepared.facts["records"] == "ShareGPT conversations (from the columns; prompt_format chat)"
    first = prepared.raw["train"][0]["conversations"]
    assert [m["role"] for m in first] == ["system", "user", "assistant"]
    example = prepared.datasets["train"][0]
    assert (example["input_ids"], example["labels"]) == expected_chatml(prepared.tokenizer, first)


@pytest.mark.parametrize("rows, message", [
    ([{"text": "la la la"}] * 30, "these records are plain text (a 'text' column, TRL's language-modelling format): "
                                  "train on them with the lyrics recipe"),
    ([{"question": "a", "answer": "b"}] * 30, "cannot tell the records' format from their columns (question, answer)"),
    ([{"conversations": [{"from": "human", "value": "hi"}, {"from": "bot", "value": "yo"}]}] * 30,
     "has message 2 with role 'bot' (roles: system, user, assistant)"),
])
def test_records_of_no_known_format_are_one_clear_error(rows, message, tmp_path, tiny):
    with pytest.raises(RecipeError) as refused:
        instruct.build_trainer(**tiny, train_file=write_jsonl(tmp_path / "odd.jsonl", rows))
    assert message in str(refused.value)
    assert not Path(tiny["output_dir"]).exists()


def test_prompt_format_overrides_the_detected_one(tmp_path, tiny):
    train_file = write_jsonl(tmp_path / "pc.jsonl", to_format(SAMPLE, "prompt-completion"))
    _, prepared = instruct.build_trainer(**tiny, train_file=train_file, prompt_format="chat")
    raw, example = prepared.raw["train"][0], prepared.datasets["train"][0]
    turns = [{"role": "user", "content": raw["prompt"]}, {"role": "assistant", "content": raw["completion"]}]
    assert (example["input_ids"], example["labels"]) == expected_chatml(prepared.tokenizer, turns)
    with pytest.raises(RecipeError, match="column 'instruction' not found"):
        instruct.build_trainer(**tiny, train_file=train_file, prompt_format="alpaca")


def test_a_plain_run_is_prompted_as_given_by_its_report_generate_the_cli_and_python(tmp_path, tiny, capsys):
    train_file = write_jsonl(tmp_path / "pc.jsonl", to_format(SAMPLE, "prompt-completion"))
    instruct.run(**tiny, train_file=train_file)
    out = Path(tiny["output_dir"])
    task = json.loads((out / "recipe.json").read_text())["task"]
    assert (task["prompt_format"], task["dataset_format"]) == ("plain", "prompt-completion")
    row = json.loads((out / "test_generations.jsonl").read_text().splitlines()[0])
    model, tokenizer = load_causal_lm(out)
    settings = GenerationArguments(max_new_tokens=6, do_sample=False, repetition_penalty=1.0)  # the run's
    by_hand = generate_text(model, tokenizer, [row["prompt"]], settings)[0].strip()
    assert row["generated"] == by_hand == instruct.generate(out, row["prompt"])
    capsys.readouterr()
    assert cli.main(["generate", "--model_dir", str(out), "--prompt", row["prompt"]]) == 0
    assert capsys.readouterr().out.strip() == by_hand
    assert cli.main(["generate", "--model_dir", str(out)]) == 2
    assert "give --prompt: this run was trained on plain prompt/completion records" in capsys.readouterr().err


# ---- real records of the Alpaca data, in every format, trained with TRL's option names -----------------------
@pytest.mark.slow
@needs_shared
@pytest.mark.parametrize("layout, trl_flags", [
    ("prompt-completion", ["--completion_only_loss", "true", "--max_length", "128", "--packing", "false"]),
    ("conversational prompt-completion", ["--completion_only_loss", "--max_length", "120"]),
    ("messages", ["--assistant_only_loss", "true", "--max_length", "120", "--packing", "true", "--use_cache", "false"]),
    ("ShareGPT conversations", ["--assistant_only_loss", "true", "--max_length", "120", "--dataset_num_proc", "1"]),
])
def test_real_records_train_in_every_format_with_trl_option_names(layout, trl_flags, tmp_path, tiny, caplog):
    records = json.loads((SHARED_DATA / "instructions" / "instruction-data.json").read_text())[:48]
    train_file = write_jsonl(tmp_path / "records.jsonl", to_format(records, layout))
    argv = ["train", "instruct", "--config", str(instruct.RECIPE.demo_config),
            *cli_args({**tiny, "train_file": train_file}), *trl_flags]
    with caplog.at_level(logging.INFO, logger="hf_recipes"):
        assert cli.main(argv) == 0
    out = Path(tiny["output_dir"])
    task = json.loads((out / "recipe.json").read_text())["task"]
    assert task["dataset_format"] == layout and task["train_on_inputs"] is False
    assert f"Records read as {layout}" in caplog.text
    assert "--max_length is TRL's name for --max_seq_length" in caplog.text
    train = json.loads((out / "train_results.json").read_text())
    assert train["train_loss"] > 0 and train["train_samples"] > 30
    assert len((out / "test_generations.jsonl").read_text().splitlines()) == 4


def test_half_a_format_names_the_missing_column(tmp_path, tiny):
    rows = [{"prompt": "Say hi.", "answer": "hi"}] * 30
    with pytest.raises(RecipeError, match="^column 'completion' not found in the train data; columns found: "
                                          "prompt, answer$"):
        instruct.build_trainer(**tiny, train_file=write_jsonl(tmp_path / "half.jsonl", rows))


def test_language_modelling_text_trains_with_the_lyrics_recipe_and_trl_names(tmp_path, tiny, caplog):
    songs = [song.strip() for song in (SAMPLES / "lyrics" / "songs.txt").read_text().split("\n\n") if song.strip()]
    train_file = write_jsonl(tmp_path / "songs.jsonl", [{"content": song} for song in songs])
    argv = ["train", "lyrics", *cli_args({**tiny, "train_file": train_file}), "--dataset_text_field", "content",
            "--max_length", "48", "--packing"]
    with caplog.at_level(logging.INFO, logger="hf_recipes"):
        assert cli.main(argv) == 0
    task = json.loads((Path(tiny["output_dir"]) / "recipe.json").read_text())["task"]
    assert task["block_size"] == 48
    assert "--dataset_text_field is TRL's name for --text_column" in caplog.text
    assert "packing: the lyrics recipe always packs whole songs into blocks of block_size tokens" in caplog.text
