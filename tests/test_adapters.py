"""LoRA with PEFT (--use_peft): which layers get adapters, what output_dir holds and that it reloads to the trained
model, gradient checkpointing, exact resume, the loss of accumulated steps, and every refused setting."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from peft.tuners.lora import LoraLayer
from peft.utils import ModulesToSaveWrapper
from safetensors.torch import load_file
from transformers import (AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer, GenerationConfig,
                          GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM, pipeline, set_seed)

from hf_recipes import cli, recipes
from hf_recipes.adapters import MERGED_DIR, adapted_module_names
from hf_recipes.generation import GenerationArguments, generate, load_causal_lm
from hf_recipes import run as run_lifecycle
from hf_recipes.recipes import instruct, lyrics, sentiment
from tests.conftest import (assert_one_error_line, card_snippet, cli_args, hand_mean_loss, run_card_snippet,
                           snapshot, TASK_DATA, tiny_overrides, TOKENIZER_DIR)

LORA_R = 4


def save_base(folder: Path, model_class, config_class, **config) -> str:
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    model_class(config_class(vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                             eos_token_id=tokenizer.eos_token_id, **config)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> str:
    """A pretrained tiny GPT-2 (2 layers, no dropout outside the LoRA path) saved as a local model folder, with a
    model card that names its license."""
    torch.manual_seed(0)
    folder = save_base(tmp_path_factory.mktemp("base"), GPT2LMHeadModel, GPT2Config, n_layer=2, n_embd=32, n_head=2,
                       n_positions=128, resid_pdrop=0, embd_pdrop=0, attn_pdrop=0, summary_first_dropout=0)
    (Path(folder) / "README.md").write_text("---\nlicense: apache-2.0\n---\n\n# A tiny base\n")
    return folder


def lora(base: str, name: str, output_dir: Path, **extra) -> dict:
    return {**tiny_overrides(output_dir), **TASK_DATA[name], "model_type": None, "config_overrides": None,
            "model_name_or_path": base, "tokenizer_name": None, "use_peft": True, "lora_r": LORA_R,
            "max_steps": 3, "learning_rate": 1e-2, "logging_steps": 1, **extra}


def linear_shapes(model) -> dict[str, tuple[int, int]]:
    """(in, out) features of every GPT-2 Conv1D / nn.Linear, by module name (before any adapter is added)."""
    shapes = {}
    for name, module in model.named_modules():
        if type(module).__name__ == "Conv1D":
            shapes[name] = tuple(module.weight.shape)  # Conv1D stores (in, out)
        elif isinstance(module, torch.nn.Linear):
            shapes[name] = (module.in_features, module.out_features)
    return shapes


@pytest.mark.parametrize("name", ["lyrics", "sentiment"])
def test_all_linear_puts_lora_on_every_linear_layer_but_the_head(name, base, tmp_path):
    model_class = AutoModelForSequenceClassification if name == "sentiment" else AutoModelForCausalLM
    shapes = linear_shapes(model_class.from_pretrained(base, num_labels=3))
    trainer, prepared = recipes.get(name).build_trainer(**lora(base, name, tmp_path / "run"))
    model = prepared.model
    head = "score" if name == "sentiment" else "lm_head"
    adapted = {n.removeprefix("base_model.model.") for n, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert adapted == set(shapes) - {head}
    assert adapted == {f"transformer.h.{i}.{m}" for i in range(2) for m in ("attn.c_attn", "attn.c_proj",
                                                                            "mlp.c_fc", "mlp.c_proj")}
    # Trainable: A (r x in) and B (out x r) of every adapter, and a classifier's whole head (3 labels x 32), no bias.
    expected = sum(LORA_R * (i + o) for n, (i, o) in shapes.items() if n in adapted)
    if name == "sentiment":
        wrapped = dict(model.named_modules())["base_model.model.score"]
        assert isinstance(wrapped, ModulesToSaveWrapper)
        assert not any(isinstance(m, LoraLayer) for m in wrapped.modules())
        expected += 3 * 32 + 32  # and the row of the pad token a classifier gets (trainable as an added token)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == expected
    total = sum(p.numel() for p in model.parameters())
    assert prepared.facts["trainable parameters"] == f"{trainable:,} of {total:,} ({100 * trainable / total:.2f}%)"
    assert prepared.facts["LoRA"].startswith(f"r {LORA_R}, alpha 32, dropout 0.05; on c_attn, c_fc, c_proj")


def test_all_linear_on_llama_targets_attention_and_mlp_not_lm_head(tmp_path):
    llama = save_base(tmp_path / "llama", LlamaForCausalLM, LlamaConfig, hidden_size=32, intermediate_size=64,
                      num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128)
    trainer, prepared = lyrics.build_trainer(**lora(llama, "lyrics", tmp_path / "run"))
    assert adapted_module_names(prepared.model) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                    "down_proj"}
    assert not isinstance(prepared.model.get_base_model().lm_head, LoraLayer)
    assert len([m for m in prepared.model.modules() if isinstance(m, LoraLayer)]) == 2 * 7


def run_keeping_model(recipe, settings: dict):
    """``recipe.run(**settings)`` and the trained model object as it was in memory."""
    kept = {}
    original = run_lifecycle.train

    def train(trainer, prepared, state):
        kept["model"] = prepared.model
        return original(trainer, prepared, state)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(run_lifecycle, "train", train)
        metrics = recipe.run(**settings)
    return metrics, kept["model"].eval()


@pytest.fixture(scope="module")
def finished(base, tmp_path_factory):
    """A finished LoRA run per recipe with merge_adapter and a checkpoint per step: (output_dir, trained model).
    The base is given relative to the working directory of the run, as users often do."""
    cache = {}

    def get(name):
        if name not in cache:
            out = tmp_path_factory.mktemp(f"lora-{name}") / "run"
            recipe, chat = name.removesuffix("-chat"), name.endswith("-chat")
            settings = lora(Path(base).name, recipe, out, merge_adapter=True, save_strategy="steps", save_steps=1,
                            report=name == "lyrics", classification_baselines=False,
                            **({"prompt_format": "chat"} if chat else {}))
            with pytest.MonkeyPatch.context() as patch:
                patch.chdir(Path(base).parent)
                cache[name] = out, run_keeping_model(recipes.get(recipe), settings)[1]
        return cache[name]

    return get


@pytest.mark.slow
def test_output_dir_holds_the_adapter_in_peft_format_and_a_card_naming_the_base(finished, base):
    out, model = finished("lyrics")
    adapter = json.loads((out / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(Path(base).resolve()) and Path(adapter["base_model_name_or_path"]).is_absolute()
    assert adapter["task_type"] == "CAUSAL_LM" and adapter["r"] == LORA_R
    saved = load_file(out / "adapter_model.safetensors")
    assert saved and all("lora_A" in k or "lora_B" in k for k in saved)
    assert not (out / "model.safetensors").exists()
    # PEFT's layout: a config.json would make transformers take the folder for a full model and look for its weights
    assert not (out / "config.json").exists()
    for file in ("tokenizer.json", "recipe.json", "report.md", "model_config.json", "generation_config.json"):
        assert (out / file).is_file(), file
    assert json.loads((out / "model_config.json").read_text())["architectures"] == ["GPT2LMHeadModel"]
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "## LoRA adapter" in card and str(Path(base).resolve()) in card
    assert "\nlicense: apache-2.0\n" in card  # the base's own license, kept
    assert json.loads((out / "recipe.json").read_text())["settings"]["lora"] == f"r {LORA_R}, alpha 32, dropout 0.05, all-linear"
    report = (out / "report.md").read_text()
    assert "- trainable parameters: " in report and f"- LoRA: r {LORA_R}, alpha 32" in report
    assert sorted(p.name for p in (out / MERGED_DIR).iterdir()) == [
        "config.json", "generation_config.json", "model.safetensors", "recipe.json", "tokenizer.json",
        "tokenizer_config.json"]


@pytest.mark.slow
def test_a_saved_classifier_adapter_reloads_to_the_trained_model(finished):
    out, model = finished("sentiment")
    texts = ["what a lovely day", "ugh, mondays are the worst", "ok"]
    tokenizer = AutoTokenizer.from_pretrained(out)
    with torch.no_grad():
        expected = torch.stack([model(**tokenizer(t, return_tensors="pt")).logits[0] for t in texts])
        merged = AutoModelForSequenceClassification.from_pretrained(out / MERGED_DIR).eval()
        merged_logits = torch.stack([merged(**tokenizer(t, return_tensors="pt")).logits[0] for t in texts])
    assert not torch.allclose(expected[0], expected[1])  # the texts get different logits: the check has teeth
    assert torch.allclose(merged_logits, expected, atol=1e-5)
    probabilities = expected.softmax(-1)
    names = model.config.id2label
    for found in (sentiment.predict(out, texts), [{"label": r["label"], "score": r["score"]} for r in pipeline(
            "text-classification", model=str(out / MERGED_DIR), device="cpu")(texts)]):
        assert [r["label"] for r in found] == [names[int(i)] for i in expected.argmax(-1)]
        assert [r["score"] for r in found] == pytest.approx(probabilities.max(-1).values.tolist(), abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lyrics", "instruct", "instruct-chat"])
def test_a_saved_causal_lm_adapter_reloads_to_the_trained_model(name, finished, capsys):
    out, model = finished(name)
    reloaded, tokenizer = load_causal_lm(out)
    merged = AutoModelForCausalLM.from_pretrained(out / MERGED_DIR).eval()
    ids = tokenizer("Down by the river the night is", return_tensors="pt")["input_ids"]
    if name == "instruct-chat":  # ChatML's two added tokens: trained rows, saved with the adapter
        ids = torch.tensor([tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."}],
                                                          add_generation_prompt=True, tokenize=True)["input_ids"]])
        added = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
        assert added == [2048, 2049] and set(added) & set(ids[0].tolist())
        assert reloaded.get_input_embeddings().weight.shape[0] == 2050
        base_rows = AutoModelForCausalLM.from_pretrained(out / MERGED_DIR).get_input_embeddings().weight[2048:]
        assert not torch.allclose(base_rows, reloaded.get_input_embeddings().weight[2048:] * 0)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        assert torch.equal(reloaded(input_ids=ids).logits, expected)
        assert torch.allclose(merged(input_ids=ids).logits, expected, atol=1e-5)
    greedy = {"do_sample": False, "max_new_tokens": 6}
    if name == "lyrics":
        expected_text = generate(model, tokenizer, ["Down by"], GenerationArguments(**greedy))
        assert lyrics.generate(out, ["Down by"], **greedy) == expected_text
        assert cli.main(["generate", "--model_dir", str(out), "--prompt", "Down by", "--do_sample", "false",
                         "--max_new_tokens", "6"]) == 0
        assert capsys.readouterr().out.startswith("Down by" + expected_text[0])
    else:
        assert instruct.generate(out, "Say hi.", **greedy) == instruct.generate(out / MERGED_DIR, "Say hi.", **greedy)


def step_losses(base: str, output_dir: Path, **extra) -> list[float]:
    trainer, _ = lyrics.build_trainer(**lora(base, "lyrics", output_dir, max_steps=4, **extra))
    trainer.train()
    return [e["loss"] for e in trainer.state.log_history if "loss" in e]


@pytest.fixture(scope="module")
def losses_without_checkpointing(base, tmp_path_factory) -> list[float]:
    return step_losses(base, tmp_path_factory.mktemp("plain"))


@pytest.mark.slow
@pytest.mark.parametrize("kwargs", [None, {"use_reentrant": True}], ids=["default", "reentrant"])
def test_gradient_checkpointing_trains_lora_exactly_as_without(kwargs, base, losses_without_checkpointing, tmp_path):
    plain = losses_without_checkpointing
    assert len(plain) == 4 and plain[0] != plain[-1]
    checkpointed = step_losses(base, tmp_path, gradient_checkpointing=True,
                               **({"gradient_checkpointing_kwargs": json.dumps(kwargs)} if kwargs else {}))
    assert checkpointed == pytest.approx(plain, abs=1e-6)


@pytest.mark.slow
def test_accumulated_lora_steps_average_over_every_target(base, tmp_path):
    """Two micro-batches with different numbers of targets: the loss is the mean over all targets of the step (the
    PEFT wrapper must not hide that the model is a causal LM whose loss divides by the step's target count)."""
    settings = lora(base, "instruct", tmp_path / "run", max_steps=1, max_train_samples=6,
                    per_device_train_batch_size=3, gradient_accumulation_steps=2, lora_dropout=0.0)
    trainer, prepared = instruct.build_trainer(**settings)
    train = list(prepared.datasets["train"])
    expected, _ = hand_mean_loss(prepared.model.eval(), train)  # LoRA B starts at zero: the base's loss
    halves = [hand_mean_loss(prepared.model, part)[0] for part in (train[:3], train[3:])]
    trainer.args.train_sampling_strategy = "sequential"
    trainer.train()
    assert abs(sum(halves) / 2 - expected) > 1e-4  # a mean of the two micro-batch means would differ
    assert trainer.state.log_history[0]["loss"] == pytest.approx(expected, rel=1e-5)


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_a_resumed_lora_run_ends_with_the_uninterrupted_adapter(base, tmp_path, one_thread):
    def train(output_dir, resume=None):
        trainer, prepared = lyrics.build_trainer(**lora(base, "lyrics", output_dir, max_steps=4, save_strategy="steps",
                                                        save_steps=2))
        set_seed(42)
        trainer.train(resume_from_checkpoint=resume)
        weights = {k: v.clone() for k, v in prepared.model.state_dict().items() if "lora_" in k}
        return weights, [e["loss"] for e in trainer.state.log_history if "loss" in e]

    weights, losses = train(tmp_path / "full")
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoint-2").iterdir() if p.suffix == ".safetensors") == [
        "adapter_model.safetensors"]
    resumed, resumed_losses = train(tmp_path / "resumed", str(tmp_path / "full" / "checkpoint-2"))
    assert resumed_losses == losses
    assert weights.keys() == resumed.keys() and weights
    assert all(torch.equal(resumed[k], weights[k]) for k in weights)


