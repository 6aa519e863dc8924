"""Bases as they ship on the hub (tests/conftest.py ``save_pretrained_base``: weights stored in bf16, a generation
config that samples, no pad token, a chat template): training keeps fp32 master weights, the base's decoding
settings never reach the run's greedy answers or its saved generation config, and a classifier pools the last real
token even when a text ends in the EOS text."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification, AutoTokenizer, GenerationConfig, pipeline

from hf_recipes.chat import render
from hf_recipes.collators import position_ids_from_mask
from hf_recipes.generation import GenerationArguments, generate, load_causal_lm
from hf_recipes.model import bos_prefix
from hf_recipes.predict import classify
from hf_recipes.recipes import instruct, lyrics, sentiment
from tests.conftest import (BASE_FAMILIES, QWEN_INSTRUCT_GENERATION, SAMPLES, save_pretrained_base, TASK_DATA,
                           tiny_overrides)

GREEDY = {"do_sample": False, "repetition_penalty": 1.0, "max_new_tokens": 10}
RECIPES = {"sentiment": sentiment, "lyrics": lyrics, "instruct": instruct, "instruct-chat": instruct}
EMBEDDINGS = ("wte", "wpe", "embed_tokens", "lm_head")  # rows of tokens a batch lacks get no gradient


def settings(base: str, name: str, output_dir, **extra) -> dict:
    recipe_settings = {"sentiment": {"classification_baselines": False},
                       "lyrics": {**GREEDY, "prompts": ["Down by", "The night"]},
                       "instruct": {**GREEDY, "max_test_samples": 6},
                       "instruct-chat": {**GREEDY, "max_test_samples": 6, "prompt_format": "chat"}}[name]
    return {**tiny_overrides(output_dir), **TASK_DATA[name.removesuffix("-chat")], **recipe_settings,
            "model_type": None, "config_overrides": None, "tokenizer_name": None, "model_name_or_path": base,
            "max_steps": 2, "learning_rate": 1e-3, "logging_steps": 1, **extra}


@torch.no_grad()
def argmax_continuation(model, tokenizer, prompt: str, max_new_tokens: int, add_bos: bool = True) -> str:
    """Greedy decoding by hand: append the most likely token until EOS or ``max_new_tokens``."""
    ids = (bos_prefix(tokenizer) if add_bos else []) + tokenizer(prompt, add_special_tokens=False)["input_ids"]
    new = []
    for _ in range(max_new_tokens):
        token = int(model(input_ids=torch.tensor([ids + new])).logits[0, -1].argmax())
        if token == tokenizer.eos_token_id:
            break
        new.append(token)
    return tokenizer.decode(new, skip_special_tokens=True)


def moved_share(before: dict, model) -> float:
    """Share of the non-embedding weight elements that changed."""
    changed = total = 0
    for name, param in model.named_parameters():
        if not any(part in name for part in EMBEDDINGS):
            changed += int((param.detach() != before[name]).sum())
            total += param.numel()
    return changed / total


@pytest.mark.slow
@pytest.mark.parametrize("family", list(BASE_FAMILIES))
def test_a_bf16_base_trains_with_fp32_master_weights_and_optimizer_state(family, pretrained_bases, tmp_path):
    trainer, prepared = lyrics.build_trainer(**settings(pretrained_bases[family], "lyrics", tmp_path / "run",
                                                        max_steps=3, learning_rate=5e-5))
    assert {param.dtype for param in prepared.model.parameters()} == {torch.float32}
    before = {name: param.detach().clone() for name, param in prepared.model.named_parameters()}
    trainer.train()
    optimizer_dtypes = {value.dtype for state in trainer.optimizer.state.values() for value in state.values()
                        if torch.is_tensor(value) and value.is_floating_point()}
    assert optimizer_dtypes == {torch.float32}
    assert moved_share(before, prepared.model) > 0.99


def test_pure_bf16_training_is_asked_for_by_name_and_reported(pretrained_bases, tmp_path, caplog):
    out = tmp_path / "run"
    trainer, prepared = lyrics.build_trainer(**settings(pretrained_bases["gpt2"], "lyrics", out, max_steps=3,
                                                        learning_rate=5e-5, dtype="bfloat16"))
    assert {param.dtype for param in prepared.model.parameters()} == {torch.bfloat16}
    assert "Weights: bfloat16 (pure low-precision training: no fp32 master weights)" in caplog.text
    before = {name: param.detach().clone() for name, param in prepared.model.named_parameters()}
    trainer.train()
    # Updates of lr 5e-5 are mostly below bf16's resolution: the reason fp32 master weights are the default.
    assert moved_share(before, prepared.model) < 0.9


@pytest.mark.slow
def test_report_states_the_precision_of_weights_and_compute(pretrained_bases, tmp_path):
    out = tmp_path / "run"
    lyrics.run(**settings(pretrained_bases["gpt2"], "lyrics", out))
    assert "- precision: weights float32; compute as the weights;" in (out / "report.md").read_text()
    card = (out / "README.md").read_text()
    assert "| precision | weights float32, compute fp32 |" in card


@pytest.mark.parametrize("generation", [{"no_repeat_ngram_size": 2}, {"repetition_penalty": 1.5},
                                        QWEN_INSTRUCT_GENERATION], ids=["ngram", "penalty", "qwen-sampling"])
@pytest.mark.slow
def test_the_bases_decoding_settings_never_reach_greedy_answers(generation, tmp_path):
    base = save_pretrained_base(tmp_path / "base", "gpt2", generation)
    trainer, prepared = instruct.build_trainer(**settings(base, "instruct", tmp_path / "run"))
    model, tokenizer = prepared.model.eval(), prepared.tokenizer
    saved = prepared.model.generation_config.to_diff_dict()
    assert {key: saved.get(key) for key in ("do_sample", "no_repeat_ngram_size", "repetition_penalty", "temperature",
                                            "top_p", "top_k")} == {"do_sample": False, "no_repeat_ngram_size": None,
                                                                   "repetition_penalty": 1.0, "temperature": None,
                                                                   "top_p": None, "top_k": None}
    prompts = instruct.RECIPE.prompts(prepared.raw["test"], instruct.InstructArguments())
    answers = generate(model, tokenizer, prompts, GenerationArguments(**GREEDY))
    assert answers == [argmax_continuation(model, tokenizer, p, GREEDY["max_new_tokens"]) for p in prompts]
    if "no_repeat_ngram_size" in generation:
        # Filled in from the base's config (as a partial config passed to generate() is), n-gram blocking changes
        # these answers: the equality above is no coincidence.
        model.generation_config = GenerationConfig.from_pretrained(base)
        partial = GenerationConfig(do_sample=False, max_new_tokens=GREEDY["max_new_tokens"])
        leaked = [tokenizer.decode(model.generate(**tokenizer(p, return_tensors="pt"), generation_config=partial)[0],
                                   skip_special_tokens=True)[len(p):] for p in prompts]
        assert leaked != answers


@pytest.fixture(scope="module")
def finished(pretrained_bases, tmp_path_factory):
    """(family, recipe, lora) -> output_dir of a finished run from the pretrained-shaped base, made once."""
    runs = {}

    def get(family: str, name: str, lora: bool):
        key = family, name, lora
        if key not in runs:
            out = tmp_path_factory.mktemp(f"{family}-{name}-{'lora' if lora else 'full'}") / "run"
            RECIPES[name].run(**settings(pretrained_bases[family], name, out,
                                         **({"use_peft": True, "lora_r": 4} if lora else {})))
            runs[key] = out
        return runs[key]

    return get


CASES = [(family, name, lora) for family in BASE_FAMILIES for name in RECIPES for lora in (False, True)
         if family == "gpt2" or name != "instruct-chat"]


@pytest.mark.slow
@pytest.mark.parametrize("family, name, lora", CASES)
def test_every_recipe_runs_from_the_base_by_path(family, name, lora, finished):
    out = finished(family, name, lora)
    recipe_file = json.loads((out / "recipe.json").read_text())
    assert recipe_file["recipe"] == name.removesuffix("-chat")
    for split in ("train", "eval"):
        assert (out / f"{split}_results.json").is_file()
    if lora:  # the adapter holds what was trained: no copy of the base's embedding layer (the rows added included)
        vocabulary = len(AutoTokenizer.from_pretrained(out))
        assert all(tensor.shape[0] < vocabulary for tensor in load_file(out / "adapter_model.safetensors").values())
    if name == "sentiment":
        assert not (out / "generation_config.json").exists() or lora
        return
    saved = json.loads((out / "generation_config.json").read_text())
    decoding = {key: value for key, value in saved.items() if key not in ("transformers_version", "pad_token_id",
                                                                          "eos_token_id", "bos_token_id")}
    # Exactly the decoding the report describes ("greedy, max_new_tokens 10, repetition_penalty 1.0").
    assert decoding == {"do_sample": False, "max_new_tokens": 10, "repetition_penalty": 1.0}
    assert recipe_file["decoding"] == decoding


@pytest.mark.slow
@pytest.mark.parametrize("family, name, lora", [case for case in CASES if case[1] != "sentiment"])
def test_greedy_answers_equal_the_argmax_loop(family, name, lora, finished):
    out = finished(family, name, lora)
    model, tokenizer = load_causal_lm(out)
    if name == "lyrics":
        prompts = ["Down by", "The night"]
        answers = lyrics.generate(out, prompts, **GREEDY)
        title_column = json.loads((out / "recipe.json").read_text())["task"]["title_column"]
        expected = [argmax_continuation(model, tokenizer, p, GREEDY["max_new_tokens"])
                    for p in lyrics.model_prompts(prompts, title_column)]
        assert answers == expected
        return
    rows = [json.loads(line) for line in (out / instruct.GENERATIONS_FILE).read_text().splitlines()]
    assert len(rows) == 6
    for row in rows:
        if name == "instruct-chat":
            prompt, add_bos = render(tokenizer, row["messages"], add_generation_prompt=True), False
        else:
            prompt, add_bos = instruct.render_prompt(row["instruction"], row["input"], instruct.InstructArguments()), True
        assert row["generated"] == argmax_continuation(model, tokenizer, prompt, GREEDY["max_new_tokens"],
                                                       add_bos).strip()


@torch.no_grad()
def hand_taken_logits(model, tokenizer, text: str) -> torch.Tensor:
    """The classifier head applied to the hidden state of the text's last token, the text alone (no padding)."""
    ids = torch.tensor([tokenizer(text)["input_ids"]])
    hidden = model.base_model(input_ids=ids).last_hidden_state[0, -1]
    return model.score(hidden)


