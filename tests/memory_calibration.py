"""The CPU memory calibration behind tests/test_memory.py: both arm kinds of
a 57M-parameter Qwen3, trained by stage train itself, each in its own
process (two GRPO steps: the second runs with AdamW states in memory;
completions at the cap, gradient checkpointing). Started in the background
when the session starts (conftest.BackgroundRuns), since it trains for
minutes while needing nothing else; the test reads the summaries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODEL = dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=8, num_attention_heads=12,
             num_key_value_heads=4, head_dim=64)  # a 57M-parameter Qwen3: weights dwarf the tiny models'
RL = dict(steps=2, prompts_per_step=2, num_generations=4, micro_batch_completions=4, threads=2,
          bf16=False, gradient_checkpointing=True, learning_rate=1e-5)
CAPS = dict(max_prompt_tokens=40, max_completion_tokens=128)
ARMS = {"full": None, "layer:3": 1}  # arm: trained layers, as TrainingPlan counts them

TRAIN_ONE_ARM = """
import json, sys
from pathlib import Path
from layerbench.config import Arm, RLConfig
from layerbench.paths import RunFolder
from layerbench.stages.train import train_arm
base, train, arm, out, rl, caps = sys.argv[1:]
caps = json.loads(caps)
train_arm(Path(base), Path(train), Arm.parse(arm), 1, RLConfig.defaults(**json.loads(rl)),
          caps["max_completion_tokens"], RunFolder(Path(out)), max_prompt_tokens=caps["max_prompt_tokens"])
"""


def calibration_base(folder: Path) -> dict:
    """A randomly initialised Qwen3 with a byte-level tokenizer, saved as the
    Hub saves models; returns its config (for ModelShape)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from layerbench.stages.model import EOS, train_tokenizer

    texts = [f"Q: {a}+{b}=? A: {a + b} ####" for a in range(30) for b in range(30)]
    tokenizer = train_tokenizer(texts, 320)
    eos = tokenizer.convert_tokens_to_ids(EOS)
    config = AutoConfig.for_model("qwen3", vocab_size=len(tokenizer), tie_word_embeddings=False, eos_token_id=eos,
                                  pad_token_id=eos, bos_token_id=eos, **MODEL)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return config.to_dict()


def run_folder(folder: Path, arm: str) -> Path:
    return folder / arm.replace(":", "-")


def start(folder: Path) -> dict:
    """Build the base model in ``folder`` and start one training process per
    arm; returns {"config": the model's config, "jobs": {arm: Popen}}."""
    from layerbench.runtime.io import atomic_write_jsonl

    config = calibration_base(folder / "base")
    train = atomic_write_jsonl(folder / "train.jsonl",
                               [{"prompt": f"Q: {a}+{a}=? A:", "answer": str(2 * a)} for a in range(8)])
    jobs = {arm: subprocess.Popen([sys.executable, "-c", TRAIN_ONE_ARM, str(folder / "base"), str(train), arm,
                                   str(run_folder(folder, arm)), json.dumps(RL), json.dumps(CAPS)],
                                  cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True)
            for arm in ARMS}
    return {"folder": folder, "config": config, "jobs": jobs}
