"""`yarigai agents`: add, token, list, disable, against a real SQLite file."""

from __future__ import annotations

import asyncio
from pathlib import Path

from click.testing import CliRunner

from bot.cli.main import main
from bot.http.console.auth import check_password, token_hash
from bot.store import AgentStore, SqlStore

PASSWORD = "a long enough password"


def agents_cli(tmp_path: Path, *args: str, input: str | None = None) -> tuple[int, str, str]:
    runner = CliRunner()
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"}
    result = runner.invoke(main, ["agents", *args], input=input, env=env)
    return result.exit_code, result.stdout, result.stderr


async def in_store(tmp_path: Path) -> tuple[SqlStore, AgentStore]:
    store = await SqlStore.open(f"sqlite:///{tmp_path / 'db.sqlite'}")
    return store, AgentStore(engine=store.engine)


async def test_add_prompts_for_a_password_twice_and_hashes_it(tmp_path: Path) -> None:
    code, out, _ = await asyncio.to_thread(
        agents_cli,
        tmp_path,
        "add",
        "hanako",
        "--display-name",
        "花子",
        input=f"{PASSWORD}\n{PASSWORD}\n",
    )
    assert code == 0 and "added agent hanako (花子)" in out
    assert PASSWORD not in out

    store, agents = await in_store(tmp_path)
    try:
        credentials = await agents.credentials("hanako")
        assert credentials is not None and credentials[1].startswith("$argon2id$")
        assert await check_password(agents, "hanako", PASSWORD) is not None
        assert await check_password(agents, "hanako", "wrong password") is None
    finally:
        await store.close()


def test_add_refuses_bad_names_short_passwords_and_duplicates(tmp_path: Path) -> None:
    assert agents_cli(tmp_path, "add", "Hanako San", "--password", PASSWORD)[0] == 1
    code, _, err = agents_cli(tmp_path, "add", "hanako", "--password", "short")
    assert code == 1 and "at least" in err
    assert agents_cli(tmp_path, "add", "hanako", "--password", PASSWORD)[0] == 0
    code, _, err = agents_cli(tmp_path, "add", "hanako", "--password", PASSWORD)
    assert code == 1 and "exists already" in err


async def test_token_list_and_disable(tmp_path: Path) -> None:
    await asyncio.to_thread(agents_cli, tmp_path, "add", "hanako", "--password", PASSWORD)
    code, out, err = await asyncio.to_thread(
        agents_cli, tmp_path, "token", "hanako", "--label", "ci"
    )
    token = out.strip()
    assert code == 0 and token.startswith("yg_") and "only its hash is stored" in err
    assert (await asyncio.to_thread(agents_cli, tmp_path, "token", "nobody"))[0] == 1

    store, agents = await in_store(tmp_path)
    try:
        found = await agents.by_token(token_hash(token))
        assert found is not None and found.name == "hanako"
        code, out, _ = await asyncio.to_thread(agents_cli, tmp_path, "list")
        assert code == 0 and out.startswith("hanako\thanako\tactive\t")

        code, out, _ = await asyncio.to_thread(agents_cli, tmp_path, "disable", "hanako")
        assert code == 0 and "revoked 1 token(s)" in out
        assert await agents.by_token(token_hash(token)) is None
        assert "\tdisabled\t" in (await asyncio.to_thread(agents_cli, tmp_path, "list"))[1]
        assert (await asyncio.to_thread(agents_cli, tmp_path, "disable", "nobody"))[0] == 1
    finally:
        await store.close()


def test_hours_adds_lists_and_removes_consultation_hours(tmp_path: Path) -> None:
    assert agents_cli(tmp_path, "add", "sato", "--password", PASSWORD)[0] == 0
    code, out, _ = agents_cli(tmp_path, "hours", "sato", "weekly", "Tue", "18:00-21:00")
    assert code == 0 and out.endswith("\t毎週火 18:00-21:00\n")
    code, out, _ = agents_cli(tmp_path, "hours", "sato", "off", "2026-12-24")
    assert code == 0 and "2026-12-24 休み" in out
    rule_id = next(line.split("\t")[0] for line in out.splitlines() if "毎週火" in line)
    code, out, _ = agents_cli(tmp_path, "hours", "sato", "--remove", rule_id)
    assert code == 0 and "毎週火" not in out and "2026-12-24 休み" in out
    code, _, err = agents_cli(tmp_path, "hours", "sato", "weekly", "Someday", "18:00-21:00")
    assert code == 1 and "weekday" in err
    code, _, err = agents_cli(tmp_path, "hours", "sato", "extra", "2026-12-26", "21:00-18:00")
    assert code == 1 and "ends before it starts" in err
    code, _, err = agents_cli(tmp_path, "hours", "nobody")
    assert code == 1
