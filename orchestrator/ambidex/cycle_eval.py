"""cycle_eval: the cycle's model steps: retrain decision, candidate training, the out-of-time contest, gate, switch, smoke.

The contest follows drift.md section 8: the most recent labelled window (T - label_delay) is
the out-of-time hold-out, never in the training data of the models trained at T; the new
candidates (M_T), the earlier versions of each candidate model (M_T-1, M_T-2) and the
champion each score those SAME rows in their own runtime; per-row log-loss (classification)
or squared error (regression) feeds the paired loss test, and ``kpi.decide_promotion``
promotes only past z_min and min_gain (hysteresis).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .cycle import CycleError, WindowState, _utcnow, record_step, window_at
from .errors import AmbidexError, CheckFailed, RegistryError

__all__ = ["step_decide", "step_train", "step_evaluate", "step_gate", "step_switch", "step_smoke",
           "evaluate", "train_candidates", "holdout_window", "train_window"]

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


# --------------------------------------------------------------------------- small helpers

def dumps(obj) -> str:
    return json.dumps(obj, default=str, sort_keys=True, allow_nan=True)


def ts(x) -> dt.datetime:
    t = x if isinstance(x, dt.datetime) else dt.datetime.fromisoformat(str(x).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.timezone.utc)


def key_text(v) -> str:
    """An entity key as captured (text); integral floats lose their '.0'."""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def label_text(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def split_label(label: str) -> tuple[str, int]:
    name, _, ver = label.rpartition(":")
    return name, int(ver)


def model_ref(svc, v: dict):
    from .monitor import resolve_model

    return resolve_model(svc.engine, f"{v['model']}:{v['version']}")


def _language(svc, label: str) -> str | None:
    from .monitor import resolve_model

    return (resolve_model(svc.engine, label).manifest.get("runtime") or {}).get("language")


def standing_shadows(svc, champion: str, ev: dict, *, live=None, also: tuple = ()) -> list:
    """One shadow per trained runtime other than the champion's (and ``also``'s): R and Python models are
    both scored and captured on every window, whichever one is champion. At the cold start (``live`` None)
    it is that runtime's best model on the hold-out; later the live revision's shadow of that runtime is
    kept (a version already deployed: no gate to pass again)."""
    from .deploy import Member

    seen = {_language(svc, champion)} | {_language(svc, a) for a in also}
    out = []
    if live is not None:
        for m in live.members:
            lang = _language(svc, m.label) if m.role == "shadow" and m.label not in (champion, *also) else None
            if lang is not None and lang not in seen:
                seen.add(lang)
                out.append(Member(m.model, m.version, "shadow"))
        return out
    models = {k: v for k, v in (ev.get("models") or {}).items() if v.get("mean_loss") is not None}
    for label in sorted(models, key=lambda k: (models[k]["mean_loss"], k)):
        lang = models[label].get("language")
        if lang is not None and lang not in seen:
            seen.add(lang)
            out.append(Member(*split_label(label), "shadow"))
    return out


def champion_ref(svc):
    from .monitor import resolve_model

    live = svc.live()
    return resolve_model(svc.engine, live.champion.label)


def holdout_window(svc, state: WindowState) -> tuple[dt.datetime, dt.datetime]:
    """The out-of-time hold-out of window T: the most recent labelled window, T - label_delay."""
    return window_at(svc.cycle, state.index - svc.cycle.label_delay)


def train_window(svc, hold) -> tuple[dt.datetime, dt.datetime]:
    """The training rows' window: ``train_windows`` windows before the hold-out, or all history before it."""
    c = svc.cycle
    if c.train_windows:
        k0 = state_index_of(svc, hold[0]) - c.train_windows
        return window_at(c, k0)[0], hold[0]
    return (ts(c.history_start) if c.history_start else EPOCH), hold[0]


def state_index_of(svc, start) -> int:
    from .cycle import window_index

    return window_index(svc.cycle, start)


def ensure_reference(svc, ref) -> None:
    """The model version's drift reference (its own training rows), stored once."""
    from .monitor_io import training_reference
    from .monitor_store import reference_window, set_reference

    if reference_window(svc.engine, ref.id, required=False) is not None:
        return
    lin = ref.manifest.get("lineage") or {}
    got = training_reference(svc.engine, lin.get("run_id"), lin.get("stage"))
    if got is None:
        raise CycleError(f"No training data found for {ref.label}, so its drift reference cannot be set.",
                         code="data.no_reference", hint="Train it through the cycle (its run keeps the input).")
    set_reference(svc.engine, ref, got[0], source=got[1])


