"""The documentation stays true: every command in the README, CONTRIBUTING.md and docs/ names
a script that exists and whose parser builds (its --help), every flag it names is one of that
script's options, every `make` target exists, every linked page exists, and the README stays
the front door (under 250 lines)."""
from __future__ import annotations

import argparse
import importlib.util
import re
import runpy
import shlex
import sys
from functools import lru_cache
from pathlib import Path
from unittest import mock

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]
# scripts that pass the flags they do not know on to others
PASSES_FLAGS_TO = {"pipeline.py": ["spatial_cnn.py", "motion_cnn.py"]}
COMMAND_START = re.compile(r"(?:^|(?<=[\s`\"'(]))((?:\.venv/bin/)?python3?|torchrun)(?=\s)")


def code_lines(text: str) -> list[str]:
    """Lines of the fenced code blocks (backslash and indented usage continuations joined) and
    the inline code spans of the prose."""
    lines: list[str] = []
    blocks = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            if lines and line.startswith(" ") and not COMMAND_START.search(line):
                lines[-1] += " " + line.strip()  # a usage line continued, e.g. "    [--shard K/N]"
            else:
                lines.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += re.findall(r"`([^`\n]+)`", prose.replace("\n", " "))
    return lines


def commands(text: str) -> list[list[str]]:
    """Each python/torchrun command as tokens, from its interpreter on (comments dropped)."""
    found = []
    for line in code_lines(text):
        for match in COMMAND_START.finditer(line):
            rest = re.split(r"\s#\s", line[match.start():], maxsplit=1)[0].rstrip("\"'")
            try:
                tokens = shlex.split(rest)
            except ValueError:
                tokens = rest.split()
            found.append(tokens)
    return found


def script_of(tokens: list[str]) -> tuple[str | None, list[str]]:
    """(the script or ``-m`` module a command runs, the arguments after it); None for commands
    that run no script of this repo (pytest, ``-c``)."""
    rest = tokens[1:]
    if tokens[0] == "torchrun":
        while rest and not rest[0].endswith(".py"):
            rest = rest[1:]
        return (rest[0], rest[1:]) if rest else (None, [])
    if rest[:1] == ["-m"]:
        module = rest[1] if len(rest) > 1 else ""
        return (None, []) if module in ("pytest", "pip", "venv") else (f"-m {module}", rest[2:])
    if rest and rest[0].endswith(".py"):
        return rest[0], rest[1:]
    return None, []


class _Parsed(Exception):
    pass


@lru_cache(maxsize=None)
def parser_of(script: str) -> argparse.ArgumentParser | None:
    """The parser ``script`` builds when run as ``--help`` (caught before it parses); None for a
    script without argparse (it takes no flags)."""
    if script.startswith("-m "):
        spec = importlib.util.find_spec(script[3:])
        assert spec is not None and spec.origin, f"{script}: no such module"
        source = Path(spec.origin)
        if spec.submodule_search_locations:  # a package runs its __main__.py
            source = source.parent / "__main__.py"
        path = None
    else:
        path = source = ROOT / script
    assert source.is_file(), f"{script}: no such script"
    if "argparse" not in source.read_text():
        return None  # never run: it would do its work
    captured = {}

    def capture(self, *args, **kwargs):
        captured["parser"] = self
        raise _Parsed

    with mock.patch.object(argparse.ArgumentParser, "parse_args", capture), \
            mock.patch.object(argparse.ArgumentParser, "parse_known_args", capture), \
            mock.patch.object(sys, "argv", [script, "--help"]):
        try:
            if path is None:
                runpy.run_module(script[3:], run_name="__main__", alter_sys=False)
            else:
                runpy.run_path(str(path), run_name="__main__")
        except _Parsed:
            pass
    parser = captured.get("parser")
    assert parser is not None, f"{script} builds no argparse parser when run"
    parser.format_help()  # its --help
    return parser


def flags_named(arguments: list[str]) -> set[str]:
    out = set()
    for token in arguments:
        for piece in token.strip("[](),").split("|"):
            piece = piece.strip("[](),").split("=", 1)[0]
            if re.fullmatch(r"--[a-z][a-z0-9-]*", piece):
                out.add(piece)
    return out


