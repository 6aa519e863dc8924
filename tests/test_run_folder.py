"""A saved run behaves under plain transformers as under hf-recipes: a clean tokenizer, the recipe's decoding in
generation_config.json, and (instruct) the prompt format as the tokenizer's chat template."""

import json

import pytest
from transformers import AutoTokenizer, GenerationConfig, pipeline, set_seed

from hf_recipes.recipes import instruct, lyrics
from hf_recipes.recipes.instruct import InstructArguments, render_prompt
from tests.conftest import card_snippet, run_card_snippet, SAMPLES


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A finished tiny instruct run and lyrics run."""
    folder = tmp_path_factory.mktemp("saved")
    common = {"model_type": "gpt2", "model_name_or_path": None, "tokenizer_name": str(SAMPLES / "tokenizer"),
              "config_overrides": "n_layer=1,n_embd=32,n_head=2,n_positions=128", "report_to": "none",
              "save_strategy": "no", "eval_strategy": "no", "disable_tqdm": True, "mixed_precision": "no",
              "use_cpu": True, "max_steps": 4, "learning_rate": 1e-3, "max_new_tokens": 8}
    instruct.run(**common, train_file=str(SAMPLES / "instructions" / "instructions.json"),
                 output_dir=str(folder / "instruct"))
    lyrics.run(**common, train_file=str(SAMPLES / "lyrics" / "songs.txt"), block_size=64, prompts=["Down by"],
               output_dir=str(folder / "lyrics"))
    return folder


@pytest.mark.slow
@pytest.mark.parametrize("name", ["instruct", "lyrics"])
def test_the_saved_tokenizer_carries_no_padding_or_truncation_left_from_generation(saved, name):
    # generation pads and cuts on the left; none of that may stick to the tokenizer a user loads
    state = json.loads((saved / name / "tokenizer.json").read_text())
    assert state["truncation"] is None and state["padding"] is None
    tokenizer = AutoTokenizer.from_pretrained(saved / name)
    assert tokenizer.padding_side == "right" and tokenizer.truncation_side == "right"


def test_generation_config_holds_the_recipes_decoding(saved):
    scored = GenerationConfig.from_pretrained(saved / "instruct")
    assert (scored.do_sample, scored.max_new_tokens, scored.repetition_penalty) == (False, 8, 1.0)
    sampled = GenerationConfig.from_pretrained(saved / "lyrics")
    task = lyrics.LyricsArguments().sampling_from(None)  # a base built from scratch lends no sampling settings
    assert (sampled.do_sample, sampled.max_new_tokens, sampled.temperature, sampled.top_k, sampled.top_p,
            sampled.repetition_penalty) == (True, 8, task.temperature, task.top_k, task.top_p,
                                            task.repetition_penalty)


def test_the_chat_template_renders_the_training_prompt(saved):
    tokenizer = AutoTokenizer.from_pretrained(saved / "instruct")
    task = InstructArguments()
    plain = [{"role": "user", "content": "Name a day."}]
    assert tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=True) == render_prompt(
        "Name a day.", "", task)
    with_input = [{"role": "user", "content": "Add the numbers.", "input": "2 and 3"}]
    assert tokenizer.apply_chat_template(with_input, tokenize=False) == render_prompt("Add the numbers.", "2 and 3",
                                                                                      task)
    answered = plain + [{"role": "assistant", "content": "Sunday."}]
    assert tokenizer.apply_chat_template(answered, tokenize=False) == (
        render_prompt("Name a day.", "", task) + "Sunday." + tokenizer.eos_token)
    # the template is the recipe's own: a custom prompt_template renders the same way
    custom = InstructArguments(prompt_template="Q: {instruction}{input_section}\nA: ", input_template=" ({input})")
    tokenizer.chat_template = instruct.chat_template(custom)
    assert tokenizer.apply_chat_template(with_input, tokenize=False) == "Q: Add the numbers. (2 and 3)\nA: "


def test_a_plain_pipeline_answers_as_hf_recipes_generate(saved):
    out = saved / "instruct"
    generator = pipeline("text-generation", model=str(out), device="cpu")
    for record in ({"instruction": "Name a day of the weekend."}, {"instruction": "Add.", "input": "2 and 3"}):
        messages = [{"role": "user", "content": record["instruction"], **({"input": record["input"]}
                                                                          if "input" in record else {})}]
        reply = generator(messages)[0]["generated_text"][-1]
        assert reply["role"] == "assistant"
        assert reply["content"].strip() == instruct.generate(out, record["instruction"], record.get("input", ""))


def test_a_plain_pipeline_samples_lyrics_as_hf_recipes_generate(saved):
    out = saved / "lyrics"
    generator = pipeline("text-generation", model=str(out), device="cpu")
    set_seed(lyrics.LyricsArguments().generation_seed)
    text = generator("Down by the")[0]["generated_text"]
    assert text == "Down by the" + lyrics.generate(out, ["Down by the"], max_new_tokens=8)[0]


@pytest.mark.parametrize("name", ["instruct", "lyrics"])
def test_the_model_card_snippet_generates_as_hf_recipes_generate(saved, name, tmp_path, monkeypatch, capsys):
    out = saved / name
    snippet = card_snippet(out)
    assert f'pipeline("text-generation", model="{out.resolve()}")' in snippet
    monkeypatch.chdir(tmp_path)
    generator = run_card_snippet(out, capsys)["generator"]
    greedy = {"do_sample": False, "max_new_tokens": 6, "repetition_penalty": 1.0}
    if name == "lyrics":
        assert generator("Down by", **greedy)[0]["generated_text"] == "Down by" + lyrics.generate(
            out, ["Down by"], **greedy)[0]
    else:
        assert "### Instruction:\n{instruction}" in (out / "README.md").read_text()  # the prompt format, shown
        messages = [{"role": "user", "content": "Add the numbers.", "input": "2 and 3"}]
        reply = generator(messages, **greedy)[0]["generated_text"][-1]["content"]
        assert reply.strip() == instruct.generate(out, "Add the numbers.", "2 and 3", **greedy)