# --------------------------------------------------------------------------- training

def train_candidates(svc, state: WindowState, prefix: str, window) -> dict:
    """Run each candidate as its own run on the training window; a failure is recorded, the others go on.
    Each success is journaled (``<prefix>.<candidate>``) so a resumed window never trains it twice."""
    from .cycle import steps_of

    done = steps_of(svc.engine, svc.name, state.start)
    todo = [c for c in svc.cycle.candidates if f"{prefix}.{c.name}" not in done]

    def one(cand):
        started, t0 = _utcnow(), time.perf_counter()
        try:
            summary = svc.run_stages([cand], window)
        except AmbidexError as e:
            return {"candidate": cand.name, "code": e.code, "message": e.message[:600]}, None
        m = summary.models[0]
        detail = {"candidate": cand.name, "model": m["name"], "version": m["version"], "language": m["language"],
                  "run_id": summary.run_id, "train_window": [window[0], window[1]]}
        ensure_reference(svc, model_ref(svc, detail))
        with svc.engine.begin() as conn:
            record_step(conn, svc.name, state.start, f"{prefix}.{cand.name}", started, time.perf_counter() - t0,
                        detail, _utcnow())
        return None, json.loads(dumps(detail))

    # candidates are independent runs (each its own process): two at a time, as scoring does
    with ThreadPoolExecutor(max_workers=min(2, len(todo) or 1)) as pool:
        results = dict(zip([c.name for c in todo], pool.map(one, todo)))
    versions, failures = [], []
    for cand in svc.cycle.candidates:
        key = f"{prefix}.{cand.name}"
        if key in done:
            versions.append(done[key]["detail"])
            continue
        failure, detail = results[cand.name]
        if failure is not None:
            failures.append(failure)
        else:
            versions.append(detail)
    if not versions:
        live = svc.live()
        serving = (f"The champion {live.champion.label} keeps serving (revision {live.revision}); nothing was "
                   "promoted." if live else "No deployment was created.")
        raise CycleError(f"All {len(failures)} candidate(s) failed training for window {state.tag}: " +
                         "; ".join(f"{f['candidate']}: {f['message']}" for f in failures) + f". {serving}",
                         code="cycle.all_candidates_failed", failures=failures,
                         hint="Fix the candidates' stages (see 'ambidex runs list'), then run again; the window "
                              "resumes at training.")
    return {"versions": versions, "failures": failures}


# --------------------------------------------------------------------------- the contest

def _holdout(svc, state: WindowState, hold):
    from .featurestore import Window, export_window_for_r, read_window

    key, target = svc.pipeline.deploy.entity_key, svc.cycle.target
    csv = svc.work_dir(state) / f"holdout_{hold[0]:%Y%m%d}.csv"
    export_window_for_r(svc.fs, svc.cycle.mart, Window(*hold), csv)
    lab = read_window(svc.fs, svc.cycle.labels or svc.cycle.mart, Window(*hold), columns=[key, target])
    return csv, {key_text(k): label_text(y) for k, y in zip(lab[key].tolist(), lab[target].tolist())}


# An R script scoring several R model folders on one typed table in ONE R process (Rscript and the
# package load once, not once per model). Each model's scores go to a little-endian float64 file, in
# input row order; ambidex::predict_model conforms the input to each model's signature and
# load_model_payload checks the model's files against its manifest before anything is deserialised.
_R_SCORE = r"""
df <- ambidex::read_typed_table(args[1])
folders <- args[-(1:2)]
for (i in seq_along(folders)) {
  p <- ambidex::predict_model(folders[i], df)
  con <- file(file.path(args[2], paste0(i, ".f8")), "wb")
  writeBin(as.double(p$score), con, endian = "little")
  close(con)
}
"""


def _in_process(ref) -> bool:
    rt = ref.manifest.get("runtime") or {}
    return rt.get("language") == "python" and rt.get("predict") == "ambidex_stage.builtins"


