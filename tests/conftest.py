"""Shared fixtures. Every test runs offline: the hub is switched off and any non-local connection fails."""

import ipaddress
import os
import socket
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "hf_recipes" / "samples"
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
