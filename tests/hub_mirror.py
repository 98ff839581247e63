"""A Hugging Face cache (``HF_HOME``) in the state the download stage leaves
on a GPU machine, built here without network: the paper studies then run with
``HF_HUB_OFFLINE=1`` / ``HF_DATASETS_OFFLINE=1`` through the very calls a GPU
run makes (``snapshot_download``, ``load_dataset``, lm-eval's task loading).

* **Models** (:func:`write_model`): a Hub cache repo
  (``hub/models--<org>--<name>/{refs/<revision>, snapshots/<commit>/}``) per
  paper model id, holding a tiny model of that row's real architecture.
* **Datasets** (:func:`write_dataset`): the Hub cache repo (parquet files and
  a dataset card whose ``configs`` name them, as the Hub's parquet layout
  does) and the prepared Arrow cache that ``load_dataset`` writes on its first
  online load (``datasets/<org>___<name>/<config>/0.0.0/<commit>/``), which is
  what it reads back offline. The rows come from ``tests/hub_fixtures.py``.

Commits are fixed fake shas derived from the repo id, so the mirror is the
same bits every time it is built.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import yaml


def commit_of(repo_id: str) -> str:
    """A stand-in commit sha (40 hex digits), stable per repo."""
    return hashlib.sha1(f"layerbench-mirror:{repo_id}".encode()).hexdigest()


def _repo_dir(home: Path, kind: str, repo_id: str) -> Path:
    return home / "hub" / f"{kind}s--{repo_id.replace('/', '--')}"


def _snapshot(home: Path, kind: str, repo_id: str, revision: str = "main") -> Path:
    """The snapshot folder of ``repo_id`` with ``refs/<revision>`` pointing at it."""
    repo, commit = _repo_dir(home, kind, repo_id), commit_of(repo_id)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / revision).write_text(commit)
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


def write_model(home: Path, repo_id: str, model_dir: Path, revision: str = "main") -> Path:
    """Put the files of ``model_dir`` (a saved HF model) into the cache as ``repo_id``."""
    snapshot = _snapshot(home, "model", repo_id, revision)
    for path in model_dir.iterdir():
        if path.is_file():
            shutil.copy2(path, snapshot / path.name)
    return snapshot


def write_dataset(home: Path, repo_id: str, configs: dict[str, dict[str, list[dict]]]) -> None:
    """``configs``: {config name: {split: rows}} in the dataset's Hub schema."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets.packaged_modules.parquet.parquet import Parquet

    snapshot, commit = _snapshot(home, "dataset", repo_id), commit_of(repo_id)
    card = []
    for config, splits in configs.items():
        files = {}
        for split, rows in splits.items():
            path = snapshot / config / f"{split}-00000-of-00001.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(pa.Table.from_pylist(rows), path)
            files[split] = [str(path)]
        card.append({"config_name": config, "data_files": [
            {"split": split, "path": f"{config}/{split}-*"} for split in splits]})
        # What load_dataset prepares from those files on its first (online) load: the
        # builder of the card's config, cached under the repo's namespace and commit.
        builder = Parquet(cache_dir=str(home / "datasets"), dataset_name=repo_id.split("/")[-1],
                          config_name=config, config_id=config, hash=commit, data_files=files)
        builder.repo_id = repo_id  # set after init: the data files are local, not hf:// URLs
        builder._cache_dir = builder._build_cache_dir()
        builder.download_and_prepare()
    (snapshot / "README.md").write_text("---\n" + yaml.safe_dump({"configs": card}, sort_keys=False) + "---\n")


# Qwen's ChatML template (the shape of the Qwen2.5 / Qwen3 tokenizer_config.json's
# chat_template, without tool calls). The paper configs prompt the base models with plain
# text (question + data.hub.prompt_suffix), so no stage applies it; it is here because a
# real snapshot has one and lm-eval reads it when asked to.
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content']"
          " + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}")


# Qwen models whose config.json ties the output head to the input embeddings
# (tie_word_embeddings: true on their model cards); Qwen3-8B-Base has its own head.
TIED = {"Qwen/Qwen3-1.7B-Base", "Qwen/Qwen3-4B-Base", "Qwen/Qwen2.5-Math-1.5B"}


