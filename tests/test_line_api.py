"""The SDK client and delivery policy against the fake LINE API, and the fake's own strictness."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from fakes.line_api import ACCESS_TOKEN, FakeLineApi, new_user_id, require_spec
from linebot.v3.messaging import PushMessageRequest, ReplyMessageRequest, TextMessage

from bot.channels.line.api import (
    LineApi,
    LineBadRequest,
    LineConflict,
    LineInvalidReplyToken,
    LineServerError,
)
from bot.channels.line.delivery import Delivery, LineDeliveryFailed, retry_key
from bot.channels.line.render import render
from bot.errors import DeliveryFailed
from bot.models import CardField, CardOut, Choice, ChoicesOut, TextOut


@pytest.fixture
def fake() -> Iterator[FakeLineApi]:
    with FakeLineApi(require_spec()) as api:
        yield api


@pytest.fixture
async def api(fake: FakeLineApi) -> AsyncIterator[LineApi]:
    client = await LineApi.open(base_url=fake.url, access_token=ACCESS_TOKEN, request_timeout=2)
    yield client
    await client.close()


def texts(*words: str) -> list[TextMessage]:
    return [TextMessage(text=w) for w in words]


async def test_a_reply_token_works_once(fake: FakeLineApi, api: LineApi) -> None:
    user = new_user_id()
    token = fake.reply_token(user)
    await api.reply(token, texts("一度目"))
    with pytest.raises(LineInvalidReplyToken) as refused:
        await api.reply(token, texts("二度目"))
    assert refused.value.status == 400 and refused.value.request_id
    assert fake.texts(user) == ["一度目"]


async def test_reply_tokens_expire(fake: FakeLineApi, api: LineApi) -> None:
    user = new_user_id()
    fake.token_ttl = 0.0
    with pytest.raises(LineInvalidReplyToken):
        await api.reply(fake.reply_token(user), texts("遅すぎ"))
    assert fake.seen(user) == []


async def test_a_retry_key_delivers_once(fake: FakeLineApi, api: LineApi) -> None:
    user = new_user_id()
    key = str(uuid.uuid4())
    await api.push(user, texts("一回だけ"), retry_key=key)
    with pytest.raises(LineConflict) as conflict:
        await api.push(user, texts("一回だけ"), retry_key=key)
    assert conflict.value.status == 409
    assert fake.texts(user) == ["一回だけ"]


async def test_requests_outside_the_spec_are_refused_with_details(
    fake: FakeLineApi, api: LineApi
) -> None:
    user = new_user_id()
    with pytest.raises(LineBadRequest) as refused:
        await api.push(user, texts("x" * 5001), retry_key=str(uuid.uuid4()))
    assert "messages[0].text: over 5000 characters" in str(refused.value)
    assert refused.value.request_id and refused.value.request_id in str(refused.value)
    [bad] = fake.invalid
    assert bad.status == 400 and bad.errors


async def test_a_wrong_access_token_is_refused(fake: FakeLineApi) -> None:
    client = await LineApi.open(base_url=fake.url, access_token="not-the-token")
    try:
        with pytest.raises(LineBadRequest) as refused:
            await client.push(new_user_id(), texts("a"), retry_key=str(uuid.uuid4()))
        assert refused.value.status == 401
    finally:
        await client.close()


async def test_server_errors_are_their_own_kind(fake: FakeLineApi, api: LineApi) -> None:
    fake.fail("push", 502)
    with pytest.raises(LineServerError):
        await api.push(new_user_id(), texts("a"), retry_key=str(uuid.uuid4()))


# ------------------------------------------------------------ delivery policy


async def test_a_reply_lost_after_delivery_is_not_pushed_again(
    fake: FakeLineApi, api: LineApi
) -> None:
    # LINE took the reply and spent the token, but answered 500: the retry then hears
    # "Invalid reply token" for a token that is fresh, so the first attempt got through.
    user = new_user_id()
    fake.fail("reply", 500, accept=True)
    delivery = Delivery(api=api, retry_delays=(0.01,))
    await delivery.deliver(
        user,
        render([TextOut(text="一度だけ")]),
        message_key="m1",
        reply_token=fake.reply_token(user),
    )
    assert fake.texts(user) == ["一度だけ"]
    assert fake.calls_of("push") == []


async def test_more_than_five_messages_reply_five_and_push_the_rest(
    fake: FakeLineApi, api: LineApi
) -> None:
    user = new_user_id()
    delivery = Delivery(api=api, retry_delays=(0.01,))
    messages = render([TextOut(text=str(i)) for i in range(7)])
    await delivery.deliver(user, messages, message_key="m2", reply_token=fake.reply_token(user))
    assert fake.texts(user) == [str(i) for i in range(7)]
    assert [d.via for d in fake.seen(user)] == ["reply"] * 5 + ["push"] * 2
    [push] = fake.calls_of("push")
    assert push.retry_key == retry_key("m2", 1)


async def test_a_refusal_is_the_shared_delivery_failure(fake: FakeLineApi, api: LineApi) -> None:
    fake.fail("push", 400, message="Invalid to")
    delivery = Delivery(api=api, retry_delays=(0.01,))
    with pytest.raises(DeliveryFailed) as failed:
        await delivery.push(new_user_id(), render([TextOut(text="a")]), message_key="m3")
    assert isinstance(failed.value, LineDeliveryFailed)
    assert not failed.value.retryable and not failed.value.replied


async def test_retry_keys_are_stable_uuids() -> None:
    assert retry_key("line-outbox:1:1:U1", 0) == retry_key("line-outbox:1:1:U1", 0)
    assert retry_key("line-outbox:1:1:U1", 0) != retry_key("line-outbox:1:1:U1", 1)
    assert uuid.UUID(retry_key("x", 0)).version == 5


async def test_a_proxy_named_in_the_environment_carries_the_calls(
    fake: FakeLineApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The proxy is read once when the client opens (not per call): here the fake stands in
    # for it, so a call to a host that does not exist still arrives.
    monkeypatch.setenv("HTTP_PROXY", fake.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = await LineApi.open(base_url="http://api.line.invalid", access_token=ACCESS_TOKEN)
    user = new_user_id()
    try:
        await client.push(user, texts("プロキシ経由"), retry_key=str(uuid.uuid4()))
    finally:
        await client.close()
    assert fake.texts(user) == ["プロキシ経由"]


async def test_what_line_receives_is_what_the_sdk_alone_would_send(
    fake: FakeLineApi, api: LineApi
) -> None:
    # Messages are serialised once per rendered object and reused; the bodies must still be
    # exactly the SDK's own serialisation, the first time and every time after.
    turn = [
        TextOut(text="こんにちは。" * 900),  # split in two bubbles
        ChoicesOut(
            state="ask_reasons",
            text="当てはまるものは？",
            choices=(
                Choice(id="invisible", label="成果が見えにくい", selected=True),
                Choice(id="routine", label="毎日同じことの繰り返しで、変化がない"),
                Choice(id="__done__", label="これで全部"),
            ),
            multi=True,
        ),
        CardOut(
            title="まとめ",
            fields=(CardField(label="職種", value="経理"), CardField(label="資格", value="")),
            footer="いつでも相談してくださいね",
        ),
    ]
    user = new_user_id()
    for round_ in range(2):
        messages = render(turn)
        token = fake.reply_token(user)
        await api.reply(token, messages[:5])
        await api.push(user, messages[:5], retry_key=str(uuid.uuid4()))
        [*_, replied] = fake.calls_of("reply")
        [*_, pushed] = fake.calls_of("push")
        assert replied.body == ReplyMessageRequest(replyToken=token, messages=messages).to_dict()
        assert pushed.body == PushMessageRequest(to=user, messages=messages).to_dict(), round_
    agent = render([TextOut(text="担当の佐藤です")], sender_name="佐藤")
    await api.push(user, agent, retry_key=str(uuid.uuid4()))
    [*_, pushed] = fake.calls_of("push")
    assert pushed.body["messages"][0]["sender"] == {"name": "佐藤"}
    assert fake.invalid == []
