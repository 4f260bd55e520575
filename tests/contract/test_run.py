"""python -m ambidex_stage.run: result.json on success and on every failure, exit codes, declared outputs."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from ambidex_stage.run import run_stage

from .conftest import churn_frame


def _script(tmp_path, body, name="stage.py"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(body))
    return p


def _run_cli(ctx, script):
    env = {**os.environ, "AMBIDEX_CONTEXT": str(ctx.path)}
    return subprocess.run([sys.executable, "-m", "ambidex_stage.run", str(script)], env=env,
                          capture_output=True, text=True, timeout=120)


def _write_ctx(ctx, tmp_path):
    p = tmp_path / "context.json"
    p.write_text(json.dumps(ctx.raw))
    ctx.path = p
    return ctx


def test_raising_script_writes_error_result_and_exits_1(make_ctx, tmp_path):
    ctx = _write_ctx(make_ctx("fit"), tmp_path)
    script = _script(tmp_path, """
        def main(ctx):
            ctx.log_metric("seen", 1)
            raise ValueError("bad data in column 'x'")
    """)
    proc = _run_cli(ctx, script)
    assert proc.returncode == 1
    assert "ValueError: bad data" in proc.stderr  # traceback on stderr
    res = json.loads((ctx.output_dir / "result.json").read_text())
    assert res["status"] == "error" and res["error"]["code"] == "stage.failed"
    assert "bad data in column 'x'" in res["error"]["message"]
    assert res["metrics"] == [{"name": "seen", "value": 1.0, "step": 0}]


def test_contract_error_code_is_kept(make_ctx, tmp_path):
    ctx = make_ctx("fit")
    script = _script(tmp_path, """
        from ambidex_stage import ContractError
        def main(ctx):
            raise ContractError("nope", code="contract.unseen_level", hint="map it")
    """)
    assert run_stage(ctx, str(script)) == 1
    err = json.loads((ctx.output_dir / "result.json").read_text())["error"]
    assert err == {"code": "contract.unseen_level", "message": "nope", "hint": "map it"}


def test_forgotten_output_is_an_error_naming_it(make_ctx, tmp_path):
    ctx = make_ctx("prep", outputs={"features": "table"})
    script = _script(tmp_path, "def main(ctx):\n    ctx.log_param('x', 1)\n")
    assert run_stage(ctx, str(script)) == 1
    err = json.loads((ctx.output_dir / "result.json").read_text())["error"]
    assert err["code"] == "stage.failed" and "'features'" in err["message"]


def test_top_level_script_with_stage_context_succeeds_via_cli(make_ctx, tmp_path):
    ctx = _write_ctx(make_ctx("prep", inputs={"data": churn_frame(12)}, outputs={"features": "table"}), tmp_path)
    script = _script(tmp_path, """
        import ambidex_stage
        ctx = ambidex_stage.stage_context()
        df = ctx.input_table("data")
        df["x3"] = df["x1"] * 2
        ctx.write_table("features", df)
        ctx.log_metric("rows", len(df))
        ctx.log_param("multiplier", 2)
    """)
    proc = _run_cli(ctx, script)
    assert proc.returncode == 0, proc.stderr
    res = json.loads((ctx.output_dir / "result.json").read_text())
    assert res["status"] == "ok" and res["error"] is None
    assert res["outputs"]["features"]["kind"] == "table"
    assert res["metrics"] == [{"name": "rows", "value": 12.0, "step": 0}] and res["params"] == {"multiplier": 2}


def test_sys_exit_nonzero_is_an_error(make_ctx, tmp_path):
    ctx = make_ctx("fit")
    script = _script(tmp_path, "import sys\ndef main(ctx):\n    sys.exit(3)\n")
    assert run_stage(ctx, str(script)) == 1
    assert "sys.exit(3)" in json.loads((ctx.output_dir / "result.json").read_text())["error"]["message"]


def test_invalid_context_exits_1(tmp_path):
    p = tmp_path / "context.json"
    p.write_text(json.dumps({"contract_version": 9, "output_dir": str(tmp_path / "out")}))
    proc = subprocess.run([sys.executable, "-m", "ambidex_stage.run", "--builtin", "train", "--context", str(p)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "contract_version" in proc.stderr
    res = json.loads((tmp_path / "out" / "result.json").read_text())
    assert res["error"]["code"] == "contract.version_unsupported"


def test_warnings_are_printed_and_recorded_in_result_json(make_ctx, tmp_path):
    ctx = _write_ctx(make_ctx("fit"), tmp_path)
    script = _script(tmp_path, """
        import warnings
        def main(ctx):
            warnings.warn("column 'x' has 3 missing values")
            warnings.warn("fit did not converge", RuntimeWarning)
            ctx.log_metric("ok", 1)
    """)
    proc = _run_cli(ctx, script)
    assert proc.returncode == 0, proc.stderr
    assert "UserWarning: column 'x' has 3 missing values" in proc.stderr  # still on stderr, not muffled
    assert "RuntimeWarning: fit did not converge" in proc.stderr
    res = json.loads((ctx.output_dir / "result.json").read_text())
    assert res["status"] == "ok"
    assert res["warnings"] == ["column 'x' has 3 missing values", "fit did not converge"]


def test_warnings_kept_on_error_and_empty_when_none(make_ctx, tmp_path):
    import warnings as w

    ctx = make_ctx("fit")
    script = _script(tmp_path, """
        import warnings
        def main(ctx):
            warnings.warn("about to fail")
            raise ValueError("boom")
    """)
    with w.catch_warnings():
        w.simplefilter("always")  # pytest turns warnings into errors; a stage process shows them
        assert run_stage(ctx, str(script)) == 1
    res = json.loads((ctx.output_dir / "result.json").read_text())
    assert res["error"]["code"] == "stage.failed" and res["warnings"] == ["about to fail"]
    before = w.showwarning
    ctx2 = make_ctx("fit")
    assert run_stage(ctx2, str(_script(tmp_path, "def main(ctx):\n    pass\n", "quiet.py"))) == 0
    assert json.loads((ctx2.output_dir / "result.json").read_text())["warnings"] == []
    assert w.showwarning is before  # the hook is removed after the stage


def test_many_warnings_are_capped(make_ctx, tmp_path):
    import warnings as w

    from ambidex_stage.run import MAX_WARNINGS

    ctx = make_ctx("fit")
    script = _script(tmp_path, """
        import warnings
        def main(ctx):
            for i in range(130):
                warnings.warn(f"w{i}")
    """)
    with w.catch_warnings():
        w.simplefilter("always")
        assert run_stage(ctx, str(script)) == 0
    got = json.loads((ctx.output_dir / "result.json").read_text())["warnings"]
    assert len(got) == MAX_WARNINGS + 1 and got[:2] == ["w0", "w1"]
    assert got[-1] == f"... and {130 - MAX_WARNINGS} more warning(s), not recorded"


def test_missing_module_is_runtime_missing_naming_it(make_ctx, tmp_path):
    ctx = _write_ctx(make_ctx("fit"), tmp_path)
    script = _script(tmp_path, "import notapkg_ambidex_xyz\n")
    proc = _run_cli(ctx, script)
    assert proc.returncode == 1
    err = json.loads((ctx.output_dir / "result.json").read_text())["error"]
    assert err["code"] == "stage.runtime_missing"
    assert "'notapkg_ambidex_xyz'" in err["message"] and "pip install notapkg_ambidex_xyz" in err["hint"]


def test_trusted_stage_still_refuses_a_newer_contract(tmp_path, monkeypatch):
    import pytest

    from ambidex_stage.context import Context
    from ambidex_stage.errors import ContractError

    monkeypatch.setenv("AMBIDEX_VALIDATED", "1")
    doc = {"contract_version": 2, "run_id": "0" * 32, "pipeline": "p", "stage": "s", "lang": "python",
           "project_root": str(tmp_path), "output_dir": str(tmp_path), "params": {}, "inputs": {}, "outputs": {},
           "window": None, "seed": 1}
    with pytest.raises(ContractError) as err:
        Context.from_dict(doc)
    assert err.value.code == "contract.version_unsupported"


def test_run_arguments_are_parsed_and_bad_ones_exit_2(capsys):
    import pytest

    from ambidex_stage.run import _parse_args

    a = _parse_args(["--builtin=score", "--context", "c.json"])
    assert (a.script, a.builtin, a.context) == (None, "score", "c.json")
    assert _parse_args(["s.py"]).script == "s.py"
    for bad in ([], ["s.py", "--builtin", "train"], ["--builtin", "fit"], ["--nope"], ["a.py", "b.py"], ["--context"]):
        with pytest.raises(SystemExit) as exit_:
            _parse_args(bad)
        assert exit_.value.code == 2
    assert "usage: python -m ambidex_stage.run" in capsys.readouterr().err
