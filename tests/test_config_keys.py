"""The study schema documents every key, and config/README.md's Keys table is
generated from it (layerbench.config.keys). Fast: no network, no workflow."""

import subprocess
import sys
from pathlib import Path

import jsonschema
import yaml

import layerbench.config as C
from layerbench.config.keys import BEGIN, END, check_readme, keys_table, load_schema

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "config" / "README.md"
SCHEMA = yaml.safe_load(C.SCHEMA_PATH.read_text())

# Optional leaf keys without a `default`: their absence means something no
# single value of the key's type says (the description says what).
NO_DEFAULT = {
    "model.id": "required when model.source is hub or path, unused for build",
    "model.num_layers": "required for hub/path; a built model has model.build.num_layers",
    "model.context_length": "absent: the token limits are checked only against the downloaded model",
    "data.hub.config_name": "absent: the dataset's default configuration (None to load_dataset)",
    "data.hub.revision": "absent: None to load_dataset (the default branch), recorded as None",
    "data.hub.sample": "absent: every row of the split",
    "data.hub.test_size": "the code's fallback 0 is below the schema's minimum 1",
    "data.hub.seed": "absent: no shuffle at all, not a shuffle with some seed",
    "rl.epochs": "absent: rl.steps counts the optimizer steps",
    "rl.mini_batch_prompts": "absent: prompts_per_step",
    "rl.micro_batch_completions": "absent: the whole mini-batch",
    "rl.loss_type": "absent: the algorithm's loss type",
    "rl.bf16": "absent: TRL's own default",
    "rl.ref_dtype": "absent: the policy's dtype",
    "rl.save_every": "absent: no resumable checkpoint until the run ends",
    "rl.screen_steps": "absent: no layer screen",
    "rl.screen_keep": "absent: nothing is pruned, the screen is measured only",
    "eval.suites[].include_path": "absent: an lm-eval task",
    "eval.suites[].data_files": "absent: the task's own dataset",
    "eval.suites[].metric": "absent: the task's first metric",
    "eval.suites[].filter": "absent: the task's first filter",
    "eval.limit": "absent: every problem",
    "eval.seed": "absent: each arm's training seed",
    "eval.max_model_len": "absent: model.context_length",
    "eval.num_fewshot": "absent: each task's own",
    "eval.probe_budget": "absent: no continuation past the largest budget",
    "tracking.experiment": "absent: layerbench-<study>, from the study name",
    "repro.arm": "absent: the first single-layer arm",
    "repro.seed": "absent: the study's first seed",
    "resources.gpu": "a default 0 would be filled into `resources: {}` and make its rules request gpu=0",
    "resources.gpus_per_arm": "absent: resources.gpu (one process on a CPU study)",
    "resources.gpu_memory_gb": "absent: read from nvidia-smi by the training preflight on the GPU machine",
    "resources.train.mem_mb": "absent: no memory requested",
    "resources.train.runtime": "absent: no time limit requested",
    "resources.train.cpus": "absent: rl.threads",
    "resources.evaluate.mem_mb": "absent: no memory requested",
    "resources.evaluate.runtime": "absent: no time limit requested",
    "resources.evaluate.cpus": "absent: eval.threads",
}
PER_ARM = "rl.per_arm.*."  # an absent override inherits the rl value: never a default

# JSON Schema keywords a property may use; anything else is a typo (or a YAML
# flow mapping split at a comma inside an unquoted description).
KEYWORDS = {"type", "enum", "const", "default", "description", "properties", "required", "additionalProperties",
            "propertyNames", "items", "minItems", "uniqueItems", "minimum", "maximum", "exclusiveMinimum",
            "pattern", "oneOf", "$ref"}


def _deref(node: dict) -> dict:
    if "$ref" in node:
        target = SCHEMA
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def properties(node: dict = SCHEMA, prefix: str = ""):
    """(dotted key, schema with $ref resolved, required) of every property, at every level."""
    node = _deref(node)
    required = set(node.get("required", ()))
    for name, sub in node.get("properties", {}).items():
        key = prefix + name
        yield key, _deref(sub), name in required
        yield from properties(sub, key + ".")
        items = _deref(sub).get("items", {})
        for branch in items.get("oneOf", [items]):
            yield from properties(branch, key + "[].")
        if isinstance(sub.get("additionalProperties"), dict):
            yield from properties(sub["additionalProperties"], key + ".*.")


