"""Tokenizer and model loading: from the hub, from a local folder, or built fresh from a config."""

from __future__ import annotations

import logging
import math
import os
import re
import socket
from pathlib import Path
from typing import Any, Sequence
from urllib.parse import urlparse

import torch
import yaml
from transformers import AutoConfig, AutoTokenizer, CONFIG_MAPPING, PreTrainedModel, PreTrainedTokenizerBase

from hf_recipes.config import ModelArguments
from hf_recipes.errors import RecipeError, one_line
from hf_recipes.run_folder import refuse_custom_code

logger = logging.getLogger(__name__)

OFFLINE_HINT = "use local files (--train_file/--test_file), a local model folder (--model_name_or_path DIR), or `make demo`"


def hub_is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in {"1", "true", "yes", "on"}


def ensure_hub_reachable(what: str) -> None:
    """Fail in seconds, with a hint, when ``what`` must come from the hub and the hub cannot be reached.

    Without this, huggingface_hub retries with back-off for close to a minute before giving up.
    """
    if hub_is_offline():
        return  # offline mode reads the local cache only, and fails fast by itself
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    ensure_reachable(endpoint, f"the Hugging Face Hub ({urlparse(endpoint).hostname})", what,
                     f"{OFFLINE_HINT} (set HF_HUB_OFFLINE=1 to use what is already in the local cache)")


def ensure_reachable(url: str, server: str, what: str, hint: str) -> None:
    """One connection attempt with a 3-second limit, so a missing network is one clear line, not a long retry."""
    parsed = urlparse(url)
    try:
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        socket.create_connection((parsed.hostname, port), timeout=3).close()
    except (OSError, ValueError):
        raise RecipeError(f"cannot reach {server} to fetch {what}: {hint}") from None


def is_local(name: str) -> bool:
    return Path(name).exists()


def _from_pretrained(loader, name: str, what: str, **kwargs):
    if not is_local(name):
        ensure_hub_reachable(f"{what} '{name}'")
    elif Path(name).is_dir():
        refuse_custom_code(Path(name), kwargs.get("trust_remote_code", False))
    try:
        return loader(name, **kwargs)
    except (OSError, ValueError) as err:  # ValueError: e.g. custom code refused, unknown architecture
        unsupported = attention_unsupported(err, kwargs.get("attn_implementation"))
        if unsupported:
            raise unsupported from None
        raise RecipeError(f"could not load {what} '{name}': {one_line(err)}{offline_note(name)}") from None


def offline_note(name: str) -> str:
    """What to do when ``name`` failed to load while HF_HUB_OFFLINE switches the hub off ("" otherwise)."""
    if not hub_is_offline() or is_local(name):
        return ""
    return f"; the hub is switched off by HF_HUB_OFFLINE=1: {OFFLINE_HINT}, or unset HF_HUB_OFFLINE to download it"


def attention_unsupported(err: Exception, implementation: str | None) -> RecipeError | None:
    """transformers' refusal of an attention kernel for an architecture (it names a Python argument), as the flag
    to pass instead; None for any other error."""
    found = re.match(r"(\w+) does not support an attention implementation", str(err))
    if not found:
        return None
    return RecipeError(f"{found.group(1)} does not support --attn_implementation {implementation}: pass "
                       "--attn_implementation eager")


def hub_kwargs(model_args: ModelArguments) -> dict:
    return {
        "cache_dir": model_args.cache_dir,
        "revision": model_args.model_revision,
        "token": model_args.token,
        "trust_remote_code": model_args.trust_remote_code,
    }


def weights_dtype(model_args: ModelArguments) -> torch.dtype | str:
    """The dtype weights are loaded in for training: fp32 unless a pure low-precision dtype is asked for. (Without
    one, transformers 5 loads a checkpoint in its stored dtype: a bf16 hub model would train, and keep its Adam
    state, in bf16.)"""
    return "auto" if model_args.dtype == "auto" else getattr(torch, model_args.dtype)


def describe_weights(model: PreTrainedModel) -> str:
    """E.g. ``float32`` or ``bfloat16 (pure low-precision training: no fp32 master weights)``, for logs and reports."""
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return dtype if dtype == "float32" else f"{dtype} (pure low-precision training: no fp32 master weights)"


def load_tokenizer(model_args: ModelArguments, padding_side: str = "right") -> PreTrainedTokenizerBase:
    name = model_args.tokenizer_name or model_args.model_name_or_path
    if not name:
        raise RecipeError("set tokenizer_name (or model_name_or_path) so the recipe knows which tokenizer to use")
    tokenizer = _from_pretrained(AutoTokenizer.from_pretrained, name, "tokenizer", **hub_kwargs(model_args))
    if len(tokenizer) == 0:
        raise RecipeError(f"tokenizer '{name}' has an empty vocabulary")
    if tokenizer.pad_token is None:
        # GPT-2 has no pad token; EOS is the usual stand-in. Padding is always masked by position, never by id.
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = padding_side
    return tokenizer


