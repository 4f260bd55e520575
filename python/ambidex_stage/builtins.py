"""builtins: the Python built-in stages ``train`` and ``score`` (scikit-learn), and ``predict`` for a Python model folder.

Conventions (shared with the R SDK):

- Classification targets are category, string or boolean columns; their levels are the category's
  levels that occur (in level order), the sorted distinct strings, or ``false``/``true``.
  2 levels -> binary_classification, more -> multiclass_classification; numeric -> regression.
- ``positive`` defaults to the SECOND level (as R's ``glm`` models the second factor level).
- prediction = the level with the highest probability (ties -> the earlier level);
  score = P(positive) (binary), the max class probability (multiclass), the prediction (regression).
- Built-in models impute, so every signature input is ``nullable: true``; string features are
  declared ``category`` with their training levels, so unseen text is ``contract.unseen_level``.
"""
from __future__ import annotations

import itertools
import math
import platform
import re
import shutil
import threading
from datetime import datetime, timezone
from pathlib import Path

from .errors import ContractError, StageError
from .manifest import load_payload, read_manifest
from .signature import coerce_to_signature

__all__ = ["train", "score", "predict", "load_payload", "golden_frame", "check_golden", "ESTIMATORS"]

ESTIMATORS = ("logistic_regression", "random_forest", "hist_gradient_boosting", "ridge", "linear_regression")
_LINEAR = ("logistic_regression", "ridge", "linear_regression")
_IMPORTANCE_ROWS = 10_000


# ----------------------------------------------------------------- shared helpers

def _model_frame(X, inputs):
    """Signature-coerced frame -> what the sklearn Pipeline sees: numbers as float64, labels as object."""
    import numpy as np
    import pandas as pd

    cols = {}
    for c in inputs:
        s = X[c["name"]]
        if c["type"] in ("integer", "double"):
            cols[c["name"]] = s.to_numpy(dtype=np.float64, na_value=np.nan)
        elif c["type"] == "boolean":
            cols[c["name"]] = np.array([np.nan if v is pd.NA or v is None else ("true" if v else "false")
                                        for v in s.astype(object)], dtype=object)
        else:
            cols[c["name"]] = s.astype(object).where(s.notna(), np.nan).to_numpy(dtype=object)
    return pd.DataFrame(cols, index=X.index)


def _predict_frame(payload, X, levels, task):
    """(prediction, score) arrays for a coerced frame."""
    import numpy as np
    import pandas as pd

    Z = _model_frame(X, payload["inputs"])
    est = payload["pipeline"]
    if task == "regression":
        p = est.predict(Z).astype(np.float64)
        return p, p
    proba = _full_proba(est, Z, len(levels))
    idx = proba.argmax(axis=1)
    pred = pd.Categorical.from_codes(idx, categories=pd.Index(levels, dtype="str"))
    sc = proba[:, payload["positive_index"]] if task == "binary_classification" else proba.max(axis=1)
    return pred, sc


def _full_proba(est, Z, k):
    import numpy as np

    p = est.predict_proba(Z)
    out = np.zeros((len(Z), k))
    out[:, np.asarray(est.classes_, dtype=int)] = p
    return out


def predict(model_folder, df):
    """Score DataFrame ``df`` with a Python model folder; returns DataFrame[prediction, score].

    Input is matched by column name (SPEC 4.1): missing column, lossy value and unseen level raise
    before anything is predicted. Row count and order equal the input's.
    """
    import pandas as pd

    manifest = read_manifest(model_folder)
    payload = load_payload(model_folder, manifest)
    X, _ = coerce_to_signature(df, manifest["signature"]["inputs"])
    pred, sc = _predict_frame(payload, X, (manifest["target"].get("levels") or []), manifest["task"])
    return pd.DataFrame({"prediction": pred, "score": sc}, index=range(len(X)))


def golden_frame(records):
    """A DataFrame from golden ``input`` records (JSON values; a missing key is a missing column)."""
    import pandas as pd

    keys = list(dict.fromkeys(k for r in records for k in r))
    return pd.DataFrame({k: pd.Series([r.get(k) for r in records], dtype=object) for k in keys})


