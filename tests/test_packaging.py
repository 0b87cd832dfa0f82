"""The layering rule and the README's promises."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_core_packages_import_without_torch():
    code = "import sys, randla, compress; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks[:2] for line in block.splitlines() if line.strip()]


def test_readme_starts_with_two_commands_and_ci_runs_the_second():
    commands = _readme_commands()
    assert len(commands) == 2, commands
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci_script
    assert "pytest" in commands[1] and "smallstate-compare" in commands[0]