def is_leaf(node: dict) -> bool:
    return node.get("type") != "object" and "properties" not in node


def test_every_property_has_a_description_and_only_schema_keywords():
    keys = list(properties())
    assert len(keys) > 100 and "rl.per_arm.*.learning_rate" in {k for k, _, _ in keys}
    missing = [k for k, node, _ in keys if not str(node.get("description", "")).strip()]
    assert missing == []
    assert str(SCHEMA["properties"]["rl"]["properties"]["per_arm"]["additionalProperties"]["description"]).strip()
    stray = {k: sorted(set(node) - KEYWORDS) for k, node, _ in keys if set(node) - KEYWORDS}
    assert stray == {}


def test_every_optional_leaf_has_a_valid_default_unless_its_absence_means_something():
    optional_leaves = {k: node for k, node, required in properties() if not required and is_leaf(node)}
    without = {k for k, node in optional_leaves.items() if "default" not in node and not k.startswith(PER_ARM)}
    assert without == set(NO_DEFAULT)  # a new key needs a default, or a reason here
    assert [k for k in optional_leaves if k.startswith(PER_ARM) and "default" in optional_leaves[k]] == []
    for key, node in optional_leaves.items():
        if "default" in node:  # the loader writes it into the study: it must pass the schema
            jsonschema.Draft202012Validator(node).validate(node["default"])
    assert [k for k, node, _ in properties() if not is_leaf(node) and "default" in node] == []


def test_readme_keys_table_is_generated_from_the_schema():
    assert check_readme(README, load_schema()) is None
    text = README.read_text()
    block = text[text.index(BEGIN) + len(BEGIN):text.index(END)]
    assert block.strip() == keys_table(SCHEMA).strip()
    for row in ("| `model.build.sft_steps` | integer | `600` |", "| `eval.suites[].task` | string | required |",
                "| `rl.per_arm.<arm>.learning_rate` | number |  |", "| `resources.train.cpus` | integer |  |",
                "| `arms[].layers` |", "| `tracking.uri` | string or null | `null` |"):
        assert row in block, row


def test_table_rows_escape_markdown_and_follow_refs_arrays_and_maps():
    schema = {
        "required": ["a"],
        "properties": {
            "a": {"type": "string", "description": "x | y, results/<study>/ `<s>`"},
            "m": {"type": "object", "description": "map", "additionalProperties": {
                "type": "object", "description": "one", "properties": {"k": {"type": "number", "description": "d"}}}},
            "l": {"type": "array", "description": "list", "items": {
                "type": "object", "properties": {"t": {"enum": ["p", "q"], "default": "p", "description": "e"}}}},
            "r": {"$ref": "#/$defs/d", "description": "ref"},
        },
        "$defs": {"d": {"type": "object", "properties": {"z": {"type": ["string", "null"], "default": None,
                                                              "description": "zz"}}}},
    }
    assert keys_table(schema).splitlines()[2:] == [
        "| `a` | string | required | x \\| y, results/\\<study>/ `<s>` |",
        "| `m` | object |  | map |",
        "| `m.<arm>` | object |  | one |",
        "| `m.<arm>.k` | number |  | d |",
        "| `l` | array of object |  | list |",
        "| `l[].t` | one of `p`, `q` | `p` | e |",
        "| `r` | object |  | ref |",
        "| `r.z` | string or null | `null` | zz |",
    ]


def _keys_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerbench.config.keys", *args], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)


def test_check_fails_on_a_changed_row_and_write_repairs_it(tmp_path):
    copy = tmp_path / "README.md"
    copy.write_text(README.read_text())
    assert _keys_cli("--check", str(copy)).returncode == 0
    row = "| `model.build.sft_steps` | integer | `600` |"
    copy.write_text(README.read_text().replace(row, "| `model.build.sft_steps` | integer | `800` |"))
    out = _keys_cli("--check", str(copy))
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1 and str(copy) in out.stderr
    assert _keys_cli("--write", str(copy)).returncode == 0
    assert copy.read_text() == README.read_text()
    copy.write_text("no markers here\n")
    out = _keys_cli("--check", str(copy))
    assert out.returncode == 1 and BEGIN in out.stderr
