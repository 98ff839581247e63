"""Stage ``download``: everything a study fetches from the Hugging Face Hub.

Every rule of this stage needs network (or the HF cache), so all are
``localrules``: on SLURM they run where Snakemake runs, and the compute jobs
after them read only files. One rule per kind of download:

* ``download_model`` (:func:`download_model`): resolve ``model.revision`` to
  a commit and snapshot-download exactly that commit into
  ``results/<study>/base_model`` (weights, config, tokenizer), recording the
  commit in ``layerbench_source.json``.
* ``download_data`` (:func:`draw_sample`): read ``data.hub.id`` with
  ``datasets.load_dataset``, shuffle the split with
  ``Dataset.shuffle(seed=data.hub.seed)``, keep the first
  ``sample + test_size`` rows and extract each row's answer. Writes
  ``data/hub_sample.jsonl`` ({index, question, answer}) and its ``.json``
  record (dataset id, revision, fingerprint, counts). The ``data`` stage
  turns the sample into prompts, so a changed prompt suffix downloads nothing.
* ``download_eval_tasks`` (:func:`cache_eval_tasks`): build every lm-eval Hub
  task of the study once, so its datasets land in the HF cache.
* ``download_benchmark`` (:func:`export_benchmark`): the problems of
  layerbench's own lm-eval tasks (benchmarks/amc, benchmarks/olympiadbench;
  lm-eval has neither) as ``{problem, answer}`` jsonl plus a ``.json``
  record (dataset, split, revision, fingerprint, rows, sha256), so a report
  can say exactly which problems were scored. See benchmarks/README.md.

Sampling recipe (an assumption: the paper says "50K sample, seed 42" and no
more): shuffle the whole split with ``datasets``' seeded shuffle, take the
first rows, *then* drop rows without a final answer, so the training set can
be slightly smaller than ``sample``; the sample's record says by how much.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from layerbench.config import HubData, ModelConfig, Suite
from layerbench.lmeval import suite_tasks, task_manager
from layerbench.paths import ModelFolder, record_of
from layerbench.runtime.io import (
    atomic_directory,
    atomic_write_json,
    atomic_write_jsonl,
    link_or_copy,
    sha256_file,
)
from layerbench.runtime.stage_command import (
    STUDY_HELP,
    first_line,
    stage_parser,
    study_paths,
)

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
        from lm_eval.tasks.hendrycks_math.utils import (
            last_boxed_only_string,
            remove_boxed,
        )

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

    return load_dataset(hub.id, hub.config_name, split=hub.split, revision=hub.revision)


def draw_sample(hub: HubData, out_path: Path, dataset=None) -> dict:
    """Seeded sample of the split with extracted answers, and its record."""
    dataset = load_split(hub) if dataset is None else dataset
    total = len(dataset)
    want = (hub.sample or total) + (hub.test_size or 0)
    if want > total:
        raise ValueError(f"data.hub: sample + test_size = {want} but {hub.id} split {hub.split} has {total} rows")
    shuffled = dataset.shuffle(seed=hub.seed) if hub.seed is not None else dataset
    indices = _source_indices(shuffled, want)
    rows = shuffled.select(range(want))
    mode = hub.answer_extract
    records = []
    for index, row in zip(indices, rows):
        records.append({"index": index, "question": str(row[hub.question_field]).strip(),
                        "answer": extract_answer(row[hub.answer_field], mode)})
    atomic_write_jsonl(out_path, records)
    info = {
        "id": hub.id, "config_name": hub.config_name, "split": hub.split,
        "revision": hub.revision, "fingerprint": getattr(dataset, "_fingerprint", None),
        "rows_in_split": total, "seed": hub.seed, "drawn": want,
        "without_answer": sum(r["answer"] is None for r in records),
    }
    atomic_write_json(record_of(out_path), info)
    return info


def _source_indices(shuffled, n: int) -> list[int]:
    """Row numbers in the original split of the first ``n`` shuffled rows."""
    mapping = getattr(shuffled, "_indices", None)
    if mapping is None:
        return list(range(n))
    column = mapping.column(0)
    return [int(column[i].as_py()) for i in range(n)]


def download_model(model: ModelConfig, out_dir: Path) -> dict:
    """Snapshot-download ``model.id`` at ``model.revision`` into the HF cache
    and link exactly that commit's files into ``out_dir``.

    The cache, not ``out_dir``, is the download target so that one code path
    serves a machine with network (the revision resolves through the Hub) and
    one without (``HF_HUB_OFFLINE=1``: it resolves through the cache's
    ``refs/<revision>``, as ``huggingface_hub`` does for every offline load).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.utils import filter_repo_objects

    revision = model.revision or "main"
    cached = Path(snapshot_download(repo_id=model.id, revision=revision, allow_patterns=MODEL_FILES))
    commit = cached.name  # the cache keeps each snapshot under its commit sha
    # offline, the snapshot may hold more than was asked for: filter again
    names = filter_repo_objects([str(p.relative_to(cached)) for p in cached.rglob("*") if p.is_file()],
                                allow_patterns=MODEL_FILES)
    with atomic_directory(out_dir) as tmp:
        for name in sorted(names):
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            link_or_copy((cached / name).resolve(), tmp / name)
        config = json.loads(ModelFolder(tmp).config.read_text())
        declared = {"num_layers": model.num_layers, "context_length": model.context_length}
        found = {"num_layers": config.get("num_hidden_layers"), "context_length": config.get("max_position_embeddings")}
        mismatch = {k: (declared[k], found[k]) for k in declared if declared[k] is not None and declared[k] != found[k]}
        if mismatch:
            raise ValueError(f"model {model.id}@{commit}: config.json disagrees with the study config "
                             + ", ".join(f"model.{k}={d} but config.json has {f}" for k, (d, f) in mismatch.items()))
        source = {"id": model.id, "revision": revision, "commit": commit, **found}
        atomic_write_json(ModelFolder(tmp).source, source)
    return source