def check_golden(model_folder) -> list[str]:
    """Run a folder's golden examples through :func:`predict`; returns the problems (empty = passed)."""
    import numpy as np

    m = read_manifest(model_folder)
    g = m.get("golden") or {"tolerance": 0, "positive": [], "negative": []}
    problems = []
    if g["positive"]:
        out = predict(model_folder, golden_frame([c["input"] for c in g["positive"]]))
        for i, case in enumerate(g["positive"]):
            exp, got_p, got_s = case["expected"], out["prediction"].iloc[i], out["score"].iloc[i]
            if isinstance(exp["prediction"], str):
                ok_p = str(got_p) == exp["prediction"]
            else:
                ok_p = exp["prediction"] is not None and abs(float(got_p) - exp["prediction"]) <= g["tolerance"]
            ok_s = exp["score"] is not None and not np.isnan(got_s) and abs(got_s - exp["score"]) <= g["tolerance"]
            if not (ok_p and ok_s):
                problems.append(f"positive case {i}: expected {exp}, got prediction {got_p!r} score {got_s!r}")
    for i, case in enumerate(g["negative"]):
        try:
            predict(model_folder, golden_frame([case["input"]]))
            problems.append(f"negative case {i}: expected {case['error']}, got no error")
        except ContractError as e:
            if e.code != case["error"]:
                problems.append(f"negative case {i}: expected {case['error']}, got {e.code}: {e.message}")
    return problems


# ----------------------------------------------------------------- train

def _estimator(name, task, seed, params):
    import importlib

    cls_task = "classification" if task != "regression" else "regression"
    table = {
        ("logistic_regression", "classification"): ("sklearn.linear_model", "LogisticRegression", {"max_iter": 1000}),
        ("random_forest", "classification"): ("sklearn.ensemble", "RandomForestClassifier",
                                              {"n_estimators": 100, "random_state": seed}),
        ("random_forest", "regression"): ("sklearn.ensemble", "RandomForestRegressor",
                                          {"n_estimators": 100, "random_state": seed}),
        ("hist_gradient_boosting", "classification"): ("sklearn.ensemble", "HistGradientBoostingClassifier",
                                                       {"random_state": seed}),
        ("hist_gradient_boosting", "regression"): ("sklearn.ensemble", "HistGradientBoostingRegressor",
                                                   {"random_state": seed}),
        ("ridge", "regression"): ("sklearn.linear_model", "Ridge", {}),
        ("linear_regression", "regression"): ("sklearn.linear_model", "LinearRegression", {}),
    }
    if name in ESTIMATORS:
        if (name, cls_task) not in table:
            ok = sorted(n for n, t in table if t == cls_task)
            raise StageError(f"estimator {name!r} cannot do {task}.", hint=f"For {cls_task} use one of {ok}.")
        mod, cls, defaults = table[(name, cls_task)]
        linear = name in _LINEAR
    elif re.fullmatch(r"sklearn(\.[A-Za-z_][A-Za-z0-9_]*)+", str(name)):
        mod, cls = name.rsplit(".", 1)
        defaults, linear = {}, mod.startswith(("sklearn.linear_model", "sklearn.svm"))
    else:
        raise StageError(f"Unknown estimator {name!r}.",
                         hint=f"Use one of {', '.join(ESTIMATORS)} or a dotted sklearn class path such as "
                              "'sklearn.ensemble.ExtraTreesClassifier'.")
    try:
        klass = getattr(importlib.import_module(mod), cls)
    except (ImportError, AttributeError):
        raise StageError(f"Cannot import estimator {name!r}.", hint="Check the dotted path.") from None
    est = klass(**{**defaults, **(params or {})})
    if task != "regression" and not hasattr(est, "predict_proba"):
        raise StageError(f"estimator {name!r} has no predict_proba; classification needs probabilities.",
                         hint="Pick a probabilistic classifier, e.g. logistic_regression.")
    return est, linear


def _pipeline(inputs, est, linear):
    import numpy as np
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    num = [c["name"] for c in inputs if c["type"] in ("integer", "double")]
    cat = [c for c in inputs if c["type"] in ("category", "boolean")]
    parts = []
    if num:
        steps = [("impute", SimpleImputer(strategy="median", keep_empty_features=True))]
        if linear:
            steps.append(("scale", StandardScaler()))
        parts.append(("num", Pipeline(steps), num))
    if cat:
        cats = [list(c["levels"] if c["type"] == "category" else ["false", "true"]) + [np.nan] for c in cat]
        parts.append(("cat", OneHotEncoder(categories=cats, handle_unknown="error", sparse_output=False),
                      [c["name"] for c in cat]))
    return Pipeline([("prep", ColumnTransformer(parts, remainder="drop")), ("model", est)])


