"""The study schema: validation with errors that name the key, and its defaults.

``workflow/schemas/config.schema.yaml`` is the one documented source of every
key's description and default (config/README.md's key table is generated
from it by ``layerbench.config.keys``).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path
from typing import Any

import yaml

PACKAGE_ROOT = Path(__file__).resolve().parents[3]
SCHEMA_PATH = PACKAGE_ROOT / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A study config value is wrong; the message names the key."""


@functools.cache
def load_schema() -> dict:
    return yaml.safe_load(SCHEMA_PATH.read_text())


def _key_path(error) -> str:
    return ".".join(str(p) for p in error.absolute_path) or "<top level>"


def validate_raw(raw: Any, source: str = "config") -> None:
    """JSON-Schema validation with errors that name the key and what is allowed."""
    import jsonschema

    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a study config must be a mapping, got {type(raw).__name__}")
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    lines = []
    for error in errors:
        detail = error.message
        if error.validator == "enum":
            detail = f"got {error.instance!r}; allowed values: {', '.join(map(repr, error.validator_value))}"
        elif error.validator == "additionalProperties":
            allowed = sorted(error.schema.get("properties", {}))
            detail = f"{error.message}; allowed keys: {', '.join(allowed)}"
        elif error.validator == "oneOf" and _key_path(error).startswith("arms"):
            detail = (f"got {error.instance!r}; allowed: base, full, layer:K, layer:all, {{layers: [I, J]}}, lora:R "
                          "or dup:K, a trained one optionally +finish_only or +random, and dup:K+none")
        lines.append(f"{source}: key '{_key_path(error)}': {detail}")
    raise ConfigError("\n".join(lines))


def _resolve(node: dict) -> dict:
    """A schema node with its ``$ref`` (to ``#/$defs/...``) followed."""
    ref = node.get("$ref")
    if not ref:
        return node
    target = load_schema()
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in node.items() if k != "$ref"}}


def schema_at(key: str) -> dict:
    """The schema node of a dotted key; array sections (``eval.suites``) give their items."""
    node = load_schema()
    for part in key.split("."):
        node = _resolve(node["properties"][part])
        if node.get("type") == "array" and isinstance(node.get("items"), dict):
            node = _resolve(node["items"])
    return node


def defaults_at(key: str) -> dict:
    """The schema's defaults of one section, e.g. ``defaults_at("rl")`` (a copy:
    the caller may change it)."""
    return copy.deepcopy(_section_defaults(key))


@functools.cache
def _section_defaults(key: str) -> dict:
    """Read from the schema once per section: every arm's fingerprint asks for them."""
    return fill_defaults({}, schema_at(key))


def fill_defaults(raw: dict, schema: dict) -> dict:
    """Set every missing key that has a ``default`` in the schema, in the
    sections the study has (as Snakemake's ``validate(set_default=True)``)."""
    for key, sub in schema.get("properties", {}).items():
        sub = _resolve(sub)
        if key not in raw and "default" in sub:
            raw[key] = copy.deepcopy(sub["default"])
        elif isinstance(raw.get(key), dict):
            fill_defaults(raw[key], sub)
        elif isinstance(raw.get(key), list) and isinstance(sub.get("items"), dict):
            for item in raw[key]:
                if isinstance(item, dict):
                    fill_defaults(item, _resolve(sub["items"]))
    return raw


def drop_inapplicable(raw: dict) -> dict:
    """Remove sections that do not apply to this study's sources (``model.build``
    of a Hub model, ``data.synthetic`` of Hub data, ``rl.steps`` when
    ``rl.epochs`` sets the length): they would mean nothing and only confuse
    the resolved config and its fingerprints."""
    raw = copy.deepcopy(raw)
    if not isinstance(raw, dict):
        return raw
    model, data, rl = raw.get("model"), raw.get("data"), raw.get("rl")
    if isinstance(model, dict) and model.get("source", "build") != "build":
        model.pop("build", None)
    if isinstance(data, dict) and data.get("source", "synthetic") != "synthetic":
        data.pop("synthetic", None)
    if isinstance(rl, dict) and rl.get("epochs") is not None:
        rl.pop("steps", None)
    return raw


def with_defaults(raw: dict) -> dict:
    """A validated study with every schema default filled in, including the
    sections its sources need (``model.build``, ``data.synthetic``) when it
    leaves them out."""
    raw = copy.deepcopy(raw)
    raw.setdefault("data", {})
    raw.setdefault("tracking", {})
    raw["data"].setdefault("source", "synthetic")
    if raw["model"]["source"] == "build":
        raw["model"].setdefault("build", {})
    if raw["data"]["source"] == "synthetic":
        raw["data"].setdefault("synthetic", {})
    return drop_inapplicable(fill_defaults(raw, load_schema()))