def load_config(model_args: ModelArguments, **config_kwargs):
    if model_args.config_name or model_args.model_name_or_path:
        name = model_args.config_name or model_args.model_name_or_path
        config = _from_pretrained(
            AutoConfig.from_pretrained, name, "model config", **hub_kwargs(model_args), **config_kwargs
        )
        check_model_shape(config, f"model config '{name}'")
        return config
    if not model_args.model_type:
        raise RecipeError("set model_name_or_path (pretrained) or model_type (build from scratch)")
    if model_args.model_type not in CONFIG_MAPPING:
        raise RecipeError(f"unknown model_type '{model_args.model_type}'")
    config_class = CONFIG_MAPPING[model_args.model_type]
    # Built from the overrides, not updated afterwards: a config derives some fields from others in __init__
    # (Qwen2's layer_types from num_hidden_layers) and an update would leave them stale.
    defaults = config_class()
    overrides = parse_config_overrides(defaults, model_args.config_overrides or "")
    where = f"bad config_overrides '{model_args.config_overrides}'"
    check_model_shape(defaults, where, typed=overrides, head_dim_chosen=False)  # some configs divide in __init__
    try:
        config = config_class(**overrides)
    except Exception as err:  # noqa: BLE001 - a family's own validation of its fields, in its words
        raise RecipeError(f"{where}: {one_line(err.__cause__ or err)}") from None
    check_model_shape(config, where, head_dim_chosen="head_dim" in overrides)
    config.update(config_kwargs)
    return config


BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def parse_config_overrides(defaults, overrides: str) -> dict:
    """``key=value,...`` as in transformers' examples, each value typed like the default it replaces; a key whose
    default is None (e.g. Phi-3's ``sliding_window``) takes a YAML scalar."""
    values = {}
    for pair in filter(None, overrides.split(",")):
        key, _, text = pair.partition("=")
        if not hasattr(defaults, key):
            raise RecipeError(f"bad config_overrides '{overrides}': {defaults.model_type} configs have no '{key}'")
        default = getattr(defaults, key)
        if not (default is None or isinstance(default, (bool, int, float, str))):
            raise RecipeError(f"bad config_overrides '{overrides}': '{key}' holds a {type(default).__name__}; only "
                              "numbers, booleans and strings can be overridden")
        try:
            values[key] = (yaml.safe_load(text) if default is None else
                           BOOLEANS[text.lower()] if isinstance(default, bool) else type(default)(text))
        except (KeyError, ValueError):
            raise RecipeError(f"bad config_overrides '{overrides}': '{key}' takes {type(default).__name__} values, "
                              f"got '{text}'") from None
    return values


CLASSIFIER_PAD = "<|pad|>"


def give_distinct_pad_token(tokenizer: PreTrainedTokenizerBase) -> str:
    """Give a classifier's tokenizer a pad token that no other token shares, and return its text.

    transformers' *ForSequenceClassification (and so ``pipeline()``) pool the last token that is not
    ``pad_token_id``. With pad = EOS (GPT-2, Llama, Qwen base models) a text ending in the EOS text is pooled one
    token early; with a pad id of its own the last token not padding is the last real one, in training and under
    plain transformers alike. Rows whose text holds the pad token's text are the one way left to break this: the
    recipe drops them.
    """
    specials = {tokenizer.eos_token_id, tokenizer.bos_token_id, tokenizer.unk_token_id, tokenizer.sep_token_id,
                tokenizer.cls_token_id} - {None}
    if tokenizer.pad_token_id is None or tokenizer.pad_token_id in specials:
        tokenizer.add_special_tokens({"pad_token": CLASSIFIER_PAD})
        logger.info("Added the pad token %s (id %d): classifiers pool the last token that is not padding",
                    CLASSIFIER_PAD, tokenizer.pad_token_id)
    return tokenizer.pad_token


# Config fields that give a size or a count, by name (every family: GPT-2's n_embd, OPT's ffn_dim, Falcon's
# num_kv_heads, ...): each that the user sets must be 1 or more.
SIZE_FIELD = re.compile(r"n_(?!.*token).+|num_.+|.+_(size|dim|embeddings)")
NOT_SIZES = {"chunk_size_feed_forward"}  # 0 means "not chunked"
# The sizes every decoder has, by their generic names (attribute_map leads to a family's own, e.g. GPT-2's n_layer):
# checked in a loaded or built config too, where a family may hold other counts that are 0 on purpose.
MODEL_SIZES = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
               "num_key_value_heads", "max_position_embeddings", "head_dim")
