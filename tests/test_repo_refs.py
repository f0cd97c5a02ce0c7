"""Every file the code and docs point a reader to is in the repository.

A user's clone has only what git tracks: a path in a docstring, a comment, a page or a
Markdown link that names a missing file sends that user nowhere.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: A repository path as people write it: a top-level folder, then a file with an extension.
PATH = re.compile(r"(?<![\w./-])((?:icetime|services|web|docs|tests|bench|deploy|fixtures|\.ci)"
                  r"/[A-Za-z0-9_./-]*[A-Za-z0-9_-]\.(?:py|md|js|css|html|toml|json|png|ya?ml|sh))\b")
#: A relative Markdown link or image in a page under docs/ or the README.
LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)#\s]+)")
TEXT = (".py", ".md", ".js", ".css", ".html", ".toml", ".cfg", ".txt", ".yml", ".yaml", "")


def tracked() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [ROOT / p for p in out.decode().split("\0") if p]


def test_paths_named_in_code_and_docs_exist():
    files = tracked()
    names = {p.relative_to(ROOT).as_posix() for p in files}
    missing: list[str] = []
    for path in files:
        # This file names missing files on purpose, to show the check can fail.
        if (path.suffix not in TEXT or "fixtures" in path.parts or not path.is_file()
                or path == Path(__file__).resolve()):
            continue
        text = path.read_text(errors="replace")
        rel = path.relative_to(ROOT).as_posix()
        for m in PATH.finditer(text):
            if m.group(1) not in names and not (ROOT / m.group(1)).exists():
                missing.append(f"{rel}: {m.group(1)}")
        if path.suffix == ".md":
            for m in LINK.finditer(text):
                target = (path.parent / m.group(1)).resolve()
                if not target.exists():
                    missing.append(f"{rel}: link {m.group(1)}")
    assert not missing, "references to files the repository does not have:\n" + "\n".join(missing)


def test_the_check_finds_a_missing_file():
    """The pattern sees the ways paths are written here (so the test above can fail)."""
    text = "see docs/nowhere.md and (services/scoring/gone.py), `web/js/x.js`"
    assert [m.group(1) for m in PATH.finditer(text)] == [
        "docs/nowhere.md", "services/scoring/gone.py", "web/js/x.js"]
    assert [m.group(1) for m in LINK.finditer("[a](delivery.md) [b](https://x.org/y.md)")] == [
        "delivery.md"]
