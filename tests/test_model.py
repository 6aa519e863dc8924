"""Every recipe on the decoder-only families people fine-tune, each built tiny from ``--model_type X
--config_overrides ...`` with the bundled GPT-2 tokenizer: the classifier pools the last real token (a text ending in
the EOS text too), a causal LM's pad token costs no embedding rows, packed rows keep their sequences apart (or packing
is refused), and BOS / EOS follow the tokenizer."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from hf_recipes.collators import PaddingCollator
from hf_recipes.config import ModelArguments
from hf_recipes.errors import RecipeError
from hf_recipes.generation import GenerationArguments, generate
from hf_recipes.model import give_distinct_pad_token, load_model, load_tokenizer
from hf_recipes.recipes import instruct, lyrics, sentiment
from tests.conftest import SAMPLES, TOKENIZER_DIR

DECODER = "num_hidden_layers=2,hidden_size=32,intermediate_size=64,num_attention_heads=2,max_position_embeddings=128"
FAMILIES = {
    "gpt2": "n_layer=2,n_embd=32,n_head=2,n_positions=128",
    "llama": DECODER + ",num_key_value_heads=1",
    "qwen2": DECODER + ",num_key_value_heads=1",
    "mistral": DECODER + ",num_key_value_heads=1,sliding_window=64",
    "gpt_neox": DECODER,
    "opt": "num_hidden_layers=2,hidden_size=32,ffn_dim=64,num_attention_heads=2,max_position_embeddings=128,"
           "word_embed_proj_dim=32",
    "phi3": DECODER + ",num_key_value_heads=1,sliding_window=64",  # Phi-3's sliding_window defaults to None
}
# transformers builds no block-diagonal mask from restarting position ids for these
CANNOT_SEPARATE_PACKED = {"opt"}
SONGS = {"train_file": str(SAMPLES / "lyrics" / "songs.txt"), "block_size": 48, "max_train_samples": 8,
         "max_eval_samples": 4, "max_test_samples": 4}
INSTRUCTIONS = {"train_file": str(SAMPLES / "instructions" / "instructions.json"), "max_train_samples": 8,
                "max_eval_samples": 4, "max_test_samples": 4}
TWEETS = {"train_file": str(SAMPLES / "sentiment" / "train.csv"), "test_file": str(SAMPLES / "sentiment" / "test.csv"),
          "label_column": "sentiment", "max_train_samples": 16, "max_eval_samples": 8,
          "max_test_samples": 8}


def family_args(family: str, tiny_model_args: dict, **extra) -> dict:
    return {**tiny_model_args, "model_type": family, "config_overrides": FAMILIES[family], "max_steps": 2,
            "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "logging_steps": 1, **extra}


def model_arguments(family: str, **extra) -> ModelArguments:
    return ModelArguments(model_type=family, config_overrides=FAMILIES[family], tokenizer_name=str(TOKENIZER_DIR),
                          **extra)


def sequences_of(row: dict) -> list[slice]:
    """The sequences of a packed row: each run of position ids from 0."""
    starts = [i for i, p in enumerate(row["position_ids"]) if p == 0] + [len(row["position_ids"])]
    return [slice(a, b) for a, b in zip(starts, starts[1:])]


@torch.no_grad()
def assert_packed_sequences_apart(model, row: dict) -> None:
    """Each sequence's logits inside the packed row equal its logits alone."""
    model.eval()
    ids, positions = torch.tensor([row["input_ids"]]), torch.tensor([row["position_ids"]])
    packed = model(input_ids=ids, position_ids=positions).logits[0]
    pieces = sequences_of(row)
    assert len(pieces) >= 2, "the row must hold at least two sequences for the check to mean anything"
    for piece in pieces:
        alone = model(input_ids=ids[:, piece]).logits[0]
        torch.testing.assert_close(packed[piece], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("side", ["left", "right"])
def test_classifier_pools_the_last_real_token_alone_or_padded(family, side):
    tokenizer = load_tokenizer(model_arguments(family), padding_side=side)
    give_distinct_pad_token(tokenizer)
    model = load_model(model_arguments(family), AutoModelForSequenceClassification, tokenizer, num_labels=3).eval()
    # The last text ends in the EOS text: with pad = EOS it was pooled one token early.
    texts = ["a short one", "a much longer text that needs no padding at all here", "mid length text<|endoftext|>"]
    batch = PaddingCollator(tokenizer)([tokenizer(t) for t in texts])
    assert (batch["attention_mask"] == 0).any()  # the batch really is padded
    with torch.no_grad():
        padded = model(**batch).logits
        for i, text in enumerate(texts):
            alone = model(**PaddingCollator(tokenizer)([tokenizer(text)])).logits[0]
            torch.testing.assert_close(padded[i], alone, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_tokenizer_without_pad_token_gets_eos_and_the_embeddings_keep_their_rows(family, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    assert tokenizer.pad_token is None
    built = load_model(model_arguments(family), AutoModelForCausalLM, load_tokenizer(model_arguments(family)))
    built.resize_token_embeddings(len(tokenizer) + 64)  # a pretrained vocabulary padded past the tokenizer (Qwen)
    built.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)

    pretrained = ModelArguments(model_name_or_path=str(tmp_path))
    tokenizer = load_tokenizer(pretrained)
    model = load_model(pretrained, AutoModelForCausalLM, tokenizer)
    assert tokenizer.pad_token == tokenizer.eos_token and len(tokenizer) == 2048
    assert model.get_input_embeddings().weight.shape[0] == 2048 + 64
    assert model.config.pad_token_id == tokenizer.eos_token_id


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_sentiment_trains_on_every_family(family, tiny_model_args):
    trainer, prepared = sentiment.build_trainer(**family_args(family, tiny_model_args, **TWEETS))
    assert prepared.model.config.model_type == family
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_packed_lyrics_keep_songs_apart_on_every_family(family, tiny_model_args):
    args = family_args(family, tiny_model_args, **SONGS)
    if family in CANNOT_SEPARATE_PACKED:
        with pytest.raises(RecipeError, match=f"{family} models do not keep sequences packed into one row apart.*"
                                              "set reset_position_ids false"):
            lyrics.build_trainer(**args)
        args["reset_position_ids"] = False  # the plain run_clm layout still trains
    trainer, prepared = lyrics.build_trainer(**args)
    assert trainer.fused_head is prepared.model.get_output_embeddings()  # its check against the family's own loss
    if family not in CANNOT_SEPARATE_PACKED:
        row = next(row for row in prepared.datasets["train"] if len(sequences_of(row)) >= 2)
        assert_packed_sequences_apart(prepared.model, row)
    trainer.train()
    assert all(torch.isfinite(torch.tensor(log["loss"])) for log in trainer.state.log_history if "loss" in log)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_padding_free_instruct_keeps_records_apart_on_every_family(family, tiny_model_args):
    args = family_args(family, tiny_model_args, **INSTRUCTIONS, padding_free=True)
    if family in CANNOT_SEPARATE_PACKED:
        with pytest.raises(RecipeError, match="set padding_free false"):
            instruct.build_trainer(**args)
        args["padding_free"] = False
    trainer, prepared = instruct.build_trainer(**args)
    if family not in CANNOT_SEPARATE_PACKED:
        batch = prepared.data_collator([prepared.datasets["train"][i] for i in range(3)])
        row = {key: batch[key][0].tolist() for key in ("input_ids", "position_ids")}
        assert len(sequences_of(row)) == 3
        assert_packed_sequences_apart(prepared.model, row)
    trainer.train()
    assert all(torch.isfinite(torch.tensor(log["loss"])) for log in trainer.state.log_history if "loss" in log)


@pytest.fixture(scope="module")
def bos_tokenizer_dir(tmp_path_factory):
    """The bundled tokenizer with a BOS token of its own that it adds before every text, as Llama's does."""
    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    tokenizer.add_special_tokens({"bos_token": "<s>"})
    tokenizer.add_bos_token = True
    folder = tmp_path_factory.mktemp("bos_tokenizer")
    tokenizer.save_pretrained(folder)
    assert AutoTokenizer.from_pretrained(folder)("hi")["input_ids"][0] == tokenizer.bos_token_id
    return folder


def test_packed_songs_get_one_bos_per_song_not_per_block(bos_tokenizer_dir, tiny_model_args):
    _, prepared = lyrics.build_trainer(**family_args("llama", tiny_model_args, **{
        **SONGS, "tokenizer_name": str(bos_tokenizer_dir), "block_size": 16}))
    tokenizer = prepared.tokenizer
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    songs = prepared.raw["train"]["text"]
    stream = [t for song in songs for t in [bos, *tokenizer(song, add_special_tokens=False)["input_ids"], eos]]
    blocks = [t for row in prepared.datasets["train"]["input_ids"] for t in row]
    assert blocks == stream[: len(blocks)]
    assert len(blocks) >= 3 * 16 and stream.count(bos) == len(songs)
    assert any(row[0] != bos for row in prepared.datasets["train"]["input_ids"])  # a block that starts mid-song


def test_instruct_records_get_one_bos_and_one_eos(bos_tokenizer_dir, tiny_model_args, tmp_path):
    tokenizer = AutoTokenizer.from_pretrained(bos_tokenizer_dir, add_bos_token=True, add_eos_token=True)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    ids = tokenizer("hi")["input_ids"]  # BOS before every text, EOS after it
    assert ids[0] == tokenizer.bos_token_id and ids[-1] == tokenizer.eos_token_id
    _, prepared = instruct.build_trainer(**family_args("llama", tiny_model_args, **INSTRUCTIONS,
                                                       tokenizer_name=str(tmp_path / "tokenizer")))
    record, example = prepared.raw["train"][0], prepared.datasets["train"][0]
    prompt = instruct.render_prompt(record["instruction"], record["input"], instruct.InstructArguments())
    bare = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    assert example["input_ids"] == [bos, *bare(prompt), *bare(record["output"]), eos]
    assert example["labels"] == [-100] * (1 + len(bare(prompt))) + [*bare(record["output"]), eos]

    seen = []
    model = prepared.model
    real_generate = model.generate
    model.generate = lambda input_ids, **kwargs: seen.append(input_ids[0].tolist()) or real_generate(
        input_ids=input_ids, **kwargs)
    generate(model, prepared.tokenizer, [prompt], GenerationArguments(max_new_tokens=2))
    assert seen == [[bos, *bare(prompt)]]  # the prompt as trained: one BOS, no EOS


@pytest.mark.parametrize("family", FAMILIES)
def test_the_shipped_fsdp_config_shards_every_family_by_its_decoder_layer(family):
    """configs/accelerate/fsdp.yaml names no layer class, so accelerate wraps the model's own _no_split_modules."""
    import yaml
    from accelerate.utils.dataclasses import get_module_class_from_name

    from tests.conftest import REPO

    fsdp = yaml.safe_load((REPO / "configs" / "accelerate" / "fsdp.yaml").read_text())["fsdp_config"]
    assert fsdp["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP" and "fsdp_transformer_layer_cls_to_wrap" not in fsdp
    tokenizer = load_tokenizer(model_arguments(family))
    model = load_model(model_arguments(family), AutoModelForCausalLM, tokenizer)
    layers = [get_module_class_from_name(model, name) for name in model._no_split_modules]
    assert all(layers) and sum(isinstance(m, tuple(layers)) for m in model.modules()) == 2  # the 2 decoder layers


def test_an_architecture_without_the_default_sdpa_kernel_names_the_flag_that_fixes_it():
    tokenizer = load_tokenizer(ModelArguments(tokenizer_name=str(TOKENIZER_DIR)))
    gemma2 = ModelArguments(model_type="gemma2", config_overrides=DECODER + ",num_key_value_heads=1,head_dim=16")
    with pytest.raises(RecipeError) as refused:
        load_model(gemma2, AutoModelForCausalLM, tokenizer)
    assert str(refused.value) == ("Gemma2ForCausalLM does not support --attn_implementation sdpa: pass "
                                  "--attn_implementation eager")
    gemma2.attn_implementation = "eager"
    assert load_model(gemma2, AutoModelForCausalLM, tokenizer).config._attn_implementation == "eager"


def test_a_hub_model_under_hf_hub_offline_says_the_hub_is_switched_off(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RecipeError) as refused:
        load_tokenizer(ModelArguments(model_name_or_path="someone/never-downloaded"))
    message = str(refused.value)
    assert message.startswith("could not load tokenizer 'someone/never-downloaded': ")
    assert "the hub is switched off by HF_HUB_OFFLINE=1: use local files" in message
    assert "unset HF_HUB_OFFLINE to download it" in message
