"""cycle_steps: the steps of one cycle window (ingest ... report), each journaled; the services they share.

Every step is a function ``step(svc, state) -> detail`` (a JSON-able dict). The runner
(:func:`run_window`) skips a step whose row exists in ``cycle_steps`` (its stored detail is
handed to later steps instead), runs the others in order, and writes the step's row, with
the step's decisions and their events, in one transaction after it returns.
"""
from __future__ import annotations

import datetime as dt
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from . import cycle_eval as E
from . import cycle_report as R
from . import cycletables as C
from .cycle import CycleError, WindowState, _begin_window, _end_window, _utcnow, record_step, steps_of, window_at
from .errors import DataError

__all__ = ["Services", "run_window", "STEPS"]

log = logging.getLogger(__name__)
EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass
class Services:
    """The library objects a cycle needs, built once per invocation from the workspace and the pipeline."""

    ws: object
    pipeline: object
    path: Path
    reg: object
    engine: object
    fs: object
    deps: object
    gov: object
    smoke: object
    notifier: object
    launch: Callable
    lock: object
    lineage: dict
    clock: Callable

    @classmethod
    def build(cls, ws, pipeline, path: Path, *, clock=_utcnow, lock=None) -> "Services":
        from .deploy import Deployments
        from .governance import Governance, GovernanceSpec
        from .lineage import collect_lineage
        from .notify import Notifier, NotifySpec
        from .pipeline import feature_store_engine
        from .runners import r_version
        from .scoring import score_model
        from .smoke import SmokeTester

        reg = ws.registry()
        notifier = Notifier(reg.engine, pipeline.notify or getattr(ws.settings, "notify", None) or NotifySpec())
        deps = Deployments(reg.engine, store=reg.store, actor=reg.actor, notify=notifier)
        rscript = ws.rscript

        def launch(model_dir, inp, out, keep=None, chunk_size=None, feed=None):
            return score_model(model_dir, inp, out, project_root=ws.root, work_dir=ws.state_dir / "scoring",
                               keep=keep, chunk_size=chunk_size, rscript=rscript, feed=feed)

        smoke = SmokeTester(deps, lambda m, i, o: launch(m, i, o), workdir=ws.state_dir / "smoke")
        policy = pipeline.governance or getattr(ws.settings, "governance", None) or GovernanceSpec()
        gov = Governance(deps, policy, smoke=smoke, spec_for=lambda ref: pipeline.governance)
        deps.gate = gov.gate
        stages = list(pipeline.stages) + list(pipeline.cycle.candidates)
        lineage = collect_lineage(ws.root, config_path=Path(path).resolve(),
                                  scripts={s.name: ws.root / s.script for s in stages if s.script},
                                  r_version=r_version() if any(s.lang == "r" for s in stages) else None)
        return cls(ws, pipeline, Path(path), reg, reg.engine, feature_store_engine(ws, pipeline), deps, gov, smoke,
                   notifier, launch, lock, lineage, clock)

    @property
    def cycle(self):
        return self.pipeline.cycle

    @property
    def name(self) -> str:
        return self.pipeline.name

    @property
    def deployment(self) -> str:
        return self.pipeline.deploy.name

    def work_dir(self, state: WindowState) -> Path:
        d = self.ws.state_dir / "cycle" / self.name / state.tag
        d.mkdir(parents=True, exist_ok=True)
        return d

    def live(self):
        """The live revision, or None before the cold start created the deployment."""
        from .errors import RegistryError

        try:
            return self.deps.live(self.deployment)
        except RegistryError as e:
            if e.code == "deploy.not_found":
                return None
            raise

    def verify_live(self) -> None:
        """Every model of the live revision still has its recorded bytes; ArtifactError (nothing changed) if not."""
        from .errors import ArtifactError

        live = self.live()
        if live is None:
            return
        with self.engine.connect() as conn:
            refs = [self.deps.resolve(conn, m.model, m.version) for m in live.members]
        for ref in refs:
            try:
                self.deps.verify(ref)
            except ArtifactError as e:
                raise ArtifactError(f"Deployment '{self.deployment}' revision {live.revision}: {e.message} The cycle "
                                    "stopped before changing anything; the live revision keeps serving.",
                                    code=e.code, hint="Restore the file, or roll back / promote another version "
                                    "('ambidex deploy history'); 'ambidex verify' lists every mismatch.") from None

    def zygotes_ahead(self, done: dict) -> list:
        """The built-in stages this window runs first, so their zygotes load while the window is ingested
        (``runners.stage_zygotes``): the live revision's scoring, for the score step; before the cold start,
        the candidates' training (their launches as the pipeline makes them), for the bootstrap."""
        from .pipeline import _launch_for
        from .runners import scoring_launch

        live = self.live()
        if live is not None:
            return [scoring_launch(lang, rscript=self.ws.rscript) for lang in sorted(self.deps.languages(live))
                    ] if "score" not in done else []
        if "bootstrap" in done:
            return []
        return [_launch_for(c, self.pipeline, self.ws, self.ws.state_dir) for c in self.cycle.candidates if c.builtin]

    def report_missed(self) -> None:
        """A missed cron run is recorded (schedule.check_missed) and notified through the outbox."""
        from .pipeline import _report_missed_schedule

        missed = _report_missed_schedule(self.ws, self.name, None)
        if missed:
            with self.engine.begin() as conn:
                self.notifier.enqueue(conn, "schedule.missed", {"pipeline": self.name,
                                                                "missed": [str(m) for m in missed]})

    def run_stages(self, stages, window):
        from .pipeline import run_stages

        return run_stages(self.ws, self.pipeline, self.path, stages, window=window, lock=self.lock,
                          report_missed=False, lineage=self.lineage)