def _score_r_models(svc, folders: list, csv, work) -> list:
    """Scores (float64 arrays, input row order) of every R model folder, in one R process (forked from the
    R zygote when there is one: runners.run_r_code)."""
    from .errors import StageError
    from .runners import run_r_code

    code, tail = run_r_code(_R_SCORE, [csv, work, *folders], cwd=svc.ws.root, log_dir=work,
                            rscript=svc.ws.rscript, r_libs=svc.ws.r_libs)
    if code:
        raise StageError(f"Scoring the R contestants on the hold-out failed (exit {code}): {tail[-1500:]}",
                         code="stage.crashed",
                         hint="Score one of them alone with 'ambidex models score' to see the full error.")
    return [np.fromfile(work / f"{i}.f8", dtype="<f8") for i in range(1, len(folders) + 1)]


def _score_contestants(svc, contestants: list, csv, work, key: str) -> tuple[list, dict]:
    """(input keys as text, {label: scores in input row order}). Every model file is hash-checked first
    (registry.model_path). Python built-in models are scored in this process on the table read once;
    every R model in one Rscript process (run beside the Python scoring); any other model in its own
    runtime process, as deployed."""
    from ambidex_stage.builtins import predict
    from ambidex_stage.tables import read_table

    folders = {ref.label: svc.reg.model_path(svc.reg.get_model_version(ref.name, ref.version))
               for ref in contestants}
    r_refs = [ref for ref in contestants if (ref.manifest.get("runtime") or {}).get("language") == "r"]
    py_refs = [ref for ref in contestants if _in_process(ref)]
    other = [ref for ref in contestants if ref not in r_refs and ref not in py_refs]
    scores: dict = {}
    with ThreadPoolExecutor(max_workers=2) as pool:
        r_job = pool.submit(_score_r_models, svc, [folders[x.label] for x in r_refs], csv, work) if r_refs else None

        def launched(ref):
            out = work / f"{ref.name}_{ref.version}.csv"
            svc.launch(folders[ref.label], csv, out, [key])
            pred = read_table(out)
            return ref.label, [key_text(k) for k in pred[key].tolist()], pred["score"].to_numpy(dtype=np.float64)

        other_jobs = [pool.submit(launched, ref) for ref in other]
        df = read_table(csv)
        keys = [key_text(k) for k in df[key].tolist()]
        for ref in py_refs:
            scores[ref.label] = predict(folders[ref.label], df)["score"].to_numpy(dtype=np.float64)
        del df
        if r_job is not None:
            scores.update(zip([x.label for x in r_refs], r_job.result()))
        for job in other_jobs:
            label, k, s = job.result()
            if k != keys:
                raise CycleError(f"{label} returned its hold-out predictions for other rows than its input.",
                                 code="contract.invalid_table",
                                 hint="A model must return exactly one row per input row, in input order.")
            scores[label] = s
    for label, s in scores.items():
        if len(s) != len(keys):
            raise CycleError(f"{label} returned {len(s)} hold-out predictions for {len(keys)} rows.",
                             code="contract.invalid_table", hint="A model must return exactly one row per input row.")
    return keys, {ref.label: scores[ref.label] for ref in contestants}


