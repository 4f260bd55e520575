"""sqlident: identifier grammar, dialect quoting, reflection checks and bind-parameter parsing."""
from __future__ import annotations

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from ambidex.errors import DataError
from ambidex.sqlident import bind_names, quote_identifier, reflect_table, require_columns, validate_identifier, validate_identifiers


@pytest.mark.parametrize("name", ["a", "_x", "Order", "select", "Mixed_Case9", "a" * 63])
def test_valid_names(name):
    assert validate_identifier(name) == name


@pytest.mark.parametrize("name", ['x"; DROP TABLE runs;--', "", "9a", "a b", "a" * 64, "é", None, "a-b", "t`x"])
def test_invalid_names(name):
    with pytest.raises(DataError) as e:
        validate_identifier(name)
    assert e.value.code == "data.invalid_identifier"


def test_case_duplicates_refused():
    with pytest.raises(DataError, match="differ only by case"):
        validate_identifiers(["Amount", "amount"])


def test_quoting_per_dialect():
    assert quote_identifier(postgresql.dialect(), "Order") == '"Order"'
    assert quote_identifier(mysql.dialect(), "select") == "`select`"
    assert quote_identifier(sqlite.dialect(), "plain") == '"plain"'


def test_reflection_check(tmp_path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'x.db'}")
    with eng.begin() as c:
        c.exec_driver_sql('CREATE TABLE t (id INTEGER, "Select" TEXT)')
    t = reflect_table(eng, "t")
    assert require_columns(t, ["id", "Select"]) == ["id", "Select"]
    with pytest.raises(DataError, match="no column 'nope'"):
        require_columns(t, ["nope"])
    assert reflect_table(eng, "missing") is None


def test_bind_names_ignores_strings_comments_and_casts():
    sql = "SELECT ':a', \"b:c\" FROM t -- :d\n/* :e */ WHERE x::int > :f AND y = ':g'"
    assert bind_names(sql) == ["f"]
