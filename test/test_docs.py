"""The README's and the docs' snippets work as written: every `evo1 ...` command line they show
parses with the real `evo1` parser (the subcommand exists, every option is one it takes), every
name a Python snippet imports exists, and every file a doc links to is in the tree."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path

import pytest

from evo1_bringup.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
COMMAND = re.compile(r"^\s*(?:\.venv/bin/)?evo1 ")


def _blocks(kind: str) -> list[tuple[str, str]]:
    """(document name, code) of every fenced block whose language is `kind` ("" for plain)."""
    found = []
    for doc in DOCS:
        for language, code in FENCE.findall(doc.read_text()):
            if (language in ("bash", "sh", "")) if kind == "shell" else language == kind:
                found.append((doc.name, code))
    return found


def _command_lines() -> list[tuple[str, list[str]]]:
    """Each `evo1 ...` line of the shell blocks, continuation lines joined, comments dropped.
    Usage synopses (`[--option ...]`) are not commands and are left out."""
    commands = []
    for name, code in _blocks("shell"):
        for line in code.replace("\\\n", " ").splitlines():
            if COMMAND.match(line) and "[--" not in line:
                words = shlex.split(line, comments=True)
                commands.append((name, words[1:]))
    return commands


COMMANDS = _command_lines()


def test_the_docs_show_commands_for_most_subcommands() -> None:
    shown = {words[0] for _, words in COMMANDS}
    _, handlers = build_parser()
    assert len(COMMANDS) > 30
    assert len(shown & set(handlers)) >= 12, sorted(shown)


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[name]


@pytest.mark.parametrize("doc, words", COMMANDS, ids=[f"{d}:{' '.join(w)[:60]}" for d, w in COMMANDS])
def test_each_documented_command_parses(doc: str, words: list[str]) -> None:
    parser, handlers = build_parser()
    assert words[0] in handlers, f"{doc}: 'evo1 {words[0]}' is not an evo1 command"
    known = set(_subparser(parser, words[0])._option_string_actions)
    unknown = [w for w in words[1:] if w.startswith("--") and w.split("=")[0] not in known]
    assert not unknown, f"{doc}: 'evo1 {words[0]}' takes no {unknown}"
    errors = io.StringIO()
    with contextlib.redirect_stderr(errors):
        try:
            parser.parse_args(words)
        except FileNotFoundError:
            pass  # a placeholder path (runs/my_run/final) that a user's machine would have
        except SystemExit as exit_:
            pytest.fail(f"{doc}: 'evo1 {' '.join(words)}' does not parse ({exit_.code}): {errors.getvalue()}")


def _imports(code: str) -> list[tuple[str, list[str]]]:
    pairs = []
    for line in code.splitlines():
        if match := re.match(r"\s*from\s+([\w.]+)\s+import\s+(.+)", line):
            names = [n.strip().split(" as ")[0] for n in match.group(2).strip("()").split(",")]
            pairs.append((match.group(1), [n for n in names if n]))
        elif match := re.match(r"\s*import\s+([\w.]+)", line):
            pairs.append((match.group(1), []))
    return pairs


def test_python_snippets_import_what_they_name() -> None:
    imports = [(name, pair) for name, code in _blocks("python") for pair in _imports(code)]
    assert imports, "no Python snippet with an import in the docs"
    for doc, (module, names) in imports:
        loaded = importlib.import_module(module)
        for name in names:
            assert hasattr(loaded, name), f"{doc}: {module} has no {name}"


def test_linked_files_exist() -> None:
    missing = []
    for doc in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (doc.parent / target).exists():
                missing.append(f"{doc.name} -> {target}")
    assert not missing, missing
