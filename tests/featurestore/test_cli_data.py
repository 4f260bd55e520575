"""cli.data: `ambidex data` ingest, list, show, diff, lineage with --json and human output."""
from __future__ import annotations

import json

from click.testing import CliRunner

from ambidex.cli.data import data

CSV = "id,ts,x,plan\n1,2024-01-01T00:00:00Z,1.5,a\n2,2024-01-02T00:00:00Z,2,b\n3,2024-02-02T00:00:00Z,3,a\n"


def run(args, db):
    r = CliRunner().invoke(data, [*args, "--db", db], catch_exceptions=True)
    return r


def test_ingest_list_show_diff_json(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    src = tmp_path / "a.csv"
    src.write_text(CSV)
    args = ["ingest", str(src), "--mart", "m", "--key", "id", "--time-column", "ts", "--load", "incremental",
            "--window", "2024-01-01/2024-02-01"]
    dry = run([*args, "--dry-run", "--json"], db)
    assert dry.exit_code == 0, dry.output
    assert json.loads(dry.output)["dry_run"] is True and json.loads(dry.output)["version"] is None
    first = json.loads(run([*args, "--json"], db).output)
    assert (first["version"], first["row_count"], first["skipped_rows"]) == (1, 2, 1)
    assert json.loads(run([*args, "--json"], db).output)["replaced_rows"] == 2
    marts = json.loads(run(["list", "--json"], db).output)
    assert [m["mart"] for m in marts] == ["m"] and marts[0]["versions"] == 2
    shown = json.loads(run(["show", "m@1", "--json"], db).output)
    assert shown["row_count"] == 2 and {c["column_name"] for c in shown["profile"]} == {"id", "ts", "x", "plan"}
    diff = json.loads(run(["diff", "m@1", "m@2", "--json"], db).output)
    assert diff["row_count"]["delta"] == 0 and all(c["psi"] == 0 for c in diff["columns"])
    human = run(["show", "m"], db)
    assert human.exit_code == 0 and "VERSION" in human.output


def test_bad_identifier_is_an_error_not_sql(tmp_path):
    db = f"sqlite:///{tmp_path / 'r.db'}"
    src = tmp_path / "a.csv"
    src.write_text(CSV)
    r = run(["ingest", str(src), "--mart", 'x"; DROP TABLE runs;--', "--json"], db)
    assert r.exit_code != 0 and r.exception.code == "data.invalid_identifier"
    assert not (tmp_path / "r.db").exists()
