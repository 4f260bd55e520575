"""_train: the body of the built-in ``train`` stage (split from builtins.py to keep modules small).

Params: target (required), features, exclude, task (auto), positive (default: second level),
estimator, estimator_params, validation_fraction (0.2, random split with ctx.seed), golden_n (5),
name (model name; default the pipeline name).
"""
from __future__ import annotations

import os
from pathlib import Path

from . import __version__
from .builtins import (_IMPORTANCE_ROWS, _estimator, _golden, _loss, _metrics, _model_frame, _model_name,
                       _now_utc, _pipeline, _predict_frame, _python_version, _replace_dir, _single_output,
                       _target_levels)
from .errors import StageError
from .manifest import normalize_importance, write_manifest
from .signature import column_from_series, coerce_to_signature

TASKS = ("binary_classification", "multiclass_classification", "regression")


def _signature_inputs(df, features):
    inputs = []
    for f in features:
        col = column_from_series(f, df[f])
        if col["type"] == "timestamp":
            raise StageError(f"Feature {f!r} is a timestamp; built-in estimators take numeric, boolean, string and "
                             "category features.", hint=f"Add {f!r} to params.exclude or derive numeric features.")
        if col["type"] == "string":
            col = {"name": f, "type": "category", "levels": sorted(set(df[f].dropna().astype(str)))}
        col["nullable"] = True
        inputs.append(col)
    return inputs


def fit_model(ctx) -> Path:
    import joblib
    import numpy as np
    import pandas as pd
    import sklearn

    p = ctx.params
    if not p.get("target"):
        raise StageError("train needs params.target (the column to predict).", hint="Add 'target: <column>'.")
    df = ctx.input_table(next(iter(k for k, v in ctx.inputs.items() if v["kind"] == "table")))
    target = p["target"]
    if target not in df.columns:
        raise StageError(f"Target column {target!r} is not in the training table; it has {list(df.columns)}.",
                         hint="Fix params.target.")
    exclude = set(p.get("exclude") or [])
    features = list(p.get("features") or [c for c in df.columns if c != target and c not in exclude])
    absent = [f for f in features if f not in df.columns]
    if absent:
        raise StageError(f"Feature(s) {absent} are not in the training table.", hint=f"It has {list(df.columns)}.")
    if not features:
        raise StageError("train has no features.", hint="Set params.features or reduce params.exclude.")
    df = df[df[target].notna()].reset_index(drop=True)
    tcol = column_from_series(target, df[target])
    numeric = tcol["type"] in ("integer", "double")
    levels = None if numeric else _target_levels(df[target], tcol["type"])
    task = p.get("task") or "auto"
    if task == "auto":
        task = "regression" if numeric else ("binary_classification" if len(levels) == 2 else
                                              "multiclass_classification")
    if task not in TASKS or (task == "regression") != numeric or (levels is not None and len(levels) < 2):
        raise StageError(f"Cannot train task {task!r} on target {target!r} ({tcol['type']}, levels {levels}).",
                         hint=f"Use task auto or one of {TASKS} matching the target type; a classifier "
                              "needs at least 2 levels.")
    inputs = _signature_inputs(df, features)
    X, _ = coerce_to_signature(df, inputs)
    Z = _model_frame(X, inputs)
    if numeric:
        y = df[target].to_numpy(dtype=np.float64, na_value=np.nan)
    else:
        lab = df[target].map(lambda b: "true" if b else "false") if tcol["type"] == "boolean" else df[target].astype(str)
        y = lab.map({lv: i for i, lv in enumerate(levels)}).to_numpy(dtype=np.int64)
    pos_idx = None
    positive = None
    if task == "binary_classification":
        positive = str(p.get("positive", levels[1]))
        if positive not in levels:
            raise StageError(f"params.positive {positive!r} is not a level of {target!r}: {levels}.",
                             hint="Pick one of the target's levels.")
        pos_idx = levels.index(positive)

    n = len(df)
    frac = float(p.get("validation_fraction", 0.2))
    rng = np.random.RandomState(ctx.seed)
    n_valid = min(max(1, int(round(n * frac))), n - 2) if n >= 3 else 0
    if n_valid < 1:
        raise StageError(f"train needs at least 3 rows with a target; it got {n}.", hint="Check the input window.")
    perm = rng.permutation(n)
    valid, train_idx = np.sort(perm[:n_valid]), np.sort(perm[n_valid:])
    est, linear = _estimator(p.get("estimator") or ("ridge" if numeric else "logistic_regression"), task,
                             ctx.seed, p.get("estimator_params"))
    pipe = _pipeline(inputs, est, linear)
    if not numeric and len(np.unique(y[train_idx])) < 2:
        raise StageError("The training split holds a single target level.", hint="Provide more varied data.")
    pipe.fit(Z.iloc[train_idx], y[train_idx])
    payload = {"kind": "ambidex_stage.builtins/1", "pipeline": pipe, "inputs": inputs, "task": task,
               "levels": levels, "positive_index": pos_idx}

    Xv = X.iloc[valid]
    pred, sc = _predict_frame(payload, Xv, levels, task)
    k = len(levels or [])
    Zv = Z.iloc[valid]
    outv = pipe.predict(Zv).astype(np.float64) if numeric else _proba(pipe, Zv, k)
    metrics = _metrics(task, y[valid], outv, k, pos_idx)
    metrics.update(n_train=float(len(train_idx)), n_valid=float(len(valid)))
    importance = _permutation_importance(pipe, Zv, y[valid], task, k, ctx.seed, numeric)

    golden_pos, golden_neg = _golden(Xv, inputs, np.asarray(pred), np.asarray(sc), task, int(p.get("golden_n", 5)))
    out_name = _single_output(ctx, "model", "model")
    final = ctx.output_path(out_name)
    staging = final.with_name(f".{final.name}.staging{os.getpid()}")
    staging.mkdir(parents=True, exist_ok=False)
    joblib.dump(payload, staging / "model.joblib")
    target_doc = {"name": target, "type": tcol["type"]}
    if levels is not None:
        target_doc["levels"] = levels
    if positive is not None:
        target_doc["positive"] = positive
    pred_col = ({"name": "prediction", "type": "double", "nullable": True} if numeric else
                {"name": "prediction", "type": "category", "levels": levels, "nullable": True})
    vi = _python_version().split(".")
    manifest = {
        "contract_version": 1, "name": _model_name(ctx, out_name), "version": None, "created": _now_utc(),
        "producer": {"language": "python", "language_version": _python_version(), "library": "scikit-learn",
                     "library_version": sklearn.__version__, "sdk_version": __version__},
        "runtime": {"language": "python", "payload": "model.joblib", "format": "joblib",
                    "predict": "ambidex_stage.builtins",
                    "packages": {"scikit-learn": sklearn.__version__, "numpy": np.__version__,
                                 "pandas": pd.__version__, "joblib": joblib.__version__},
                    "min_language_version": f"{vi[0]}.{vi[1]}"},
        "task": task, "target": target_doc,
        "signature": {"inputs": inputs, "outputs": [pred_col, {"name": "score", "type": "double", "nullable": True}],
                      "unseen_level": "error"},
        "feature_importance": {"method": "permutation", "values": importance},
        "metrics": {k_: v for k_, v in metrics.items() if v is not None and np.isfinite(v)},
        "golden": {"tolerance": 1e-9, "positive": golden_pos, "negative": golden_neg},
        "lineage": None, "resources": None, "files": None,
    }
    write_manifest(staging, manifest)
    _replace_dir(staging, final)
    for name_, v in manifest["metrics"].items():
        ctx.log_metric(name_, v)
    ctx.log_param("task", task)
    ctx.log_param("features", features)
    return final


