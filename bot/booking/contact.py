"""Contact details as people type them, checked and normalised: a Japanese phone number
(phonenumbers) or an email address (email-validator, syntax only: no DNS at chat time)."""

from __future__ import annotations

import unicodedata
from typing import Final

import phonenumbers
from email_validator import EmailNotValidError, validate_email

MAX_NAME: Final = 50


def clean_name(text: str) -> str | None:
    """A name as given, trimmed; None when empty or too long to be one."""
    name = " ".join(unicodedata.normalize("NFKC", text).split())
    return name if 0 < len(name) <= MAX_NAME else None


def clean_phone(text: str) -> str | None:
    """`090-1234-5678`, `０９０１２３４５６７８`, `+81 90…` → `090-1234-5678`; None unless it is a
    valid Japanese number."""
    typed = unicodedata.normalize("NFKC", text).strip()
    try:
        number = phonenumbers.parse(typed, "JP")
    except phonenumbers.NumberParseException:
        return None
    if number.country_code != 81 or not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)


def clean_email(text: str) -> str | None:
    """An email address in its normalised form; None unless its syntax is valid."""
    typed = unicodedata.normalize("NFKC", text).strip()
    try:
        return validate_email(typed, check_deliverability=False).normalized
    except EmailNotValidError:
        return None
