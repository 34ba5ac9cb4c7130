"""``ipubsub check``'s command line: every example in its ``--help`` and in
docs/reliability.md parses with the real parser, and bad options exit 2
before anything starts."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from ipubsub.checker.faults import FAULT_KINDS
from ipubsub.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]


def _examples(text: str) -> list[str]:
    return [m.group(1).strip() for m in re.finditer(r"^\s*(ipubsub check [^#\n]*)", text, re.MULTILINE)]


def _help() -> str:
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    return commands.choices["check"].format_help()  # type: ignore[attr-defined]


def test_help_lists_examples_every_fault_kind_and_the_exit_codes() -> None:
    text = _help()
    assert len(_examples(text)) >= 4 and "exit codes:" in text
    for kind in FAULT_KINDS:
        assert re.search(rf"^\s+{kind}\s", text, re.MULTILINE), kind


@pytest.mark.parametrize("source", ["help", "docs/reliability.md", "README.md"])
def test_every_example_parses(source: str) -> None:
    text = _help() if source == "help" else (ROOT / source).read_text()
    examples = _examples(text)
    assert examples, f"no ipubsub check example in {source}"
    parser = build_parser()
    for example in examples:
        args = parser.parse_args(shlex.split(example)[1:])
        assert args.func.__name__ == "_check", example
        if args.faults not in ("all", "none"):
            assert set(args.faults.split(",")) <= set(FAULT_KINDS), example


@pytest.mark.parametrize(
    "options",
    [["--faults", "kill,meteor"], ["--nodes", "0"], ["--rate", "0"], ["--without", "everything"],
     ["--attach", "http://127.0.0.1:9", "--faults", "kill"]],
)
def test_bad_options_exit_2_at_once(options: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", *options]) == 2
    assert "ipubsub check:" in capsys.readouterr().err
