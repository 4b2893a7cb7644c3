"""Users' data rights (APPI): deleting everything on request in the chat, `yarigai users
export/forget`, the same as admin routes of the agent API, the audit log, and retention."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from agent_app import agent_app
from click.testing import CliRunner
from fakes.line_api import BOT_USER_ID, CHANNEL_SECRET, FakeLineApi, sign
from test_limits import Served, line_api, line_event, served, slack_api  # noqa: F401

from bot.cli.main import main
from bot.core.service import FORGET_NO, FORGET_STATE, FORGET_YES, FORGOTTEN
from bot.models import Channel, ConversationKey, ConversationState
from bot.store import AgentStore, BookingStore, SqlStore, TranscriptEntry
from bot.store.handoffs import HandoffStore
from bot.store.schema import (
    audit_log,
    bookings,
    contacts,
    conversations,
    handoffs,
    inbox,
    messages,
    mode_changes,
    outbox,
)
from bot.store.users import subject_of

USER_TABLES = (conversations, messages, handoffs, mode_changes, outbox, contacts, bookings)


async def counts(store: SqlStore) -> dict[str, int]:
    async with store.engine.connect() as connection:
        found = {}
        for table in (*USER_TABLES, audit_log):
            query = sa.select(sa.func.count()).select_from(table)
            found[table.name] = int((await connection.execute(query)).scalar_one())
        return found


async def inbox_rows(store: SqlStore) -> list[dict[str, Any]]:
    async with store.engine.connect() as connection:
        rows = await connection.execute(sa.select(inbox).order_by(inbox.c.id))
        return [dict(row._mapping) for row in rows]


async def a_user_with_everything(store: SqlStore, key: ConversationKey) -> None:
    """A conversation with a transcript, a handoff (and its mode change), an undelivered
    reply, two recorded inbound events (one run, one still pending: the inbox finds them by
    different indexes), contact details and a booking: all the kinds of row a user leaves."""
    state = ConversationState(flow="career", flow_version="1", state="ask_role", slots={"a": 1})
    for event_id, text in (
        (f"ev-run-{key.address}", "こんにちは"),
        (f"ev-{key.address}", "経理です"),
    ):
        await store.record_event(
            channel=key.channel,
            event_id=event_id,
            address=key.address,
            payload={"text": text},
            occurred_at=datetime.now(UTC),
        )
    [run, _] = await store.pending_events(channel=key.channel, address=key.address)
    await store.mark_processed(run.id)
    saved = await store.save_turn(
        key,
        state=state,
        expected_version=None,
        inbound=[TranscriptEntry(direction="in", sender="user", text="経理です")],
        outbound=[TranscriptEntry(direction="out", sender="bot", text="なるほど")],
        deliver=[{"type": "text", "text": "なるほど"}],
    )
    await HandoffStore(engine=store.engine).open(
        saved.conversation_id, reason="相談", summary={"role": "経理"}
    )
    booking = BookingStore(engine=store.engine)
    await booking.save_contact(
        saved.conversation_id,
        name="山田花子",
        method="phone",
        phone="090-1234-5678",
        email=None,
        policy_version="1",
    )
    agent = await AgentStore(engine=store.engine).add(
        f"agent-{key.address[-6:]}", password_hash="x", display_name="佐藤"
    )
    start = datetime(2025, 4, 1, 10, 0, tzinfo=UTC)
    await booking.book(
        saved.conversation_id,
        agent_id=agent.id,
        starts_at=start,
        ends_at=start + timedelta(minutes=30),
    )


async def test_forgetting_leaves_nothing_but_the_audit_entry(store: SqlStore) -> None:
    """On SQLite and PostgreSQL."""
    key = ConversationKey(channel=Channel.LINE, address="U" + "a" * 32)
    other = ConversationKey(channel=Channel.LINE, address="U" + "b" * 32)
    await a_user_with_everything(store, key)
    await a_user_with_everything(store, other)
    before = await counts(store)
    assert all(before[t.name] >= 2 for t in USER_TABLES)

    exported = await store.export_user(key, who="cli:test")
    assert exported["conversation"]["slots"] == {"a": 1}
    assert [line["text"] for line in exported["conversation"]["transcript"]] == [
        "経理です",
        "なるほど",
    ]
    assert exported["conversation"]["handoffs"][0]["summary"] == {"role": "経理"}
    assert [event["payload"] for event in exported["inbox"]] == [
        {"text": "こんにちは"},
        {"text": "経理です"},
    ]
    assert exported["conversation"]["contact"][0]["phone"] == "090-1234-5678"
    assert exported["conversation"]["bookings"][0]["status"] == "booked"
    json.dumps(exported)  # JSON as it is

    done = await store.forget_user(key, who="cli:test")
    assert done == {"conversations": 1, "transcript": 2, "inbox": 2}
    after = await counts(store)
    # The other user is untouched; of this one nothing is left ...
    assert all(after[t.name] == before[t.name] / 2 for t in USER_TABLES)
    rows = await inbox_rows(store)
    mine = [r for r in rows if r["event_id"].endswith(key.address)]
    assert len(mine) == 2
    assert all(r["payload"] is None and r["address"] == "" for r in mine)
    again = await store.export_user(key, who="cli:test")
    assert again["conversation"] is None and again["inbox"] == []
    # ... but the audit entries, which do not name the user in clear.
    entries = await store.audit_entries()
    assert [(e.action, e.who) for e in entries] == [
        ("export", "cli:test"),
        ("forget", "cli:test"),
        ("export", "cli:test"),
    ][::-1]
    assert all(e.subject == subject_of(key) and key.address not in e.subject for e in entries)


async def test_forgetting_blanks_an_event_whose_run_commits_meanwhile(store: SqlStore) -> None:
    """PostgreSQL: each statement of the forgetting sees what was committed when it started,
    and a user's inbox events are found pending and run by two statements. An event a worker
    had claimed (not yet committed) when the user asked is blanked all the same."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite runs one writer at a time: nothing can commit meanwhile")
    key = ConversationKey(channel=Channel.LINE, address="U" + "c" * 32)
    await store.record_event(
        channel=key.channel,
        event_id="claimed",
        address=key.address,
        payload={"text": "経理です"},
        occurred_at=datetime.now(UTC),
    )
    [event] = await store.pending_events(channel=key.channel, address=key.address)
    async with store.engine.connect() as worker:
        claim = await worker.begin()
        await worker.execute(
            sa.update(inbox).where(inbox.c.id == event.id).values(processed_at=datetime.now(UTC))
        )
        forgetting = asyncio.create_task(store.forget_user(key, who="cli:test"))
        await asyncio.sleep(0.5)  # the forgetting now waits for the claimed row
        await claim.commit()
    assert (await forgetting)["inbox"] == 1
    [row] = [r for r in await inbox_rows(store) if r["event_id"] == "claimed"]
    assert row["payload"] is None and row["address"] == ""