@pytest.fixture(scope="module")
def full_run(base, tmp_path_factory) -> Path:
    """A finished full fine-tuning lyrics run from the same base, with a checkpoint."""
    out = tmp_path_factory.mktemp("full") / "run"
    settings = {**lora(base, "lyrics", out, max_steps=1, save_strategy="steps", save_steps=1), "use_peft": False}
    del settings["lora_r"]
    lyrics.run(**settings)
    return out


REFUSED = {
    "lora_r 0": ("lyrics", {"lora_r": 0}, "lora_r must be 1 or more, got 0"),
    "lora_alpha 0": ("lyrics", {"lora_alpha": 0}, "lora_alpha must be positive (the update is scaled by lora_alpha / "
                                                   "lora_r), got 0"),
    "a module to save the model lacks": ("lyrics", {"lora_modules_to_save": ["wpe", "embed_tokens"]},
                                         "lora_modules_to_save embed_tokens: no module of that name in this "
                                         "GPT2LMHeadModel"),
    "lora_dropout 1": ("lyrics", {"lora_dropout": 1}, "lora_dropout must be in [0, 1), got 1.0"),
    "LoRA options without use_peft": ("sentiment", {"use_peft": False, "lora_alpha": 8},
                                      "lora_r, lora_alpha only apply with --use_peft true (LoRA): add it"),
    "load_in_4bit without use_peft": ("instruct", {"use_peft": False, "lora_r": 16, "load_in_4bit": True},
                                      "load_in_4bit (QLoRA) trains a LoRA adapter on the quantized base: add "
                                      "--use_peft true"),
    "load_in_4bit without CUDA": ("lyrics", {"load_in_4bit": True},
                                  "load_in_4bit (QLoRA) needs a CUDA GPU and bitsandbytes; this run has no CUDA GPU"),
    "use_peft on a model built from scratch": (
        "lyrics", {"model_name_or_path": None, "model_type": "gpt2", "config_overrides": "n_layer=1,n_embd=32,n_head=2",
                   "tokenizer_name": str(TOKENIZER_DIR)},
        "save the base model first and pass it as model_name_or_path"),
    "a target module the model lacks": ("sentiment", {"lora_target_modules": ["q_proj"]},
                                        "lora_target_modules q_proj: no module of that name in this GPT2ForSequenceClassification; its linear "
                                        "layers are c_attn, c_fc, c_proj, score"),
    "LoRA run from a full-model checkpoint": (
        "lyrics", {"resume_from_checkpoint": "FULL/checkpoint-1"},
        "holds a full model, but this run trains a LoRA adapter (use_peft): resume it without --use_peft"),
    "full run from a LoRA checkpoint": (
        "lyrics", {"use_peft": False, "lora_r": 16, "resume_from_checkpoint": "LORA/checkpoint-3"},
        "holds a LoRA adapter, but this run trains the full model: resume it with --use_peft true"),
    "LoRA run from a checkpoint of another rank": (
        "lyrics", {"lora_r": 8, "resume_from_checkpoint": "LORA/checkpoint-3"},
        "has an adapter with r 4, but this run's adapter has 8"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", REFUSED)
def test_refused_lora_settings_are_one_line_and_write_nothing(case, base, finished, full_run, tmp_path, capsys):
    name, change, message = REFUSED[case]
    paths = {"FULL": str(full_run), "LORA": str(finished("lyrics")[0])}
    change = {k: next((v.replace(p, r) for p, r in paths.items() if isinstance(v, str) and v.startswith(p)), v)
              for k, v in change.items()}
    argv = ["train", name, *cli_args({**lora(base, name, tmp_path / "run"), **change})]
    capsys.readouterr()
    before = {p: snapshot(Path(p)) for p in (base, *paths.values())}
    assert_one_error_line(cli.main(argv), capsys.readouterr().err, message)
    assert not (tmp_path / "run").exists()
    assert {p: snapshot(Path(p)) for p in before} == before


def test_an_adapter_whose_local_base_is_gone_is_one_line(finished, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(finished("sentiment")[0], copy)
    adapter = json.loads((copy / "adapter_config.json").read_text())
    adapter["base_model_name_or_path"] = str(tmp_path / "moved-away")
    (copy / "adapter_config.json").write_text(json.dumps(adapter))
    assert_one_error_line(cli.main(["predict", "sentiment", "--model_dir", str(copy), "hi"]),
                          capsys.readouterr().err, f"the base model of the adapter in {copy} is gone")


def test_an_adapter_on_a_base_folder_with_its_own_code_is_refused(finished, base, tmp_path, capsys):
    copy, code_base = tmp_path / "copy", tmp_path / "base"
    shutil.copytree(finished("lyrics")[0], copy)
    shutil.copytree(base, code_base)
    config = json.loads((code_base / "config.json").read_text())
    (code_base / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModelForCausalLM": "x.Model"}}))
    adapter = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**adapter, "base_model_name_or_path": str(code_base)}))
    assert_one_error_line(cli.main(["generate", "--model_dir", str(copy), "--prompt", "x"]), capsys.readouterr().err,
                          f"{code_base} ships its own Python code (config.json has auto_map)")


# ---- the run folder under plain transformers / peft, from another working directory --------------------------


GREEDY = {"do_sample": False, "max_new_tokens": 6, "repetition_penalty": 1.0}


def test_a_classifier_adapter_loads_with_plain_peft_and_transformers_as_hf_recipes_predict(finished, base, tmp_path,
                                                                                          monkeypatch, capsys):
    from peft import AutoPeftModelForSequenceClassification, PeftModel

    out, model = finished("sentiment")
    monkeypatch.chdir(tmp_path)  # the base was given relative to the run's working directory
    texts = ["what a lovely day", "ugh, mondays are the worst", "ok"]
    expected = sentiment.predict(out, texts)
    classifier = run_card_snippet(out, capsys)["classifier"]
    found = classifier(texts)
    assert [r["label"] for r in found] == [r["label"] for r in expected]
    assert [r["score"] for r in found] == pytest.approx([r["score"] for r in expected], abs=1e-5)
    # The card's line is the way: the run's labels and pad token go to the base's config as it loads ...
    config = json.loads((out / "model_config.json").read_text())
    labels = {"id2label": {int(i): v for i, v in config["id2label"].items()}, "label2id": config["label2id"],
              "pad_token_id": config["pad_token_id"]}
    assert f"id2label={labels['id2label']!r}" in card_snippet(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        logits = model(**batch).logits
        # The classifier's own pad token grew the vocabulary: AutoPeftModel grows the base to the run's tokenizer;
        # for PeftModel the base is grown first, as with any adapter that added tokens (transformers' own peft
        # integration never grows it, as for chat adapters).
        grown = AutoModelForSequenceClassification.from_pretrained(base, **labels)
        grown.resize_token_embeddings(len(tokenizer))
        loaded = {
            "AutoPeftModel": AutoPeftModelForSequenceClassification.from_pretrained(out, **labels),
            "PeftModel": PeftModel.from_pretrained(grown, out),
        }
        for how, reloaded in loaded.items():
            assert torch.allclose(reloaded.eval()(**batch).logits, logits, atol=1e-5), how
    # ... without them the base's two labels meet the adapter's three-label head: peft refuses (no silent misload)
    with pytest.raises(RuntimeError, match="size mismatch"):
        AutoPeftModelForSequenceClassification.from_pretrained(out)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lyrics", "instruct"])
def test_a_causal_lm_adapter_loads_with_the_pipeline_and_every_peft_loader(name, finished, base, tmp_path,
                                                                           monkeypatch, capsys):
    from peft import AutoPeftModelForCausalLM, PeftModel

    out, model = finished(name)
    monkeypatch.chdir(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(out)
    ids = tokenizer("Down by the river the night is", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        loaded = {
            "pipeline": pipeline("text-generation", model=str(out), device="cpu").model,
            "transformers' peft integration": AutoModelForCausalLM.from_pretrained(out),
            "AutoPeftModel": AutoPeftModelForCausalLM.from_pretrained(out),
            "PeftModel": PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), out),
        }
        for how, reloaded in loaded.items():
            assert torch.allclose(reloaded.eval()(input_ids=ids).logits, expected, atol=1e-5), how
    generator = run_card_snippet(out, capsys)["generator"]
    if name == "lyrics":
        found = generator("Down by", **GREEDY)[0]["generated_text"]
        assert found == "Down by" + lyrics.generate(out, ["Down by"], **GREEDY)[0]
        plain = pipeline("text-generation", model=str(out), device="cpu")("Down by", **GREEDY)[0]["generated_text"]
        assert plain == found
    else:
        reply = generator([{"role": "user", "content": "Say hi."}], **GREEDY)[0]["generated_text"][-1]["content"]
        assert reply.strip() == instruct.generate(out, "Say hi.", **GREEDY)


@pytest.mark.slow
def test_a_chat_adapter_with_added_tokens_loads_with_peft_and_stops_at_the_end_of_its_turn(finished, base, tmp_path,
                                                                                           monkeypatch, capsys):
    from peft import AutoPeftModelForCausalLM, PeftModel

    out, model = finished("instruct-chat")
    monkeypatch.chdir(tmp_path)
    tokenizer = AutoTokenizer.from_pretrained(out)
    end_of_turn = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token_id == end_of_turn == 2049
    assert GenerationConfig.from_pretrained(out).eos_token_id == end_of_turn  # the run's, not the base's
    ids = torch.tensor([tokenizer.apply_chat_template([{"role": "user", "content": "Say hi."}],
                                                      add_generation_prompt=True, tokenize=True)["input_ids"]])
    base_model = AutoModelForCausalLM.from_pretrained(base)
    base_model.resize_token_embeddings(len(tokenizer))  # the step the card names for PeftModel.from_pretrained
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        for how, reloaded in {"AutoPeftModel": AutoPeftModelForCausalLM.from_pretrained(out),
                              "PeftModel": PeftModel.from_pretrained(base_model, out)}.items():
            assert torch.allclose(reloaded.eval()(input_ids=ids).logits, expected, atol=1e-5), how
    namespace = run_card_snippet(out, capsys)
    assert namespace["model"].generation_config.eos_token_id == end_of_turn
    messages = [{"role": "user", "content": "Say hi."}]
    reply = namespace["generator"](messages, **GREEDY)[0]["generated_text"][-1]["content"]
    assert reply.strip() == instruct.generate(out, messages=messages, **GREEDY)
    # The end of turn stops generation: forced as the first new token, nothing follows it
    forced = namespace["model"].generate(ids, max_new_tokens=5, do_sample=False,
                                         sequence_bias={(t,): -1e9 for t in range(end_of_turn)})
    assert forced[0, ids.shape[1]:].tolist() == [end_of_turn]
