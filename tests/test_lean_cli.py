"""Commands that do not talk to the network import neither the network stack (httpx),
the emulator (FastAPI, uvicorn) nor SQLAlchemy: they cost every user start-up time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from localstore.api import Client
from localstore.ops import edits
from localstore.store.db import Store
from localstore.sync.pull import pull

HEAVY = ("httpx", "httpcore", "fastapi", "starlette", "uvicorn", "sqlalchemy", "sqlmodel", "pydantic", "watchfiles", "mistralai")

PROBE = """
import json, sys
watched = set(json.loads(sys.argv[2]))
sys.argv = ["localstore", *json.loads(sys.argv[1])]
from localstore.cli import app as cli
try:
    cli.main()
except SystemExit:
    pass
heavy = sorted({m.split(".")[0] for m in sys.modules} & watched)
print("HEAVY=" + json.dumps(heavy))
"""


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory, emulator, api_key: str) -> tuple[Path, list[str]]:  # type: ignore[no-untyped-def]
    from localstore_emulator import seed_dataset

    dataset_id = seed_dataset(emulator.state, 5, name="lean-cli")
    path = tmp_path_factory.mktemp("lean") / "store.db"
    with Store.open(path) as store, Client(emulator.url, api_key) as client:
        pull(store, client, [dataset_id])
        ids = [r[0] for r in store.conn.execute("SELECT id FROM records ORDER BY id")]
        edits.set_properties(store, ids[0], {"label": "x"})
    return path, [dataset_id, *ids]


OFFLINE = [
    ["status"],
    ["status", "--json"],
    ["records", "--json"],
    ["show", "{r1}"],
    ["set", "{r2}", "label=lean"],
    ["unset", "{r2}", "label"],
    ["rm", "{r3}"],
    ["revert", "{r3}"],
    ["diff"],
    ["log", "--json"],
    ["conflicts"],
    ["sql", "--json", "select count(*) as n from messages"],
    ["datasets"],
    ["add", "{ds}", "--payload-file", "{payload}"],
]


@pytest.mark.parametrize("args", OFFLINE, ids=lambda a: " ".join(a[:2]))
def test_offline_commands_stay_lean(args: list[str], store_path: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, (ds, r1, r2, r3, *_) = store_path
    payload = tmp_path / "p.json"
    payload.write_text('{"messages": []}')
    argv = ["--db", str(path), *(a.format(ds=ds, r1=r1, r2=r2, r3=r3, payload=payload) for a in args)]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(HEAVY)],
        capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", "MISTRAL_API_KEY": ""}, timeout=60,
    )
    line = [x for x in out.stdout.splitlines() if x.startswith("HEAVY=")]
    assert line, out.stderr
    assert json.loads(line[0][len("HEAVY="):]) == [], f"{args[0]} imported heavy modules"
    assert "internal error" not in out.stderr


WITHOUT_EMULATOR_EXTRA = """
import sys

class Missing:
    # as if FastAPI and uvicorn were not installed (a plain `pip install localstore`)
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("fastapi", "uvicorn"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Missing())
sys.argv = ["localstore", *sys.argv[1:]]
from localstore.cli import main
main()
"""


@pytest.mark.parametrize("command", ["demo", "emulator"])
def test_without_the_emulator_extra_one_line_says_what_to_install(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EMULATOR_EXTRA, command],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 1
    assert done.stderr == (
        f"localstore: error: localstore {command} needs the emulator extra: "
        "pip install 'localstore[emulator]'\n"
    )
    assert done.stdout == ""


def test_import_localstore_is_lean() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import json, sys, localstore; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    loaded = {m.split(".")[0] for m in json.loads(done.stdout)}
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    assert not any(m.startswith("localstore.") for m in json.loads(done.stdout) if m != "localstore.version")


def test_networked_commands_leave_out_the_httpx_command_line(
    store_path: tuple[Path, list[str]], emulator, api_key: str  # type: ignore[no-untyped-def]
) -> None:
    """`sync` talks to the server through httpx, but not through httpx's own command line,
    which would import click's and rich's friends (pygments) for nothing."""
    path, _ = store_path
    argv = ["--db", str(path), "sync", "--dry-run"]
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(argv), json.dumps(["httpx", "pygments"])],
        capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "MISTRAL_API_KEY": api_key, "LOCALSTORE_SERVER_URL": emulator.url},
    )
    line = [x for x in out.stdout.splitlines() if x.startswith("HEAVY=")]
    assert line, out.stderr
    assert json.loads(line[0][len("HEAVY="):]) == ["httpx"], out.stderr
    assert "internal error" not in out.stderr