@dataclass(frozen=True)
class Export:
    """Where a benchmark's problems come from and which fields hold what."""

    dataset: str
    split: str
    question_field: str
    answer_field: str
    config_name: str | None = None
    revision: str | None = None
    note: str = ""


EXPORTS: dict[str, Export] = {
    # AMC 2022 + 2023 (83 problems, integer answers), the set Numina used to
    # validate AIMO models and DeepScaleR-style evaluations call "AMC".
    "amc": Export("AI-MO/aimo-validation-amc", "train", "problem", "answer",
                  note="83 AMC12 2022/2023 problems; answers are numbers"),
    # OlympiadBench, English text-only open-ended maths competition problems
    # (OE_TO_maths_en_COMP, about 675 problems); final_answer is a list, layerbench
    # keeps its first element (the few multi-answer problems are kept as-is).
    "olympiadbench": Export("Hothan/OlympiadBench", "train", "question", "final_answer",
                            config_name="OE_TO_maths_en_COMP",
                            note="OE_TO_maths_en_COMP; first element of final_answer"),
}


def export_benchmark(name: str, out: Path, dataset=None) -> dict:
    """Write ``out`` ({problem, answer} per line) and its ``.json`` record."""
    if name not in EXPORTS:
        raise ValueError(f"unknown benchmark {name!r}; known: {', '.join(sorted(EXPORTS))}")
    spec = EXPORTS[name]
    if dataset is None:
        from datasets import load_dataset

        dataset = load_dataset(spec.dataset, spec.config_name, split=spec.split, revision=spec.revision)
    records, skipped = [], 0
    for i, row in enumerate(dataset):
        answer = extract_answer(row[spec.answer_field], "none")
        if answer is None:
            skipped += 1
            continue
        records.append({"id": i, "problem": str(row[spec.question_field]).strip(), "answer": answer})
    atomic_write_jsonl(out, records)
    info = {"name": name, "dataset": spec.dataset, "config_name": spec.config_name, "split": spec.split,
            "revision": spec.revision, "fingerprint": getattr(dataset, "_fingerprint", None),
            "rows": len(records), "skipped_without_answer": skipped, "note": spec.note,
            "sha256": sha256_file(out)}
    atomic_write_json(record_of(out), info)
    return info


def cache_eval_tasks(suites: tuple[Suite, ...], out: Path) -> dict:
    """Build every lm-eval Hub task of ``suites`` once (their datasets land in
    the HF cache, so evaluate jobs need no network) and record what was built."""
    hub_suites = tuple(s for s in suites if not s.include_path)
    record = {}
    for suite, tasks in suite_tasks(hub_suites, task_manager(hub_suites)):
        for name, task in tasks.items():
            docs = task.eval_docs
            record[name] = {"suite": suite.task, "dataset_path": task.config.dataset_path,
                            "dataset_name": task.config.dataset_name, "test_split": task.config.test_split,
                            "docs": len(docs), "fingerprint": getattr(docs, "_fingerprint", None)}
    atomic_write_json(out, record)
    return record


def benchmark_exports(paths) -> list[str]:
    """The study's eval data files that rule download_benchmark makes
    (``results/benchmarks/<name>.jsonl`` of a known export)."""
    out = []
    for path in paths.eval_data_inputs().values():
        p = Path(path)
        if p.parent == Path("results/benchmarks") and p.suffix == ".jsonl" and p.stem in EXPORTS:
            out.append(path)
    return out


def main(argv: list[str] | None = None) -> None:
    """``layerbench stage download model|data|eval-tasks|benchmark``."""
    parser = stage_parser("download", first_line(__doc__), study=False)
    what = parser.add_subparsers(dest="what", required=True)
    for name, help in (("model", "snapshot of model.id at model.revision"), ("data", "seeded sample of data.hub"),
                       ("eval-tasks", "build (and cache) the study's lm-eval Hub tasks")):
        q = what.add_parser(name, help=help)
        q.add_argument("--study", required=True, help=STUDY_HELP)
        q.add_argument("--out", required=True)
    q = what.add_parser("benchmark", help="a local eval task's problems (benchmarks/README.md)")
    q.add_argument("name", help="amc or olympiadbench")
    q.add_argument("--out", required=True, help="jsonl to write, e.g. results/benchmarks/amc.jsonl")
    args = parser.parse_args(argv)
    if args.what == "benchmark":
        print(export_benchmark(args.name, Path(args.out)))
        return
    study = study_paths(args).study
    if args.what == "model":
        print(download_model(study.model, Path(args.out)))
    elif args.what == "data":
        print(draw_sample(study.data.hub, Path(args.out)))
    else:
        print(cache_eval_tasks(study.eval.suites, Path(args.out)))