@pytest.mark.parametrize("family", list(BASE_FAMILIES))
def test_a_text_ending_in_the_eos_text_is_pooled_at_its_last_token(family, finished):
    out = finished(family, "sentiment", False)
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert tokenizer.pad_token_id not in (tokenizer.eos_token_id, tokenizer.bos_token_id)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    texts = ["what a lovely day" + tokenizer.eos_token, "so sad", "fine" + tokenizer.eos_token + tokenizer.eos_token]
    assert tokenizer(texts[0])["input_ids"][-1] == tokenizer.eos_token_id
    expected = torch.stack([hand_taken_logits(model, tokenizer, text) for text in texts])
    for side in ("right", "left"):
        tokenizer.padding_side = side
        batch = tokenizer(texts, padding=True, return_tensors="pt")
        with torch.no_grad():  # positions count real tokens: GPT-2's would shift under left padding
            batched = model(**batch, position_ids=position_ids_from_mask(batch["attention_mask"])).logits
        torch.testing.assert_close(batched, expected, rtol=1e-5, atol=1e-5)
    model.config.pad_token_id = tokenizer.eos_token_id  # pad = EOS, as before: pooled one token early
    with torch.no_grad():
        assert not torch.allclose(model(**tokenizer(texts[:1], return_tensors="pt")).logits, expected[:1])
    model.config.pad_token_id = tokenizer.pad_token_id
    # Plain transformers and `hf-recipes predict` agree with the hand-taken logits.
    probabilities = expected.softmax(-1)
    classifier = pipeline("text-classification", model=str(out), top_k=None)
    for text, scores, row in zip(texts, classifier(texts), probabilities):
        assert {s["label"]: round(s["score"], 5) for s in scores} == {
            model.config.id2label[i]: round(float(p), 5) for i, p in enumerate(row)}
    for text, predicted, row in zip(texts, classify(out, texts), probabilities):
        assert predicted["label"] == model.config.id2label[int(row.argmax())]
        assert predicted["score"] == pytest.approx(float(row.max()), abs=1e-5)