def _target_levels(y, ctype):
    import pandas as pd

    present = y.dropna()
    if ctype == "category":
        seen = set(present.astype(str))
        return [str(c) for c in y.cat.categories if str(c) in seen]
    if ctype == "boolean":
        return [v for v in ("false", "true") if v in set(present.map(lambda b: "true" if b else "false"))]
    return sorted(set(pd.Series(present, dtype=object).astype(str)))


def _loss(task, y, proba_or_pred, k):
    import numpy as np

    if task == "regression":
        return float(np.mean((y - proba_or_pred) ** 2))
    p = np.clip(proba_or_pred[np.arange(len(y)), y], 1e-15, 1.0)
    return float(-np.mean(np.log(p)))


def _metrics(task, y, out, k, pos):
    import numpy as np
    from sklearn.metrics import roc_auc_score

    m = {}
    if task == "regression":
        err = y - out
        m["rmse"] = float(np.sqrt(np.mean(err ** 2)))
        m["mae"] = float(np.mean(np.abs(err)))
        var = float(np.sum((y - y.mean()) ** 2))
        if var > 0:
            m["r2"] = 1.0 - float(np.sum(err ** 2)) / var
        return m
    present = set(np.unique(y).tolist())
    if task == "binary_classification" and len(present) == 2:
        m["auc"] = float(roc_auc_score((y == pos).astype(int), out[:, pos]))
    elif task == "multiclass_classification" and present == set(range(k)):
        m["auc"] = float(roc_auc_score(y, out, multi_class="ovr", labels=list(range(k))))
    m["accuracy"] = float(np.mean(out.argmax(axis=1) == y))
    m["log_loss"] = _loss(task, y, out, k)
    return m


def _json_value(v, ctype):
    import pandas as pd

    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) or v is pd.NaT:
        return None
    if ctype == "integer":
        return int(v)
    if ctype == "double":
        return float(v) if math.isfinite(float(v)) else None
    if ctype == "boolean":
        return bool(v)
    if ctype == "timestamp":
        return v.strftime("%Y-%m-%dT%H:%M:%S") + (f".{v.microsecond:06d}" if v.microsecond else "") + "Z"
    return str(v)


def _golden(X, inputs, pred, sc, task, n):
    positive = []
    for i in range(min(n, len(X))):
        inp = {c["name"]: _json_value(X[c["name"]].iloc[i], c["type"]) for c in inputs}
        p = str(pred[i]) if task != "regression" else float(pred[i])
        positive.append({"input": inp, "expected": {"prediction": p, "score": float(sc[i])}})
    negative = []
    if len(X):
        base = positive[0]["input"] if positive else {}
        first = inputs[0]["name"]
        negative.append({"input": {k: v for k, v in base.items() if k != first}, "error": "contract.missing_column"})
        num = [c for c in inputs if c["type"] == "double"] or [c for c in inputs if c["type"] == "integer"]
        if num:
            negative.append({"input": {**base, num[0]["name"]: "not-a-number"}, "error": "contract.type_mismatch"})
        cat = [c for c in inputs if c["type"] == "category"]
        if cat:
            negative.append({"input": {**base, cat[0]["name"]: "__unseen__"}, "error": "contract.unseen_level"})
    return positive, negative


def _model_name(ctx, output=None):
    """The registered name the orchestrator put on the model output, else params.model_name,
    else the pipeline name (same order as the R SDK)."""
    declared = (ctx.outputs.get(output) or {}).get("name") if output else None
    name = declared or ctx.params.get("model_name") or re.sub(r"[^a-z0-9_-]", "_", ctx.pipeline.lower())
    return name if re.fullmatch(r"[a-z][a-z0-9_-]{0,62}", name) else ("m_" + name)[:63]


def _single_output(ctx, kind, preferred):
    names = [k for k, v in ctx.outputs.items() if v["kind"] == kind]
    if preferred in names:
        return preferred
    if len(names) == 1:
        return names[0]
    raise StageError(f"Stage {ctx.stage!r} must declare one {kind} output (or one named {preferred!r}); "
                     f"it declares {names}.", hint="Fix the stage's outputs in the pipeline YAML.")


