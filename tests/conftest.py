"""Shared fixtures. Every test runs offline: the hub is switched off and any non-local connection fails."""

import ipaddress
import os
import socket
from importlib.resources import files
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = files("hf_recipes") / "samples"
SHARED_DATA = REPO.parent / "shared" / "data"
TOKENIZER_DIR = SAMPLES / "tokenizer"

needs_shared = pytest.mark.skipif(
    not SHARED_DATA.is_dir(), reason=f"real data folder {SHARED_DATA} is absent (it sits beside the repo in CI)"
)

_real_connect = socket.socket.connect


def _local_only_connect(self, address):
    host = address[0] if isinstance(address, tuple) else address
    try:
        local = isinstance(host, str) and (host == "localhost" or ipaddress.ip_address(host).is_loopback)
    except ValueError:
        local = False
    if self.family == socket.AF_UNIX or local:
        return _real_connect(self, address)
    raise OSError(f"network access in tests is not allowed (tried {address})")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    monkeypatch.setattr(socket.socket, "connect", _local_only_connect)


@pytest.fixture
def tiny_model_args(tmp_path):
    """Overrides that make any recipe tiny and quick: a 1-layer GPT-2 and the bundled tokenizer."""
    return tiny_overrides(tmp_path / "run")


def tiny_overrides(output_dir: Path) -> dict:
    return {
        "model_type": "gpt2",
        "model_name_or_path": None,
        "config_overrides": "n_layer=1,n_embd=32,n_head=2,n_positions=128",
        "tokenizer_name": str(TOKENIZER_DIR),
        "output_dir": str(output_dir),
        "report_to": "none",
        "save_strategy": "no",
        "eval_strategy": "no",
        "load_best_model_at_end": False,
        "disable_tqdm": True,
        "dataloader_num_workers": 0,
        "mixed_precision": "no",
        "use_cpu": True,
    }


def cli_args(overrides):
    """Keyword overrides as command-line flags; None becomes "" (unset), a list several values."""
    argv = []
    for key, value in overrides.items():
        values = value if isinstance(value, list) else ["" if value is None else value]
        argv += [f"--{key}", *map(str, values)]
    return argv


# Generation settings as instruct-tuned hub models ship them (Qwen2.5-Instruct's), which a fine-tuning run must neither
# inherit for its greedy scoring nor fail on.
QWEN_INSTRUCT_GENERATION = {"do_sample": True, "temperature": 0.7, "top_p": 0.8, "top_k": 20,
                            "repetition_penalty": 1.05}
# A chat template of plain-text markers that ends each assistant turn with EOS, as many base models' templates do.
BASE_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ '### ' + message['role'] + ':\\n' + message['content'] }}"
    "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '### assistant:\\n' }}{% endif %}"
)
BASE_FAMILIES = {
    "gpt2": {"n_layer": 2, "n_embd": 32, "n_head": 2, "n_positions": 256},
    "qwen2": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
              "num_key_value_heads": 1, "max_position_embeddings": 256, "tie_word_embeddings": True},
}


def save_pretrained_base(folder: Path, family: str = "gpt2", generation: dict | None = None) -> str:
    """A tiny base shaped as hub checkpoints ship: weights stored in bf16, a generation_config.json that samples
    (``generation``; Qwen2.5-Instruct's by default), a tokenizer without a pad token and with a chat template."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, CONFIG_MAPPING, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    assert tokenizer.pad_token is None
    tokenizer.chat_template = BASE_CHAT_TEMPLATE
    config = CONFIG_MAPPING[family](vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                    eos_token_id=tokenizer.eos_token_id, **BASE_FAMILIES[family])
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(bos_token_id=tokenizer.bos_token_id,
                                               eos_token_id=tokenizer.eos_token_id,
                                               **(QWEN_INSTRUCT_GENERATION if generation is None else generation))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def pretrained_bases(tmp_path_factory) -> dict[str, str]:
    """Family name -> folder of a tiny pretrained-shaped base (see save_pretrained_base)."""
    return {family: save_pretrained_base(tmp_path_factory.mktemp(f"base-{family}"), family) for family in BASE_FAMILIES}


def card_snippet(output_dir: Path) -> str:
    """The Python block of a run's model card ("How to use")."""
    card = (output_dir / "README.md").read_text()
    return card.split("## How to use", 1)[1].split("```python\n", 1)[1].split("```")[0]


def run_card_snippet(output_dir: Path, capsys) -> dict:
    """Run the card's snippet as a user pastes it: its namespace (the pipeline it builds); its example call must
    print something."""
    namespace = {}
    exec(compile(card_snippet(output_dir), str(output_dir / "README.md"), "exec"), namespace)  # noqa: S102
    assert capsys.readouterr().out.strip()
    return namespace
