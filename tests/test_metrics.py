"""The metrics go through evaluate's interface: the shipped modules load offline and give scikit-learn's (and
rouge_score's) numbers; --metric_names adds local or hub metrics under their own keys, and a metric that cannot
be loaded or cannot score the run is one error line before anything is trained or written."""

import json
import socket
import textwrap
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

from hf_recipes import cli, metrics
from hf_recipes.metrics import METRIC_MODULES, load_metric, shipped_metric
from hf_recipes.recipes import instruct, sentiment
from tests.conftest import cli_args, SAMPLES

SENTIMENT = {"train_file": str(SAMPLES / "sentiment" / "train.csv"), "test_file": str(SAMPLES / "sentiment" / "test.csv"),
             "label_column": "sentiment", "max_train_samples": 64, "max_eval_samples": 24, "max_test_samples": 24,
             "max_steps": 2, "classification_baselines": False}


@pytest.fixture
def connections(monkeypatch):
    """Every host looked up or connected to (the conftest guard makes connections fail, but a library may swallow
    the failure, and without a network the name look-up fails before any connection)."""
    tried = []
    guarded_connect, lookup = socket.socket.connect, socket.getaddrinfo

    def record_connect(sock, address):
        tried.append(address)
        return guarded_connect(sock, address)

    def record_lookup(host, *args, **kwargs):
        tried.append(host)
        return lookup(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", record_connect)
    monkeypatch.setattr(socket, "getaddrinfo", record_lookup)
    return tried


def write_metric(folder: Path, name: str, kind: str, compute: str) -> str:
    """A local evaluate metric module ``folder/name/name.py`` whose ``_compute(predictions, references)`` body is
    ``compute``."""
    module = folder / name
    module.mkdir(parents=True)
    (module / f"{name}.py").write_text(textwrap.dedent('''\
        import datasets
        import evaluate
        import numpy as np
        from sklearn.metrics import f1_score


        class Module(evaluate.Metric):
            def _info(self):
                return evaluate.MetricInfo(description="", citation="", features=datasets.Features(
                    {{"predictions": datasets.Value("{kind}"), "references": datasets.Value("{kind}")}}))

            def _compute(self, predictions, references):
                return {compute}
        ''').format(kind=kind, compute=compute))
    return str(module)


def test_shipped_modules_load_offline_without_a_connection(connections):
    load_metric.cache_clear()
    for name in ("classification", "exact_match", "rouge_l"):
        module = shipped_metric(name)
        assert module.name == name
    assert connections == []
    assert sorted(p.name for p in METRIC_MODULES.iterdir() if (p / f"{p.name}.py").is_file()) == [
        "classification", "exact_match", "rouge_l"]


def test_classification_module_gives_scikit_learns_numbers():
    references = [0, 0, 1, 1, 2, 2, 2, 0]
    predictions = [0, 1, 1, 1, 0, 2, 1, 0]  # label 3 ("none") is neither true nor predicted
    names = ["neg", "neu", "pos", "none"]
    found = shipped_metric("classification").compute(predictions=predictions, references=references,
                                                     label_names=names)
    expected = {"accuracy": accuracy_score(references, predictions),
                "macro_f1": f1_score(references, predictions, labels=[0, 1, 2, 3], average="macro", zero_division=0)}
    for i, name in enumerate(names):
        expected[f"precision_{name}"] = precision_score(references, predictions, labels=[i], average="macro",
                                                        zero_division=0)
        expected[f"recall_{name}"] = recall_score(references, predictions, labels=[i], average="macro",
                                                  zero_division=0)
    assert found == pytest.approx(expected)
    assert list(found) == list(expected)
    # by hand: 5 of 8 right; "neu" predicted 4 times, 2 right, both true "neu" rows found (F1 2/3); "neg" 2 of 3
    # predicted right and 2 of 3 found (F1 2/3); "pos" 1 of 1 right but 1 of 3 found (F1 1/2); "none" 0
    assert found["accuracy"] == 5 / 8
    assert found["precision_neu"] == 0.5 and found["recall_neu"] == 1.0
    assert found["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 0.5 + 0.0) / 4)


def test_answer_modules_give_hand_computed_scores():
    assert shipped_metric("exact_match").compute(predictions=[" The  Cat ", "dog"], references=["the cat", "a dog"]
                                                 ) == {"exact_match": 0.5}
    # LCS of "the cat sat" and "the cat" is 2 words: precision 2/3, recall 1, F1 0.8
    found = shipped_metric("rouge_l").compute(predictions=["the cat sat", "x"], references=["the cat", "y"])
    assert found == {"rouge_l": pytest.approx(0.4)}
    assert np.isnan(shipped_metric("rouge_l").compute(predictions=[], references=[])["rouge_l"])


@pytest.mark.slow
def test_sentiment_reports_a_local_metric_under_its_own_keys(tmp_path, tiny_model_args):
    # "agreement" repeats accuracy under its own key and under the taken key "accuracy" (which it must not
    # overwrite), and returns a list, which cannot go into the metrics files.
    path = write_metric(tmp_path / "metrics", "agreement", "int64",
                        '{"agreement": float(np.mean(np.equal(predictions, references))), '
                        '"accuracy": -1.0, "per_row": list(np.equal(predictions, references))}')
    found = sentiment.run(**{**tiny_model_args, **SENTIMENT, "metric_names": [path]})
    for split in ("eval", "test"):
        assert found[f"{split}_agreement"] == pytest.approx(found[f"{split}_accuracy"])
        assert found[f"{split}_agreement_accuracy"] == -1.0
        assert found[f"{split}_accuracy"] >= 0
        assert not any("per_row" in key for key in found)
    saved = json.loads((Path(tiny_model_args["output_dir"]) / "test_results.json").read_text())
    assert saved["test_agreement"] == found["test_agreement"]


@pytest.mark.slow
def test_instruct_scores_the_test_answers_with_a_local_metric(tmp_path, tiny_model_args):
    path = write_metric(tmp_path / "metrics", "same_text", "string",
                        '{"same_text": float(np.mean([p == r for p, r in zip(predictions, references)])), '
                        '"words": float(np.mean([len(p.split()) for p in predictions]))}')
    found = instruct.run(**{**tiny_model_args, "train_file": str(SAMPLES / "instructions" / "instructions.json"),
                            "max_steps": 1, "max_new_tokens": 3, "report_examples": 1, "metric_names": [path]})
    rows = [json.loads(line) for line in
            (Path(tiny_model_args["output_dir"]) / "test_generations.jsonl").read_text().splitlines()]
    assert found["test_same_text"] == pytest.approx(np.mean([r["generated"] == r["reference"] for r in rows]))
    assert found["test_words"] == pytest.approx(np.mean([len(r["generated"].split()) for r in rows]))


def run_cli(recipe, run, capsys):
    capsys.readouterr()
    code = cli.main(["train", recipe, *cli_args(run)])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1, errors
    assert not Path(run["output_dir"]).exists()
    return errors[0]


def test_a_hub_metric_offline_and_not_cached_is_one_error_line(tmp_path, tiny_model_args, capsys, connections,
                                                                monkeypatch):
    import evaluate.config

    monkeypatch.setattr(evaluate.config, "HF_MODULES_CACHE", tmp_path / "modules")  # no cached hub metrics
    load_metric.cache_clear()
    monkeypatch.setattr(sentiment.SentimentRecipe, "load_data", lambda *a: pytest.fail("data read before the check"))
    error = run_cli("sentiment", {**tiny_model_args, **SENTIMENT, "metric_names": "matthews_correlation"}, capsys)
    assert "metric 'matthews_correlation' is not in evaluate's cache" in error
    assert "HF_HUB_OFFLINE=1" in error
    assert connections == []


def test_a_metric_that_cannot_score_the_run_fails_before_training(tmp_path, tiny_model_args, capsys, monkeypatch):
    # scikit-learn's default binary F1 cannot score the three sentiment labels
    path = write_metric(tmp_path / "metrics", "binary_f1", "int64", '{"f1": f1_score(references, predictions)}')
    monkeypatch.setattr(sentiment.SentimentRecipe, "before_training", lambda *a: pytest.fail("trained"))
    error = run_cli("sentiment", {**tiny_model_args, **SENTIMENT, "metric_names": path}, capsys)
    assert f"metric '{path}' cannot score predicted and true label ids" in error
    assert "average" in error


def test_metric_names_on_a_recipe_without_predictions_and_a_missing_module(tmp_path, tiny_model_args, capsys):
    lyrics = {**tiny_model_args, "train_file": str(SAMPLES / "lyrics" / "songs.txt"), "metric_names": "f1"}
    assert "metric_names does not apply to lyrics" in run_cli("lyrics", lyrics, capsys)
    missing = str(tmp_path / "nowhere" / "my_metric.py")
    error = run_cli("sentiment", {**tiny_model_args, **SENTIMENT, "metric_names": missing}, capsys)
    assert f"metric '{missing}'" in error


def test_extra_scores_keep_numbers_and_never_overwrite_a_taken_key():
    class Fake:
        def compute(self, predictions, references):
            return {"loss": 1, "score": np.float32(0.5), "flag": True, "list": [1.0]}

    assert metrics.extra_scores({"some/where/fake.py": Fake()}, [0], [0], taken=metrics.RUN_KEYS) == {"fake_loss": 1.0, "score": 0.5}
