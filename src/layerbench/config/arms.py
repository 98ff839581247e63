"""Arms: what a study trains, from the config's ``arms`` list to the tensors
one arm trains, its names in tables and folders, and its RL settings.

Two spellings, one per context: ``name`` (``layer:3``, as in configs,
tables and MLflow) and ``slug`` (``layer-3``, as in folders and rule
wildcards); ``parse`` reads both."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from layerbench.config.schema import ConfigError
from layerbench.config.sections import RLConfig

DECODER_LAYERS = "model.layers"  # where a Qwen-style causal LM keeps its decoder layers (module path)


@dataclass(frozen=True)
class Arm:
    """One training arm. ``layers`` is None for base and full."""

    kind: str  # base | full | layer | layers
    layers: tuple[int, ...] | None = None

    @classmethod
    def expand(cls, items: list, num_layers: int) -> tuple["Arm", ...]:
        """The config's ``arms`` list as arms, in order, each once:
        ``layer:all`` is one ``layer:K`` per decoder layer, ``{layers: [..]}`` one
        layer set; a layer the model lacks is refused, naming ``arms.<i>``."""
        arms: list[Arm] = []
        for i, item in enumerate(items):
            if isinstance(item, dict):
                new = [cls("layers", tuple(sorted(item["layers"])))]
            elif item == "layer:all":
                new = [cls("layer", (k,)) for k in range(num_layers)]
            else:
                new = [cls.parse(item)]
            for arm in new:
                bad = [k for k in arm.layers or () if k >= num_layers]
                if bad:
                    raise ConfigError(f"key 'arms.{i}': layer {bad[0]} does not exist; the model has "
                                      f"{num_layers} decoder layers (0..{num_layers - 1})")
                if arm not in arms:
                    arms.append(arm)
        return tuple(arms)

    def rl_settings(self, rl: RLConfig, per_arm: dict) -> RLConfig:
        """The study's ``rl`` with ``rl.per_arm`` overrides: kind first, then
        the exact arm (so ``layer:3`` beats ``layer``)."""
        settings = asdict(rl)
        for key in (self.kind, self.name):
            settings.update(per_arm.get(key, {}))
        return RLConfig(**settings)

    @property
    def name(self) -> str:
        if self.kind in ("base", "full"):
            return self.kind
        return f"{self.kind}:{','.join(map(str, self.layers))}"

    @property
    def slug(self) -> str:
        if self.kind in ("base", "full"):
            return self.kind
        return f"{self.kind}-{'-'.join(map(str, self.layers))}"

    @property
    def label(self) -> str:
        """How sentences and the report name an arm: ``layer 3``, ``layers 1+2``, ``full RL``."""
        if self.kind == "layer":
            return f"layer {self.layers[0]}"
        if self.kind == "layers":
            return "layers " + "+".join(map(str, self.layers))
        return {"base": "base", "full": "full RL"}[self.kind]

    @property
    def sort_key(self) -> tuple:
        """Base, full RL, single layers by index, then layer sets: every table's order."""
        return ({"base": 0, "full": 1, "layer": 2, "layers": 3}[self.kind], self.layers or ())

    @staticmethod
    def label_of(name: str) -> str:
        """:attr:`label` of an arm given by name (a table cell)."""
        return Arm.parse(name).label

    @staticmethod
    def sort_key_of(name: str) -> tuple:
        """:attr:`sort_key` of an arm given by name (a table cell)."""
        return Arm.parse(name).sort_key

    @property
    def tensor_prefixes(self) -> tuple[str, ...]:
        """State-dict name prefixes of the decoder layers this arm trains
        (empty for base and full, which have no layer list)."""
        return tuple(f"{DECODER_LAYERS}.{k}." for k in self.layers or ())

    @property
    def trains(self) -> bool:
        return self.kind != "base"

    @classmethod
    def parse(cls, text: str) -> "Arm":
        """Inverse of ``name`` and ``slug``."""
        text = text.strip()
        if text in ("base", "full"):
            return cls(text)
        for kind in ("layers", "layer"):
            for sep in (":", "-"):
                if text.startswith(kind + sep):
                    rest = text[len(kind) + 1 :].replace("-", ",")
                    try:
                        layers = tuple(int(x) for x in rest.split(","))
                    except ValueError:
                        break
                    if kind == "layer" and len(layers) != 1:
                        break
                    return cls(kind, layers)
        raise ConfigError(f"unknown arm {text!r}: expected base, full, layer:K or layers:I,J")
