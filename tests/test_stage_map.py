"""README's stage map is the workflow: every rule file, rule, command and module it names exists, and it names them all."""

import importlib
import re
import subprocess
import sys

from conftest import ROOT

RULE = re.compile(r"^\s*rule (\w+):", re.M)


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
    assert commands == ["contribution", "audit", "check-limits", "compare", "readme-table", "weight-hashes", "stage"]