def _proba(pipe, Z, k):
    from .builtins import _full_proba

    return _full_proba(pipe, Z, k)


def _permutation_importance(pipe, Zv, yv, task, k, seed, numeric, n_repeats=3):
    """Loss increase when one ORIGINAL input column is shuffled (log-loss / MSE), normalised."""
    import numpy as np

    if len(Zv) > _IMPORTANCE_ROWS:
        pick = np.sort(np.random.RandomState(seed).choice(len(Zv), _IMPORTANCE_ROWS, replace=False))
        Zv, yv = Zv.iloc[pick], yv[pick]
    blocks = _output_blocks(pipe, list(Zv.columns))
    if blocks is not None:
        # The preprocessing is row-wise (impute, scale, one-hot with fitted parameters), so shuffling an input
        # column shuffles exactly its block of transformed columns: transform once, permute blocks. Same
        # permutations, same numbers as transforming every shuffled frame, without 3 x n_features transforms.
        est = pipe.named_steps["model"]
        M = np.asarray(pipe.named_steps["prep"].transform(Zv), dtype=np.float64)

        def loss(m):
            out = est.predict(m).astype(np.float64) if numeric else _proba(est, m, k)
            return _loss(task, yv, out, k)

        def shuffled(col, perm):
            m = M.copy()
            m[:, blocks[col]] = M[perm][:, blocks[col]]
            return m
        base = loss(M)
    else:
        def loss(Z):
            out = pipe.predict(Z).astype(np.float64) if numeric else _proba(pipe, Z, k)
            return _loss(task, yv, out, k)

        def shuffled(col, perm):
            z = Zv.copy()
            z[col] = Zv[col].to_numpy()[perm]
            return z
        base = loss(Zv)
    rng = np.random.RandomState(seed)
    raw = {col: float(np.mean([loss(shuffled(col, rng.permutation(len(Zv)))) - base for _ in range(n_repeats)]))
           for col in Zv.columns}
    return normalize_importance(raw)


def _output_blocks(pipe, columns):
    """{input column: indices of its transformed columns} for the built-in pipeline (``_pipeline``: a "num"
    block, one output per numeric input, then a "cat" one-hot block, one output per category); None for any
    other shape (the caller then transforms every shuffled frame)."""
    import numpy as np

    try:
        prep = pipe.named_steps["prep"]
        idx = prep.output_indices_
        out = {}
        for name, _, cols in prep.transformers_:
            if name == "remainder":
                continue
            sl = idx[name]
            if name == "num":
                if sl.stop - sl.start != len(cols):
                    return None
                out.update({c: np.array([sl.start + i]) for i, c in enumerate(cols)})
            elif name == "cat":
                enc = prep.named_transformers_["cat"]
                if getattr(enc, "drop", None) is not None:
                    return None
                lo = sl.start
                for c, cats in zip(cols, enc.categories_):
                    out[c] = np.arange(lo, lo + len(cats))
                    lo += len(cats)
                if lo != sl.stop:
                    return None
            else:
                return None
    except (AttributeError, KeyError, TypeError):
        return None
    return out if set(out) == set(columns) else None
