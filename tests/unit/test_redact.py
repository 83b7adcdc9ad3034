"""Secrets are masked wherever they appear, in linear time."""

from __future__ import annotations

import time

from supervisor.redact import MASK, Redactor


def test_values_of_secret_looking_variables_are_masked() -> None:
    redact = Redactor.from_environ({
        "STRIPE_API_KEY": "sk_live_abcdef", "DB_PASSWORD": "hunter22", "HOME": "/root",
        "SHORT_TOKEN": "x1",
    })
    text = redact.text("key sk_live_abcdef pw hunter22 home /root token x1")
    assert "sk_live_abcdef" not in text and "hunter22" not in text
    assert "/root" in text  # not a secret-looking name
    assert "x1" in text  # too short to mask without masking everything
    assert text.count(MASK) == 2


def test_credentials_in_urls_are_masked_whatever_their_source() -> None:
    text = Redactor([]).text("connect postgres://app:s3cret@db:5432/app failed")
    assert text == f"connect postgres://{MASK}@db:5432/app failed"


def test_a_long_line_without_newline_costs_linear_time() -> None:
    redact = Redactor(["sekret-value"])
    line = "a" * 1_000_000 + "://" + "b" * 1_000_000
    started = time.perf_counter()
    assert redact.text(line) == line
    # Quadratic scanning took seconds on 64 KiB; linear takes milliseconds.
    assert time.perf_counter() - started < 1.0
