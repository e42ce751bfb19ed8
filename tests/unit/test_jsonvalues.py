"""dbt_mxcp.jsonvalues: warehouse values written as JSON (exact decimals, ISO 8601 dates, null)."""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from decimal import Decimal
from typing import Any

import pytest

from dbt_mxcp.jsonvalues import dumps


def _load(text: str) -> Any:
    return json.loads(text, parse_float=Decimal)


# ---- decimals ----------------------------------------------------------------------------------


def test_decimal_written_with_its_exact_digits() -> None:
    assert dumps(Decimal("12.50")) == "12.50"
    assert dumps({"price": Decimal("12.50")}) == '{"price":12.50}'


def test_decimal_sum_is_exact() -> None:
    # 0.1 + 0.2 as floats is 0.30000000000000004; as decimals it is exactly 0.3.
    assert dumps(Decimal("0.1") + Decimal("0.2")) == "0.3"


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (Decimal("12345678901234567890.123456789"), "12345678901234567890.123456789"),
        (Decimal("-0.05"), "-0.05"),
        (Decimal("1E+3"), "1000"),
        (Decimal("1.5E-7"), "0.00000015"),
        (Decimal("0"), "0"),
    ],
)
def test_decimal_is_a_plain_json_number(value: Decimal, text: str) -> None:
    assert dumps(value) == text
    assert _load(dumps(value)) == value


def test_decimal_round_trips_exactly() -> None:
    value = {"total": Decimal("99999999999999999.99"), "rates": [Decimal("0.0725"), Decimal("1.10")]}
    loaded = _load(dumps(value))
    assert loaded == {"total": Decimal("99999999999999999.99"), "rates": [Decimal("0.0725"), Decimal("1.10")]}
    assert str(loaded["total"]) == "99999999999999999.99"


def test_non_finite_decimal_is_null() -> None:
    assert dumps([Decimal("NaN"), Decimal("Infinity"), Decimal("-Infinity")]) == "[null,null,null]"


def test_decimals_from_duckdb() -> None:
    import duckdb

    row = duckdb.connect().execute("select 12.50::decimal(12,2) as a, 0.1::decimal(3,1) + 0.2::decimal(3,1) as b")
    a, b = row.fetchone()  # type: ignore[misc]
    assert dumps({"a": a, "b": b}) == '{"a":12.50,"b":0.3}'


# ---- structure and text ------------------------------------------------------------------------


def test_nested_structures_compact() -> None:
    value = {"a": 1, "b": [True, False, None], "c": {"d": "x", "e": []}, "f": {}, "g": 1.5}
    assert dumps(value) == '{"a":1,"b":[true,false,null],"c":{"d":"x","e":[]},"f":{},"g":1.5}'


def test_tuple_is_an_array() -> None:
    assert dumps((1, "a")) == '[1,"a"]'


def test_unicode_written_as_is() -> None:
    text = dumps({"név": "Zoë ☕ 東京"})
    assert text == '{"név":"Zoë ☕ 東京"}'
    assert json.loads(text) == {"név": "Zoë ☕ 東京"}


def test_string_escapes() -> None:
    value = {'q"uote': 'line\nbreak "and" back\\slash'}
    assert json.loads(dumps(value)) == value


def test_indent_matches_the_standard_library() -> None:
    value = {"a": [1, 2, {"b": None}], "c": {}, "d": [], "e": "ü", "f": {"g": {"h": [True]}}}
    assert dumps(value, indent=2) == json.dumps(value, indent=2, ensure_ascii=False)
    assert dumps(value, indent=4) == json.dumps(value, indent=4, ensure_ascii=False)


def test_indent_with_decimal() -> None:
    assert dumps({"a": [Decimal("1.10")]}, indent=2) == '{\n  "a": [\n    1.10\n  ]\n}'


def test_non_string_keys_become_strings() -> None:
    assert dumps({1: "a"}) == '{"1":"a"}'


# ---- dates, times, durations -------------------------------------------------------------------


def test_date() -> None:
    assert dumps(dt.date(2024, 1, 2)) == '"2024-01-02"'


def test_naive_datetime_has_t_and_no_offset() -> None:
    assert dumps(dt.datetime(2024, 1, 2, 3, 4, 5)) == '"2024-01-02T03:04:05"'
    assert dumps(dt.datetime(2024, 1, 2, 3, 4, 5, 120000)) == '"2024-01-02T03:04:05.120000"'


