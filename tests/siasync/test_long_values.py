"""Values longer than a column of the job store are refused with a 4xx naming them, on SQLite (which would
store them) and on PostgreSQL (which would fail on them) alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from siasync.auth import read_tokens

FORM = {"POS": "150.1,2.2", "SIZE": "0.01"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest) -> dict[str, str]:
    """The settings of an app on each store."""
    return {} if request.param == "sqlite" else {"database_url": request.getfixturevalue("new_database")()}


def test_owner_runid_and_upload_names_too_long_are_refused_naming_them(make_client: Callable[..., Any],
                                                                       store: dict[str, str]) -> None:
    with make_client(auth="header", **store) as client:
        for owner in ("o" * 256, "o" * 1000):
            for method, path in (("POST", "/async"), ("GET", "/async"), ("GET", "/async/0123456789abcdef")):
                answer = client.request(method, path, data=FORM if method == "POST" else None,
                                        headers={"X-Remote-User": owner})
                assert answer.status_code == 400, answer.text
                assert answer.text.startswith("UsageError: X-Remote-User: ") and "at most 255" in answer.text
        longest = {"X-Remote-User": "o" * 255}
        created = client.post("/async", data={**FORM, "RUNID": "r" * 255}, headers=longest, follow_redirects=False)
        assert created.status_code == 303, created.text
        assert client.get(created.headers["location"] + "/owner", headers=longest).text == "o" * 255
        too_long = client.post("/async", data={**FORM, "RUNID": "r" * 256}, headers=longest)
        assert too_long.status_code == 400 and too_long.text.startswith("UsageError: RUNID: ")
        upload = client.post("/async", data={"SIZE": "0.01", "UPLOAD": f"{'n' * 65},param:t"},
                             files={"t": ("t.csv", b"ra,dec\n150.1,2.2\n", "text/csv")}, headers=longest)
        assert upload.status_code == 400 and upload.text.startswith("UsageError: UPLOAD: "), upload.text
        assert len(client.get("/async", headers={"Accept": "application/json", **longest}).json()) == 1


def test_a_tokens_file_owner_too_long_is_refused_at_start(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.txt"
    tokens.write_text(f"tok-a alice\ntok-b {'b' * 256}\n")
    with pytest.raises(ValueError, match="tokens.txt:2: the owner name is longer than 255"):
        read_tokens(tokens)
