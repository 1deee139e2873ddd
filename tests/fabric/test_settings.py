import dataclasses

import pytest

from fabric.settings import Settings, mask_url


def test_defaults_run_on_the_simulator() -> None:
    s = Settings.from_env({})
    assert s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.celery_broker_url == "redis://127.0.0.1:6379/1"
    assert s.uses_simulator and s.massive_api_key is None
    assert s.massive_rest_url == "http://127.0.0.1:8765"
    assert s.massive_ws_url == "ws://127.0.0.1:8765"
    assert s.underlyings == ("SPY", "SPX")
    assert s.epoch_retire_ttl_s == 300
    assert s.epoch_max_warming_s == 30
    assert s.epoch_required_components == ("ingest", "heatmap", "gex")
    assert Settings.from_env({"MMAKER_EPOCH_REQUIRED": "none"}).epoch_required_components == ()
    assert s.massive_asset("SPX") == "I:SPX" and s.massive_asset("spy") == "SPY"
    assert s.bucket_width("SPX") == 5.0 and s.bucket_width("IWM") == 1.0


def test_api_key_switches_to_massive_and_is_never_shown() -> None:
    s = Settings.from_env({"MASSIVE_API_KEY": "sekret-key-123", "REDIS_URL": "redis://:pw123@h:6380/2"})
    assert not s.uses_simulator
    assert s.massive_rest_url == "https://api.massive.com"
    assert s.massive_ws_url == "wss://socket.massive.com"
    assert s.celery_broker_url == "redis://:pw123@h:6380/3"
    shown = repr(s) + str(s.describe())
    assert "sekret-key-123" not in shown and "pw123" not in shown


def test_settings_are_frozen() -> None:
    s = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.redis_url = "x"  # type: ignore[misc]


def test_environment_overrides() -> None:
    s = Settings.from_env(
        {
            "MMAKER_UNDERLYINGS": "spy, qqq ,SPX",
            "MMAKER_BUCKET_WIDTHS": "QQQ:2.5",
            "MMAKER_EPOCH_REQUIRED": "Ingest,gex",
            "CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
            "MMAKER_EPOCH_RETIRE_TTL_S": "60",
        }
    )
    assert s.underlyings == ("SPY", "QQQ", "SPX")
    assert s.bucket_width("QQQ") == 2.5
    assert s.epoch_required_components == ("ingest", "gex")
    assert s.celery_broker_url.startswith("amqp://")
    assert s.epoch_retire_ttl_s == 60


def test_chain_limits_for_a_hostile_world() -> None:
    s = Settings.from_env({})
    assert (s.chain_max_page_mb, s.chain_snapshot_deadline_s) == (16.0, 45.0)
    assert (s.chain_max_rejected_share, s.chain_max_size_change) == (0.05, 0.5)
    env = {"MMAKER_CHAIN_MAX_PAGE_MB": "4", "MMAKER_CHAIN_SNAPSHOT_DEADLINE_S": "20",
           "MMAKER_CHAIN_MAX_REJECTED_SHARE": "0.1", "MMAKER_CHAIN_MAX_SIZE_CHANGE": "0.8"}  # fmt: skip
    s = Settings.from_env(env)
    assert (s.chain_max_page_mb, s.chain_snapshot_deadline_s) == (4.0, 20.0)
    assert (s.chain_max_rejected_share, s.chain_max_size_change) == (0.1, 0.8)


def test_mask_url() -> None:
    assert mask_url("rediss://user:pw@host:6379/0") == "rediss://user:***@host:6379/0"
    assert mask_url("redis://host:6379/0") == "redis://host:6379/0"


def test_web_limits_have_production_defaults_and_floors() -> None:
    from fabric.settings import SettingsError

    s = Settings.from_env({})
    assert s.web_max_connections == 8000 and s.web_max_header_bytes == 16384
    assert s.web_max_headers == 100 and s.web_header_timeout_s == 10.0
    assert Settings.from_env({"MMAKER_WEB_MAX_CONNECTIONS": "200"}).web_max_connections == 200
    # floors: a browser's request must still fit, and a zero deadline would refuse every connection — a value
    # below one is refused at start, naming the variable, instead of running with limits nobody asked for
    for env, value in (("MMAKER_WEB_MAX_HEADER_BYTES", "10"), ("MMAKER_WEB_MAX_HEADERS", "2"),
                       ("MMAKER_WEB_HEADER_TIMEOUT_S", "0")):  # fmt: skip
        with pytest.raises(SettingsError, match=f"^{env}='{value}': must be at least"):
            Settings.from_env({env: value})
    floor = {"MMAKER_WEB_MAX_HEADER_BYTES": "1024", "MMAKER_WEB_MAX_HEADERS": "8", "MMAKER_WEB_HEADER_TIMEOUT_S": "0.1"}
    small = Settings.from_env(floor)
    assert small.web_max_header_bytes == 1024 and small.web_max_headers == 8 and small.web_header_timeout_s == 0.1


def test_the_configuration_reference_is_generated_from_the_declarations() -> None:
    """``docs/configuration.md`` holds exactly what the declarations generate: a setting added, renamed or
    re-documented without regenerating the page fails here (``python -m fabric.settings --markdown``)."""
    from pathlib import Path

    from fabric.settings import configuration_markdown, declarations

    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    between = page.split("<!-- settings:start -->\n", 1)[1].split("<!-- settings:end -->", 1)[0]
    assert between == configuration_markdown()
    envs = [spec.env for _, spec, _ in declarations()]
    assert len(envs) == len(set(envs)) and all(f"`{env}`" in between for env in envs)


def test_a_bad_value_is_one_line_naming_the_variable_and_what_is_allowed() -> None:
    from fabric.settings import SettingsError

    cases = {
        "MMAKER_HEATMAP_INTERVAL_MS": ("100", "MMAKER_HEATMAP_INTERVAL_MS='100': must be between 250 and 1000 ms"),
        "MMAKER_WEB_MAX_HEADERS": ("4", "MMAKER_WEB_MAX_HEADERS='4': must be at least 8"),
        "MMAKER_CHAIN_TIMEOUT_S": ("soon", "MMAKER_CHAIN_TIMEOUT_S='soon': could not convert string to float"),
        "MMAKER_INGEST_TRADES_WILDCARD": ("maybe", "MMAKER_INGEST_TRADES_WILDCARD='maybe': expected 1/0"),
        "MMAKER_BUCKET_WIDTHS": ("SPX=5", "MMAKER_BUCKET_WIDTHS='SPX=5': expected UNDERLYING:NUMBER pairs"),
        "MMAKER_LOG_LEVEL": ("loud", "MMAKER_LOG_LEVEL='loud': expected DEBUG, INFO"),
    }
    for env, (value, message) in cases.items():
        with pytest.raises(SettingsError) as raised:
            Settings.from_env({env: value})
        assert str(raised.value).startswith(message) and "\n" not in str(raised.value), str(raised.value)
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"MMAKER_WEB_TOKEN": "   "})  # blank: unset, not an error
        raise SettingsError("no error")
    assert str(raised.value) == "no error"


def test_groups_read_one_concern_without_its_prefix() -> None:
    s = Settings.from_env({"MMAKER_INGEST_PIPELINE_DEPTH": "1"})
    assert s.ingest.pipeline_depth == 1 and s.ingest.batch_max_events == s.ingest_batch_max_events
    assert s.chain.timeout_s == 10.0 and s.web.max_headers == 100 and s.record.rotate_mb == 64.0
    assert "silent_s" in s.ingest.names()
    with pytest.raises(AttributeError, match="no setting ingest_nothing"):
        _ = s.ingest.nothing
