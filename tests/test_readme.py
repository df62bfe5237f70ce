"""The README's examples are true: its Python runs against the emulator, its commands parse."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from braze_cohorts.cli import build_parser
from braze_cohorts.testing import BrazeEmulator

README = Path(__file__).resolve().parents[1] / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


class TestReadme:
    def test_python_example_runs_against_the_emulator(
        self, braze_emulator: BrazeEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        """The README's Python example runs unchanged with the environment set to the emulator."""
        braze_emulator.add_user("u1")
        braze_emulator.add_user(aliases=[("a@x.io", "email")])
        braze_emulator.add_user(device_ids=["anon-1"])
        monkeypatch.setenv("BRAZE_REST_ENDPOINT", braze_emulator.url)
        monkeypatch.setenv("BRAZE_PARTNER", braze_emulator.partner)
        monkeypatch.setenv("BRAZE_PARTNER_API_KEY", braze_emulator.partner_api_key)
        monkeypatch.setenv("BRAZE_DATA_IMPORT_KEY", braze_emulator.data_import_key)
        monkeypatch.setenv("BRAZE_COHORTS_STATE", str(tmp_path / "state.db"))
        [example] = blocks("python")
        exec(compile(example, str(README), "exec"), {"__name__": "readme"})
        assert braze_emulator.members("power-users") == {
            ("external_id", "u1"),
            ("alias", "a@x.io", "email"),
        }
        assert braze_emulator.cohort_name("power-users") == "Power users"

    def test_every_command_line_parses(self) -> None:
        """Every ``braze-cohorts`` line in the README's shell blocks is accepted by the parser."""
        parser = build_parser()
        lines = []
        for block in blocks("bash"):
            text = block.replace("\\\n", " ")
            for line in text.splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("braze-cohorts "):
                    lines.append(line)
        assert len(lines) >= 7
        for line in lines:
            argv = [a for a in shlex.split(line)[1:] if a != "[--json]"]
            args = parser.parse_args(argv)
            assert callable(args.handler), line
