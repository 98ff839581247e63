"""The "Keys" table of ``config/README.md``, generated from the study schema.

``workflow/schemas/config.schema.yaml`` is the one place where each study key's
meaning and default are written down; this module renders it as a Markdown
table, so the README cannot drift from what the loader validates and fills
in (a test runs the ``--check`` mode)::

    python -m layerbench.config.keys                            # print the table
    python -m layerbench.config.keys --write config/README.md   # update the README
    python -m layerbench.config.keys --check config/README.md   # exit 1 if stale

The table replaces whatever stands between the markers ``BEGIN`` and ``END``
in the README; the prose around them is left alone.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

BEGIN = "<!-- keys:begin -->"
END = "<!-- keys:end -->"
HEADER = "| key | type | default | description |\n|---|---|---|---|\n"
MAP_KEY = "<arm>"  # placeholder for a key of a map-valued key; rl.per_arm is the only one


def keys_table(schema: dict) -> str:
    """One row per key, in dotted form and schema order: the Markdown table."""
    rows = [_row(key, node, required) for key, node, required in _keys(schema, schema)]
    return HEADER + "".join(rows)


def _keys(node: dict, root: dict, prefix: str = ""):
    """(dotted key, schema, required) of every property of ``node``, each
    followed by the keys below it."""
    required = set(node.get("required", ()))
    for name, sub in node.get("properties", {}).items():
        sub, key = _resolve(sub, root), prefix + name
        yield key, sub, name in required
        yield from _below(sub, root, key)


def _below(node: dict, root: dict, key: str):
    """Keys under one key: an object's properties (``key.x``), the properties
    of an array's objects (``key[].x``), and a map's values (``key.<arm>.x``)."""
    if "properties" in node:
        yield from _keys(node, root, key + ".")
    for item in _branches(_resolve(node.get("items", {}), root)):
        yield from _keys(item, root, key + "[].")
    value = node.get("additionalProperties")
    if isinstance(value, dict):
        value, mapped = _resolve(value, root), f"{key}.{MAP_KEY}"
        yield mapped, value, False
        yield from _below(value, root, mapped)


def _resolve(node: dict, root: dict) -> dict:
    """A ``$ref`` (``#/$defs/...``) replaced by its target; keywords beside the
    reference (its description) win."""
    if "$ref" not in node:
        return node
    target = root
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def _branches(node: dict) -> list[dict]:
    """The alternatives of a ``oneOf``/``anyOf``, or the node itself."""
    return node.get("oneOf") or node.get("anyOf") or [node]


def _row(key: str, node: dict, required: bool) -> str:
    if "default" in node:
        default = f"`{_literal(node['default'])}`"
    else:  # the description says what an absent key means
        default = "required" if required else ""
    description = " ".join(node.get("description", "").split())
    return f"| `{key}` | {_type(node)} | {default} | {_escape(description)} |\n"


def _type(node: dict) -> str:
    """``integer``, ``string or null``, ``array of integer``, ``integer or `auto```,
    or the allowed values of an enum."""
    if "enum" in node:
        return "one of " + ", ".join(f"`{_literal(v)}`" for v in node["enum"])
    if "const" in node:
        return f"`{_literal(node['const'])}`"
    if "oneOf" in node or "anyOf" in node:
        return " or ".join(_type(b) for b in _branches(node))
    kind = node.get("type", "any")
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if kind == "array" and "items" in node:
        kind = "array of " + _type(node["items"])
    return kind


def _literal(value) -> str:
    """A value as a study YAML file spells it (``true``, ``null``, ``3e-05``)."""
    return value if isinstance(value, str) and value else json.dumps(value)


def _escape(text: str) -> str:
    """Markdown-table-safe text: a pipe would end the cell (even in a code
    span), and ``<study>`` outside a code span would be read as an HTML tag."""
    parts = text.replace("|", "\\|").split("`")
    return "`".join(p if i % 2 else p.replace("<", "\\<") for i, p in enumerate(parts))


def replace_block(text: str, table: str) -> str:
    """``text`` with the table between the markers replaced by ``table``."""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise ValueError(f"no {BEGIN} ... {END} block")
    return text[: start + len(BEGIN)] + "\n" + table + text[end:]


def check_readme(readme: Path, schema: dict) -> str | None:
    """None when ``readme``'s table is the schema's, else what is wrong (one line)."""
    text = readme.read_text()
    try:
        expected = replace_block(text, keys_table(schema))
    except ValueError as exc:
        return f"{readme}: {exc}"
    if text != expected:
        return (f"{readme}: the Keys table differs from the schema; "
                f"run python -m layerbench.config.keys --write {readme}")
    return None


def load_schema() -> dict:
    from layerbench.config import SCHEMA_PATH

    return yaml.safe_load(SCHEMA_PATH.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layerbench.config.keys",
                                     description="The Keys table of config/README.md, from the study schema.")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", metavar="README", type=Path, help="exit 1 when README's table is stale")
    mode.add_argument("--write", metavar="README", type=Path, help="replace README's table")
    args = parser.parse_args(argv)
    schema = load_schema()
    if args.check:
        problem = check_readme(args.check, schema)
        if problem:
            print(problem, file=sys.stderr)
            return 1
        return 0
    if args.write:
        try:
            text = replace_block(args.write.read_text(), keys_table(schema))
        except ValueError as exc:
            print(f"{args.write}: {exc}", file=sys.stderr)
            return 1
        args.write.write_text(text)
        return 0
    sys.stdout.write(keys_table(schema))
    return 0


if __name__ == "__main__":
    sys.exit(main())