def train(ctx) -> Path:
    """Built-in ``train`` stage: fit a scikit-learn Pipeline and write the model folder (SPEC 4)."""
    from ._train import fit_model

    return fit_model(ctx)


# ----------------------------------------------------------------- score

def score(ctx) -> None:
    """Built-in ``score`` stage: inputs ``data`` (table) and ``model`` (folder); writes the predictions table.

    Streams: the input is read ``params.chunk_size`` rows at a time (default 100,000; a background
    thread parses the next chunk while this one is predicted) and each chunk's predictions are
    appended to the output as they are made, so memory stays flat as the table grows. The output
    appears (atomically) only when every row is scored.

    With ``params.parts_dir`` (set by the orchestrator when it captures while the model scores), each
    chunk's predictions are also handed on as they are made: ``part-000000.csv``, ``part-000001.csv``,
    ... in that folder, each a complete CSV with the output's header, appearing (by rename) only
    when written. Together they hold exactly the output's rows, in order.

    With ``params.input_parts`` (set by the orchestrator when it starts the model while it still reads
    the window from the feature store), the input is read from that folder part by part as the parts
    appear (:func:`ambidex_stage.tables.read_parts`) instead of from the input's path; the context's
    inline schema then gives the columns only.
    """
    import pandas as pd

    from .tables import part_writer, prefetch, read_parts, read_table_chunks, write_table_chunks

    folder = ctx.input_model("model")
    manifest = read_manifest(folder)
    in_schema = ctx.input_schema("data")
    names = [c["name"] for c in in_schema["columns"]]
    keep = list(ctx.params.get("keep") or [])
    missing = [k for k in keep if k not in names]
    if missing:
        raise ContractError(f"params.keep names column {missing[0]!r}, which the input does not have.",
                            code="contract.missing_column", hint=f"The input has columns {names}.")
    chunk = int(ctx.params.get("chunk_size") or 100_000)
    levels, task = manifest["target"].get("levels") or [], manifest["task"]
    by_name = {c["name"]: c for c in in_schema["columns"]}
    cols = [by_name[k] for k in keep] + list(manifest["signature"]["outputs"])
    state = {"rows": 0, "extras": None}

    streamed = ctx.params.get("input_parts")
    waiting = threading.Event()  # set to stop a read that waits for parts, when this stage fails first
    chunks = prefetch(read_parts(streamed, chunk, stop=waiting) if streamed
                      else read_table_chunks(ctx.input_path("data"), chunk, in_schema))
    try:
        # the first chunk is checked against the signature before the model loads (unpickling it imports
        # scikit-learn): a refused input (a smoke test's negative case, say) fails at once
        first = next(chunks, None)
        if first is None:
            raise ContractError("The input table came without a single chunk, not even an empty one.",
                                code="contract.invalid_table", hint="Its writer must hand on at least one part.")
        checked = [coerce_to_signature(first, manifest["signature"]["inputs"])]
        payload = load_payload(folder, manifest)
    except BaseException:
        waiting.set()
        chunks.close()
        raise

    def predictions():
        for df in itertools.chain([first], chunks):
            X, extras = checked.pop() if checked else coerce_to_signature(df, manifest["signature"]["inputs"])
            if state["extras"] is None:
                state["extras"] = extras
            p, s = _predict_frame(payload, X, levels, task)
            out = {k: df[k].reset_index(drop=True) for k in keep}
            out["prediction"] = (pd.Series(p, dtype="float64") if task == "regression"
                                 else pd.Series(pd.Categorical(p, categories=levels)))
            out["score"] = pd.Series(s, dtype="float64")
            state["rows"] += len(df)
            yield pd.DataFrame(out)

    parts = ctx.params.get("parts_dir")
    write_table_chunks(predictions(), ctx.output_path(_single_output(ctx, "table", "predictions")),
                       {"contract_version": 1, "row_count": 0, "columns": cols},
                       on_chunk=part_writer(parts) if parts else None)
    extras = state["extras"] or []
    ctx.log_metric("n_rows", state["rows"])
    ctx.log_metric("extra_columns", len(extras))
    if extras:
        ctx.log_param("extra_columns", extras)


def _now_utc() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _replace_dir(staging: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    staging.replace(final)


_python_version = platform.python_version
