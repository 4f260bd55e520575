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