def test_aware_datetime_has_its_offset() -> None:
    plus2 = dt.timezone(dt.timedelta(hours=2))
    assert dumps(dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=plus2)) == '"2024-01-02T03:04:05+02:00"'
    assert dumps(dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC)) == '"2024-01-02T03:04:05+00:00"'


def test_time() -> None:
    assert dumps(dt.time(10, 11, 12)) == '"10:11:12"'
    assert dumps(dt.time(10, 11, 12, 500000)) == '"10:11:12.500000"'


def test_dates_from_duckdb() -> None:
    import duckdb

    row = duckdb.connect().execute(
        "select date '2024-02-29' as d, timestamp '2024-02-29 13:14:15' as ts, time '08:30:00' as t"
    ).fetchone()
    assert dumps(list(row)) == '["2024-02-29","2024-02-29T13:14:15","08:30:00"]'  # type: ignore[arg-type]


_ISO_DURATION = re.compile(r"^(-)?P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)?$")


def _duration_seconds(text: str) -> Decimal:
    """Seconds of an ISO 8601 duration made of days, hours, minutes and (decimal) seconds."""
    m = _ISO_DURATION.match(text)
    assert m is not None, f"{text!r} is not an ISO 8601 duration"
    assert text not in ("P", "-P") and not text.endswith("T"), f"{text!r} is not an ISO 8601 duration"
    sign, days, hours, minutes, seconds = m.groups()
    total = (Decimal(days or 0) * 86400 + Decimal(hours or 0) * 3600 + Decimal(minutes or 0) * 60
             + Decimal(seconds or 0))
    return -total if sign else total


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (dt.timedelta(0), Decimal(0)),
        (dt.timedelta(hours=1, minutes=30), Decimal(5400)),
        (dt.timedelta(days=2, hours=1), Decimal(2 * 86400 + 3600)),
        (dt.timedelta(seconds=90.5), Decimal("90.5")),
        (dt.timedelta(hours=-1), Decimal(-3600)),
        (dt.timedelta(days=400), Decimal(400 * 86400)),
    ],
)
def test_timedelta_is_an_iso_8601_duration(value: dt.timedelta, seconds: Decimal) -> None:
    text = json.loads(dumps(value))
    assert _duration_seconds(text) == seconds


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (dt.timedelta(microseconds=1), Decimal("0.000001")),
        (dt.timedelta(seconds=12345, microseconds=678900), Decimal("12345.6789")),
        (dt.timedelta(days=1, seconds=86399, microseconds=999999), Decimal("172799.999999")),
    ],
)
def test_timedelta_with_microseconds_is_an_exact_iso_8601_duration(value: dt.timedelta, seconds: Decimal) -> None:
    text = json.loads(dumps(value))
    assert _duration_seconds(text) == seconds


def test_interval_from_duckdb() -> None:
    import duckdb

    (value,) = duckdb.connect().execute("select interval 90 minute").fetchone()  # type: ignore[misc]
    assert _duration_seconds(json.loads(dumps(value))) == Decimal(5400)


# ---- other values ------------------------------------------------------------------------------


def test_uuid_is_its_canonical_string() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert dumps({"id": u}) == '{"id":"12345678-1234-5678-1234-567812345678"}'


def test_bytes_are_base64() -> None:
    # 0x00 0xff 'h' 'i' -> 000000 001111 111101 101000 | 011010 010000 -> "AP9o" "aQ=="
    assert dumps(b"\x00\xffhi") == '"AP9oaQ=="'
    assert dumps(bytearray(b"\x00\xffhi")) == '"AP9oaQ=="'
    assert dumps(memoryview(b"\x00\xffhi")) == '"AP9oaQ=="'


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_float_is_null(value: float) -> None:
    assert dumps(value) == "null"
    assert dumps({"x": value}) == '{"x":null}'


def test_output_is_always_valid_json() -> None:
    value = {"d": Decimal("1.20"), "f": float("nan"), "t": dt.time(1, 2), "u": uuid.UUID(int=1), "b": b"\x01",
             "when": dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "dur": dt.timedelta(minutes=5), "n": None}
    loaded = _load(dumps(value, indent=2))
    assert _duration_seconds(loaded.pop("dur")) == 300
    assert loaded == {
        "d": Decimal("1.20"), "f": None, "t": "01:02:00", "u": "00000000-0000-0000-0000-000000000001", "b": "AQ==",
        "when": "2024-01-01T00:00:00+00:00", "n": None,
    }
