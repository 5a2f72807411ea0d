"""The public names of ``queuectl``: written once in ``__all__``, all importable, loaded lazily.

``import queuectl`` must stay cheap (no event loop, no database driver), and so must the
command line's ``enqueue``, which users run in loops: it never imports asyncio.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import queuectl

PROCESS_TIMEOUT = 60
#: Modules that must stay unloaded by ``import queuectl`` and by ``queuectl enqueue``.
HEAVY = ("asyncio", "asyncpg", "aiosqlite")


def test_all_is_a_sorted_tuple_without_duplicates() -> None:
    names = queuectl.__all__
    assert isinstance(names, tuple)
    assert all(isinstance(name, str) for name in names)
    assert len(set(names)) == len(names), [name for name in names if names.count(name) > 1]
    assert list(names) == sorted(names)


@pytest.mark.parametrize("name", queuectl.__all__)
def test_every_public_name_imports(name: str) -> None:
    value = getattr(queuectl, name)
    assert value is not None
    assert getattr(queuectl, name) is value  # the same object every time


def test_the_lazy_table_is_all() -> None:
    lazy = vars(queuectl)["_LAZY"]
    assert set(lazy) == set(queuectl.__all__)


def test_the_names_for_type_checkers_are_all() -> None:
    """``if TYPE_CHECKING:`` imports every public name (so mypy sees them) and nothing else public."""
    source = Path(queuectl.__file__).read_text()
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for statement in node.body:
                if isinstance(statement, ast.ImportFrom) and (statement.module or "").startswith("queuectl"):
                    imported.update(alias.asname or alias.name for alias in statement.names)
    assert imported == set(queuectl.__all__)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        _ = queuectl.no_such_name


def run_python(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_dir_shows_no_public_name_missing_from_all() -> None:
    """In a fresh process, once every name is loaded: what ``dir(queuectl)`` offers is ``__all__``
    (besides the submodules that loading them imported)."""
    out = run_python(
        """
        import json, types, queuectl
        for name in queuectl.__all__:
            getattr(queuectl, name)
        public = [
            name for name in dir(queuectl)
            if not name.startswith("_") and name not in ("TYPE_CHECKING", "annotations")
            and not isinstance(getattr(queuectl, name), types.ModuleType)
        ]
        print(json.dumps(public))
        """
    )
    assert sorted(json.loads(out)) == sorted(queuectl.__all__)


def test_import_queuectl_loads_no_event_loop_and_no_driver() -> None:
    out = run_python(
        f"import json, sys, queuectl; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    assert json.loads(out) == []


#: Runs the ``queuectl`` entry point as the console script does, then reports, on the last line
#: of stdout, which of ``HEAVY`` the process imported.
ENTRY_POINT_PROBE = """
import json, sys
from queuectl.__main__ import run
sys.argv = ["queuectl", *sys.argv[1:]]
try:
    run()
except SystemExit as exit_:
    code = exit_.code
else:
    code = 0
sys.stdout.flush()
print(json.dumps({"code": code, "loaded": [m for m in HEAVY if m in sys.modules]}))
"""


@pytest.mark.parametrize(
    "args",
    [
        ["enqueue", "--command", "true"],
        ["enqueue", '{"command": "true", "priority": 3}'],
        ["enqueue", "--json", "--command", "true"],
    ],
    ids=["options", "json-argument", "json-output"],
)
def test_enqueue_on_sqlite_never_imports_asyncio(tmp_path: Path, args: list[str]) -> None:
    target = tmp_path / "queue.db"
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n{ENTRY_POINT_PROBE}", "--db", str(target), *args],
        capture_output=True,
        text=True,
        timeout=PROCESS_TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    *printed, report = done.stdout.splitlines()
    assert json.loads(report) == {"code": 0, "loaded": []}, done.stderr
    assert printed and printed[0].strip(), done.stdout  # the new job's id, or the job as JSON
    assert done.stderr == ""
    assert target.is_file()