def paper_models(paper_dir: Path) -> dict[str, tuple[str, int, bool]]:
    """{model id: (architecture, context length, tied embeddings)} of every
    paper config: ``qwen3`` for the Qwen3 rows, ``qwen2`` for Qwen2.5-Math."""
    models = {}
    for path in sorted(paper_dir.glob("*.yaml")):
        model = yaml.safe_load(path.read_text())["model"]
        architecture = "qwen3" if "/Qwen3-" in model["id"] else "qwen2"
        models[model["id"]] = (architecture, model["context_length"], model["id"] in TIED)
    return models


def demonstrations(suffix: str, n: int = 240, seed: int = 0) -> list[dict]:
    """SFT pairs in the paper studies' prompt format (a fixture-style question
    + the prompt suffix, a one-line solution ending in ``\\boxed{}``), so the
    stand-in answers often but not always right: rewards then vary within a
    group and every arm gets a gradient."""
    import random

    from hub_fixtures import latex_arith

    rng = random.Random(seed)
    return [{"prompt": problem + suffix, "completion": " " + solution}
            for problem, solution, _ in (latex_arith(rng) for _ in range(n))]


def untied_copy(tied: Path, out: Path) -> Path:
    """``tied`` with an output head of its own, equal to its input embeddings:
    an untied checkpoint (as Qwen3-8B-Base is) without a second SFT run, so
    the mirror trains one tiny model per (architecture, context length)."""
    from transformers import AutoModelForCausalLM

    shutil.copytree(tied, out)
    model = AutoModelForCausalLM.from_pretrained(tied)
    head = model.get_input_embeddings().weight.detach().clone()
    model.config.tie_word_embeddings = False
    model.lm_head.weight = type(model.lm_head.weight)(head)
    model.save_pretrained(out)
    return out


def build_models(home: Path, scratch: Path, paper_dir: Path, suffix: str, num_layers: int = 2,
                 sft_steps: int = 400) -> dict[str, Path]:
    """A tiny SFT-trained model per shape (architecture, context length, tied
    embeddings) of the paper configs, cached under each paper model id;
    returns {model id: snapshot}. One SFT run per (architecture, context
    length), tied; an untied shape is that model with its head copied
    (``untied_copy``)."""
    from layerbench.config import TinyModelSpec
    from layerbench.runtime.io import atomic_write_jsonl
    from layerbench.stages.model import build_base_model

    sft = atomic_write_jsonl(scratch / "sft.jsonl", demonstrations(suffix))
    built, snapshots = {}, {}
    for repo_id, shape in sorted(paper_models(paper_dir).items(), key=lambda kv: not kv[1][2]):  # tied first
        if shape not in built:
            architecture, context, tied = shape
            out = scratch / f"{architecture}-{context}-{'tied' if tied else 'untied'}"
            if not tied and (architecture, context, True) in built:
                built[shape] = untied_copy(built[(architecture, context, True)], out)
            else:
                spec = TinyModelSpec.defaults(architecture=architecture, num_layers=num_layers, max_positions=context,
                                              tie_word_embeddings=tied, sft_steps=sft_steps)
                build_base_model(sft, out, spec)
                config = out / "tokenizer_config.json"
                config.write_text(json.dumps({**json.loads(config.read_text()), "chat_template": CHATML}, indent=2))
                built[shape] = out
        snapshots[repo_id] = write_model(home, repo_id, built[shape])
    return snapshots


def build_mirror(home: Path, scratch: Path, paper_dir: Path, rows: int = 16) -> dict:
    """Every dataset of ``hub_fixtures`` and every paper model, cached in ``home``."""
    from hub_fixtures import dataset_fixtures

    for fixture in dataset_fixtures(rows):
        write_dataset(home, fixture.repo_id, fixture.configs)
    suffix = yaml.safe_load((paper_dir / "qwen3-1.7b-grpo-scripts.yaml").read_text())["data"]["hub"]["prompt_suffix"]
    return build_models(home, scratch, paper_dir, suffix)


if __name__ == "__main__":  # python tests/hub_mirror.py HF_HOME  (scripts/gpu-check.sh)
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    with tempfile.TemporaryDirectory() as scratch:
        build_mirror(Path(sys.argv[1]), Path(scratch), Path(__file__).parents[1] / "config" / "paper")
