"""What every command shares: the store and the API client, made on first use, and
reading the files a command is given."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from localstore.errors import UsageError

if TYPE_CHECKING:
    from localstore.api import Client
    from localstore.store.db import Store

# set by the program's entry point (`main`), never by an in-process runner such as
# click's CliRunner, so that ignoring Ctrl-C never leaks into a host process
_RUNNING_AS_PROGRAM = False


def running_as_program() -> None:
    global _RUNNING_AS_PROGRAM
    _RUNNING_AS_PROGRAM = True


class Context:
    def __init__(self, db: str | None, server_url: str | None) -> None:
        self.db = db
        self.server_url = server_url
        self._store: Store | None = None

    @property
    def store(self) -> Store:
        if self._store is None:
            from localstore.store.db import Store

            if self.db is not None:
                check_db_folder(self.db)
            self._store = Store.open(self.db)
        return self._store

    def client(self, **kw: Any) -> Client:
        from localstore.api import API_KEY_ENV, Client

        if not (os.environ.get(API_KEY_ENV) or "").strip():
            raise UsageError(
                f"{API_KEY_ENV} is not set: this command talks to the API, so export your "
                f"Mistral API key first ({API_KEY_ENV}=...); `localstore demo` needs none"
            )
        return Client.from_env(self.server_url, **kw)

    def work_is_done(self) -> None:
        """From here the command only reports what it did: a Ctrl-C can no longer change
        anything, so it must not turn a finished command into "interrupted" (exit 130)
        after the report said otherwise."""
        if _RUNNING_AS_PROGRAM:
            signal.signal(signal.SIGINT, signal.SIG_IGN)

    def close(self) -> None:
        if self._store is not None:
            self._store.close()


pass_ctx = click.make_pass_decorator(Context)


def check_db_folder(db: str) -> None:
    """A store given with --db or LOCALSTORE_DB goes in a folder that exists: a typo in
    the path is an error, not a new folder (the default location is created)."""
    folder = Path(db).expanduser().parent
    if not folder.is_dir():
        what = "is not a directory" if folder.exists() else "does not exist"
        raise UsageError(f"cannot open the store {db}: the folder {folder} {what} (create it, or fix --db / LOCALSTORE_DB)")


def read_json_file(path: str, what: str) -> dict[str, Any]:
    from localstore.ops.edits import parse_json_object_text

    return parse_json_object_text(read_text_file(path, what), f"{what} {path}")


def read_text_file(path: str, what: str) -> str:
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except UnicodeDecodeError:
        raise UsageError(f"{what} {path} is not UTF-8 text") from None
    except OSError as exc:
        raise UsageError(f"cannot read {what} {path}: {exc.strerror}") from None
