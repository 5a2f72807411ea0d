"""Settings: bounds between settings (a lease a healthy worker can keep), and texts kept as given."""

from __future__ import annotations

import pytest
from helpers import Cli, assert_error, ok

from queuectl import Queue
from queuectl.config import SETTINGS, Settings, check_together, setting_texts
from queuectl.errors import InvalidSetting

# --- lease >= 2 x poll_interval, checked whichever of the two is set ----------------------------


@pytest.mark.parametrize(
    ("key", "text", "says"),
    [
        (
            "lease",
            "0.5",
            "lease 0.5s is too short for poll_interval 0.5s: lease must be at least 2 x poll_interval;"
            " set lease to 1s or more, or first set poll_interval to 0.25s or less",
        ),
        (
            "poll_interval",
            "20",
            "poll_interval 20s is too long for lease 30s: lease must be at least 2 x poll_interval;"
            " set poll_interval to 15s or less, or first set lease to 40s or more",
        ),
        ("lease", "0.1", "set lease to 1s or more"),
        ("poll-interval", "1m", "set poll_interval to 15s or less"),
    ],
)
async def test_a_lease_shorter_than_two_poll_intervals_is_refused_and_nothing_written(
    store_target: str, key: str, text: str, says: str
) -> None:
    async with await Queue.open(store_target) as queue:
        with pytest.raises(InvalidSetting) as refused:
            await queue.set_setting(key, text)
        assert str(refused.value) == says or says in str(refused.value)
        assert refused.value.exit_code == 2
        assert await queue.store.stored_settings() == {}
        assert await queue.settings() == Settings()


async def test_lease_then_poll_interval_may_both_grow(store_target: str) -> None:
    async with await Queue.open(store_target) as queue:
        assert await queue.set_setting("lease", "120") == 120.0
        assert await queue.set_setting("poll_interval", "60") == 60.0
        settings = await queue.settings()
        assert (settings.lease, settings.poll_interval) == (120.0, 60.0)
        # Now the lease is the one that cannot shrink below two polls.
        with pytest.raises(InvalidSetting, match="set lease to 2m or more"):
            await queue.set_setting("lease", "119")
        assert (await queue.settings()).lease == 120.0


def test_check_together_accepts_exactly_two_poll_intervals() -> None:
    check_together(Settings(lease=1.0, poll_interval=0.5))
    with pytest.raises(InvalidSetting):
        check_together(Settings(lease=0.99, poll_interval=0.5))


def test_config_set_refuses_a_lease_shorter_than_two_poll_intervals(cli: Cli) -> None:
    assert_error(
        cli("config", "set", "lease", "0.5"), 2, "lease 0.5s is too short", "set lease to 1s or more"
    )
    assert_error(cli("config", "set", "poll_interval", "3600"), 2, "poll_interval", "<= 1m")
    assert_error(cli("config", "set", "poll_interval", "20"), 2, "set poll_interval to 15s or less")
    assert ok(cli("config", "show", "--json")).json() == Settings().to_dict()
    assert ok(cli("config", "set", "lease", "120")).out == b""
    assert ok(cli("config", "set", "poll_interval", "60")).out == b""
    shown = ok(cli("config", "show", "--json")).json()
    assert (shown["lease"], shown["poll_interval"]) == (120.0, 60.0)


# --- texts as given -------------------------------------------------------------------------------


async def test_settings_keep_the_text_they_were_given(store_target: str) -> None:
    async with await Queue.open(store_target) as queue:
        assert await queue.set_setting("default_timeout", " 5m\n") == 300.0
        await queue.set_setting("lease", "1h30m")
        await queue.set_setting("backoff_max", "1e3")
        await queue.set_setting("max-retries", "5")  # stored under the key's own name
        texts = await queue.setting_texts()
        assert list(texts) == list(SETTINGS)
        assert texts["default_timeout"] == "5m"
        assert texts["lease"] == "1h30m"
        assert texts["backoff_max"] == "1e3"
        assert texts["max_retries"] == "5"
        assert texts["poll_interval"] == "0.5"  # never set: its default, as a number
        settings = await queue.settings()
        assert (settings.default_timeout, settings.lease, settings.backoff_max) == (300.0, 5400.0, 1000.0)
        assert settings.max_retries == 5
        await queue.set_setting("default_timeout", "None")
        assert (await queue.setting_texts())["default_timeout"] == "none"
        assert (await queue.settings()).default_timeout is None


async def test_a_job_takes_a_default_timeout_given_as_a_duration(store_target: str) -> None:
    async with await Queue.open(store_target) as queue:
        await queue.set_setting("default_timeout", "1h30m")
        job = await queue.enqueue(command="true")
        assert job.timeout == 5400.0
        assert job.to_dict()["timeout"] == 5400.0  # job fields show durations as seconds


def test_setting_texts_fall_back_to_the_default_for_a_bad_stored_value() -> None:
    texts = setting_texts({"lease": "soon", "max_retries": "4", "unknown": "x"})
    assert texts["lease"] == "30" and texts["max_retries"] == "4"
    assert "unknown" not in texts
    assert texts["default_timeout"] == "none"


def test_config_show_json_shows_a_duration_setting_as_seconds(cli: Cli) -> None:
    ok(cli("config", "set", "default_timeout", "5m"))
    assert ok(cli("config", "show", "--json")).json()["default_timeout"] == 300.0
    assert ok(cli("config", "get", "default_timeout", "--json")).json() == 300.0


def test_config_get_and_show_print_a_setting_as_given(cli: Cli) -> None:
    ok(cli("config", "set", "default_timeout", "5m"))
    assert ok(cli("config", "get", "default_timeout")).stdout == "5m\n"
    rows = {line.split()[0]: line.split()[1] for line in ok(cli("config", "show")).stdout.splitlines()[1:]}
    assert rows["default_timeout"] == "5m"