# --------------------------------------------------------------------------- the runner

def run_window(svc: Services, state: WindowState, *, on_step=None) -> dict:
    """Run (or resume) every step of ``state``'s window; return its summary. Raises on a failed step."""
    notify = on_step or (lambda step, phase, st: None)
    from .runners import stage_zygotes

    svc.verify_live()  # before the journal row: a tampered champion changes nothing
    prev = _begin_window(svc.engine, svc.name, state, svc.lineage, _utcnow())
    done = steps_of(svc.engine, svc.name, state.start)
    with stage_zygotes(*svc.zygotes_ahead(done)):
        return _run_steps(svc, state, notify, prev, done)


def _run_steps(svc: Services, state: WindowState, notify, prev: str, done: dict) -> dict:
    try:
        for name, fn in STEPS:
            if name in done:
                state.details[name] = done[name]["detail"]
                state.ran.append({"step": name, "status": "skipped", "seconds": 0.0})
                notify(name, "skipped", state)
                continue
            notify(name, "start", state)
            started, t0 = _utcnow(), time.perf_counter()
            detail = fn(svc, state) or {}
            decisions = detail.pop("_decisions", [])
            with svc.engine.begin() as conn:
                for d in decisions:
                    _write_decision(svc, conn, state, d)
                record_step(conn, svc.name, state.start, name, started, time.perf_counter() - t0, detail, _utcnow())
            state.details[name] = detail
            state.ran.append({"step": name, "status": "ran", "seconds": round(time.perf_counter() - t0, 3)})
            notify(name, "done", state)
    except BaseException as e:
        msg = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
        _end_window(svc.engine, svc.name, state, "failed", _utcnow(), msg[:2000])
        raise
    _end_window(svc.engine, svc.name, state, "finished", _utcnow())
    return summarize(svc, state, resumed=prev not in ("new", "finished"), already=prev == "finished")


def summarize(svc: Services, state: WindowState, *, resumed: bool = False, already: bool = False) -> dict:
    from .cycle import decisions

    mine = [d for d in decisions(svc.engine, svc.name) if d["window_start"] == state.start]
    return {"window": f"{state.start:%Y-%m-%d}/{state.end:%Y-%m-%d}", "index": state.index, "run_id": state.run_id,
            "already_finished": already, "resumed": resumed, "steps": state.ran,
            "decisions": [{"kind": d["kind"], "winner": d["winner"], "champion": d["champion"],
                           "gain": d["gain"], "z": d["z"], "revision": d["revision"],
                           "why": d["reasons"].get("summary")} for d in mine],
            "report": (state.details.get("report") or {}).get("path"),
            "exit_code": 4 if any(d["kind"] == "rollback" for d in mine) else 0}


