"""smoke: replay a model version's golden examples in a fresh process of its own runtime, record and event the verdict.

Positive cases are scored in ONE fresh process (Python by ``ambidex_stage``, R by ``Rscript`` and
the R package, via the injected launcher, by default :func:`ambidex.scoring.score_folder`); each
must reproduce the recorded prediction and score within ``golden.tolerance``. Each negative case is
scored in its own process and must be refused with the documented error code; these processes run
side by side (as many at once as there are cores this process may use). A score stage checks its
input against the signature before it loads the model, so a refused case does not wait for the
model's libraries. The output must have the contract's columns, one row per input row, and (classification) scores in [0, 1] and
predictions among the target's levels. The result, with load time and latency, is stored in
``smoke_results`` bound to the manifest's sha256 and evented in the same transaction.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from . import deploytables as T
from .deploy import Deployments, VersionRef
from .errors import AmbidexError

__all__ = ["SmokeCase", "SmokeResult", "SmokeTester", "compare_positive", "check_output", "write_cases"]

Launcher = Callable[[Path, Path, Path], dict]


@dataclass
class SmokeCase:
    kind: str  # "positive" | "negative" | "output"
    index: int
    passed: bool
    message: str


@dataclass
class SmokeResult:
    model: str
    version: int
    manifest_sha256: str
    passed: bool
    cases: list[SmokeCase] = field(default_factory=list)
    load_seconds: float | None = None
    latency_seconds: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def failures(self) -> list[SmokeCase]:
        return [c for c in self.cases if not c.passed]


# -- pure checks -----------------------------------------------------------------------------------

def _close(a, b, tol: float) -> bool:
    if a is None or b is None or (isinstance(a, float) and math.isnan(a)) or (isinstance(b, float) and math.isnan(b)):
        return (a is None or a != a) and (b is None or b != b)
    return abs(float(a) - float(b)) <= tol


def compare_positive(golden: dict, rows: list[dict], task: str | None) -> list[SmokeCase]:
    """Each positive golden case against the predicted row at the same position."""
    tol = float(golden.get("tolerance") or 0.0)
    out = []
    for i, case in enumerate(golden.get("positive") or []):
        exp = case["expected"]
        if i >= len(rows):
            out.append(SmokeCase("positive", i, False, "no prediction row"))
            continue
        got = rows[i]
        if task == "regression":
            pred_ok = _close(got.get("prediction"), exp.get("prediction"), tol)
        else:
            pred_ok = (None if got.get("prediction") is None else str(got.get("prediction"))) == \
                      (None if exp.get("prediction") is None else str(exp.get("prediction")))
        score_ok = _close(got.get("score"), exp.get("score"), tol)
        msg = "ok" if pred_ok and score_ok else (
            f"expected prediction {exp.get('prediction')!r} score {exp.get('score')!r}, got "
            f"{got.get('prediction')!r} score {got.get('score')!r} (tolerance {tol:g})")
        out.append(SmokeCase("positive", i, pred_ok and score_ok, msg))
    return out


def check_output(rows: list[dict], n_inputs: int, columns: list[str], manifest: dict) -> list[SmokeCase]:
    """The output's shape and ranges: columns, row count, score in [0, 1] and known levels (classification)."""
    problems = []
    missing = [c for c in ("prediction", "score") if c not in columns]
    if missing:
        problems.append(f"output lacks column(s) {missing}")
    if len(rows) != n_inputs:
        problems.append(f"{len(rows)} output rows for {n_inputs} input rows")
    if (manifest.get("task") or "").endswith("classification"):
        bad = [r.get("score") for r in rows if r.get("score") is not None and not 0 <= r["score"] <= 1]
        if bad:
            problems.append(f"scores outside [0, 1]: {bad[:3]}")
        levels = (manifest.get("target") or {}).get("levels")
        if levels:
            odd = sorted({str(r["prediction"]) for r in rows if r.get("prediction") is not None} - set(map(str, levels)))
            if odd:
                problems.append(f"predictions {odd[:3]} are not target levels {levels}")
    return [SmokeCase("output", 0, not problems, "; ".join(problems) or "ok")]


def _ok_value(ctype: str, v) -> bool:
    if v is None:
        return True
    return {"integer": isinstance(v, int) and not isinstance(v, bool),
            "double": isinstance(v, (int, float)) and not isinstance(v, bool),
            "boolean": isinstance(v, bool),
            "string": isinstance(v, str), "category": isinstance(v, str),
            "timestamp": isinstance(v, str)}.get(ctype, False)


def _text(ctype: str, v) -> str:
    if v is None:
        return ""
    if ctype in ("string", "category"):
        return '"' + str(v).replace('"', '""') + '"'
    if ctype == "boolean":
        return "true" if v else "false"
    if ctype == "double":
        return repr(float(v)).replace("inf", "Inf").replace("nan", "")
    return str(v)


