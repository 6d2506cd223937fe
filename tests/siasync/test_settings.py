"""Settings: defaults, SIASYNC_* variables, overrides, and refusal of bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from siasync.auth import Authenticator, read_tokens
from siasync.errors import AuthenticationError
from siasync.settings import Settings


def test_environment_then_overrides() -> None:
    env = {"SIASYNC_PORT": "9001", "SIASYNC_STATE_DIR": "/srv/state", "SIASYNC_PUBLIC_URL": "https://x.org/sia",
           "SIASYNC_MAX_SIZE_DEG": "0.5", "SIASYNC_AUTH": "header", "UNRELATED": "1"}
    settings = Settings.from_env(env, port=9002, host=None)
    assert settings.port == 9002 and settings.host == "127.0.0.1"
    assert settings.state_dir == Path("/srv/state") and settings.public_url == "https://x.org/sia"
    assert settings.max_size_deg == 0.5 and settings.auth == "header"
    assert settings.database == "sqlite+aiosqlite:////srv/state/siasync.db"
    assert Settings.from_env(env, database_url="postgresql+asyncpg://db/siasync").database.startswith("postgresql")
    for executor in ("local", "dask-local", "dask-local:4", "dask://scheduler.example.org:8786"):
        assert Settings.from_env({"SIASYNC_EXECUTOR": executor}).executor == executor
    assert Settings.from_env({"SIASYNC_UPLOAD_URLS": "https://a.org/lists/, http://b.org/x/"}).upload_urls == (
        "https://a.org/lists/", "http://b.org/x/")


@pytest.mark.parametrize("env,message", [
    ({"SIASYNC_PORT": "eighty"}, "SIASYNC_PORT"),
    ({"SIASYNC_AUTH": "kerberos"}, "auth must be one of"),
    ({"SIASYNC_UPLOAD_URLS": "https://a.org"}, "must be an http\\(s\\) URL with a path"),
    ({"SIASYNC_UPLOAD_URLS": "file:///etc/"}, "must be an http\\(s\\) URL with a path"),
    ({"SIASYNC_AUTH": "token"}, "tokens_file"),
    ({"SIASYNC_WORKERS": "0"}, "workers must be positive"),
    ({"SIASYNC_OWNER_ACTIVE_JOBS": "0"}, "owner_active_jobs must be positive"),
    ({"SIASYNC_SCHEDULING": "lottery"}, "scheduling must be fair or fifo"),
    ({"SIASYNC_EXECUTOR": "dask"}, "executor must be local"),
    ({"SIASYNC_EXECUTOR": "dask-local:0"}, "executor must be local"),
    ({"SIASYNC_EXECUTOR": "dask://scheduler"}, "executor must be local"),
    ({"SIASYNC_DESTRUCTION_DEFAULT_S": "999999999"}, "a default may not exceed its maximum"),
])
def test_bad_settings_are_refused(env: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_token_file_and_authenticator(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("# comment\n\nabc123 alice\nxyz bob  # trailing comment\n")
    assert read_tokens(tokens) == {"abc123": "alice", "xyz": "bob"}
    auth = Authenticator(Settings(auth="token", tokens_file=tokens))
    assert auth.owner({"authorization": "Bearer xyz"}) == "bob"
    with pytest.raises(AuthenticationError) as info:
        auth.owner({"authorization": "Bearer nope"})
    assert "invalid_token" in info.value.headers["WWW-Authenticate"]
    tokens.write_text("only-one-field\n")
    with pytest.raises(ValueError, match="TOKEN OWNER"):
        read_tokens(tokens)


def test_each_executor_setting_makes_its_pool() -> None:
    from siasync.staging.dask_pool import DaskPool
    from siasync.staging.pool import LocalPool, make_pool

    local = make_pool("local", 3)
    assert isinstance(local, LocalPool) and local.workers == 3
    for executor, address, workers in (("dask-local", None, 5), ("dask-local:2", None, 2),
                                       # a running cluster's threads are counted when it is connected
                                       ("dask://sched.example.org:8786", "tcp://sched.example.org:8786", 1)):
        pool = make_pool(executor, 5)
        assert isinstance(pool, DaskPool) and (pool.address, pool.workers) == (address, workers)