def _write_decision(svc: Services, conn, state: WindowState, d: dict) -> None:
    """A decision row and its event (plus outbox rows) in the step's transaction."""
    reasons = d.get("reasons") or {}
    conn.execute(C.cycle_decisions.insert().values(
        pipeline=svc.name, window_start=state.start, kind=d["kind"], reasons=E.dumps(reasons),
        champion=d.get("champion"), winner=d.get("winner"), gain=d.get("gain"), z=d.get("z"),
        revision=d.get("revision"), run_id=state.run_id, decided_at=_utcnow()))
    svc.deps.event(conn, f"cycle.{d['kind']}", svc.name,
                   {"window": f"{state.start:%Y-%m-%d}/{state.end:%Y-%m-%d}", **{k: d.get(k) for k in (
                       "champion", "winner", "gain", "z", "revision")}, "reasons": reasons},
                   reason=reasons.get("summary"), entity_type="pipeline")


# --------------------------------------------------------------------------- steps 1-5

def step_ingest(svc: Services, state: WindowState) -> dict:
    """Run the pipeline's stages (load + ingest) for window T; at the cold start, first for the history."""
    cold = svc.live() is None and state.index == 0
    out: dict = {"cold_start": cold}
    if cold:
        hs = svc.cycle.history_start
        start = dt.datetime.fromisoformat(hs).replace(tzinfo=dt.timezone.utc) if hs else EPOCH
        out["history_run_id"] = svc.run_stages(svc.pipeline.stages, (start, state.start)).run_id
    summary = svc.run_stages(svc.pipeline.stages, (state.start, state.end))
    state.run_id = summary.run_id
    loads = [dv for k, v in summary.outputs.items() if k.endswith(".data_versions") for dv in v]
    out.update(run_id=summary.run_id, rows=sum(int(x.get("rows") or 0) for x in loads),
               data_versions=[f"{x['mart']}@{x['version']}" for x in loads])
    return out


def step_bootstrap(svc: Services, state: WindowState) -> dict:
    """Cold start: train every candidate on the labelled history, deploy the best by hold-out loss (revision 1)."""
    if not state.details["ingest"].get("cold_start"):
        return {"skipped": "the deployment exists"}
    hold = E.holdout_window(svc, state)
    trained = E.train_candidates(svc, state, "bootstrap", E.train_window(svc, hold))
    ev = E.evaluate(svc, state, hold, [E.model_ref(svc, v) for v in trained["versions"]], champion=None)
    best = ev["best"]
    from .deploy import Member

    from .errors import CheckFailed
    from .governance import GovernanceError

    spec = svc.pipeline.deploy
    # the best model of each other runtime scores beside it in shadow: R and Python both live from the start,
    # unless a gate (smoke test, approval, KPI floor) refuses them: then the champion goes live alone
    shadows = E.standing_shadows(svc, best, ev)
    refused = None

    def create(members):
        return svc.deps.create(spec.name, [Member(*E.split_label(best), "champion")] + members,
                               entity_key=spec.entity_key, source=spec.source or svc.cycle.mart,
                               spec=spec.model_dump(), reason=f"cycle: cold start at {state.tag}, best hold-out loss"
                               + "".join(f"; {m.label} in shadow" for m in members))
    try:
        rev = create(shadows)
    except (CheckFailed, GovernanceError) as e:
        if not shadows:
            raise
        refused, shadows = f"{', '.join(m.label for m in shadows)} not deployed in shadow: {e.message}", []
        rev = create(shadows)
    E.freeze_benchmark(svc, best, ev)
    losses = {k: v["mean_loss"] for k, v in ev["models"].items()}
    return {**ev, "trained": trained, "revision": rev.revision, "_decisions": [{
        "kind": "cold_start", "winner": best, "revision": rev.revision,
        "reasons": {"summary": f"cold start: {best} has the lowest mean hold-out loss "
                               f"({losses[best]:.4f}) of {len(losses)} candidate(s)"
                               + "".join(f"; {m.label} scores beside it in shadow" for m in shadows),
                    "losses": losses, "shadows": [m.label for m in shadows], "shadow_refused": refused,
                    "failures": trained["failures"], "holdout": ev["holdout"]}}]}


def step_profile(svc: Services, state: WindowState) -> dict:
    """Profile window T's features on the champion's frozen grid (stored once; the drift step reads it)."""
    from .featurestore import Window, read_window
    from .monitor_store import model_features, profile_window

    champ = E.champion_ref(svc)
    E.ensure_reference(svc, champ)
    frame = read_window(svc.fs, svc.cycle.mart, Window(state.start, state.end),
                        columns=[n for n, _ in model_features(champ)])
    w = profile_window(svc.engine, champ, (state.start, state.end), frame, source=f"mart:{svc.cycle.mart}",
                       run_id=state.run_id)
    return {"model": champ.label, "rows": w.n_rows}


