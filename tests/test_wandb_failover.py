"""W&B online with a bad key or no network falls back to offline W&B at once (issue 15): W&B's own init waits a
minute per run before giving up; a sweep of 50 units would lose most of an hour."""

import socket

import pytest

from plmbench.lit import loggers


def closed_port() -> int:
    with socket.socket() as probe:  # a port nothing listens on: connections are refused at once
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def unreachable_server(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)  # a key of the right form that no server would accept
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(loggers, "ONLINE_FAILED", [])
    return {"kind": "wandb", "mode": "online", "dir": str(tmp_path / "wb")}


def test_an_unreachable_server_logs_offline_and_says_why(unreachable_server, tmp_path, caplog):
    logger = loggers.build_logger(unreachable_server, tmp_path / "run", "unit", {"a": 1})
    try:
        assert type(logger).__name__ == "WandbLogger"  # still W&B (sync later), not the CSV fallback
        assert logger.experiment.settings.mode == "offline"
        assert "unreachable" in loggers.ONLINE_FAILED[0] and "unreachable" in caplog.text
    finally:
        loggers.finish_run(logger)
    # the next run of the process does not probe or wait again
    assert loggers.online_or_offline("online") == "offline" and len(loggers.ONLINE_FAILED) == 1


def test_offline_and_no_credentials_never_touch_the_network(monkeypatch):
    monkeypatch.setattr(loggers, "ONLINE_FAILED", [])
    assert loggers.online_or_offline("offline") == "offline"
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")
    assert loggers.online_or_offline("online") == "offline" and loggers.ONLINE_FAILED == []
