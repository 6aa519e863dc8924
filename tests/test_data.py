import json
from pathlib import Path

import pandas as pd
import pytest
from datasets import Dataset, load_dataset

from hf_recipes.config import DataArguments, ModelArguments
from hf_recipes.data import drop_empty, flattened, load_splits
from hf_recipes.errors import RecipeError

ROWS = [{"text": f"tweet number {i}", "label": ["pos", "neg"][i % 2]} for i in range(40)]


def write(path, rows=ROWS):
    frame = pd.DataFrame(rows)
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".json":
        path.write_text(json.dumps(rows))
    elif suffix == ".jsonl":
        frame.to_json(path, orient="records", lines=True)
    elif suffix == ".parquet":
        frame.to_parquet(path)
    return path


def load(**data_kwargs):
    return load_splits(DataArguments(**data_kwargs), ModelArguments(), seed=0, required_columns=("text", "label"))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".json", ".jsonl", ".parquet"])
def test_each_file_type_loads_the_same_rows(tmp_path, suffix):
    train = write(tmp_path / f"train{suffix}")
    test = write(tmp_path / f"test{suffix}", ROWS[:5])
    splits = load(train_file=str(train), test_file=str(test), validation_split_percentage=25)
    assert set(splits) == {"train", "validation", "test"}
    assert len(splits["train"]) == 30 and len(splits["validation"]) == 10 and len(splits["test"]) == 5
    together = sorted(list(splits["train"]["text"]) + list(splits["validation"]["text"]))
    assert together == sorted(r["text"] for r in ROWS)
    assert list(splits["test"]["label"]) == [r["label"] for r in ROWS[:5]]


def test_text_files_load_one_row_per_line(tmp_path):
    path = tmp_path / "songs.txt"
    path.write_text("first line\nsecond line\nthird line\n")
    splits = load_splits(
        DataArguments(train_file=str(path), validation_split_percentage=34), ModelArguments(), seed=0
    )
    assert sorted(list(splits["train"]["text"]) + list(splits["validation"]["text"])) == ["first line", "second line", "third line"]


def test_validation_is_carved_reproducibly_and_disjoint(tmp_path):
    train = str(write(tmp_path / "train.csv"))
    first, second = load(train_file=train), load(train_file=train)
    assert list(first["validation"]["text"]) == list(second["validation"]["text"])
    assert not set(list(first["validation"]["text"])) & set(list(first["train"]["text"]))
    assert len(first["validation"]) == 2  # 5% of 40


def test_carving_keeps_datasets_seeded_split_in_tables_of_their_own(tmp_path):
    """The rows, and their order, of datasets' train_test_split with the run's seed (runs stay reproducible), each
    split memory-mapped from a file of its own: no indices mapping for every later pass to read row by row. A second
    load finds the files written by the first."""
    train = write(tmp_path / "train.csv")
    splits = load(train_file=str(train), validation_split_percentage=25)
    expected = load_dataset("csv", data_files=str(train))["train"].train_test_split(test_size=0.25, seed=0)
    assert list(splits["train"]["text"]) == list(expected["train"]["text"])
    assert list(splits["validation"]["text"]) == list(expected["test"]["text"])
    files = {}
    for split, dataset in splits.items():
        assert dataset._indices is None
        [files[split]] = [Path(f["filename"]) for f in dataset.cache_files]
        assert files[split].name.startswith("rows-") and files[split].stat().st_size > 0
    written = {split: path.stat().st_mtime_ns for split, path in files.items()}
    again = load(train_file=str(train), validation_split_percentage=25)
    assert {split: Path(again[split].cache_files[0]["filename"]) for split in again} == files
    assert {split: path.stat().st_mtime_ns for split, path in files.items()} == written
    assert not list(files["train"].parent.glob("*.partial"))


def test_a_cache_folder_that_cannot_be_written_keeps_the_mapping_and_leaves_nothing(tmp_path, monkeypatch):
    import pyarrow as pa

    def full_disk(path, mode):
        Path(path).write_bytes(b"half a table")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pa, "OSFile", full_disk)
    train = write(tmp_path / "train.csv")
    splits = load(train_file=str(train), validation_split_percentage=25)
    expected = load_dataset("csv", data_files=str(train))["train"].train_test_split(test_size=0.25, seed=0)
    assert list(splits["train"]["text"]) == list(expected["train"]["text"]) and splits["train"]._indices is not None
    folder = Path(splits["train"].cache_files[0]["filename"]).parent
    assert not list(folder.glob("rows-*"))