PROBABILITY_FIELD = re.compile(r".*(dropout|pdrop).*")
EPSILON_FIELD = re.compile(r".*_(eps|epsilon)")


def check_model_shape(config, where: str, typed: dict[str, Any] | None = None, head_dim_chosen: bool = True) -> None:
    """Sizes, layer and head counts of a model config are 1 or more, the attention heads divide the width and the
    key/value heads divide the heads, dropout probabilities lie in [0, 1) and norm epsilons are positive: checked on
    the config's own fields (found by name, for every family), so a bad value is one line naming it, not a model
    without layers or a torch error about negative dimensions. ``typed``: the values the user set, under the keys as
    typed (an error names a field as the user spelled it); with them, ``config`` is the family's default config they
    would change, and it is checked before anything is built from them. ``head_dim_chosen``: the config's head_dim
    was chosen on its own (a pretrained config, or one of ``typed``), not derived as width // heads."""
    typed = typed or {}
    aliases = getattr(config, "attribute_map", {})
    spelled = {aliases.get(key, key): key for key in typed}  # stored field name -> the key the user typed
    stored = config.to_dict()
    sizes = {aliases.get(name, name): stored.get(aliases.get(name, name)) for name in MODEL_SIZES}
    check_field_values(typed or {name: value for name, value in sizes.items() if name in stored}, where)

    def field(canonical: str) -> tuple[str, Any]:
        name = aliases.get(canonical, canonical)
        return spelled.get(name, name), typed.get(spelled.get(name), stored.get(name))

    (width_name, width), (heads_name, heads) = field("hidden_size"), field("num_attention_heads")
    head_dim_chosen = "head_dim" in spelled or (head_dim_chosen and getattr(config, "head_dim", None) is not None)
    if isinstance(width, int) and isinstance(heads, int) and not head_dim_chosen and width % heads:
        raise RecipeError(f"{where}: {heads_name} ({heads}) must divide {width_name} ({width}): each attention head "
                          "gets an equal share of the width")
    for kv_name, kv_heads in (field("num_key_value_heads"), field("num_kv_heads")):
        # A family's default key/value heads may be derived from its default heads: checked once the config is built.
        derived_later = typed and kv_name not in typed
        if isinstance(heads, int) and isinstance(kv_heads, int) and not derived_later and heads % kv_heads:
            raise RecipeError(f"{where}: {kv_name} ({kv_heads}) must divide {heads_name} ({heads}): each key/value "
                              f"head serves an equal group of attention heads; set {kv_name} to a divisor of it")


def check_field_values(values: dict[str, Any], where: str) -> None:
    """The size, count, dropout and epsilon fields among ``values`` (config field -> value), by their names."""
    for field, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, int) and SIZE_FIELD.fullmatch(field) and field not in NOT_SIZES and value < 1:
            raise RecipeError(f"{where}: {field} must be 1 or more, got {value}")
        if isinstance(value, float) and PROBABILITY_FIELD.fullmatch(field) and not 0 <= value < 1:
            raise RecipeError(f"{where}: {field} is a dropout probability and must be in [0, 1), got {value}")
        if isinstance(value, float) and EPSILON_FIELD.fullmatch(field) and not (value > 0 and math.isfinite(value)):
            raise RecipeError(f"{where}: {field} must be a small positive number, got {value}")


def context_length(config) -> int:
    return getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", 1024)


def load_model(
    model_args: ModelArguments, model_class: type[PreTrainedModel], tokenizer: PreTrainedTokenizerBase, **config_kwargs
) -> PreTrainedModel:
    """Load ``model_class`` pretrained, or build it fresh from model_type + config_overrides.

    A fresh model gets the tokenizer's vocabulary size and special tokens; every model gets
    ``config.pad_token_id`` (GPT-2 sequence classification needs it to find the last real token).
    """
    config = load_config(model_args, **config_kwargs)
    if model_args.model_name_or_path:
        name = model_args.model_name_or_path
        model = _from_pretrained(
            model_class.from_pretrained,
            name,
            "model",
            config=config,
            attn_implementation=model_args.attn_implementation,
            use_safetensors=True,
            quantization_config=model_args.quantization_config,
            # QLoRA keeps the quantizer's own rules for the modules it leaves unquantized
            **({} if model_args.quantization_config else {"dtype": weights_dtype(model_args)}),
            **hub_kwargs(model_args),
        )
    else:
        config.vocab_size = len(tokenizer)
        config.bos_token_id = tokenizer.bos_token_id
        config.eos_token_id = tokenizer.eos_token_id
        config.pad_token_id = None  # set below, after building (a family default such as Phi-3's 32000 included)
        from_config = getattr(model_class, "from_config", None) or model_class._from_config
        dtype = weights_dtype(model_args)
        try:
            model = from_config(config, attn_implementation=model_args.attn_implementation,
                                **({} if dtype == "auto" else {"dtype": dtype}))
        except ValueError as err:
            raise attention_unsupported(err, model_args.attn_implementation) or err from None
        logger.info("Built a fresh %s with %.1fM parameters", type(model).__name__, model.num_parameters() / 1e6)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    # Set after building: families whose embedding takes config.pad_token_id as padding_idx (Llama, Qwen2, ...)
    # would otherwise zero and freeze that row, which with pad = EOS is the EOS a causal LM must learn to emit.
    model.config.pad_token_id = tokenizer.pad_token_id
    for generation_config in filter(None, [getattr(model, "generation_config", None)]):
        generation_config.pad_token_id = tokenizer.pad_token_id
    weights = describe_weights(model)
    (logger.info if weights == "float32" else logger.warning)("Weights: %s", weights)
    return model


