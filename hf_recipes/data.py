"""Raw splits from the hub or from local / remote files, checked before anything is trained or written."""

from __future__ import annotations

import codecs
import contextlib
import csv
import gc
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterable
from urllib.parse import urlparse

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset, DatasetDict, IterableDataset
from datasets.features.features import require_decoding

from hf_recipes.config import DataArguments, ModelArguments
from hf_recipes.errors import RecipeError, one_line
from hf_recipes.files import check_regular_file
from hf_recipes.model import ensure_hub_reachable, ensure_reachable, is_local, offline_note

logger = logging.getLogger(__name__)

# File suffix -> datasets builder.
BUILDERS = {".csv": "csv", ".tsv": "csv", ".json": "json", ".jsonl": "json", ".parquet": "parquet", ".txt": "text"}
SPLIT_FILES = {"train": "train_file", "validation": "validation_file", "test": "test_file"}
ROLES = ("system", "user", "assistant")  # the message roles a conversation column may hold
CHECK_BATCH_ROWS = 10_000  # rows a check holds as Python objects at a time
STREAMED_EVAL_ROWS = 1_000  # validation / test rows of a streamed run, unless max_eval_samples / max_test_samples say
STREAMED_CHECK_ROWS = 1_000  # head of a streamed train split whose columns are checked before training


def arrow_column(dataset: Dataset, column: str) -> pa.ChunkedArray:
    """One column of a split as Arrow, in row order (a datasets ``Column`` is read row by row when iterated); see
    :func:`decoded` for the values datasets would give."""
    values = dataset.with_format("arrow")[column]
    if isinstance(values.type, pa.BaseExtensionType):  # Json (a JSON file's column of mixed types): its JSON text
        values = pa.chunked_array([chunk.storage for chunk in values.chunks], values.type.storage_type)
    return values


def decoded(dataset: Dataset, column: str, values: list) -> list:
    """``values`` read from Arrow as datasets gives them (a Json column holds JSON text there)."""
    feature = dataset.features[column]
    return dataset.features.decode_column(values, column) if require_decoding(feature) else values


def column_values(dataset: Dataset, column: str) -> list:
    """One column as Python values, converted from Arrow in one call."""
    return decoded(dataset, column, arrow_column(dataset, column).to_pylist())


def as_batch(records):
    """A Dataset read like a batch (column name -> Python list, each column converted from Arrow in one call when
    first asked for); a batch as it is."""
    if not isinstance(records, Dataset):
        return records

    class Columns(dict):
        def __missing__(self, column):
            self[column] = values = column_values(records, column)
            return values

    return Columns()


def count_true(dataset: Dataset, column: str) -> int:
    """Rows whose boolean ``column`` is true, counted in Arrow."""
    return pc.sum(arrow_column(dataset, column)).as_py() or 0


def iter_values(dataset: Dataset, column: str, batch_rows: int = CHECK_BATCH_ROWS) -> Iterable:
    """One column's Python values in row order, holding one batch of them at a time."""
    for batch in dataset.select_columns([column]).with_format("arrow").iter(batch_size=batch_rows):
        yield from decoded(dataset, column, batch.column(0).to_pylist())


def has_text(texts: pa.ChunkedArray) -> pa.ChunkedArray:
    """Per row: the text is there and not blank (the rows drop_empty keeps)."""
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        return pa.chunked_array([np.zeros(len(texts), dtype=bool)], pa.bool_())
    return pc.fill_null(pc.not_equal(pc.utf8_trim_whitespace(texts), ""), False)