def test_rows_holding_the_pad_text_are_dropped_and_counted(pretrained_bases, tmp_path):
    data = tmp_path / "train.csv"
    rows = ["text,sentiment"] + [f"row {i} is nice,positive" for i in range(20)] + [
        f"row {i} is bad,negative" for i in range(20)] + ["sneaky <|pad|> text,negative"]
    data.write_text("\n".join(rows) + "\n")
    trainer, prepared = sentiment.build_trainer(**settings(pretrained_bases["gpt2"], "sentiment", tmp_path / "run",
                                                           train_file=str(data), test_file=None,
                                                           max_test_samples=None))
    dropped = prepared.facts["rows dropped for holding the pad token <|pad|>"]
    assert sum(int(part.split()[-1]) for part in dropped.split(", ")) == 1
    pad = prepared.tokenizer.pad_token_id
    assert all(pad not in ids for split in prepared.datasets.values() for ids in split["input_ids"])


@pytest.mark.slow
def test_checks_with_the_starting_model_work_beside_the_classifiers_own_pad_token(pretrained_bases, tmp_path):
    out = tmp_path / "run"
    sentiment.run(**settings(pretrained_bases["gpt2"], "sentiment", out, classification_baselines=True,
                             few_shot_k=[0, 2], max_test_samples=8,
                             forgetting_eval_file=str(SAMPLES / "lyrics" / "songs.txt"), forgetting_max_tokens=200))
    found = json.loads((out / "checks.json").read_text())
    assert "failed_steps" not in found
    assert found["forgetting"]["applies"]
    models = [row["model"] for row in found["baselines"]["rows"]]
    assert "starting LM, 0-shot prompt" in models and "starting LM, 2-shot prompt" in models