def evaluate(svc, state: WindowState, hold, refs: list, *, champion) -> dict:
    """Score ``refs`` (and the champion) on the hold-out rows, each in its own runtime; per-row losses,
    KPIs, the paired test against the champion (when there is one) and the decision."""
    from . import kpi as K
    from .monitor_kpi import _row_loss, _targets

    key, metric = svc.pipeline.deploy.entity_key, svc.cycle.metric
    contestants = ([champion] if champion is not None else []) + [r for r in refs if champion is None
                                                                  or r.label != champion.label]
    csv, labels = _holdout(svc, state, hold)
    if not labels:
        raise CycleError(f"The hold-out window {hold[0]:%Y-%m-%d}/{hold[1]:%Y-%m-%d} has no labelled rows, so no "
                         "model can be evaluated.", code="data.no_labels",
                         hint="Check cycle.label_delay and that the label column is filled for that window.")
    work = svc.work_dir(state) / "eval"
    work.mkdir(exist_ok=True)
    keys, scored = _score_contestants(svc, contestants, csv, work, key)
    karr = np.asarray(keys, dtype=object)
    lab = [labels.get(k) for k in keys]
    by_label = {ref.label: ref for ref in contestants}
    per_model, models = {}, {}
    common_mask = np.ones(len(keys), dtype=bool)
    for label, s in scored.items():
        ref = by_label[label]
        y = _targets(ref, lab)
        ok = ~np.isnan(y) & np.isfinite(s)
        loss = np.full(len(keys), np.nan)
        loss[ok] = _row_loss(ref, y[ok], s[ok])
        per_model[label] = loss
        common_mask &= ok
        try:
            k = K.measure_kpi(metric, y[ok], s[ok])
            kp = {"value": k.value, "se": k.se, "n": k.n}
        except AmbidexError:
            kp = None
        models[label] = {"mean_loss": None, "kpi": kp, "language": ref.manifest.get("runtime", {}).get("language")}
    # the rows every contestant scored with a label, each key once, in key order (as the paired test reads them)
    idx = np.flatnonzero(common_mask)
    _, first = np.unique(karr[idx][::-1], return_index=True)  # the last row of a repeated key, like a dict
    idx = idx[::-1][first]  # np.unique sorts by key
    if not idx.size:
        raise CycleError(f"{len(labels)} label(s) of the hold-out window {hold[0]:%Y-%m-%d}/{hold[1]:%Y-%m-%d} (mart "
                         f"'{svc.cycle.labels or svc.cycle.mart}', key '{key}', e.g. {next(iter(labels))!r}) match no "
                         f"row of mart '{svc.cycle.mart}', so no model can be evaluated; nothing was deployed.",
                         code="data.labels_unmatched",
                         hint=f"Check that the label table's '{key}' values are the scored rows' keys.")
    losses = {label: loss[idx] for label, loss in per_model.items()}
    for label, v in losses.items():
        models[label]["mean_loss"] = float(np.mean(v))
    out = {"holdout": [hold[0], hold[1]], "n": int(idx.size), "metric": metric, "models": models,
           "loss": "log_loss" if contestants[0].manifest.get("task") != "regression" else "squared_error"}
    if champion is None:
        out["best"] = min(models, key=lambda m: (models[m]["mean_loss"], m))
        return out
    chall = {label: v.tolist() for label, v in losses.items() if label != champion.label}
    dec = K.decide_promotion(losses[champion.label].tolist(), chall,
                             z_min=svc.cycle.promotion.z_min, min_gain=svc.cycle.promotion.min_gain)
    out.update(champion=champion.label, promote=dec.promote, winner=dec.winner, best=dec.best_challenger,
               reason=dec.reason, tests={lab: {"z": t.z, "gain": t.relative_gain, "mean_diff": t.mean_diff, "n": t.n}
                                         for lab, t in dec.tests.items()})
    return json.loads(dumps(out))


def freeze_benchmark(svc, label: str, ev: dict) -> None:
    """Benchmark B of the (new) champion: the configured floor, or its hold-out KPI with its SE."""
    from .monitor_kpi import freeze_benchmark as freeze

    b, ref = svc.cycle.benchmark, model_ref(svc, dict(zip(("model", "version"), split_label(label))))
    if b.kind == "floor":
        freeze(svc.engine, ref, svc.cycle.metric, b.value, kind="floor")
    elif (ev["models"].get(label) or {}).get("kpi"):
        k = ev["models"][label]["kpi"]
        freeze(svc.engine, ref, svc.cycle.metric, k["value"], se=k["se"] or 0.0, kind="holdout")


# --------------------------------------------------------------------------- steps 6-12

def _last_trained(svc, state: WindowState) -> int | None:
    from .cycle import decisions, window_index

    ks = [window_index(svc.cycle, ts(d["window_start"])) for d in decisions(svc.engine, svc.name)
          if d["kind"] in ("retrain", "cold_start") and ts(d["window_start"]) < state.start]
    return max(ks) if ks else None


