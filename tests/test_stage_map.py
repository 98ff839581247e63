"""README's stage map is the workflow: every rule file, rule, command and module it names exists, and it names them all."""

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

RULE = re.compile(r"^\s*(?:rule|checkpoint) (\w+):", re.M)


def _stage_map() -> dict[str, dict]:
    text = (ROOT / "README.md").read_text()
    block = text[text.index("<!-- stage-map:begin -->"):text.index("<!-- stage-map:end -->")]
    rows = {}
    for line in block.splitlines()[3:]:
        cells = [c.strip().strip("`") for c in line.strip().strip("|").split("|")]
        stage, rule_file, rules, command, module = cells[:5]
        rows[stage] = {"rule_file": rule_file, "rules": {r.strip() for r in rules.split(",")},
                       "command": command, "module": module}
    return rows


def test_every_rule_file_and_rule_is_in_the_map_once():
    rows = _stage_map()
    files = {p.relative_to(ROOT).as_posix() for p in (ROOT / "workflow" / "rules").glob("*.smk")}
    assert files == {row["rule_file"] for row in rows.values()}
    for stage, row in rows.items():
        assert row["rule_file"] == f"workflow/rules/{stage}.smk", stage
        assert set(RULE.findall((ROOT / row["rule_file"]).read_text())) == row["rules"], stage
    included = re.findall(r'^include: "(workflow/rules/\w+\.smk)"', (ROOT / "Snakefile").read_text(), re.M)
    assert sorted(included) == sorted(files)


def test_each_stage_has_its_command_and_module_under_one_name():
    for stage, row in _stage_map().items():
        importlib.import_module(row["module"])
        if stage == "container":  # built by the runtime helper, which the job command also needs
            assert row["module"] == "layerbench.runtime.containers"
            continue
        assert row["module"] == f"layerbench.stages.{stage}" and row["command"] == f"layerbench stage {stage}"
        run = subprocess.run([sys.executable, "-m", "layerbench", "stage", stage, "--help"],
                             capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        rule_text = (ROOT / row["rule_file"]).read_text()
        assert f"stage {stage}" in rule_text, f"{row['rule_file']} does not call layerbench stage {stage}"


def test_help_lists_the_user_commands_before_the_stage_group():
    out = subprocess.run([sys.executable, "-m", "layerbench", "--help"], capture_output=True, text=True).stdout
    commands = re.findall(r"^    ([a-z-]+)", out, re.M)
    assert commands == ["contribution", "truncation-audit", "check-limits", "compare", "readme-table", "weight-hashes", "numerics-probe", "stage"]


def _lint_imports(*args: str) -> subprocess.CompletedProcess:
    """import-linter's command on this checkout (contracts in pyproject.toml)."""
    return subprocess.run([str(Path(sys.executable).parent / "lint-imports"), *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})


def test_imports_follow_the_layer_order():
    """No module imports a layer above its own, and no stage imports another
    (pyproject.toml's import-linter contracts)."""
    out = _lint_imports()
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "2 kept, 0 broken" in out.stdout


def test_the_layer_contract_catches_an_upward_import(tmp_path):
    """The same linter on the same code, with two layers swapped: it must
    report the imports that now point up (so the contract above can fail)."""
    text = (ROOT / "pyproject.toml").read_text()
    swapped = text.replace('  "layerbench.stages",\n  "layerbench.analysis",\n',
                           '  "layerbench.analysis",\n  "layerbench.stages",\n')
    assert swapped != text
    config = tmp_path / "pyproject.toml"
    config.write_text(swapped)
    out = _lint_imports(str(config))
    assert out.returncode != 0 and "BROKEN" in out.stdout
    assert "layerbench.stages is not allowed to import layerbench.analysis" in out.stdout


def test_a_missing_flag_is_a_usage_error():
    """The flags a stage command needs only in some cases are checked like the
    required ones: exit 2 and a message naming them, no traceback."""
    for args, flag in ((["data", "--train", "t", "--test", "t"], "--sft"),
                       (["preflight", "eval", "--model", "m", "--out", "o"], "--train-checks")):
        out = subprocess.run([sys.executable, "-m", "layerbench", "stage", *args, "--study",
                              str(ROOT / "config" / "default.yaml")], capture_output=True, text=True, timeout=120)
        assert out.returncode == 2 and flag in out.stderr and "Traceback" not in out.stderr, out.stderr


def test_stages_holds_only_mapped_stages():
    """Every module or package under layerbench/stages is a stage of the map."""
    found = {p.stem for p in (ROOT / "src" / "layerbench" / "stages").iterdir()
             if p.name != "__init__.py" and not p.name.startswith("__") and (p.suffix == ".py" or p.is_dir())}
    mapped = {row["module"].removeprefix("layerbench.stages.") for row in _stage_map().values()
              if row["module"].startswith("layerbench.stages.")}
    assert found == mapped


def test_the_readmes_arm_trace_names_files_that_hold_what_it_says():
    """Each step of README's trace of ``layer:3`` names a file that exists and
    defines the names it cites there (``name`` in parentheses), so the trace
    breaks when code moves away from it."""
    text = (ROOT / "README.md").read_text()
    trace = text[text.index("Tracing `layer:3`"):text.index("Passed through without code of its own")]
    steps = re.findall(r"^\d+\. `([^`]+)`: (.*?)(?=^\d+\. |\Z)", trace, re.M | re.S)
    assert 0 < len(steps) <= 12, len(steps)
    for path, said in steps:
        source = (ROOT / path).read_text()
        for name in re.findall(r"\(`([A-Za-z_.]+)`\)", said):
            assert re.search(rf"\b(def|class) {re.escape(name.split('.')[-1])}\b", source), (path, name)