def is_url(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def builder_for(path: str, option: str) -> str:
    suffix = Path(path.split("?")[0]).suffix.lower()
    if suffix not in BUILDERS:
        raise RecipeError(f"{option} '{path}' has an unsupported extension '{suffix}' (use {', '.join(BUILDERS)})")
    return BUILDERS[suffix]


def check_local_file(path: str, option: str) -> None:
    """Missing, directory, special (pipe, socket, device), empty or non-UTF-8 files get a clear error before datasets
    sees them; nothing is opened before the path is known to be a regular file."""
    check_regular_file(path, option)
    p = Path(path)
    if p.stat().st_size == 0:
        raise RecipeError(f"{option} is empty: {path}")
    if p.suffix.lower() == ".parquet":
        check_parquet_rows(path, option)
        return
    decoder = codecs.getincrementaldecoder("utf-8")()
    offset = 0
    try:
        handle = p.open("rb")
    except OSError as err:
        raise RecipeError(f"{option} cannot be read: {one_line(err)}") from None
    with handle:
        while chunk := handle.read(1 << 20):
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as err:
                raise RecipeError(
                    f"{option} is not UTF-8 text: {path} (byte {chunk[err.start]:#x} at offset {offset + err.start}); "
                    "re-save it as UTF-8"
                ) from None
            offset += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise RecipeError(f"{option} is not UTF-8 text: {path} (truncated character at the end)") from None


def load_files(data_args: DataArguments, cache_dir: str | None, text_kwargs: dict | None = None) -> DatasetDict:
    files = {split: getattr(data_args, option) for split, option in SPLIT_FILES.items() if getattr(data_args, option)}
    for split, path in files.items():
        if is_url(path):
            ensure_reachable(path, urlparse(path).hostname, f"{SPLIT_FILES[split]} {path}",
                             f"download it and pass --{SPLIT_FILES[split]} with the local path")
        else:
            check_local_file(path, SPLIT_FILES[split])
    builders = {builder_for(path, SPLIT_FILES[split]) for split, path in files.items()}
    if len(builders) > 1:
        raise RecipeError(f"train/validation/test files must share one format, got {', '.join(sorted(builders))}")
    builder = builders.pop()
    if builder == "csv":
        for split, path in files.items():
            if not is_url(path):
                check_csv_header(path, SPLIT_FILES[split])
    kwargs = dict(text_kwargs or {}) if builder == "text" else {}
    if builder == "csv" and any(p.endswith(".tsv") for p in files.values()):
        kwargs["sep"] = "\t"
    # One load per split: files may differ in schema, and an error names the file it came from.
    return DatasetDict({split: read_file(builder, path, SPLIT_FILES[split], cache_dir, kwargs)
                        for split, path in files.items()})


def check_csv_header(path: str, option: str) -> None:
    """pandas renames a repeated header ('text' -> 'text.1'), so a run would silently read the wrong column; a
    header without rows below it would end in the datasets library's words."""
    with open(path, newline="", encoding="utf-8") as handle:
        rows = csv.reader(handle, delimiter="\t" if path.endswith(".tsv") else ",")
        header = next(rows, [])
        has_rows = any(any(cell.strip() for cell in row) for row in rows)
    seen = set()
    for name in header:
        if name in seen:
            raise RecipeError(f"{option} {path} names the column '{name}' twice in its header; rename one of them")
        seen.add(name)
    if not has_rows:
        raise RecipeError(f"{option} {path} has a header ({', '.join(header)}) but no rows: add data rows below it")


def check_parquet_rows(path: str, option: str) -> None:
    import pyarrow.parquet

    try:
        rows = pyarrow.parquet.ParquetFile(path).metadata.num_rows
    except Exception as err:  # noqa: BLE001 - pyarrow's errors for a file that is no parquet, in its words
        raise RecipeError(f"could not read {option} {path}: {one_line(err)}") from None
    if rows == 0:
        raise RecipeError(f"{option} {path} holds columns but no rows: pass a file with data")


def check_text_columns(raw: DatasetDict, columns: Iterable[str], sources: dict[str, str]) -> None:
    """Text columns hold strings (or nothing): a number, list or mapping is an error naming the column, the split
    and the first such row (counted from 1), not something to train on."""
    for split, dataset in raw.items():
        for column in columns:
            if column not in dataset.column_names:
                continue
            feature = dataset.features[column]
            if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
                continue
            for row, value in enumerate(iter_values(dataset, column), start=1):
                if value is not None and not isinstance(value, str):
                    raise RecipeError(f"column '{column}' of the {split} split ({sources.get(split, split)}) must hold "
                                      f"text, but row {row} holds {shown(value)}")


def shown(value) -> str:
    """A value's type and (cut) repr, for error lines: ``int 7``, ``list ['a', 'b']``."""
    text = repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    return f"{type(value).__name__} {text}"


def check_message_columns(raw: DatasetDict, columns: Iterable[str], sources: dict[str, str]) -> None:
    """Conversation columns hold lists of ``{"role", "content"}`` messages (OpenAI's form; roles in ``ROLES``, content
    text) or nothing: anything else is an error naming the column, the split and the first such row (from 1)."""
    for split, dataset in raw.items():
        for column in columns:
            if column not in dataset.column_names:
                continue
            for row, messages in enumerate(iter_values(dataset, column), start=1):
                problem = message_problem(messages)
                if problem:
                    raise RecipeError(f"column '{column}' of the {split} split ({sources.get(split, split)}) must hold "
                                      f"lists of {{role, content}} messages, but row {row} {problem}")


def message_problem(messages) -> str | None:
    """What is wrong with one conversation, or None (a missing one is dropped later, like an empty text)."""
    if messages is None:
        return None
    if not isinstance(messages, list):
        return f"holds {shown(messages)}"
    for number, message in enumerate(messages, start=1):
        if not isinstance(message, dict):
            return f"has message {number} of {shown(message)}"
        for key in ("role", "content"):
            if message.get(key) is None:
                return f"has message {number} without '{key}'"
        if message["role"] not in ROLES:
            return f"has message {number} with role {message['role']!r} (roles: {', '.join(ROLES)})"
        if not isinstance(message["content"], str):
            return f"has message {number} whose content is {shown(message['content'])}, not text"
    return None


def read_file(builder: str, path: str, option: str, cache_dir: str | None, kwargs: dict) -> Dataset:
    try:
        return datasets.load_dataset(builder, data_files={"data": path}, split="data", cache_dir=cache_dir, **kwargs)
    except datasets.exceptions.DatasetGenerationError as err:
        cause = err.__cause__ or err
        raise RecipeError(f"could not read {option} {path}: {one_line(cause)}") from None
    except (ValueError, OSError) as err:
        if "corresponds to no data" in str(err):  # the file parsed into no records (e.g. [] or blank lines)
            raise RecipeError(f"{option} {path} holds no records: pass a file with data") from None
        raise RecipeError(f"could not read {option} {path}: {one_line(err)}") from None


def load_hub(data_args: DataArguments, model_args: ModelArguments) -> DatasetDict:
    name = data_args.dataset_name
    if not is_local(name):
        ensure_hub_reachable(f"dataset '{name}'")
    try:
        loaded = datasets.load_dataset(
            name, data_args.dataset_config_name, cache_dir=model_args.cache_dir, token=model_args.token
        )
    except (ConnectionError, OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
        raise RecipeError(f"could not load dataset '{name}': {one_line(err)}{offline_note(name)}") from None
    if not isinstance(loaded, DatasetDict):
        loaded = DatasetDict({"train": loaded})
    return loaded


def load_splits(
    data_args: DataArguments,
    model_args: ModelArguments,
    seed: int,
    required_columns: Iterable[str] = (),
    text_columns: Iterable[str] = (),
    text_kwargs: dict | None = None,
    message_columns: Iterable[str] = (),
    split_train: Callable[[Dataset, float | int, int], tuple[Dataset, Dataset]] | None = None,
    test_split_percentage: float | None = None,
    read_columns: Callable[[DatasetDict], DatasetDict] | None = None,
    check_files: Callable[[DatasetDict, dict[str, str]], None] | None = None,
) -> DatasetDict:
    """Return a DatasetDict with train, validation and (when given or ``test_split_percentage`` is set) test.

    Local files win over ``dataset_name``. A missing validation split is carved from train with ``seed``
    (``split_train`` lets a recipe choose the unit it carves by). With ``test_split_percentage``, a missing test
    split is carved too, and both percentages are of the whole train data (85/5/10 leaves 85% to train).
    Columns are checked by name, ``text_columns`` by type (text or missing) and ``message_columns`` as
    conversations (:func:`check_message_columns`), then ``check_files(splits, sources)`` sees the splits as the files
    hold them (a row number in its errors is the file's row; carving shuffles). ``read_columns`` lets a recipe read
    and check columns it tells apart by their names itself, before anything is carved (for the same reason).
    """
    if any(getattr(data_args, option) for option in SPLIT_FILES.values()):
        if not data_args.train_file:
            raise RecipeError("validation_file/test_file need a train_file too")
        raw = load_files(data_args, model_args.cache_dir, text_kwargs)
    elif data_args.dataset_name:
        raw = load_hub(data_args, model_args)
    else:
        raise RecipeError("no data: set dataset_name or train_file")
    if "train" not in raw:
        raise RecipeError(f"the data has no train split (splits found: {', '.join(raw)})")
    check_columns(raw, data_args, required_columns, text_columns, message_columns, check_files)
    if read_columns:
        raw = read_columns(raw)
    return carve_splits(raw, data_args, seed, split_train, test_split_percentage)


def check_columns(raw: DatasetDict, data_args: DataArguments, required_columns: Iterable[str] = (),
                  text_columns: Iterable[str] = (), message_columns: Iterable[str] = (),
                  check_files: Callable[[DatasetDict, dict[str, str]], None] | None = None) -> None:
    """Every split has ``required_columns``; ``text_columns`` hold text and ``message_columns`` conversations;
    then ``check_files`` (see :func:`load_splits`)."""
    sources = {split: getattr(data_args, SPLIT_FILES.get(split, ""), None) or data_args.dataset_name or split
               for split in raw}
    for split, dataset in raw.items():
        missing = [c for c in required_columns if c not in dataset.column_names]
        if missing:
            source = sources[split]
            raise RecipeError(
                f"column '{missing[0]}' not found in {split} data ({source}); "
                f"columns found: {', '.join(dataset.column_names)}"
            )
    check_text_columns(raw, text_columns, sources)
    check_message_columns(raw, message_columns, sources)
    if check_files is not None:
        check_files(raw, sources)


def carve_splits(
    raw: DatasetDict,
    data_args: DataArguments,
    seed: int,
    split_train: Callable[[Dataset, float | int, int], tuple[Dataset, Dataset]] | None = None,
    test_split_percentage: float | None = None,
) -> DatasetDict:
    """Carve the missing validation (and, with ``test_split_percentage``, test) split from train, both as shares
    of the whole train data, then keep the first max_train/eval/test_samples rows of each split."""
    carve = split_train or random_split
    whole = len(raw["train"])
    fraction: float | int = data_args.validation_split_percentage / 100
    if test_split_percentage is not None and "test" not in raw:
        if not 0 < test_split_percentage < 100:
            raise RecipeError(f"test_split_percentage must be between 0 and 100, got {test_split_percentage}")
        test_rows = round(whole * test_split_percentage / 100)
        fraction = round(whole * fraction)
        if min(test_rows, fraction) < 1 or whole - test_rows - ("validation" not in raw) * fraction < 1:
            raise RecipeError(f"train data has {whole} rows: too few to carve validation and test splits")
        raw["train"], raw["test"] = carve(raw["train"], test_rows, seed)
        logger.info("Carved %d test rows from train (%.0f%%, seed %d)", test_rows, test_split_percentage, seed)
    if "validation" not in raw:
        if len(raw["train"]) < 2:
            raise RecipeError("train data needs at least 2 rows to carve a validation split")
        raw["train"], raw["validation"] = carve(raw["train"], fraction, seed)
        logger.info(
            "Carved %d validation rows from train (%.0f%%, seed %d)",
            len(raw["validation"]), data_args.validation_split_percentage, seed,
        )
    limits = {"train": data_args.max_train_samples, "validation": data_args.max_eval_samples}
    limits["test"] = data_args.max_test_samples
    for split, limit in limits.items():
        if split in raw and limit is not None:
            raw[split] = raw[split].select(range(min(limit, len(raw[split]))))
    return DatasetDict({split: raw[split] for split in ("train", "validation", "test") if split in raw})


def random_split(train: Dataset, size: float | int, seed: int) -> tuple[Dataset, Dataset]:
    """Shuffle with ``seed`` and carve ``size`` rows (an int) or that share of them (a float)."""
    parts = train.train_test_split(test_size=size, seed=seed, shuffle=True)
    return flattened(parts["train"]), flattened(parts["test"])


FLATTEN_ROWS = 100_000  # rows taken and written at a time


def flattened(dataset: Dataset) -> Dataset:
    """``dataset`` as a table of its own rows, in order, without the indices mapping that select, filter and
    train_test_split leave: datasets reads every later pass through such a mapping one row at a time (18 s of a 1M-row
    tokenizing pass; its own flatten_indices takes 10 s), Arrow's take writes the rows in 0.3 s. The table is written
    beside the dataset's cache files (named by its fingerprint, so a rerun finds it) and memory-mapped; a dataset held
    in memory stays there."""
    # datasets keeps the mapping and the fingerprint private (no mapping: None); a release without them is left to
    # read its splits its own way
    mapping, fingerprint = getattr(dataset, "_indices", None), getattr(dataset, "_fingerprint", None)
    if mapping is None or fingerprint is None:
        return dataset
    rows, source = mapping.column(0), dataset.data.table
    if not dataset.cache_files:
        return Dataset(source.take(rows), info=dataset.info, split=dataset.split)
    path = Path(dataset.cache_files[0]["filename"]).parent / f"rows-{fingerprint}.arrow"
    if not path.exists():
        # A name of this process's own, renamed when whole: an interrupted run leaves no half table under the
        # real name, and the processes of a distributed run may write theirs side by side
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, source.schema) as writer:
                for start in range(0, len(rows), FLATTEN_ROWS):
                    writer.write_table(source.take(rows.slice(start, FLATTEN_ROWS)))
            partial.replace(path)
        except OSError as error:  # a cache folder that cannot be written (read-only, full): read through the mapping
            logger.debug("Kept the indices mapping of %s: %s", dataset.split, error)
            return dataset
        finally:
            partial.unlink(missing_ok=True)
    return Dataset.from_file(str(path), info=dataset.info, split=dataset.split)


def drop_empty(raw: DatasetDict, column: str) -> dict[str, int]:
    """Drop rows whose ``column`` is missing or blank; return how many each split lost."""
    return drop_rows(raw, column, has_text, f"with empty '{column}'", whole_column=True)


def drop_rows(raw: DatasetDict, column: str, keep: Callable[[Any], Any], what: str, whole_column: bool = False
              ) -> dict[str, int]:
    """Drop the rows whose ``column`` value fails ``keep`` (``what`` describes them, e.g. "with empty 'output'");
    return how many each split lost. A split left empty is an error. With ``whole_column``, ``keep`` takes the
    split's column as Arrow and returns one boolean per row (no Python object per row)."""
    dropped = {}
    for split in list(raw):
        before = len(raw[split])
        if whole_column:
            kept = raw[split].select(np.flatnonzero(np.asarray(keep(arrow_column(raw[split], column)))))
        else:
            kept = raw[split].filter(
                lambda batch: [keep(value) for value in batch[column]],
                batched=True,
                desc=f"Dropping rows {what} ({split})",
            )
        if len(kept) < before:  # else the split stays as it was, with no mapping to flatten
            raw[split] = flattened(kept)
        dropped[split] = before - len(raw[split])
        if dropped[split]:
            logger.warning("Dropped %d %s rows %s", dropped[split], split, what)
        if len(raw[split]) == 0:
            raise RecipeError(f"the {split} split is empty after dropping rows {what}")
    return dropped


@contextlib.contextmanager
def objects_left_out_of_gc():
    """Inside, the cyclic garbage collector skips the objects that existed before (``gc.freeze``): tokenizing makes
    millions of short-lived lists, and each full collection would walk every object the process holds (20-25% of
    instruct's tokenizing time at 100k records, measured)."""
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def map_splits(raw: DatasetDict, function: Callable, data_args: DataArguments, training_args, desc: str) -> DatasetDict:
    """Batched, cached ``Dataset.map`` over every split; the main process tokenizes first and the others
    read its cache. Source columns are dropped so only model inputs remain."""
    with training_args.main_process_first(desc=desc), objects_left_out_of_gc():
        return DatasetDict(
            {
                split: dataset.map(
                    function,
                    batched=True,
                    remove_columns=dataset.column_names,
                    num_proc=data_args.preprocessing_num_workers,
                    load_from_cache_file=not data_args.overwrite_cache,
                    desc=f"{desc} ({split})",
                )
                for split, dataset in raw.items()
            }
        )


def check_targets(datasets: DatasetDict, hint: str, holds_target: Callable[[pa.Array | pa.ChunkedArray], bool]) -> None:
    """A split without a single target token would train on nothing (or score NaN): ``hint`` says what to change.
    ``holds_target``: whether any row of an Arrow ``labels`` column holds a target, as the model's loss reads them.
    Read in Arrow batches until the first row with a target (usually the first batch)."""
    for split in ("train", "validation"):
        dataset = datasets[split]
        if isinstance(dataset, IterableDataset):  # streamed: its first row is prepared to see that there is one
            if next(iter(dataset.take(1)), None) is None:
                raise RecipeError(f"the {split} split is empty after preparation; {hint}")
            continue
        if len(dataset) == 0:
            raise RecipeError(f"the {split} split is empty after preparation; {hint}")
        if "labels" not in dataset.column_names:
            continue
        batches = dataset.select_columns(["labels"]).with_format("arrow").iter(batch_size=CHECK_BATCH_ROWS)
        if not any(holds_target(batch.column(0)) for batch in batches):
            raise RecipeError(f"the {split} split has no token to predict, so nothing can be learned or scored; "
                              f"{hint}")


# ---- streaming ------------------------------------------------------------------------------------------------
def rows_of(dataset) -> int | None:
    """A split's rows; None for a streamed one (its length is unknown until it is read)."""
    return None if isinstance(dataset, IterableDataset) else len(dataset)


def head(stream: IterableDataset, rows: int) -> Dataset:
    """The first ``rows`` rows of a stream, held in memory."""
    return Dataset.from_list(list(stream.take(rows)))


def check_streaming(data_args: DataArguments, training_args, dedupe_splits: bool) -> None:
    if training_args.max_steps is None or training_args.max_steps <= 0:
        raise RecipeError("--streaming true needs --max_steps: a streamed train split has no length to count "
                          "epochs by")
    if dedupe_splits:
        raise RecipeError("--dedupe_splits does not apply with --streaming true (train is read as a stream, never "
                          "whole); leave it out")


def load_streaming(data_args: DataArguments, model_args: ModelArguments, training_args, dedupe_splits: bool,
                   with_test: bool, required_columns: Iterable[str] = (), text_columns: Iterable[str] = (),
                   text_kwargs: dict | None = None) -> DatasetDict:
    """``--streaming true``: train as an IterableDataset, read (and later tokenized) as training goes; validation and
    test the first ``max_eval_samples`` / ``max_test_samples`` rows (default ``STREAMED_EVAL_ROWS``) of their own
    files or splits, held in memory. A split that has none is taken from the head of the train stream (test first,
    then validation), and train starts after them. Columns are checked on those splits and on the train head."""
    check_streaming(data_args, training_args, dedupe_splits)
    if any(getattr(data_args, option) for option in SPLIT_FILES.values()):
        if not data_args.train_file:
            raise RecipeError("validation_file/test_file need a train_file too")
        streams = {}
        for split, option in SPLIT_FILES.items():
            path = getattr(data_args, option)
            if not path:
                continue
            if is_url(path):
                ensure_reachable(path, urlparse(path).hostname, f"{option} {path}",
                                 f"download it and pass --{option} with the local path")
            else:
                check_regular_file(path, option)
            builder = builder_for(path, option)
            kwargs = dict(text_kwargs or {}) if builder == "text" else {}
            streams[split] = datasets.load_dataset(builder, data_files={"data": path}, split="data", streaming=True,
                                                   **kwargs)
    elif data_args.dataset_name:
        name = data_args.dataset_name
        if not is_local(name):
            ensure_hub_reachable(f"dataset '{name}'")
        try:
            streams = dict(datasets.load_dataset(name, data_args.dataset_config_name, streaming=True,
                                                 cache_dir=model_args.cache_dir, token=model_args.token))
        except (ConnectionError, OSError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
            raise RecipeError(f"could not load dataset '{name}': {one_line(err)}{offline_note(name)}") from None
    else:
        raise RecipeError("no data: set dataset_name or train_file")
    if "train" not in streams:
        raise RecipeError(f"the data has no train split (splits found: {', '.join(streams)})")
    train, taken, raw = streams["train"], 0, DatasetDict()
    for split, limit in (("test", data_args.max_test_samples), ("validation", data_args.max_eval_samples)):
        rows = limit or STREAMED_EVAL_ROWS
        if split in streams:
            raw[split] = head(streams[split], rows)
        elif split == "validation" or with_test:
            raw[split] = head(train.skip(taken), rows)
            taken += rows
        if split in raw and len(raw[split]) == 0:
            raise RecipeError(f"the {split} split is empty: the train stream has fewer than {taken} rows")
    train = train.skip(taken) if taken else train
    if data_args.max_train_samples:
        train = train.take(data_args.max_train_samples)
    checked = DatasetDict({"train": head(train, STREAMED_CHECK_ROWS), **raw})
    if len(checked["train"]) == 0:
        raise RecipeError(f"the train stream holds no rows after the {taken} taken for validation and test")
    check_columns(checked, data_args, required_columns, text_columns)
    logger.info("Streaming train; %s held in memory (%s rows)", "/".join(raw),
                "/".join(str(len(d)) for d in raw.values()))
    return DatasetDict({"train": train, **{split: raw[split] for split in ("validation", "test") if split in raw}})