def test_a_web_chat_user_deletes_their_data_in_the_chat(tmp_path: Path) -> None:
    with agent_app(tmp_path) as app:
        session = app.web_user()
        app.say(session, "会計をやってます")
        asked = app.say(session, "データを削除して")
        question = asked["messages"][-1]
        assert question["state"] == FORGET_STATE and "削除します" in question["text"]
        assert [c["label"] for c in question["choices"]] == ["削除する", "削除しない"]

        kept = app.client.post(
            f"/api/chat/sessions/{session}/messages",
            json={"choice": FORGET_NO, "state": FORGET_STATE, "label": "削除しない"},
        ).json()
        assert kept["messages"][0]["text"].startswith("わかりました。削除はしていません")
        assert kept["messages"][-1]["state"] == "pains"  # where the user was

        app.say(session, "データを削除して")
        gone = app.client.post(
            f"/api/chat/sessions/{session}/messages",
            json={"choice": FORGET_YES, "state": FORGET_STATE, "label": "削除する"},
        )
        assert gone.status_code == 200
        assert [m["text"] for m in gone.json()["messages"]] == [FORGOTTEN]
        found = app.run(lambda: counts(app.runtime.store))
        assert {t: found[t.name] for t in USER_TABLES} == dict.fromkeys(USER_TABLES, 0)
        assert found["audit_log"] == 1
        assert app.client.get(f"/api/chat/sessions/{session}/messages").status_code == 404


