"""Training data and base models from the Hugging Face Hub (GPU studies).

Two DAG steps, so a changed prompt suffix does not download again:

* ``prepare_data`` (:func:`draw_sample`): read ``data.hub.id`` with
  ``datasets.load_dataset``, shuffle the split with
  ``Dataset.shuffle(seed=data.hub.seed)``, keep the first
  ``sample + test_size`` rows, and extract each row's answer. Writes
  ``data/hub_sample.jsonl`` ({index, question, answer}) and
  ``data/hub_sample.json`` (dataset id, revision, fingerprint, counts).
* ``make_data`` (:func:`write_hub_splits`): the first ``sample`` rows are the
  training prompts, the next ``test_size`` the held-out test split; the prompt
  is ``question + prompt_suffix``; rows without an extractable answer are
  dropped (counted). Writes ``data/train.jsonl`` / ``data/test.jsonl`` in the
  {prompt, answer} format every later stage reads.

Sampling recipe (an assumption: the paper says "50K sample, seed 42" and no
more): shuffle the whole split with ``datasets``' seeded shuffle, take the
first rows, *then* drop rows without a final answer, so the training set can
be slightly smaller than ``sample``; ``hub_sample.json`` records by how much.

``prepare_model`` (:func:`download_model`) resolves ``model.revision`` to a
commit and snapshot-downloads exactly that commit into
``results/<study>/base_model`` (weights, config, tokenizer), recording the
commit in ``layerbench_source.json``. Neither step can run without network;
both are ``localrules`` (on SLURM they run where Snakemake runs).
"""

from __future__ import annotations

import json
from pathlib import Path

from layerbench.io import atomic_directory, atomic_write_json, atomic_write_jsonl

MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.py", "merges.txt", "vocab.json"]


def extract_answer(value, mode: str) -> str | None:
    """The gold answer of a row: the field itself (``none``; a list gives its
    first element) or the last ``\\boxed{}`` of a worked solution (``boxed``,
    lm-eval's own extraction from its MATH tasks)."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        value = value[0] if value else None
        if value is None:
            return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if mode == "boxed":
        from lm_eval.tasks.hendrycks_math.utils import last_boxed_only_string, remove_boxed

        boxed = last_boxed_only_string(text)
        if boxed is None:
            return None
        try:
            text = remove_boxed(boxed).strip()
        except (AssertionError, IndexError):
            return None
    if text.startswith("$") and text.endswith("$") and len(text) > 1:
        text = text.strip("$").strip()
    return text or None


def load_split(hub: dict):
    """The configured split, through ``datasets`` (network or HF cache)."""
    from datasets import load_dataset

    return load_dataset(hub["id"], hub.get("config_name"), split=hub["split"], revision=hub.get("revision"))


def draw_sample(hub: dict, out_path: Path, dataset=None) -> dict:
    """Seeded sample of the split with extracted answers (rule prepare_data)."""
    dataset = load_split(hub) if dataset is None else dataset
    total = len(dataset)
    want = (hub.get("sample") or total) + hub.get("test_size", 0)
    if want > total:
        raise ValueError(f"data.hub: sample + test_size = {want} but {hub['id']} split {hub['split']} has {total} rows")
    shuffled = dataset.shuffle(seed=hub.get("seed", 0)) if hub.get("seed") is not None else dataset
    indices = _source_indices(shuffled, want)
    rows = shuffled.select(range(want))
    mode = hub.get("answer_extract", "none")
    records = []
    for index, row in zip(indices, rows):
        records.append({"index": index, "question": str(row[hub["question_field"]]).strip(),
                        "answer": extract_answer(row[hub["answer_field"]], mode)})
    atomic_write_jsonl(out_path, records)
    info = {
        "id": hub["id"], "config_name": hub.get("config_name"), "split": hub["split"],
        "revision": hub.get("revision"), "fingerprint": getattr(dataset, "_fingerprint", None),
        "rows_in_split": total, "seed": hub.get("seed"), "drawn": want,
        "without_answer": sum(r["answer"] is None for r in records),
    }
    atomic_write_json(out_path.with_suffix(".json"), info)
    return info


def _source_indices(shuffled, n: int) -> list[int]:
    """Row numbers in the original split of the first ``n`` shuffled rows."""
    mapping = getattr(shuffled, "_indices", None)
    if mapping is None:
        return list(range(n))
    column = mapping.column(0)
    return [int(column[i].as_py()) for i in range(n)]


def write_hub_splits(hub: dict, sample_file: Path, out_dir: Path) -> dict:
    """train.jsonl / test.jsonl from the drawn sample (rule make_data)."""
    with open(sample_file, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    n_train = hub.get("sample") or (len(records) - hub.get("test_size", 0))
    suffix = hub.get("prompt_suffix", "")
    splits: dict[str, list[dict]] = {"train": [], "test": []}
    dropped = {"train": 0, "test": 0}
    for i, record in enumerate(records):
        split = "train" if i < n_train else "test"
        if not record.get("answer"):
            dropped[split] += 1
            continue
        splits[split].append({"prompt": record["question"] + suffix, "answer": record["answer"],
                              "question": record["question"], "index": record["index"]})
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in splits.items():
        atomic_write_jsonl(out_dir / f"{name}.jsonl", rows)
    summary = {"train": len(splits["train"]), "test": len(splits["test"]),
               "dropped_without_answer": dropped, "prompt_suffix": suffix}
    print(json.dumps(summary))
    return summary


def download_model(model: dict, out_dir: Path, api=None, snapshot=None) -> dict:
    """Snapshot-download ``model.id`` at ``model.revision`` (resolved to a
    commit first, so the files are exactly that commit) into ``out_dir``."""
    if api is None or snapshot is None:
        from huggingface_hub import HfApi, snapshot_download

        api = api or HfApi()
        snapshot = snapshot or snapshot_download
    revision = model.get("revision", "main")
    commit = api.model_info(model["id"], revision=revision).sha
    with atomic_directory(out_dir) as tmp:
        snapshot(repo_id=model["id"], revision=commit, local_dir=str(tmp), allow_patterns=MODEL_FILES)
        config = json.loads((tmp / "config.json").read_text())
        declared = {"num_layers": model.get("num_layers"), "context_length": model.get("context_length")}
        found = {"num_layers": config.get("num_hidden_layers"), "context_length": config.get("max_position_embeddings")}
        mismatch = {k: (declared[k], found[k]) for k in declared if declared[k] is not None and declared[k] != found[k]}
        if mismatch:
            raise ValueError(f"model {model['id']}@{commit}: config.json disagrees with the study config "
                             + ", ".join(f"model.{k}={d} but config.json has {f}" for k, (d, f) in mismatch.items()))
        source = {"id": model["id"], "revision": revision, "commit": commit, **found}
        atomic_write_json(tmp / "layerbench_source.json", source)
    return source
