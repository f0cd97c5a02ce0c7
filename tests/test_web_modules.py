"""Every name a page module imports from another is exported there: a renamed or moved
function otherwise stops every page that loads the module, with nothing on screen but
"connecting" (found once after a merge moved `ordinal` from view.js to i18n.js)."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
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


#: Loads marathon.js in Node (the few browser globals i18n.js reads, stubbed) and prints
#: the search's answers for the queries in argv[2] over the skaters in argv[3].
SEARCH_JS = """
globalThis.localStorage = {getItem() { return null; }, setItem() {}};
globalThis.location = {search: ""};
globalThis.navigator = {language: "en"};
globalThis.document = {documentElement: {}};
const m = await import(process.argv[1]);
const view = {skaters: JSON.parse(process.argv[3])};
console.log(JSON.stringify(JSON.parse(process.argv[2]).map((q) => m.search(view, q))));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js")
def test_the_marathon_search_finds_a_skater_by_name_club_or_bib_as_its_box_says():
    text = (JS / "marathon.js").read_text()
    assert text.count('placeholder="${esc(t("Name, club or bib"))}"') == 2  # fans', monitor
    skaters = {"7": {"bib": "7", "name": "Sabine Müller", "club": "IJsclub Giethoorn",
                     "nation": "NED"},
               "41": {"bib": "41", "name": "Jan de Vries", "club": "Thialf", "nation": "NED"}}
    queries = ["giethoorn", "ijsclub giet", "thialf", "muller", "41", "de vries 41"]
    done = subprocess.run(["node", "--input-type=module", "-e", SEARCH_JS,
                           str(JS / "marathon.js"), json.dumps(queries), json.dumps(skaters)],
                          capture_output=True, text=True, timeout=30, check=True)
    assert json.loads(done.stdout) == [["7"], ["7"], ["41"], ["7"], ["41"], ["41"]]
    for lang in ("en", "de", "nl"):
        assert "Name, club or bib" in json.loads((JS.parent / "lang" / f"{lang}.json").read_text())


#: Loads view.js in Node and prints lapTime() of each passage row in argv[2].
LAP_TIME_JS = """
const m = await import(process.argv[1]);
console.log(JSON.stringify(JSON.parse(process.argv[2]).map((p) => m.lapTime(p))));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="no Node.js")
def test_the_screens_give_no_lap_time_after_a_missed_passage():
    """The engine's rows of a 1000 m with the 600 m read missed: the pages' lapTime()
    (fans' lanes, the monitor's grid) gives the 200 m's and none for the 1000 m, whose
    time since the 200 m spans two laps, as the CSV and the results API do
    (docs/results.md)."""
    from .test_passages import READS_1000, race_1000

    comp = race_1000([r for r in READS_1000 if r[0] != "c"])
    rows = [p for p in comp.view("1000")["results"]["1"]["passages"] if p]
    done = subprocess.run(["node", "--input-type=module", "-e", LAP_TIME_JS,
                           str(JS / "view.js"), json.dumps(rows)],
                          capture_output=True, text=True, timeout=30, check=True)
    assert [p["m"] for p in rows] == [200, 1000] and rows[1]["missing"] == [600]
    assert json.loads(done.stdout) == [rows[0]["lap_time"], None]