def step_score(svc: Services, state: WindowState) -> dict:
    """Score window T with every model of the live revision (champion + shadow/canary), capture, publish."""
    from .capture import Scorer
    from .scoring import stream_window

    spec = svc.pipeline.deploy
    csv = svc.work_dir(state) / "input.csv"
    live = svc.live()
    python = live is not None and "python" in svc.deps.languages(live)
    # a Python model scores the window's rows as they come (as `ambidex score`); the stages are forked from
    # the zygotes run_window started (runners.stage_zygotes)
    scorer = Scorer(svc.deps, lambda m, i, o, keep, **kw: svc.launch(m, i, o, keep, spec.chunk_size, **kw),
                    workdir=svc.ws.state_dir / "scoring", chunk_size=spec.chunk_size,
                    publish_dir=Path(spec.publish_dir or svc.ws.state_dir / "published" / spec.name),
                    capture_features=spec.capture_features)
    rep = stream_window(scorer, svc.fs, svc.cycle.mart, spec.name, (state.start, state.end), csv, stream=python)
    csv.unlink(missing_ok=True)
    csv.with_name(csv.stem + ".schema.json").unlink(missing_ok=True)
    return {"revision": rep.revision, "rows": rep.rows, "members": rep.members, "published": rep.published_path,
            "label_free": _scores_of_window(svc, state)}


def _scores_of_window(svc: Services, state: WindowState) -> dict:
    """Every scored window: the score distribution of each live model is profiled (prediction drift,
    checked in the drift step) and, while labels are late, its KPIs are estimated label-free (CBPE for
    classifiers, DLE-lite for regressors), stored with is_estimated = 1: they can warn, never promote."""
    from .capture_columns import captured_columns
    from .errors import DataError
    from .monitor import resolve_model
    from .monitor_kpi import estimate_window
    from .monitor_store import profile_scores

    out = {}
    for (name, version), cols in captured_columns(svc.engine, svc.deployment, state.start, ("score",)).items():
        ref = resolve_model(svc.engine, f"{name}:{version}")
        s = cols["score"]
        finite = s[~np.isnan(s)]
        del cols
        if not finite.size:
            continue
        profile_scores(svc.engine, ref, (state.start, state.end), finite, run_id=state.run_id)
        try:
            kpis = estimate_window(svc.engine, ref, (state.start, state.end), finite, run_id=state.run_id)
        except DataError:  # no label-free reference yet (fitted once labels of a scored window arrive)
            continue
        out[ref.label] = {k.metric: k.value for k in kpis}
    return out


def _fit_label_free_once(svc: Services, window, data: dict) -> None:
    """The label-free reference of each captured model, fitted once from its first labelled window."""
    import sqlalchemy as sa

    from . import monitortables as M
    from .monitor import resolve_model
    from .monitor_kpi import _scores, _targets, fit_label_free

    for (name, version), d in data.items():
        ref = resolve_model(svc.engine, f"{name}:{version}")
        with svc.engine.connect() as conn:
            if conn.execute(sa.select(M.monitor_calibration.c.model_version_id)
                            .where(M.monitor_calibration.c.model_version_id == ref.id)).first():
                continue
        y = _targets(ref, d["label"])
        s = _scores(d["score"])
        ok = np.isfinite(y) & np.isfinite(s)
        if ok.sum() >= 30:
            fit_label_free(svc.engine, ref, s[ok], y[ok])


