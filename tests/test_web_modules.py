"""Every name a page module imports from another is exported there: a renamed or moved
function otherwise stops every page that loads the module, with nothing on screen but
"connecting" (found once after a merge moved `ordinal` from view.js to i18n.js)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

JS = Path(__file__).parents[1] / "web" / "js"
EXPORT = re.compile(r"^export\s+(?:async\s+)?(?:function\*?|const|let|class)\s+(\w+)", re.M)
EXPORT_LIST = re.compile(r"^export\s*\{([^}]*)\}", re.M)
IMPORT = re.compile(r"^import\s*\{([^}]*)\}\s*from\s*\"\./([\w.-]+)\"", re.M)


def exported(path: Path) -> set[str]:
    text = path.read_text()
    names = set(EXPORT.findall(text))
    for group in EXPORT_LIST.findall(text):
        names |= {n.split(" as ")[-1].strip() for n in group.split(",") if n.strip()}
    return names


def test_the_checker_finds_a_missing_export(tmp_path):
    (tmp_path / "a.js").write_text("export const one = 1;\nexport function two() {}\n")
    assert exported(tmp_path / "a.js") == {"one", "two"}


@pytest.mark.parametrize("module", sorted(p.name for p in JS.glob("*.js")))
def test_every_imported_name_is_exported(module):
    text = (JS / module).read_text()
    missing = [(name.split(" as ")[0].strip(), source)
               for group, source in IMPORT.findall(text) for name in group.split(",")
               if name.strip() and name.split(" as ")[0].strip() not in exported(JS / source)]
    assert not missing, f"{module} imports names its sources do not export: {missing}"