def step_decide(svc, state: WindowState) -> dict:
    """The retrain decision and its reasons: data drift, the KPI trigger, or the every-N-windows fallback."""
    if state.details["ingest"].get("cold_start"):
        return {"retrain": False, "reasons": ["trained at the cold start of this window"]}
    on, drift = svc.cycle.retrain.on, state.details["drift"]
    reasons = []
    if "drift" in on and drift.get("alert"):
        top = (drift.get("top") or [{}])[0]
        reasons.append(f"data drift of {drift['model']} (top feature {top.get('feature')}, "
                       f"impact {top.get('impact_psi') or 0:.3f})")
    kpi = drift.get("kpi") or {}
    if "kpi" in on and kpi.get("retrain"):
        reasons.append(f"{svc.cycle.metric} trigger: {', '.join(kpi['reasons'])}")
    last = _last_trained(svc, state)
    every = svc.cycle.retrain.every
    if every and last is not None and state.index - last >= every:
        reasons.append(f"schedule: {state.index - last} window(s) since the last training (every {every})")
    retrain = bool(reasons)
    summary = ("retrain: " + "; ".join(reasons)) if retrain else (
        "no retrain: no trigger fired" + (f" ({kpi['not_evaluated']})" if kpi.get("not_evaluated") else ""))
    champ = svc.live().champion.label
    return {"retrain": retrain, "reasons": reasons, "_decisions": [{
        "kind": "retrain" if retrain else "no_retrain", "champion": champ,
        "reasons": {"summary": summary, "triggers": reasons, "drift_alert": drift.get("alert"), "kpi": kpi}}]}


def step_train(svc, state: WindowState) -> dict:
    """Retrain every candidate on the training windows (M_T); all failing stops the window, champion serving."""
    if not state.details["decide"].get("retrain"):
        return {"skipped": "no retrain"}
    hold = holdout_window(svc, state)
    return train_candidates(svc, state, "train", train_window(svc, hold))


def _previous(svc, new_labels: set, champion: str) -> list:
    """M_T-1, M_T-2: the ``previous`` most recent earlier versions of each candidate model."""
    out = []
    for cand in svc.cycle.candidates:
        name = next(o.register for o in cand.outputs.values() if o.register)
        try:
            vs = svc.reg.list_versions(name)
        except RegistryError:
            continue
        older = [v for v in reversed(vs) if f"{name}:{v.version}" not in new_labels]
        out += [f"{name}:{v.version}" for v in older[:svc.cycle.previous] if f"{name}:{v.version}" != champion]
    return out


def step_evaluate(svc, state: WindowState) -> dict:
    """M_T, M_T-1, M_T-2 and the champion on the same out-of-time rows; the paired loss test decides."""
    trained = state.details["train"].get("versions")
    if not trained:
        return {"skipped": "nothing trained"}
    champ = champion_ref(svc)
    new = [f"{v['model']}:{v['version']}" for v in trained]
    labels = new + _previous(svc, set(new), champ.label)
    refs = [model_ref(svc, dict(zip(("model", "version"), split_label(x)))) for x in labels]
    ev = evaluate(svc, state, holdout_window(svc, state), refs, champion=champ)
    from .monitor_kpi import _store_decision

    _store_decision(svc.engine, champ, None, "promotion", ev["loss"], ev["promote"], (ev["reason"],),
                    {k: ev[k] for k in ("n", "champion", "winner", "tests", "holdout")}, state.run_id, _utcnow)
    return ev


def step_gate(svc, state: WindowState) -> dict:
    """The governance gate for the winner (smoke test in a fresh process, KPI gates, approval)."""
    ev = state.details["evaluate"]
    if not ev.get("promote"):
        return {"skipped": "nothing to promote"}
    with svc.engine.connect() as conn:
        ref = svc.deps.resolve(conn, *split_label(ev["winner"]))
    try:
        svc.gov.gate(None, [ref], svc.deployment)
    except (CheckFailed, RegistryError) as e:
        return {"passed": False, "why": e.message, "code": e.code}
    return {"passed": True}


def _contest_summary(ev: dict) -> dict:
    return {k: ev.get(k) for k in ("holdout", "n", "loss", "tests", "models", "reason", "best")}


