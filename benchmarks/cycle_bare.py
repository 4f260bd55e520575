"""cycle_bare: one window of the churn loop as ONE plain script, without ambidex's orchestration.

The baseline bench_cycle compares ``ambidex run config/churn.yaml --window W`` against. It does
the same computational work for window W, in the same order, with the same models and rules:

  load      one Rscript call: wa_churn (r-cran-modeldata) with customer_id / signup_month, to CSV
            (exactly what config/stages/load_wa_churn.R computes), read back with pandas
  bootstrap (first window) train both candidates on the 12 labelled months before the hold-out,
            score the hold-out with each, keep the lower mean log-loss as champion
  score     window W with the live models (champion, the other runtime's model in shadow, plus the
            previous champion as shadow for one
            window after a switch); predictions to SQLite with executemany
  labels    the labels of W-1 to SQLite (executemany), joined to its predictions; AUC per model
            (ambidex.kpi.measure_kpi)
  drift     ambidex.drift.compare_frames of W's features vs the champion's training rows and vs W-1
  train     (when retraining) R ranger (200 trees, 1 thread) in one Rscript call, sklearn
            logistic regression in-process
  evaluate  new models, the two previous versions of each candidate and the champion score the
            hold-out (Python in-process, every R model in one Rscript call); per-row log-loss and
            the paired test ambidex.kpi.decide_promotion (z_min 1.645, min_gain 0.002)

It leaves out, on purpose, everything ambidex adds around that work: the registry, the cycle
journal, contract files and manifests, hashing and verifying model files, the feature store
(versioned marts), per-stage processes and their logs, validation metrics / permutation importance /
golden rows at training, the governance gate and smoke tests, lineage, notifications, the report.

State between windows lives in ``--state DIR`` (models, champion, predictions.db). The retrain
decision is taken from ``--retrain yes|no`` (bench_cycle passes ambidex's own decision for the
window, so both train in the same windows); ``auto`` applies drift alert / every 3 windows.
Prints one ``BARE {json}`` line (per-step seconds, champion, decision) on stdout.

    python benchmarks/cycle_bare.py --state /tmp/bare --window 2024-01-01 --retrain auto
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd

from ambidex.drift import compare_frames
from ambidex.kpi import decide_promotion, measure_kpi

CYCLE_START = pd.Timestamp("2024-01-01")
KEY, TIME, TARGET, POSITIVE = "customer_id", "signup_month", "churn", "Yes"
TRAIN_WINDOWS, LABEL_DELAY, PREVIOUS, EVERY = 12, 1, 2, 3
SEED, NUM_TREES = 42, 200

R_CODE = r"""
args <- commandArgs(trailingOnly = TRUE)
mode <- args[1]
feats <- function(df) df[, setdiff(names(df), c("customer_id", "signup_month", "churn")), drop = FALSE]
prep <- function(x, spec) {
  for (n in names(spec$levels)) x[[n]] <- factor(as.character(x[[n]]), levels = spec$levels[[n]])
  for (n in names(spec$medians)) { v <- x[[n]]; v[is.na(v)] <- spec$medians[[n]]; x[[n]] <- v }
  x
}
if (mode == "load") {
  env <- new.env()
  utils::data("wa_churn", package = "modeldata", envir = env)
  churn <- as.data.frame(env$wa_churn)
  as_of <- as.POSIXct("2024-12-01", tz = "UTC")
  mb <- as.integer(churn$tenure)
  signup <- seq(as_of, by = "-1 month", length.out = max(mb) + 1L)[mb + 1L]
  churn <- cbind(data.frame(customer_id = seq_len(nrow(churn)),
                            signup_month = format(signup, "%Y-%m-%d %H:%M:%S")), churn)
  utils::write.csv(churn, args[2], row.names = FALSE)
} else if (mode == "train") {
  df <- utils::read.csv(args[2], stringsAsFactors = FALSE)
  x <- feats(df)
  isnum <- vapply(x, is.numeric, logical(1))
  spec <- list(levels = lapply(x[!isnum], function(v) sort(unique(as.character(v)))),
               medians = lapply(x[isnum], function(v) stats::median(v, na.rm = TRUE)))
  y <- factor(df$churn, levels = c("No", "Yes"))
  fit <- ranger::ranger(x = prep(x, spec), y = y, num.trees = as.integer(args[4]), probability = TRUE,
                        seed = as.integer(args[5]), num.threads = 1L)
  saveRDS(list(fit = fit, spec = spec), args[3])
} else if (mode == "predict") {
  df <- utils::read.csv(args[2], stringsAsFactors = FALSE)
  loadNamespace("ranger")
  out <- data.frame(customer_id = df$customer_id)
  for (path in args[-(1:3)]) {
    m <- readRDS(path)
    p <- stats::predict(m$fit, data = prep(feats(df), m$spec), num.threads = 1L)$predictions
    out[[basename(path)]] <- p[, "Yes"]
  }
  utils::write.csv(out, args[3], row.names = FALSE)
}
"""


class Bare:
    def __init__(self, state: Path):
        self.dir = state
        self.dir.mkdir(parents=True, exist_ok=True)
        self.rscript = self.dir / "bare.R"
        if not self.rscript.exists():
            self.rscript.write_text(R_CODE)
        self.meta_path = self.dir / "state.json"
        self.meta = json.loads(self.meta_path.read_text()) if self.meta_path.exists() else {
            "versions": {"churn_r": [], "churn_py": []}, "champion": None, "shadow": None, "standing": [],
            "trained_at": None,
            "train_window": None}
        self.db = sqlite3.connect(self.dir / "predictions.db")
        self.db.execute("CREATE TABLE IF NOT EXISTS predictions (window_start TEXT, entity_key TEXT, model TEXT, "
                        "score REAL)")
        self.db.execute("CREATE TABLE IF NOT EXISTS labels (window_start TEXT, entity_key TEXT, label TEXT)")
        self.db.execute("CREATE INDEX IF NOT EXISTS p_w ON predictions (window_start, entity_key)")
        self.steps: dict[str, float] = {}

    # ---------------------------------------------------------------- helpers
    def r(self, *args) -> None:
        subprocess.run(["Rscript", "--vanilla", str(self.rscript), *map(str, args)], check=True,
                       stdout=subprocess.DEVNULL)

    def window(self, k: int) -> pd.DataFrame:
        lo, hi = CYCLE_START + pd.DateOffset(months=k), CYCLE_START + pd.DateOffset(months=k + 1)
        return self.data[(self.data[TIME] >= lo) & (self.data[TIME] < hi)]

    def span(self, k0: int, k1: int) -> pd.DataFrame:
        lo, hi = CYCLE_START + pd.DateOffset(months=k0), CYCLE_START + pd.DateOffset(months=k1)
        return self.data[(self.data[TIME] >= lo) & (self.data[TIME] < hi)]

    @staticmethod
    def features(df: pd.DataFrame) -> pd.DataFrame:
        return df.drop(columns=[KEY, TIME, TARGET])

    def path(self, label: str) -> Path:
        name, _, ver = label.rpartition(":")
        return self.dir / f"{name}_{ver}.{'rds' if name == 'churn_r' else 'joblib'}"

    def score(self, labels: list[str], df: pd.DataFrame) -> dict[str, np.ndarray]:
        """P(Yes) per model: Python models in-process, every R model in ONE Rscript call."""
        out = {}
        for lab in labels:
            if lab.startswith("churn_py"):
                out[lab] = joblib.load(self.path(lab)).predict_proba(self.features(df))[:, 1]
        rs = [lab for lab in labels if lab.startswith("churn_r")]
        if rs:
            inp, res = self.dir / "score_in.csv", self.dir / "score_out.csv"
            df.to_csv(inp, index=False)
            self.r("predict", inp, res, *[self.path(x) for x in rs])
            got = pd.read_csv(res)
            for lab in rs:
                out[lab] = got[self.path(lab).name].to_numpy(dtype=np.float64)
        return out

    def train(self, k_hold: int) -> list[str]:
        from sklearn.compose import ColumnTransformer
        from sklearn.impute import SimpleImputer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import Pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        df = self.span(k_hold - TRAIN_WINDOWS, k_hold)
        df = df[df[TARGET].notna()]
        new = []
        ver = len(self.meta["versions"]["churn_r"]) + 1
        lab = f"churn_r:{ver}"
        inp = self.dir / "train_in.csv"
        df.to_csv(inp, index=False)
        self.r("train", inp, self.path(lab), NUM_TREES, SEED)
        self.meta["versions"]["churn_r"].append(lab)
        new.append(lab)
        X = self.features(df)
        num = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])]
        cat = [c for c in X.columns if c not in num]
        pipe = Pipeline([("prep", ColumnTransformer([
            ("num", Pipeline([("impute", SimpleImputer(strategy="median")), ("scale", StandardScaler())]), num),
            ("cat", OneHotEncoder(handle_unknown="ignore", sparse_output=False), cat)])),
            ("model", LogisticRegression(max_iter=1000))])
        pipe.fit(X, (df[TARGET] == POSITIVE).astype(int))
        lab = f"churn_py:{len(self.meta['versions']['churn_py']) + 1}"
        joblib.dump(pipe, self.path(lab))
        self.meta["versions"]["churn_py"].append(lab)
        new.append(lab)
        self.meta["train_window"] = [k_hold - TRAIN_WINDOWS, k_hold]
        return new

    def holdout_losses(self, k_hold: int, labels: list[str]) -> dict[str, np.ndarray]:
        df = self.window(k_hold)
        df = df[df[TARGET].notna()]
        y = (df[TARGET] == POSITIVE).to_numpy(dtype=np.float64)
        out = {}
        for lab, s in self.score(labels, df).items():
            q = np.clip(s, 1e-15, 1 - 1e-15)
            out[lab] = -np.where(y == 1, np.log(q), np.log1p(-q))
        return out

    def timed(self, name, fn, *a):
        t0 = time.perf_counter()
        try:
            return fn(*a)
        finally:
            self.steps[name] = self.steps.get(name, 0.0) + time.perf_counter() - t0

    # ---------------------------------------------------------------- the window
    def run(self, k: int, retrain: str) -> dict:
        out: dict = {"window": k}
        had_shadow = self.meta.get("shadow")
        self.timed("load", self.load)
        cold = self.meta["champion"] is None
        if cold:
            self.timed("bootstrap", self.bootstrap, k)
        self.timed("score", self.score_window, k)
        out["kpi"] = self.timed("labels", self.labels, k)
        alert = self.timed("drift", self.drift, k)
        if cold:
            do = False
        elif retrain == "auto":
            do = alert or (k - self.meta["trained_at"] >= EVERY)
        else:
            do = retrain == "yes"
        out.update(retrain=do, drift_alert=alert)
        if do:
            new = self.timed("train", self.train, k - LABEL_DELAY)
            self.meta["trained_at"] = k
            out["promotion"] = self.timed("evaluate", self.evaluate, k - LABEL_DELAY, new)
        if had_shadow and self.meta.get("shadow") == had_shadow:  # scored for one window after the switch
            self.meta["shadow"] = None
            if _lang(had_shadow) != _lang(self.meta["champion"]) and not self.meta["standing"]:
                self.meta["standing"] = [had_shadow]  # the old champion stays as the other runtime's shadow
        out["champion"] = self.meta["champion"]
        self.meta_path.write_text(json.dumps(self.meta))
        self.db.close()
        out["steps"] = self.steps
        return out

    def load(self) -> None:
        csv = self.dir / "wa_churn.csv"
        self.r("load", csv)
        self.data = pd.read_csv(csv, parse_dates=[TIME])

    def bootstrap(self, k: int) -> None:
        new = self.train(k - LABEL_DELAY)
        losses = self.holdout_losses(k - LABEL_DELAY, new)
        self.meta["champion"] = min(new, key=lambda lab: (float(losses[lab].mean()), lab))
        other = [lab for lab in new if _lang(lab) != _lang(self.meta["champion"])]
        # as ambidex: the other runtime's best model scores beside the champion in shadow
        self.meta["standing"] = [min(other, key=lambda lab: (float(losses[lab].mean()), lab))] if other else []
        self.meta["trained_at"] = k

    def score_window(self, k: int) -> None:
        df = self.window(k)
        live = ([self.meta["champion"]] + ([self.meta["shadow"]] if self.meta.get("shadow") else [])
                + self.meta.get("standing", []))
        w = str((CYCLE_START + pd.DateOffset(months=k)).date())
        keys = df[KEY].astype(str).tolist()
        with self.db:
            for lab, s in self.score(live, df).items():
                self.db.executemany("INSERT INTO predictions VALUES (?, ?, ?, ?)",
                                    zip([w] * len(keys), keys, [lab] * len(keys), s.tolist()))

    def labels(self, k: int) -> dict | None:
        if k - LABEL_DELAY < 0:
            return None
        lw = str((CYCLE_START + pd.DateOffset(months=k - LABEL_DELAY)).date())
        lab = self.window(k - LABEL_DELAY)
        lab = lab[lab[TARGET].notna()]
        with self.db:
            self.db.executemany("INSERT INTO labels VALUES (?, ?, ?)",
                                zip([lw] * len(lab), lab[KEY].astype(str), lab[TARGET].astype(str)))
        rows = pd.read_sql_query("SELECT p.model, p.score, l.label FROM predictions p JOIN labels l ON "
                                 "l.window_start = p.window_start AND l.entity_key = p.entity_key "
                                 "WHERE p.window_start = ?", self.db, params=(lw,))
        return {m: measure_kpi("roc_auc", (g["label"] == POSITIVE).astype(float), g["score"]).value
                for m, g in rows.groupby("model")}

    def drift(self, k: int) -> bool:
        cur = self.features(self.window(k))
        ref = self.features(self.span(*self.meta["train_window"]))
        d = compare_frames(ref, cur, uniform_importance=True)
        compare_frames(self.features(self.window(k - 1)), cur, uniform_importance=True)
        return bool(d.dataset_drift)

    def evaluate(self, k_hold: int, new: list[str]) -> dict:
        champ = self.meta["champion"]
        prev = []
        for name in ("churn_r", "churn_py"):
            older = [v for v in reversed(self.meta["versions"][name]) if v not in new]
            prev += [v for v in older[:PREVIOUS] if v != champ]
        losses = self.holdout_losses(k_hold, [champ] + new + prev)
        dec = decide_promotion(losses[champ], {lab: v for lab, v in losses.items() if lab != champ},
                               z_min=1.645, min_gain=0.002)
        if dec.promote:
            covered = {_lang(dec.winner), _lang(champ)}
            self.meta.update(shadow=champ, champion=dec.winner,
                             standing=[s for s in self.meta.get("standing", []) if _lang(s) not in covered])
        return {"promote": dec.promote, "winner": dec.winner, "best": dec.best_challenger, "n": len(losses[champ]),
                "contestants": len(losses)}


def _lang(label: str) -> str:
    return "r" if label.startswith("churn_r") else "python"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--state", required=True, type=Path)
    ap.add_argument("--window", required=True, help="window start, e.g. 2024-03-01 (monthly from 2024-01-01)")
    ap.add_argument("--retrain", choices=("auto", "yes", "no"), default="auto")
    a = ap.parse_args(argv)
    t = pd.Timestamp(a.window)
    k = (t.year - CYCLE_START.year) * 12 + t.month - CYCLE_START.month
    bare = Bare(a.state)
    print("BARE " + json.dumps(bare.run(k, a.retrain), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
