"""LINE pushes cost money: replies are used while the reply token lives (free), and the push
quota and its consumption are read (through the SDK, from the fake LINE API) into /metrics,
with a warning in the log past 80 %."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fakes.clock import FakeClock
from fakes.line_api import FakeLineApi, Webhooks, new_user_id, require_spec
from fakes.served import serving_app
from pydantic import SecretStr
from test_line import FAST_RETRIES, line_settings, until
from test_timers import Served

from bot.channels.line.adapter import WEBHOOK_PATH, LineChannel
from bot.core.timers import schedule_say
from bot.http.app import create_app
from bot.models import Channel, ConversationKey, TextOut

TOKEN = "metrics-token-for-quota"


@pytest.fixture
def fake() -> Iterator[FakeLineApi]:
    with FakeLineApi(require_spec()) as api:
        yield api
        assert [(c.operation, c.errors) for c in api.invalid] == []


@pytest.fixture
async def served(tmp_path: Path, fake: FakeLineApi) -> AsyncIterator[tuple[Served, str]]:
    clock = FakeClock()
    settings = line_settings(tmp_path / "db.sqlite", fake, metrics_token=SecretStr(TOKEN))
    app = create_app(
        settings,
        channels=[LineChannel(retry_delays=FAST_RETRIES, loading_after=None)],
        clock=clock,
    )
    async with serving_app(app) as url:
        hooks = Webhooks(url + WEBHOOK_PATH, fake=fake)
        yield Served(app=app, fake=fake, hooks=hooks, clock=clock), url


async def metric(url: str, name: str) -> float:
    async with httpx.AsyncClient() as client:
        page = await client.get(url + "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert page.status_code == 200
    for line in page.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


async def test_replies_are_free_pushes_count_and_the_quota_reaches_metrics(
    served: tuple[Served, str], caplog: pytest.LogCaptureFixture
) -> None:
    bot, url = served
    runtime, fake = bot.runtime, bot.fake
    assert runtime.quota is not None
    user = new_user_id()
    await bot.hooks.send(bot.hooks.follow(user))
    await runtime.worker.idle()
    await until(lambda: bool(fake.seen(user)))
    assert {d.via for d in fake.seen(user)} == {"reply"}  # the token was alive: no push

    quota = await runtime.quota.check()
    assert (quota.limit, quota.used) == (200, 0)
    assert await metric(url, "yarigai_line_quota_used_messages") == 0

    # A message the bot sends by itself has no reply token: it is pushed, and counted.
    stored = await runtime.store.load(ConversationKey(channel=Channel.LINE, address=user))
    assert stored is not None
    await schedule_say(
        runtime.store,
        "quota-test",
        conversation_id=stored.id,
        due_at=bot.clock.now(),
        messages=[TextOut(text="お知らせです")],
    )
    assert await runtime.timers.run_due() == 1
    await until(lambda: fake.texts(user)[-1] == "お知らせです")
    assert fake.seen(user)[-1].via == "push"
    caplog.set_level(logging.WARNING, logger="bot.channels.line.quota")
    fake.extra_usage = 150
    quota = await runtime.quota.check()
    assert quota.used == 151
    assert await metric(url, "yarigai_line_quota_messages") == 200
    assert await metric(url, "yarigai_line_quota_used_ratio") == pytest.approx(0.755)
    assert not [r for r in caplog.records if "quota" in r.getMessage()]

    fake.extra_usage = 170  # 171 of 200: past 80 %
    await runtime.quota.check()
    [warning] = [r for r in caplog.records if "quota" in r.getMessage()]
    assert warning.levelno == logging.WARNING and "86% used (171 of 200" in warning.getMessage()

    fake.quota_limit = None  # a plan without a monthly limit
    await runtime.quota.check()
    assert await metric(url, "yarigai_line_quota_messages") == -1
    assert await metric(url, "yarigai_line_quota_used_ratio") == 0
    assert [c.operation for c in fake.calls if c.operation.startswith("quota")][:2] == [
        "quota",
        "quota consumption",
    ]


async def test_a_failing_quota_read_is_a_warning_and_the_watch_goes_on(
    served: tuple[Served, str], caplog: pytest.LogCaptureFixture
) -> None:
    bot, _ = served
    assert bot.runtime.quota is not None
    bot.fake.fail("quota", 500)
    caplog.set_level(logging.WARNING)
    watch = bot.runtime.quota
    watch.every = 0.05
    await watch.close()
    watch.start()
    await until(lambda: any("LINE quota not read" in r.getMessage() for r in caplog.records))
    await until(lambda: len(bot.fake.calls_of("quota consumption")) >= 1)
    await watch.close()
