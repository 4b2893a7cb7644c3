"""Settings from environment variables (and `.env`), one typed object passed around."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from limits import parse
from pydantic import AfterValidator, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _rate(value: str) -> str:
    parse(value)  # a ValueError naming the value when `limits` cannot read it
    return value


Rate = Annotated[str, AfterValidator(_rate)]


class Settings(BaseSettings):
    """Every setting the server reads; README and .env.example list the same names."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    database_url: str = Field(
        default="sqlite:///./data/yarigai.db",
        description="sqlite:///path.db or postgresql://user@host:port/db",
    )
    flows_dir: Path = Path("flows")
    default_flow: str = "career"
    host: str = "127.0.0.1"
    port: int = 8000
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    public_url: str = Field(default="", description="Base URL users reach, for links in cards.")
    max_body_bytes: int = Field(
        default=64 * 1024,
        ge=1024,
        description="Larger bodies get 413 on every route but the LINE and Slack webhooks "
        "(the web chat, console and agent APIs).",
    )

    # LINE
    line_channel_secret: SecretStr | None = None
    line_channel_access_token: SecretStr | None = None
    line_api_base_url: str = "https://api.line.me"
    line_data_api_base_url: str = Field(
        default="https://api-data.line.me",
        description="LINE's data API host (rich menu images).",
    )
    line_max_body_bytes: int = 1024 * 1024
    line_bot_user_id: str = Field(
        default="",
        description="The channel's bot user id (U...): webhooks whose `destination` differs are "
        "ignored. Empty: asked of LINE (GET /v2/bot/info) at start.",
    )

    # Slack
    slack_signing_secret: SecretStr | None = None
    slack_bot_token: SecretStr | None = None
    slack_api_base_url: str = "https://slack.com/api/"
    slack_max_body_bytes: int = Field(default=3 * 1024 * 1024, ge=1024)
    slack_agent_channel: str = ""
    slack_agent_users: str = Field(default="", description="Comma-separated Slack user ids.")

    # Agents and handoff
    handoff_timeout_minutes: int = 15
    agent_hours: str = "Mon-Fri 09:00-18:00 Asia/Tokyo"
    quiet_hours: str = Field(
        default="21:00-09:00 Asia/Tokyo",
        description="When the bot never pushes by itself (follow-ups wait for the end); "
        "empty: never quiet.",
    )
    agency_name: str = Field(
        default="",
        description="The agency's name in saved replies ({{agency}}); unset, the default flow's "
        "vars.agency.",
    )
    session_secret: SecretStr | None = Field(
        default=None, description="Signs console session cookies; random per process if unset."
    )

    closed_dates: str = Field(
        default="",
        description="Days the agency is closed besides Japanese public holidays: "
        "2026-12-29..2027-01-03,2027-05-06. Neither bookings nor live handoffs on them.",
    )
    public_holidays: bool = Field(
        default=True, description="Japanese public holidays close the agency (holidays, JP)."
    )

    # Booking a consultation
    booking_slot_minutes: int = Field(default=30, ge=10, le=240)
    booking_lead_hours: int = Field(
        default=3, ge=0, description="The earliest slot offered is at least this far ahead."
    )
    booking_horizon_days: int = Field(
        default=14, ge=1, le=90, description="Slots are offered this many days ahead at most."
    )
    booking_zone: str = Field(
        default="Asia/Tokyo", description="Time zone of agents' published hours and of slots."
    )
    meeting_method: Literal["line", "video", "phone"] = Field(
        default="video", description="How consultations happen: LINE call, video link, phone."
    )
    meeting_url: str = Field(default="", description="The video meeting link, if any.")
    privacy_policy_url: str = Field(
        default="", description="Shown when contact details are asked for consent."
    )
    privacy_policy_version: str = Field(
        default="1", description="Stored with each consent, so a new policy can be asked again."
    )
    reminder_before_hours: str = Field(
        default="24,1",
        description="Reminders before a booking, in hours, comma-separated (the day before and "
        "an hour before).",
    )

    metrics_token: SecretStr | None = Field(
        default=None,
        description="GET /metrics needs `Authorization: Bearer <this>`; unset, /metrics is off.",
    )

    # Rates (the `limits` library's notation: "10/minute", "3/hour", "5 per 15 seconds")
    redis_url: str = Field(
        default="",
        description="redis://host:port/db: rate limits shared by every process; empty: each "
        "process counts in memory.",
    )
    rate_chat_sessions: Rate = Field(default="20/minute", description="New web chats per IP.")
    rate_handoffs: Rate = Field(
        default="3/hour", description="Web chat requests for an agent per IP and per chat."
    )
    rate_login: Rate = Field(default="20/minute", description="Console sign-in tries per IP.")
    rate_agent_api: Rate = Field(default="600/minute", description="Agent API calls per token.")
    login_lockout_after: int = Field(
        default=10,
        ge=3,
        description="Wrong passwords in a row that lock an agent's sign-in until "
        "`yarigai agents unlock NAME` (from the third on, each try waits twice as long).",
    )

    # Data
    retention_days: int = Field(default=90, ge=1)

    # Analytics
    abandon_after_hours: float = Field(
        default=24.0,
        gt=0,
        description="A conversation with the bot that gets no message this long counts as "
        "abandoned where it stopped (insights' drop-off).",
    )

    # Processes
    # Separate by default: on two cores it acknowledges webhooks at twice the rate of inline
    # and answers a burst faster (bench/line_webhook.py, bench/scale.py).
    worker_mode: Literal["inline", "separate"] = Field(
        default="separate",
        description="separate: the web server records LINE and Slack events and `yarigai "
        "worker` processes (started by `yarigai serve`) run them; inline: the web server runs "
        "them itself (one process).",
    )
    inbox_stall_seconds: int = Field(
        default=300,
        ge=1,
        description="/readyz answers 503 when a LINE or Slack event has waited this long "
        "without being run (workers down or stuck).",
    )
    serve_workers: int | None = Field(
        default=None,
        ge=1,
        le=32,
        description="WORKER_MODE=separate: how many workers `yarigai serve` starts beside "
        "itself (1 when unset); they take conversations by lease (more may run elsewhere "
        "with `yarigai worker`).",
    )
    worker_processes: int | None = Field(
        default=None,
        ge=1,
        le=32,
        description="Deprecated alias of SERVE_WORKERS, which wins when both are set. It once "
        "split users between workers by a fixed hash; workers now take conversations by "
        "lease.",
    )

    @property
    def workers_beside_server(self) -> int:
        """How many workers `yarigai serve` starts (SERVE_WORKERS, else the deprecated
        WORKER_PROCESSES, else one)."""
        return self.serve_workers or self.worker_processes or 1