def max_length(tokenizer: PreTrainedTokenizerBase, model: PreTrainedModel, requested: int | None, minimum: int = 1,
               needs: str = "") -> int:
    """The sequence length to cut at: the request, else the model context (a tokenizer saved without
    tokenizer_config reports a huge model_max_length, so the model config is the reliable bound). Shorter than
    ``minimum`` (``needs`` says why a record needs that many) is an error: no real text would fit."""
    limit = min(context_length(model.config), tokenizer.model_max_length)
    if requested is not None and requested > limit:
        raise RecipeError(f"max_seq_length {requested} is larger than the model's context of {limit} tokens")
    length = limit if requested is None else requested
    setting = f"max_seq_length {requested}" if requested is not None else f"the model's context of {limit} tokens"
    check_room(length, minimum, setting, needs, "max_seq_length")
    return length


def check_room(length: int, minimum: int, setting: str, needs: str, option: str) -> None:
    """A run whose sequences are too short for any real text could not learn: one line with the minimum."""
    if length < minimum:
        raise RecipeError(f"{setting} leaves no room for real text: {needs}; set {option} to at least {minimum}")


def keep_packed_sequences_apart(model: PreTrainedModel, training_args, layout: str, switch_off: str) -> None:
    """Sequences packed into one row (position ids restarting, no attention mask) get a block-diagonal mask only
    when the forward pass has no cache: with one, transformers does not look for them and they attend to each
    other. Refuse ``use_cache`` and switch the model's default off (GPT-2's is on) for use outside the Trainer.
    Some families (e.g. OPT) never look for them: packing is refused for those, found by trying."""
    if training_args.use_cache:
        raise RecipeError(f"use_cache must be off with {layout}: with a cache, transformers does not see where "
                          "packed sequences start and they attend to each other")
    model.config.use_cache = False
    if not separates_packed_sequences(model):
        raise RecipeError(f"{model.config.model_type} models do not keep sequences packed into one row apart "
                          f"(transformers gives them no block-diagonal mask), so {layout} would let them attend "
                          f"to each other: set {switch_off}")


@torch.no_grad()
def separates_packed_sequences(model: PreTrainedModel) -> bool:
    """Whether a sequence's logits in a packed row (position ids restarting) equal its logits alone: one forward
    pass over two 3-token sequences, the second different from the first."""
    was_training = model.training
    model.eval()
    try:
        device = model.get_input_embeddings().weight.device
        ids = torch.tensor([[1, 2, 3, 3, 2, 1]], device=device)
        positions = torch.tensor([[0, 1, 2, 0, 1, 2]], device=device)
        packed = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0, 3:].float()
        alone = model(input_ids=ids[:, 3:], position_ids=positions[:, 3:], use_cache=False).logits[0].float()
    finally:
        model.train(was_training)
    return torch.allclose(packed, alone, atol=1e-3 * (1 + alone.abs().max().item()), rtol=0)


def bos_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids a tokenizer puts before every text it encodes (e.g. Llama's BOS; none for GPT-2)."""
    bare = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    start = next((i for i in range(len(full)) if full[i : i + len(bare)] == bare), 0)
    return full[:start]


def encode(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of each text as the start of a record: the tokenizer's BOS (if it adds one), never its EOS.
    Records are built from such pieces, so a tokenizer that adds BOS gets it once per record and one that adds
    EOS (``add_eos_token``) does not end a prompt with it; the recipes append EOS themselves where a record ends."""
    prefix = bos_prefix(tokenizer)
    return [prefix + ids for ids in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]


def clean_tokenizer_state(tokenizer: PreTrainedTokenizerBase) -> None:
    """Forget padding / truncation settings a fast tokenizer keeps from its last call, so the tokenizer.json it
    saves behaves like a freshly loaded one."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        backend.no_truncation()
        backend.no_padding()
