"""/console/insights for admin agents: funnel, drop-off, answers, typed vs tapped, daily trend,
outcomes and A/B comparison of one flow over a period; each table as CSV."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, Response

from bot.http.console.auth import SessionAgent, session_agent
from bot.http.console.pages import SECURITY_HEADERS, render
from bot.insights.charts import daily_chart, funnel_chart
from bot.insights.report import Report, build_report
from bot.models import Channel
from bot.store import Agent
from bot.store.insights import InsightsStore, Period

if TYPE_CHECKING:
    from bot.http.console import Console

DAYS_SHOWN: Final = 30
"""The period shown when none is asked for: the last 30 days."""
MAX_DAYS: Final = 366
TZ: Final = ZoneInfo("Asia/Tokyo")
"""Periods and days are Japanese days, as the agency reads them (and the counts are kept)."""


async def admin_agent(agent: SessionAgent) -> Agent:
    if not agent.admin:
        raise HTTPException(status_code=403, detail="insights are for admin agents")
    return agent


AdminAgent = Annotated[Agent, Depends(admin_agent)]
router = APIRouter(
    prefix="/console/insights", include_in_schema=False, dependencies=[Depends(session_agent)]
)


@router.get("", response_class=HTMLResponse)
async def insights_page(
    request: Request,
    agent: AdminAgent,
    flow: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[date | None, Query()] = None,
    until: Annotated[date | None, Query()] = None,
    channel: Annotated[str, Query(max_length=16)] = "",
    step: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    console = _console(request)
    period, spec_flow = _period(console, flow, since, until, channel)
    report = await build_report(
        InsightsStore(engine=console.runtime.store.engine),
        console.runtime.flows[spec_flow].spec,
        period,
        compare_step=step,
    )
    spec = console.runtime.flows[spec_flow].spec
    return render(
        request,
        "insights.html",
        {
            "me": agent,
            "r": report,
            "flows": sorted(console.runtime.flows),
            "flow": spec_flow,
            "since": period.first.isoformat(),
            "until": period.last.isoformat(),
            "channel": period.channel or "",
            "channels": [c.value for c in Channel],
            "steps": [(s.id, s.label) for s in (spec.insights.funnel if spec.insights else ())],
            "step": report.comparison.step if report.comparison else (step or ""),
            "query": request.url.query,
            "declared": spec.insights is not None,
            "funnel_svg": funnel_chart(report.funnel),
            "daily_svg": daily_chart(report.daily),
        },
    )


@router.get("/{name}.csv")
async def insights_csv(
    request: Request,
    name: str,
    agent: AdminAgent,
    flow: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[date | None, Query()] = None,
    until: Annotated[date | None, Query()] = None,
    channel: Annotated[str, Query(max_length=16)] = "",
    step: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    console = _console(request)
    period, spec_flow = _period(console, flow, since, until, channel)
    report: Report = await build_report(
        InsightsStore(engine=console.runtime.store.engine),
        console.runtime.flows[spec_flow].spec,
        period,
        compare_step=step,
    )
    table = report.table(name)
    if table is None:
        raise HTTPException(status_code=404, detail=f"no table '{name}'")
    out = io.StringIO()
    out.write("\ufeff")  # a BOM, so spreadsheet programs read the UTF-8 Japanese right
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(table.headers)
    writer.writerows(table.rows)
    filename = f"{spec_flow}-{name}-{period.first}-{period.last}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'},
    )


def _period(
    console: Console,
    flow: str | None,
    since: date | None,
    until: date | None,
    channel: str,
) -> tuple[Period, str]:
    """The period asked for, in whole Japanese days, `until` included; a clear 422 if not one."""
    flows = console.runtime.flows
    name = flow or console.runtime.settings.default_flow
    if name not in flows:
        raise HTTPException(status_code=422, detail=f"unknown flow '{name}'")
    today = datetime.now(TZ).date()
    until = until or today
    since = since or until - timedelta(days=DAYS_SHOWN - 1)
    if channel and channel not in {c.value for c in Channel}:
        raise HTTPException(status_code=422, detail=f"unknown channel '{channel}'")
    if since > until:
        raise HTTPException(status_code=422, detail="'since' is after 'until'")
    if (until - since).days >= MAX_DAYS:
        raise HTTPException(status_code=422, detail=f"a period is at most {MAX_DAYS} days")
    period = Period(flow=name, first=since, last=until, channel=channel or None)
    return period, name


def _console(request: Request) -> Console:
    console: Console = request.app.state.console
    return console