def test_a_selection_held_in_memory_is_flattened_in_memory():
    picked = flattened(Dataset.from_dict({"text": list("abcde"), "n": list(range(5))}).select([3, 0, 4]))
    assert picked._indices is None and not picked.cache_files
    assert picked.to_dict() == {"text": ["d", "a", "e"], "n": [3, 0, 4]}


def test_a_datasets_release_without_the_private_fingerprint_keeps_its_own_split():
    selection = Dataset.from_dict({"text": list("abcde")}).select([3, 0])
    del selection._fingerprint
    assert flattened(selection) is selection and selection["text"] == ["d", "a"]


def test_given_validation_file_is_used_as_is(tmp_path):
    splits = load(train_file=str(write(tmp_path / "a.csv")), validation_file=str(write(tmp_path / "b.csv", ROWS[:3])))
    assert len(splits["train"]) == 40 and list(splits["validation"]["text"]) == [r["text"] for r in ROWS[:3]]


def test_max_samples_keep_the_first_rows(tmp_path):
    splits = load(
        train_file=str(write(tmp_path / "a.csv")),
        validation_file=str(write(tmp_path / "b.csv")),
        max_train_samples=4,
        max_eval_samples=3,
    )
    assert list(splits["train"]["text"]) == [r["text"] for r in ROWS[:4]]
    assert len(splits["validation"]) == 3


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="train_file not found: .*nope.csv"):
        load(train_file=str(tmp_path / "nope.csv"))


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(RecipeError, match="train_file is a directory"):
        load(train_file=str(tmp_path))


def test_empty_file(tmp_path):
    (tmp_path / "e.csv").write_text("")
    with pytest.raises(RecipeError, match="train_file is empty"):
        load(train_file=str(tmp_path / "e.csv"))


def test_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\ncaf\xe9 au lait,pos\n".encode("latin-1"))
    with pytest.raises(RecipeError, match=r"not UTF-8 text: .*latin1.csv \(byte 0xe9 at offset 14\)"):
        load(train_file=str(path))


def test_missing_column_names_the_columns_found(tmp_path):
    path = write(tmp_path / "t.csv", [{"tweet": "a", "label": "pos"}, {"tweet": "b", "label": "neg"}])
    with pytest.raises(RecipeError, match="column 'text' not found in train data .*columns found: tweet, label"):
        load(train_file=str(path))


def test_unsupported_extension(tmp_path):
    path = tmp_path / "data.xlsx"
    path.write_text("x")
    with pytest.raises(RecipeError, match="unsupported extension '.xlsx'"):
        load(train_file=str(path))


def test_no_data_at_all():
    with pytest.raises(RecipeError, match="no data"):
        load()


def test_hub_dataset_offline_fails_with_a_clear_line():
    with pytest.raises(RecipeError, match="could not load dataset 'someone/nothing-here'"):
        load(dataset_name="someone/nothing-here")
    with pytest.raises(RecipeError, match="the hub is switched off by HF_HUB_OFFLINE=1"):
        load(dataset_name="someone/nothing-here")


def test_empty_texts_are_dropped_and_counted(tmp_path):
    rows = ROWS[:10] + [{"text": "", "label": "pos"}, {"text": "   ", "label": "neg"}, {"text": None, "label": "pos"}]
    splits = load(train_file=str(write(tmp_path / "t.jsonl", rows)), validation_file=str(write(tmp_path / "v.jsonl")))
    dropped = drop_empty(splits, "text")
    assert dropped == {"train": 3, "validation": 0}
    assert list(splits["train"]["text"]) == [r["text"] for r in ROWS[:10]] and splits["train"]._indices is None


def test_all_texts_empty_is_an_error(tmp_path):
    rows = [{"text": " ", "label": "pos"}] * 4
    splits = load(train_file=str(write(tmp_path / "t.jsonl", rows)))
    with pytest.raises(RecipeError, match="split is empty after dropping rows with empty 'text'"):
        drop_empty(splits, "text")