def options_of(script: str) -> set[str] | None:
    parser = parser_of(script)
    if parser is None:
        return None
    options = set(parser._option_string_actions)
    for other in PASSES_FLAGS_TO.get(script, []):
        options |= set(parser_of(other)._option_string_actions)
    return options


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_command_names_a_script_and_its_flags(page):
    checked = 0
    for tokens in commands(page.read_text()):
        script, arguments = script_of(tokens)
        if script is None:
            continue
        options = options_of(script)
        named = flags_named(arguments)
        if options is None:
            assert not named, f"{page.name}: {script} takes no flags, the page gives {sorted(named)}"
            continue
        unknown = sorted(named - options)
        assert not unknown, f"{page.name}: `{' '.join(tokens)}`: {script} has no {', '.join(unknown)}"
        checked += 1
    if page.name in ("README.md", "training.md", "prediction.md", "preprocessing.md", "distributed.md"):
        assert checked, f"{page.name} shows no command"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_make_targets_and_linked_files_exist(page):
    text = page.read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", (ROOT / "Makefile").read_text(), flags=re.M))
    for line in code_lines(text):
        for target in re.findall(r"(?:^|\s)make ([a-z][a-z-]*)", line):
            assert target in targets, f"{page.name}: make {target}: no such target"
    for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not link.startswith(("http://", "https://")):
            assert (page.parent / link).exists(), f"{page.name} links to {link}, which does not exist"


def test_the_readme_is_the_front_door():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 250
    assert "make demo" in text and "make test" in text
    for page in (ROOT / "docs").glob("*.md"):
        assert f"docs/{page.name}" in text, f"the README links no docs/{page.name}"


def test_the_module_map_names_files_that_exist_and_every_module():
    text = (ROOT / "docs" / "modules.md").read_text()
    listed = set(re.findall(r"^\| `([^`]+)` \|", text, flags=re.M))
    missing = sorted(p for p in listed if not (ROOT / p).exists())
    assert not missing, f"docs/modules.md lists {missing}, which do not exist"
    modules = {p.relative_to(ROOT).as_posix() for p in ROOT.glob("*.py")}
    for folder in ("engine", "dataloader", "models", "inference", "flow", "tools", "benchmarks"):
        modules |= {p.relative_to(ROOT).as_posix() for p in (ROOT / folder).glob("*.py") if p.name != "__init__.py"}
    unlisted = sorted(modules - listed)
    assert not unlisted, f"docs/modules.md does not list {unlisted}"


# a measured figure: a ratio (2.1x), a duration (175 s, ~3 minutes), a score (66.67), a tolerance (1e-4)
FIGURE = re.compile(r"(?<!Python )(?<![\w.-])"
                    r"(\d+(?:\.\d+)?x|~?\d+(?:\.\d+)? ?(?:s|minutes)(?=[\s,.;)])|\d+\.\d\d|1e-\d)(?![\w.-])")
# where a figure comes from: the commit and machine it was measured on, the benchmark or test that
# produces it, the make target, or the page that records the runs
SOURCE = re.compile(r"commit [0-9a-f]{7}|benchmarks/\w+\.py|tests/\w+\.py|make \w+|docs/(?:demo|benchmarks)\.md")


def test_every_figure_in_the_readme_names_where_it_comes_from():
    """A number a test or benchmark produces stands in a paragraph (or table with its caption)
    that names its source; published figures stand under the caption that says they are."""
    paragraphs = re.split(r"\n\s*\n", (ROOT / "README.md").read_text())
    for i, paragraph in enumerate(paragraphs):
        if paragraph.lstrip().startswith(("#", "```")) or (i and "Published figures" in paragraphs[i - 1]):
            continue
        figures = FIGURE.findall(re.sub(r"`[^`]*`", "", paragraph))
        context = paragraph + (paragraphs[i - 1] if paragraph.lstrip().startswith("|") else "")
        assert not figures or SOURCE.search(context), f"README.md: {figures} with no source in:\n{paragraph}"


def test_the_tests_reliability_md_names_exist():
    """docs/reliability.md says which test holds each guarantee: every test it names is there."""
    text = (ROOT / "docs" / "reliability.md").read_text()
    defined = set(re.findall(r"^def (test_\w+)", "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py")),
                             flags=re.M))
    named = {name for name in re.findall(r"\btest_\w+", text) if not (ROOT / "tests" / f"{name}.py").exists()}
    assert named and named <= defined, sorted(named - defined)
