"""Arms: what a study trains, from the config's ``arms`` list to the tensors
one arm trains, its names in tables and folders, and its RL settings.

Two spellings, one per context: ``name`` (``layer:3``, as in configs,
tables and MLflow) and ``slug`` (``layer-3``, as in folders and rule
wildcards); ``parse`` reads both.

Control arms: ``<arm>+<reward>`` trains ``<arm>`` (full, layer:K,
layers:I,J; in a config also layer:all) on another reward than correctness
(``REWARDS``): ``full+finish_only``, ``layer:3+random`` (slug
``layer-3+random``). They pair with every other arm of their seed and get a
C like any arm, but stay out of the single-layer scan (``in_layer_scan``).

``lora:R`` trains a rank-R LoRA adapter (PEFT) on every decoder layer's
linear maps (``LORA_TARGETS``), everything else frozen: is a single layer's
success about where the update is, or about how few parameters RL needs?

``dup:K`` trains a copy of decoder layer K inserted right after it (layer
K + 1 of a model one layer deeper), everything else frozen; ``dup:K+none``
is that model untrained, its own no-training control (``trains`` is False:
it is evaluated, not trained)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from layerbench.config.schema import ConfigError
from layerbench.config.sections import RLConfig

DECODER_LAYERS = "model.layers"  # where a Qwen-style causal LM keeps its decoder layers (module path)

# The reward an arm trains on; the first is every ordinary arm's.
REWARDS = {
    "correct": "1 when the final answer is right, else 0",
    "finish_only": "1 when the rollout ends inside the cap (EOS), whatever the answer: does RL only learn to finish?",
    "random": "Bernoulli with the seed, its mean the base model's step-0 reward: what the rollout loop alone gives",
    "none": "no training (dup:K+none only): the duplicated model as built",
}
KIND_ORDER = {"base": 0, "full": 1, "layer": 2, "layers": 3, "lora": 4, "dup": 5}
# The linear maps of a Qwen decoder layer a LoRA arm adapts ("LoRA Without Regret": all of them, MLP included),
# and its scale alpha (the adapter's update is alpha / rank * B @ A), as in that study.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
LORA_ALPHA = 32


@dataclass(frozen=True)
class Arm:
    """One training arm. ``layers`` is None for base, full and lora;
    ``rank`` is a lora arm's; ``reward`` a key of ``REWARDS``."""

    kind: str  # base | full | layer | layers | lora | dup
    layers: tuple[int, ...] | None = None
    reward: str = "correct"
    rank: int | None = None

    @classmethod
    def expand(cls, items: list, num_layers: int) -> tuple["Arm", ...]:
        """The config's ``arms`` list as arms, in order, each once:
        ``layer:all`` is one ``layer:K`` per decoder layer, ``{layers: [..]}`` one
        layer set; a layer the model lacks is refused, naming ``arms.<i>``."""
        arms: list[Arm] = []
        for i, item in enumerate(items):
            if isinstance(item, dict):
                new = [cls("layers", tuple(sorted(item["layers"])), item.get("reward", "correct"))]
            elif item.partition("+")[0] == "layer:all":  # the schema allows only a control's reward after it
                new = [cls("layer", (k,), item.partition("+")[2] or "correct") for k in range(num_layers)]
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
        for key in (self.kind, self.plain.name, self.name):
            settings.update(per_arm.get(key, {}))
        return RLConfig(**settings)

    @property
    def name(self) -> str:
        return self._spelled(":", ",")

    @property
    def slug(self) -> str:
        return self._spelled("-", "-")

    def _spelled(self, after_kind: str, between: str) -> str:
        numbers = (self.rank,) if self.kind == "lora" else self.layers
        text = self.kind if numbers is None else f"{self.kind}{after_kind}{between.join(map(str, numbers))}"
        return text if self.reward == "correct" else f"{text}+{self.reward}"

    @property
    def plain(self) -> "Arm":
        """The arm with the correctness reward: what a control arm controls for."""
        return Arm(self.kind, self.layers, rank=self.rank)

    @property
    def control(self) -> bool:
        return self.reward != "correct"

    @property
    def in_layer_scan(self) -> bool:
        """A single layer trained on correctness: the arms the headline ranks."""
        return self.kind == "layer" and not self.control

    @property
    def label(self) -> str:
        """How sentences and the report name an arm: ``layer 3``, ``layers 1+2``,
        ``full RL``, ``full RL, finish-only reward``."""
        if self.kind == "layer":
            text = f"layer {self.layers[0]}"
        elif self.kind == "layers":
            text = "layers " + "+".join(map(str, self.layers))
        elif self.kind == "lora":
            text = f"LoRA rank {self.rank}"
        elif self.kind == "dup":
            text = f"layer {self.layers[0]} duplicated"
        else:
            text = {"base": "base", "full": "full RL"}[self.kind]
        if self.reward == "none":
            return f"{text}, untrained"
        return text if not self.control else f"{text}, {self.reward.replace('_', '-')} reward"

    @property
    def sort_key(self) -> tuple:
        """Base, full RL, single layers by index, layer sets, then the control
        arms in the same order, by reward: every table's order."""
        return (list(REWARDS).index(self.reward), KIND_ORDER[self.kind], self.layers or (), self.rank or 0)

    @staticmethod
    def label_of(name: str) -> str:
        """:attr:`label` of an arm given by name (a table cell)."""
        return Arm.parse(name).label

    @staticmethod
    def sort_key_of(name: str) -> tuple:
        """:attr:`sort_key` of an arm given by name (a table cell)."""
        return Arm.parse(name).sort_key

    @property
    def trained_layers(self) -> tuple[int, ...]:
        """Indices of the decoder layers this arm trains whole, in the model
        it trains (a dup arm's copy of layer K is layer K + 1); empty for
        base, full and lora."""
        if self.kind == "dup":
            return () if self.reward == "none" else (self.layers[0] + 1,)
        return self.layers or ()

    @property
    def tensor_prefixes(self) -> tuple[str, ...]:
        """State-dict name prefixes of the decoder layers this arm trains."""
        return tuple(f"{DECODER_LAYERS}.{k}." for k in self.trained_layers)

    @property
    def duplicated_layer(self) -> int | None:
        """K of a dup arm (its model has layer K twice), else None."""
        return self.layers[0] if self.kind == "dup" else None

    def trains_part(self, part: str) -> bool:
        """Whether training may change a part of the parameter audit
        (``embed``, ``layers.K``, ``final_norm``, ``lm_head``)."""
        if self.kind == "full":
            return True
        if self.kind == "lora":
            return part.startswith("layers.")
        return part in {f"layers.{k}" for k in self.trained_layers}

    def trains_tensor(self, name: str) -> bool:
        """Whether training may change a state-dict tensor: a lora arm's merged
        adapters change the targets' weights only (not their biases, not the norms)."""
        if self.kind == "lora":
            return name.startswith(DECODER_LAYERS + ".") and name.endswith(tuple(f".{t}.weight" for t in LORA_TARGETS))
        return self.kind == "full" or name.startswith(self.tensor_prefixes)

    @property
    def trains(self) -> bool:
        return self.kind != "base" and self.reward != "none"

    @classmethod
    def parse(cls, text: str) -> "Arm":
        """Inverse of ``name`` and ``slug``."""
        text, _, reward = text.strip().partition("+")
        plain = cls._parse_plain(text)
        if not reward:
            return plain
        if reward == "none" and plain.kind == "dup":
            return cls("dup", plain.layers, "none")
        if reward not in REWARDS or reward in ("correct", "none") or plain.kind == "base":
            raise ConfigError(f"unknown arm {text + '+' + reward!r}: a control arm is full, layer:K, layers:I,J, "
                              "lora:R or dup:K followed by +finish_only or +random, or dup:K+none")
        return cls(plain.kind, plain.layers, reward, plain.rank)

    @classmethod
    def _parse_plain(cls, text: str) -> "Arm":
        if text in ("base", "full"):
            return cls(text)
        if text[:5] in ("lora:", "lora-") and text[5:].isdigit() and int(text[5:]) > 0:
            return cls("lora", rank=int(text[5:]))
        for kind in ("layers", "layer", "dup"):
            for sep in (":", "-"):
                if text.startswith(kind + sep):
                    rest = text[len(kind) + 1 :].replace("-", ",")
                    try:
                        layers = tuple(int(x) for x in rest.split(","))
                    except ValueError:
                        break
                    if kind in ("layer", "dup") and len(layers) != 1:
                        break
                    return cls(kind, layers)
        raise ConfigError(f"unknown arm {text!r}: expected base, full, layer:K, layers:I,J, lora:R or dup:K, "
                          "optionally followed by +finish_only or +random (dup:K also +none)")
