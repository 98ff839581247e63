"""``layerbench truncation-audit SAMPLES.jsonl``: truncation in an lm-eval samples file made anywhere.

Stock lm-eval keeps only response text, so token counts come from
re-tokenising each response with the model's tokenizer. A response is

* ``truncated`` when it is at least ``max_gen_toks`` tokens long;
* ``ambiguous`` when it is shorter than the budget by no more than the
  longest stop sequence (+1 for an end-of-text token): lm-eval strips stop
  sequences and re-tokenising may not reproduce the original tokens, so the
  file alone cannot tell a stop at the budget from a cut-off. Said, not guessed;
* ``finished`` otherwise.

The budget is read from each sample's generation arguments unless
``--max-gen-toks`` is given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

INVALID = {"[invalid]", "", None}


def _gen_kwargs(sample: dict) -> dict:
    args = sample.get("arguments") or {}
    first = args.get("gen_args_0") if isinstance(args, dict) else (args[0] if args else None)
    if isinstance(first, dict):
        return first.get("arg_1") or {}
    if isinstance(first, (list, tuple)) and len(first) > 1 and isinstance(first[1], dict):
        return first[1]
    return {}


def _metric(sample: dict) -> tuple[str | None, float | None]:
    for key in sample.get("metrics", []) or []:
        if isinstance(sample.get(key), (int, float)):
            return key, float(sample[key])
    for key in ("exact_match", "acc"):
        if isinstance(sample.get(key), (int, float)):
            return key, float(sample[key])
    return None, None


def _response(sample: dict) -> str:
    resps = sample.get("resps") or [[""]]
    first = resps[0]
    return first[0] if isinstance(first, list) else first


def _filtered(sample: dict):
    value = sample.get("filtered_resps")
    while isinstance(value, list) and value:
        value = value[0]
    return value


def truncation_audit_samples(path: Path, tokenizer, max_gen_toks: int | None = None) -> dict:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            sample = json.loads(line)
            kwargs = _gen_kwargs(sample)
            budget = max_gen_toks or kwargs.get("max_gen_toks")
            if budget is None:
                raise ValueError(f"{path}: doc {sample.get('doc_id')} records no max_gen_toks; pass --max-gen-toks")
            stops = kwargs.get("until") or []
            stops = [stops] if isinstance(stops, str) else stops
            margin = max([len(tokenizer(s, add_special_tokens=False)["input_ids"]) for s in stops if s] + [0]) + 1
            n_tokens = len(tokenizer(_response(sample), add_special_tokens=False)["input_ids"])
            if n_tokens >= int(budget):
                status = "truncated"
            elif n_tokens >= int(budget) - margin:
                status = "ambiguous"
            else:
                status = "finished"
            metric, value = _metric(sample)
            rows.append({"doc_id": sample.get("doc_id"), "n_tokens": n_tokens, "budget": int(budget),
                         "status": status, "has_answer": _filtered(sample) not in INVALID,
                         "metric": metric, "score": value})
    return {"file": str(path), "samples": rows, "summary": summarise(rows)}


def summarise(rows: list[dict]) -> dict:
    def acc(sel):
        scored = [r["score"] for r in sel if r["score"] is not None]
        return sum(scored) / len(scored) if scored else None

    groups = {s: [r for r in rows if r["status"] == s] for s in ("finished", "truncated", "ambiguous")}
    return {
        "n": len(rows),
        "budget": sorted({r["budget"] for r in rows}),
        "truncated": len(groups["truncated"]),
        "ambiguous": len(groups["ambiguous"]),
        "no_final_answer": sum(not r["has_answer"] for r in rows),
        "accuracy": acc(rows),
        "accuracy_finished": acc(groups["finished"]),
        "accuracy_truncated": acc(groups["truncated"]),
        "mean_tokens": sum(r["n_tokens"] for r in rows) / len(rows) if rows else None,
    }


def format_table(result: dict) -> str:
    s = result["summary"]

    def pct(x, n=s["n"]):
        return f"{x} ({100 * x / n:.1f}%)" if n else str(x)

    def num(x):
        return "n/a" if x is None else f"{x:.3f}"

    lines = [
        f"file                      {result['file']}",
        f"samples                   {s['n']}",
        f"budget (max_gen_toks)     {', '.join(map(str, s['budget']))}",
        f"mean response tokens      {num(s['mean_tokens'])}",
        f"hit the budget            {pct(s['truncated'])}",
        f"ambiguous                 {pct(s['ambiguous'])}  (within a stop sequence of the budget: cannot tell)",
        f"no final answer           {pct(s['no_final_answer'])}",
        f"accuracy                  {num(s['accuracy'])}",
        f"accuracy, finished        {num(s['accuracy_finished'])}",
        f"accuracy, truncated       {num(s['accuracy_truncated'])}",
    ]
    flagged = [r for r in result["samples"] if r["status"] != "finished"]
    if flagged:
        lines.append("")
        lines.append("doc_id  tokens  status     answer  score")
        lines += [f"{r['doc_id']!s:<7} {r['n_tokens']:<7} {r['status']:<10} {'yes' if r['has_answer'] else 'no':<7} "
                  f"{'' if r['score'] is None else r['score']}" for r in flagged]
    return "\n".join(lines)


def truncation_audit_command(samples: Path, tokenizer_id: str | None, max_gen_toks: int | None, as_json: bool) -> int:
    if not tokenizer_id:
        print("layerbench truncation-audit: --tokenizer is required (a model directory or Hub id): lm-eval samples keep "
              "text, not tokens", file=sys.stderr)
        return 2
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_id)
        result = truncation_audit_samples(samples, tokenizer, max_gen_toks)
    except (OSError, ValueError) as exc:
        print(f"layerbench truncation-audit: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2) if as_json else format_table(result))
    return 0
