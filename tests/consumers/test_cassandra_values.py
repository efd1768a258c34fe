"""The row serializer sends exactly what the driver's own binding would, and refuses what it
refuses, naming the column."""

from __future__ import annotations

import datetime
import uuid
from typing import Any

import pytest
from cassandra import cqltypes
from cassandra.query import UNSET_VALUE
from hypothesis import given
from hypothesis import strategies as st

from consumers.cassandra_values import RowSerializer, UnfitValueError, column_serializer

PROTOCOL = 5

COLUMN_TYPES: list[Any] = [
    cqltypes.BytesType,
    cqltypes.Int32Type,
    cqltypes.LongType,
    cqltypes.CounterColumnType,
    cqltypes.DateType,
    cqltypes.UTF8Type,
    cqltypes.VarcharType,
    cqltypes.DoubleType,
    cqltypes.FloatType,
    cqltypes.BooleanType,
    cqltypes.UUIDType,
    cqltypes.TimeUUIDType,
    cqltypes.MapType.apply_parameters([cqltypes.BytesType, cqltypes.BytesType]),
]

values = st.one_of(
    st.binary(max_size=20),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.text(max_size=10),
    st.floats(allow_nan=False),
    st.uuids(),
    st.datetimes(),
    st.dictionaries(st.binary(max_size=4), st.binary(max_size=4), max_size=3),
    st.lists(st.integers(), max_size=3),
)


def _driver(cql_type: Any, value: Any) -> tuple[str, Any]:
    try:
        return "ok", cql_type.serialize(value, PROTOCOL)
    except Exception as exc:
        return "refused", type(exc)


@pytest.mark.parametrize("cql_type", COLUMN_TYPES, ids=lambda t: t.cql_parameterized_type())
@given(value=values)
def test_each_column_serializes_as_the_driver_does(cql_type: Any, value: Any) -> None:
    expected, result = _driver(cql_type, value)
    serialize = column_serializer(cql_type, PROTOCOL)
    if expected == "ok":
        assert serialize(value) == result
    else:
        with pytest.raises(result):
            serialize(value)


def test_a_row_keeps_nulls_and_unset_values() -> None:
    row = RowSerializer([cqltypes.BytesType, cqltypes.Int32Type, cqltypes.DateType], 5, UNSET_VALUE)
    when = datetime.datetime(2026, 12, 1, 12, 0, tzinfo=datetime.UTC)
    assert row([None, UNSET_VALUE, when]) == [
        None,
        UNSET_VALUE,
        cqltypes.DateType.serialize(when, PROTOCOL),
    ]
    assert row([b"m", 7, 1_795_000_000_000]) == [
        b"m",
        b"\x00\x00\x00\x07",
        (1_795_000_000_000).to_bytes(8, "big"),
    ]


def test_a_value_that_does_not_fit_names_its_column() -> None:
    row = RowSerializer([cqltypes.UUIDType, cqltypes.Int32Type, cqltypes.UTF8Type], 5, UNSET_VALUE)
    with pytest.raises(UnfitValueError) as int_too_large:
        row([uuid.uuid4(), 2**31, "x"])
    assert int_too_large.value.index == 1
    with pytest.raises(UnfitValueError) as int_for_text:
        row([uuid.uuid4(), 1, 5])
    assert int_for_text.value.index == 2


def test_a_row_must_have_a_value_for_every_marker() -> None:
    row = RowSerializer([cqltypes.BytesType, cqltypes.Int32Type], 5, UNSET_VALUE)
    with pytest.raises(ValueError, match="1 values for 2 bind markers"):
        row([b"x"])