def write_cases(path: Path, signature_inputs: list[dict], inputs: list[dict]) -> None:
    """Golden inputs as a typed table. Columns are the cases' own: a value that does not fit the signature's
    type is declared ``string`` and an unseen level is added to the table's levels, so the MODEL's runtime,
    not this writer, is what refuses a negative case."""
    sig = {c["name"]: c for c in signature_inputs}
    names = [c["name"] for c in signature_inputs if any(c["name"] in i for i in inputs)]
    names += [n for i in inputs for n in i if n not in sig and n not in names]
    cols = []
    for n in names:
        base = dict(sig.get(n) or {"name": n, "type": "string"})
        base["nullable"] = True
        values = [i.get(n) for i in inputs]
        if not all(_ok_value(base["type"], v) for v in values):
            base = {"name": n, "type": "string", "nullable": True}
        if base["type"] == "category":
            levels = list(base.get("levels") or [])
            levels += sorted({v for v in values if v is not None and v not in levels})
            base["levels"] = levels
        cols.append(base)
    lines = [",".join(n for n in names)]
    lines += [",".join(_text(c["type"], i.get(c["name"])) for c in cols) for i in inputs]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    schema = {"contract_version": 1, "row_count": len(inputs), "columns": cols}
    path.with_name(path.stem + ".schema.json").write_text(json.dumps(schema), encoding="utf-8")


def _read_rows(csv_path: Path) -> tuple[list[str], list[dict]]:
    import pandas as pd
    from ambidex_stage.tables import read_table

    df = read_table(csv_path)
    rows = [{k: None if pd.isna(v) else (v.item() if hasattr(v, "item") else v) for k, v in rec.items()}
            for rec in df.astype(object).to_dict("records")]
    return list(df.columns), rows


# -- the tester ------------------------------------------------------------------------------------

class SmokeTester:
    """Runs smoke tests through ``launcher(model_dir, input_csv, output_csv) -> result`` (a fresh process)."""

    def __init__(self, deployments: Deployments, launcher: Launcher, *, workdir: Path | None = None):
        self.deps = deployments
        self.launcher = launcher
        self.workdir = Path(workdir) if workdir else None

    def __call__(self, ref: VersionRef, *, record: bool = True) -> SmokeResult:
        return self.run(ref, record=record)

    def run(self, ref: VersionRef, *, record: bool = True) -> SmokeResult:
        """Smoke-test ``ref`` (after verifying its bytes); store and event the result unless ``record`` is False."""
        if self.deps.verify is not None:
            self.deps.verify(ref)
        folder = self.deps.folder(ref)
        manifest = ref.manifest
        golden = manifest.get("golden") or {}
        sig = (manifest.get("signature") or {}).get("inputs") or []
        result = SmokeResult(ref.name, ref.version, ref.manifest_sha256, True)
        if self.workdir:
            self.workdir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix="smoke-", dir=self.workdir))
        negative = golden.get("negative") or []
        # each negative case's process runs beside the positive cases' one (on this thread): the pool takes
        # the other cores
        pool = ThreadPoolExecutor(max_workers=max(1, min(len(os.sched_getaffinity(0)) - 1, len(negative))))
        try:
            refused = [pool.submit(self._negative, folder, sig, i, case, tmp) for i, case in enumerate(negative)]
            positive = golden.get("positive") or []
            if not positive:
                result.cases.append(SmokeCase("positive", 0, False, "the manifest has no positive golden examples"))
            else:
                write_cases(tmp / "pos.csv", sig, [c["input"] for c in positive])
                t0 = time.perf_counter()
                try:
                    res = self.launcher(folder, tmp / "pos.csv", tmp / "pos_out.csv") or {}
                    wall = time.perf_counter() - t0
                    metrics = {m.get("name"): m.get("value") for m in res.get("metrics") or [] if isinstance(m, dict)}
                    result.load_seconds = metrics.get("load_seconds", wall)
                    result.latency_seconds = metrics.get("predict_seconds", wall)
                    columns, rows = _read_rows(tmp / "pos_out.csv")
                    result.cases += compare_positive(golden, rows, manifest.get("task"))
                    result.cases += check_output(rows, len(positive), columns, manifest)
                except AmbidexError as e:
                    result.cases.append(SmokeCase("positive", 0, False, f"scoring failed: [{e.code}] {e.message}"))
            result.cases += [f.result() for f in refused]
        finally:
            pool.shutdown(wait=True)
            shutil.rmtree(tmp, ignore_errors=True)
        result.passed = all(c.passed for c in result.cases)
        if record:
            self._record(ref, result)
        return result

    def _negative(self, folder: Path, sig: list[dict], i: int, case: dict, tmp: Path) -> SmokeCase:
        want = case.get("error")
        write_cases(tmp / f"neg{i}.csv", sig, [case["input"]])
        try:
            self.launcher(folder, tmp / f"neg{i}.csv", tmp / f"neg{i}_out.csv")
        except AmbidexError as e:
            got = e.details.get("stage_error_code") or e.code
            return SmokeCase("negative", i, got == want, "ok" if got == want else f"expected error {want}, got {got}")
        return SmokeCase("negative", i, False, f"expected error {want}, but the model scored the row")

    def _record(self, ref: VersionRef, result: SmokeResult) -> None:
        details = json.dumps(result.to_dict(), default=str)
        with self.deps.engine.begin() as conn:
            conn.execute(T.smoke_results.insert().values(
                model_version_id=ref.id, manifest_sha256=ref.manifest_sha256, passed=result.passed,
                at=self.deps.clock(), actor=self.deps.actor, load_seconds=result.load_seconds,
                latency_seconds=result.latency_seconds, details=details))
            self.deps.event(conn, "smoke.passed" if result.passed else "smoke.failed", ref.label,
                            {"manifest_sha256": ref.manifest_sha256, "load_seconds": result.load_seconds,
                             "latency_seconds": result.latency_seconds,
                             "failures": [asdict(c) for c in result.failures]},
                            entity_type="model_version")