def step_switch(svc, state: WindowState) -> dict:
    """Blue-green: the winner becomes champion in one CAS revision, the old champion stays as shadow for one
    window (rollback); otherwise the champion is kept and a shadow kept from the last switch is retired.
    Every revision keeps one shadow of each other runtime (``standing_shadows``)."""
    from .deploy import Member

    ev, gate = state.details["evaluate"], state.details["gate"]
    live = svc.live()
    champ = live.champion.label
    retrain = state.details["decide"].get("reasons") or []
    if ev.get("promote") and gate.get("passed"):
        t = ev["tests"][ev["winner"]]
        if champ != ev["winner"]:  # a resumed run may find the switch already done
            live = svc.deps.promote(svc.deployment, [Member(*split_label(ev["winner"]), "champion"),
                                                     Member(*split_label(champ), "shadow")]
                                    + standing_shadows(svc, ev["winner"], ev, live=live, also=(champ,)),
                                    expected_revision=live.revision,
                                    reason=f"cycle {state.tag}: {ev['winner']} beats {champ} on the hold-out "
                                           f"(gain {t['gain']:.2%}, z {t['z']:.2f})")
            freeze_benchmark(svc, ev["winner"], ev)
            champ_before = champ
        else:
            champ_before = ev["champion"]
        return {"promoted": True, "revision": live.revision, "_decisions": [{
            "kind": "promote", "champion": champ_before, "winner": ev["winner"], "gain": t["gain"], "z": t["z"],
            "revision": live.revision,
            "reasons": {"summary": f"promote {ev['winner']} over {champ_before}: mean {ev['loss']} gain "
                                   f"{t['gain']:.2%}, z {t['z']:.2f} on {t['n']} hold-out rows",
                        "retrain_triggers": retrain, "contest": _contest_summary(ev)}}]}
    out: dict = {"promoted": False}
    if state.details["ingest"].get("cold_start"):
        return {**out, "revision": live.revision, "note": "the cold start deployed the champion"}
    shadows = [m for m in live.members if m.role == "shadow"]
    if shadows and (live.reason or "").startswith("cycle "):
        # the old champion kept for rollback goes, unless it is the one shadow of the other runtime
        standing = standing_shadows(svc, champ, ev, live=live)
        retired = [m for m in shadows if m.label not in {s.label for s in standing}]
        if retired:
            kept = [m for m in live.members if m.role != "shadow"] + standing
            live = svc.deps.promote(svc.deployment, kept, expected_revision=live.revision,
                                    reason=f"cycle {state.tag}: retire {', '.join(m.label for m in retired)} "
                                           "(kept as shadow one window for rollback)")
            out["retired"] = [m.label for m in retired]
    if ev.get("promote"):
        why = f"keep {champ}: {ev['winner']} won the contest but the gate refused it: {gate.get('why')}"
    elif ev.get("tests"):
        b = ev.get("best")
        t = ev["tests"].get(b) or {}
        why = (f"keep {champ}: best challenger {b} " + (f"gain {t['gain']:.2%}, z {t['z']:.2f}"
               if t.get("z") is not None and t.get("gain") is not None else "no spread")
               + f" ({ev['reason']}; needs z >= {svc.cycle.promotion.z_min}, gain >= {svc.cycle.promotion.min_gain})")
    elif not state.details["decide"].get("retrain"):
        why = f"keep {champ}: no retrain trigger fired"
    else:
        why = f"keep {champ}"
    best = ev.get("best")
    t = (ev.get("tests") or {}).get(best) or {}
    out["revision"] = live.revision
    out["_decisions"] = [{"kind": "keep", "champion": champ, "winner": None, "gain": t.get("gain"), "z": t.get("z"),
                          "revision": live.revision,
                          "reasons": {"summary": why, "best_challenger": best, "retrain_triggers": retrain,
                                      "contest": _contest_summary(ev) if ev.get("tests") else None,
                                      "gate": gate or None}}]
    return out


def step_smoke(svc, state: WindowState) -> dict:
    """After a switch: smoke-test the live models in fresh processes; a failure rolls back automatically."""
    sw = state.details["switch"]
    if not sw.get("promoted"):
        return {"skipped": "no switch"}
    champion = svc.live().champion.label

    def smoke(ref):  # the new champion in a fresh process; the kept shadow's passing result (same bytes) stands
        if ref.label != champion:
            with svc.engine.connect() as conn:
                if svc.gov._smoke_passed(conn, ref):
                    return type("Recorded", (), {"passed": True})()
        return svc.smoke(ref)

    try:
        svc.deps.check_after_switch(svc.deployment, smoke)
    except CheckFailed as e:
        back = e.details.get("rollback_revision")
        return {"passed": False, "why": e.message, "_decisions": [{
            "kind": "rollback", "champion": None, "revision": back,
            "reasons": {"summary": e.message, "failed": e.details.get("failed")}}]}
    return {"passed": True}
