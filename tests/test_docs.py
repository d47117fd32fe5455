"""Every ```python block of README.md and docs/**/*.md runs, as written but shorter.

A page's blocks run in order in one namespace (a later block may use what an earlier
one made), in a temporary working folder. Long runs are shortened by the substitutions
below (training iterations, epochs, importance samples, image size) and by the imputers'
defaults, lowered for the test to 20 training steps and 50 importance samples. A block is
skipped only when an HTML comment ``<!-- no-test: reason -->`` stands right before it
(what tests cannot have: a GPU, torchrun, a file the user supplies), or when it imports
``palmerpenguins`` and that is not installed. Bash blocks are not run.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]

BLOCK = re.compile(
    r"(?:<!--\s*no-test:\s*(?P<reason>.*?)\s*-->\s*\n)?```python\n(?P<code>.*?)```", re.S
)

# (pattern, replacement): what makes a documented run short enough for the tests.
SHORTER = [
    (r"max_iter=[0-9_]+", "max_iter=20"),
    (r"n_epochs=[0-9_]+", "n_epochs=1"),
    (r"\bn_samples=(?:[0-9]{4,}|[0-9]{1,3}_[0-9_]+)", "n_samples=50"),
    (r"n_impute_samples=[0-9_]+", "n_impute_samples=50"),
    (r'\["china"\]\)\["china"\]', '["china"])["china"][192:256, 288:384]'),
    (r"\bsteps=[0-9_]+", "steps=5"),
    (r"per_image=[0-9_]+", "per_image=500"),
]


@pytest.fixture
def shorter_imputers(monkeypatch):
    """The imputers' defaults, where an example leaves them: 20 steps, 50 samples."""
    from notmiwae_fast.impute import imputer

    for cls in (imputer.NotMIWAEImputer, imputer.MIWAEImputer):
        defaults = cls.__init__.__kwdefaults__
        monkeypatch.setitem(defaults, "max_iter", 20)
        monkeypatch.setitem(defaults, "n_impute_samples", 50)


def blocks(page: pathlib.Path) -> list[tuple[str, str | None]]:
    """The page's python blocks: (code, the no-test reason or None)."""
    return [(m["code"], m["reason"]) for m in BLOCK.finditer(page.read_text())]


def shorten(code: str) -> str:
    for pattern, replacement in SHORTER:
        code = re.sub(pattern, replacement, code)
    return code


def test_pages_have_examples():
    counted = {p.relative_to(ROOT).as_posix(): len(blocks(p)) for p in PAGES}
    assert counted["README.md"] >= 2
    assert sum(counted.values()) >= 15
    skipped = [r for p in PAGES for _, r in blocks(p) if r is not None]
    assert len(skipped) <= 6, skipped  # few, each with its reason


@pytest.mark.slow
@pytest.mark.parametrize(
    "page", [p for p in PAGES if blocks(p)], ids=lambda p: p.relative_to(ROOT).as_posix()
)
def test_page_examples_run(page, tmp_path, monkeypatch, shorter_imputers):
    found = blocks(page)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    namespace: dict = {"__name__": "__docs__"}
    ran = 0
    for number, (code, reason) in enumerate(found, 1):
        if reason is not None:
            continue
        if "import palmerpenguins" in code and importlib.util.find_spec("palmerpenguins") is None:
            continue
        where = f"{page.relative_to(ROOT)}, python block {number}"
        exec(compile(shorten(code), where, "exec"), namespace)
        ran += 1
    if not ran:
        pytest.skip("every block is marked no-test or needs palmerpenguins")


BASH = re.compile(r"```bash\n(.*?)```", re.S)
COMMAND = re.compile(r"(?:notmiwae-fast|-m notmiwae_fast\.cli)\s+([a-z-]+)(.*)")


def cli_examples() -> list[tuple[str, str, list[str]]]:
    """(page, command, its --options) of every notmiwae-fast call in a bash block."""
    found = []
    for page in PAGES:
        for block in BASH.findall(page.read_text()):
            for line in block.replace("\\\n", " ").splitlines():
                match = COMMAND.search(line.split("#")[0])
                if match:
                    options = re.findall(r"(?<!\S)(--[a-z][a-z-]*)", match[2])
                    found.append((page.relative_to(ROOT).as_posix(), match[1], options))
    return found


def test_cli_examples_use_real_commands_and_options():
    from notmiwae_fast.cli._parser import build_parser

    commands = next(
        a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
    ).choices
    examples = cli_examples()
    assert len(examples) >= 10
    for page, command, options in examples:
        assert command in commands, (page, command)
        known = commands[command]._option_string_actions
        assert all(o in known for o in options), (page, command, options)