async def test_a_line_user_deletes_their_data_and_is_told(
    served: Served,  # noqa: F811
    line_api: FakeLineApi,  # noqa: F811
) -> None:
    user = "U" + "d" * 32
    runtime = served.app.state.runtime

    async def post(*events: dict[str, Any]) -> None:
        body = json.dumps({"destination": BOT_USER_ID, "events": list(events)}).encode()
        async with httpx.AsyncClient(base_url=served.url) as client:
            answer = await client.post(
                "/webhooks/line",
                content=body,
                headers={"X-Line-Signature": sign(CHANNEL_SECRET, body)},
            )
        assert answer.status_code == 200
        await runtime.worker.idle()

    fake = line_api
    await post(line_event(user, replyToken=fake.reply_token(user)))
    ask = line_event(user, replyToken=fake.reply_token(user))
    ask["message"]["text"] = "データを削除して"
    await post(ask)
    assert "削除します" in fake.texts(user)[-1]
    data = json.dumps({"s": FORGET_STATE, "c": FORGET_YES, "l": "削除する"})
    await post(
        line_event(
            user, type="postback", postback={"data": data}, replyToken=fake.reply_token(user)
        )
    )
    assert fake.texts(user)[-1] == FORGOTTEN
    found = await counts(runtime.store)
    assert {t: found[t.name] for t in USER_TABLES} == dict.fromkeys(USER_TABLES, 0)
    assert all(r["payload"] is None and r["address"] == "" for r in await inbox_rows(runtime.store))


def test_users_export_and_forget_from_the_command_line(tmp_path: Path) -> None:
    with agent_app(tmp_path) as app:
        session = app.web_user()
        app.say(session, "会計をやってます")
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    runner = CliRunner()
    exported = runner.invoke(main, ["users", "export", f"web:{session}"], env=env)
    assert exported.exit_code == 0, exported.output
    document = json.loads(exported.stdout)
    assert "会計をやってます" in [line["text"] for line in document["conversation"]["transcript"]]
    forgot = runner.invoke(main, ["users", "forget", f"web:{session}", "--yes"], env=env)
    assert forgot.exit_code == 0 and "deleted 1 conversation(s)" in forgot.stdout
    again = runner.invoke(main, ["users", "export", f"web:{session}"], env=env)
    assert json.loads(again.stdout)["conversation"] is None
    wrong = runner.invoke(main, ["users", "forget", "fax:123", "--yes"], env=env)
    assert wrong.exit_code == 1 and "CHANNEL:ID" in wrong.stderr


def test_admin_routes_of_the_agent_api(tmp_path: Path) -> None:
    with agent_app(tmp_path) as app:
        app.add_agent("hanako", "花子")
        session = app.web_user()
        app.say(session, "会計をやってます")
        url = f"/api/v1/users/web/{session}"
        refused = app.client.get(url, headers=app.api("hanako"))
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
        assert app.client.delete(url, headers=app.api("hanako")).status_code == 403

        agents = AgentStore(engine=app.runtime.store.engine)
        from agent_app import password_hash

        from bot.http.console.auth import new_token

        token, hashed = new_token()

        async def add_admin() -> None:
            await agents.add("boss", password_hash=password_hash(), display_name="管理", admin=True)
            await agents.add_token("boss", token_hash=hashed)

        app.run(add_admin)
        boss = {"Authorization": f"Bearer {token}"}
        exported = app.client.get(url, headers=boss)
        assert exported.status_code == 200
        assert (
            exported.json()["conversation"]["transcript"][0]["text"] == "こんにちは、テスト社です"
        )
        deleted = app.client.delete(url, headers=boss)
        assert deleted.status_code == 200 and deleted.json()["conversations"] == 1
        entries = app.run(lambda: app.runtime.store.audit_entries())
        assert [(e.action, e.who) for e in entries] == [
            ("forget", "agent:boss"),
            ("export", "agent:boss"),
        ]
        assert app.client.get(f"/api/chat/sessions/{session}/messages").status_code == 404


async def test_retention_purges_idle_web_chats_and_blanks_old_inbox_text(store: SqlStore) -> None:
    web = ConversationKey(channel=Channel.WEB, address="w" * 24)
    line = ConversationKey(channel=Channel.LINE, address="U" + "c" * 32)
    state = ConversationState(flow="career", flow_version="1", state="ask_role")
    long_ago = datetime.now(UTC) - timedelta(days=100)
    for key in (web, line):
        await store.save_turn(
            key, state=state, expected_version=None, inbound=[], outbound=[], now=long_ago
        )
    # An agent's reply in the Slack agent channel, run long ago.
    await store.record_event(
        channel=Channel.SLACK,
        event_id="agent-1",
        address="agents:C1:1.0",
        payload={"text": "お電話します"},
        occurred_at=long_ago,
        now=long_ago,
    )
    [event] = await store.pending_events()
    await store.mark_processed(event.id)
    assert await store.purge_inactive(datetime.now(UTC) - timedelta(days=90)) == 1
    assert await store.load(web) is None
    assert await store.load(line) is not None  # an active LINE user keeps their conversation
    [row] = await inbox_rows(store)
    assert row["payload"] is None and row["address"] == "" and row["event_id"] == "agent-1"
