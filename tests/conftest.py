"""Shared fixtures. Every test runs offline: the hub is switched off and any non-local connection fails."""

import ipaddress
import json
import os
import socket
import subprocess
import sys
from importlib.resources import files
from pathlib import Path

# Before anything imports huggingface_hub, which reads them once, at import
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from hf_recipes.chat import IM_END, IM_START  # noqa: E402

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


# ---- helpers several test modules share ------------------------------------------------------------------


TASK_DATA = {
    "sentiment": {"train_file": str(SAMPLES / "sentiment" / "train.csv"),
                  "test_file": str(SAMPLES / "sentiment" / "test.csv"),
                  "label_column": "sentiment", "max_train_samples": 200, "max_test_samples": 50},
    "lyrics": {"train_file": str(SAMPLES / "lyrics" / "songs.txt"), "block_size": 64, "max_new_tokens": 4,
               "prompts": ["Down by"]},
    "instruct": {"train_file": str(SAMPLES / "instructions" / "instructions.json"), "max_new_tokens": 4,
                 "max_train_samples": 120},
}


def final_metrics(metrics):
    """The metrics a resumed run must reproduce: evaluation, test, and the whole run's mean training loss."""
    return {k: v for k, v in metrics.items()
            if (k.startswith(("eval_", "test_")) or k == "train_loss") and "runtime" not in k
            and "per_second" not in k and "preparation_time" not in k}


SAMPLE_DATA = {
    "sentiment": {"train_file": str(SAMPLES / "sentiment" / "train.csv"), "label_column": "sentiment",
                  "test_file": str(SAMPLES / "sentiment" / "test.csv")},
    "lyrics": {"train_file": str(SAMPLES / "lyrics" / "songs.txt"), "block_size": 64},
    "instruct": {"train_file": str(SAMPLES / "instructions" / "instructions.json")},
}


def write_file(folder: Path, name: str, content) -> str:
    path = folder / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    elif isinstance(content, pd.DataFrame):
        content.to_parquet(path)
    else:
        path.write_text(json.dumps(content))
    return str(path)


def labelled_tweets(labels, texts=None):
    texts = texts or [f"tweet number {i}" for i in range(len(labels))]
    return [{"text": t, "sentiment": label} for t, label in zip(texts, labels)]


def instruction_records(n=30, **fields):
    return [{"instruction": f"Say {i}.", "input": "", "output": str(i), **fields} for i in range(n)]


def snapshot(folder: Path) -> dict:
    return {p: p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_one_error_line(code, err, message):
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert code == 2, err
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert message in errors[0], errors[0]
    assert "Traceback" not in err


TWEET_WORDS = {"positive": ["love", "great", "happy"], "negative": ["hate", "awful", "sad"], "neutral": ["at", "on", "the"]}


def random_tweets(n, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = ["positive", "negative", "neutral"][i % 3]
        words = " ".join(rng.choice(TWEET_WORDS[label], size=1 + i % 5))
        rows.append({"text": f"i {words} this {i}", "sentiment": label})
    return rows


def hand_mean_loss(model, examples) -> tuple[float, int]:
    """Each example alone: summed cross-entropy of label[i + 1] given tokens up to i, over labels that are not
    -100, divided by how many there are."""
    total, count = 0.0, 0
    with torch.no_grad():
        for example in examples:
            inputs = {"input_ids": torch.tensor([example["input_ids"]])}
            if "position_ids" in example:
                inputs["position_ids"] = torch.tensor([example["position_ids"]])
            logits = model(**inputs, use_cache=False).logits[0, :-1]
            targets = torch.tensor(example["labels"][1:])
            total += F.cross_entropy(logits, targets, ignore_index=-100, reduction="sum").item()
            count += int((targets != -100).sum())
    return total / count, count


def ids_of(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def expected_chatml(tokenizer, messages):
    """Ids and labels assembled by hand: each turn is <|im_start|> role\\ncontent <|im_end|> \\n; the targets are
    each assistant content and its <|im_end|> (not the newline after it)."""
    start, end = tokenizer.convert_tokens_to_ids([IM_START, IM_END])
    newline = ids_of(tokenizer, "\n")
    ids, labels = [], []
    for message in messages:
        head = [start] + ids_of(tokenizer, message["role"] + "\n")
        content = ids_of(tokenizer, message["content"]) + [end]
        ids += head + content + newline
        targets = content if message["role"] == "assistant" else [-100] * len(content)
        labels += [-100] * len(head) + targets + [-100] * len(newline)
    return ids, labels


# Runs cli.main in a fresh interpreter and reports which heavy libraries the command imported.
PROBE = """
import sys
from hf_recipes import cli, flag_index
try:
    code = cli.main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
heavy = [m for m in ("torch", "transformers", "datasets", "matplotlib", "sklearn") if m in sys.modules]
print("heavy imports:", ",".join(heavy) or "none")
sys.exit(code)
"""


def run_fresh(*argv: str, probe: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", PROBE, *argv] if probe else [sys.executable, "-m", "hf_recipes", *argv]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