def step_labels(svc: Services, state: WindowState) -> dict:
    """Join the labels now known (window T - label_delay) to its captured predictions; KPIs with SEs per model.
    Set-based: the labels go in with one column-wise insert, the match with the captures is counted in SQL
    (in the same transaction, so labels that match nothing are never stored), and the labelled predictions
    come back column-wise per model."""
    from .capture_columns import record_label_columns
    from .featurestore import Window, read_window
    from .monitor_kpi import labelled_from_capture, record_captured

    k = state.index - svc.cycle.label_delay
    if k < 0:
        return {"window": None, "note": "no scored window has its labels yet"}
    lw = window_at(svc.cycle, k)
    key, target = svc.pipeline.deploy.entity_key, svc.cycle.target
    lab = read_window(svc.fs, svc.cycle.labels or svc.cycle.mart, Window(*lw), columns=[key, target])
    lab = lab[lab[target].notna()]
    keys = _key_texts(lab[key])
    labels = _label_texts(lab[target])
    del lab
    source = svc.pipeline.deploy.source or svc.cycle.mart

    def check(n: int, matched: int) -> None:
        if n and not matched:
            raise CycleError(f"{n} label(s) of window {lw[0]:%Y-%m-%d}/{lw[1]:%Y-%m-%d} (mart "
                             f"'{svc.cycle.labels or svc.cycle.mart}', key '{key}', e.g. {keys[0]!r}) match no "
                             f"captured prediction of deployment '{svc.deployment}'; no label was "
                             "recorded.", code="data.labels_unmatched",
                             hint=f"Check that the label table's '{key}' values are the deployment's entity keys, "
                                  "then run again; the window resumes at this step.")

    n, matched = record_label_columns(svc.engine, source, lw, keys, labels, deployment=svc.deployment, check=check)
    del keys, labels
    data = labelled_from_capture(svc.engine, svc.deployment, lw, ("label", "score"))
    kpis = record_captured(svc.engine, svc.deployment, lw, run_id=state.run_id, data=data)
    _fit_label_free_once(svc, lw, data)
    del data
    return {"window": [lw[0], lw[1]], "labels": n, "matched": matched, "unmatched": n - matched,
            "kpis": {m: {x.metric: {"value": x.value, "se": x.se, "n": x.n} for x in ks} for m, ks in kpis.items()}}


def _key_texts(col) -> list[str]:
    """Entity keys as captured (text; integral floats lose their '.0'), vectorised for the common dtypes."""
    import pandas as pd

    if pd.api.types.is_integer_dtype(col.dtype) and not col.isna().any():
        return col.astype("int64").astype(str).tolist()
    if pd.api.types.is_string_dtype(col.dtype) or pd.api.types.is_object_dtype(col.dtype):
        vals = col.tolist()
        if all(type(v) is str for v in vals):
            return vals
        return [E.key_text(v) for v in vals]
    return [E.key_text(v) for v in col.tolist()]


def _label_texts(col) -> list:
    """Labels as stored (text, None when missing), vectorised."""
    import pandas as pd

    miss = col.isna().to_numpy()
    if pd.api.types.is_float_dtype(col.dtype):
        return [E.label_text(v) for v in col.tolist()]  # str(1.0) == '1.0', as before
    txt = col.astype(str).to_numpy(dtype=object)
    txt[miss] = None
    return txt.tolist()


def step_drift(svc: Services, state: WindowState) -> dict:
    """Data drift of window T for the champion (reference, T-1, rolling) and model drift on the labelled window."""
    from .monitor import check_window, check_rows, dataset_summary
    from .monitor_kpi import evaluate_retrain

    champ = E.champion_ref(svc)
    chk = check_window(svc.engine, champ, (state.start, state.end), run_id=state.run_id)
    ref = chk.baselines.get("reference")
    top = [{k: r[k] for k in ("feature", "impact_psi", "psi", "median_shift", "status")}
           for r in (check_rows(ref) if ref else [])][:10]
    out = {"model": champ.label, "alert": chk.alert, "status": chk.status, "top": top,
           "summary": {b: dataset_summary(r) for b, r in chk.baselines.items()}, "kpi": None}
    lw = (state.details.get("labels") or {}).get("window")
    if lw:
        try:
            dec = evaluate_retrain(svc.engine, champ, tuple(E.ts(x) for x in lw), svc.cycle.metric,
                                   dataset_drift=chk.alert, run_id=state.run_id)
            out["kpi"] = {"retrain": dec.retrain, "reasons": list(dec.reasons), "delta": dict(dec.delta),
                          "z": dict(dec.z), "tol": dec.tol}
        except DataError as e:
            out["kpi"] = {"retrain": False, "reasons": [], "not_evaluated": e.message}
    return out


# --------------------------------------------------------------------------- the order (steps 6-12: cycle_eval)

STEPS = [("ingest", step_ingest), ("bootstrap", step_bootstrap), ("profile", step_profile), ("score", step_score),
         ("labels", step_labels), ("drift", step_drift), ("decide", E.step_decide), ("train", E.step_train),
         ("evaluate", E.step_evaluate), ("gate", E.step_gate), ("switch", E.step_switch), ("smoke", E.step_smoke),
         ("notify", R.step_notify), ("report", R.step_report)]
