"""monitor: profiles stored once, SQL PSI == raw PSI on three backends, baselines, bad input, KPIs, history."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from ambidex import monitor as MO
from ambidex import monitor_kpi as MK
from ambidex import monitor_sql as Q
from ambidex import monitor_store as S
from ambidex import monitortables as T
from ambidex.drift import bin_edges, compare_categorical, compare_numeric, count_bins, psi
from ambidex.drift_profile import compare_profiles
from ambidex.errors import ContractError, DataError

from .conftest import UTC, frame, month

NUMERIC = ("num_00", "num_01", "num_02")


def _count(engine, table) -> int:
    with engine.connect() as c:
        return c.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()


def test_migration_matches_monitortables(engine):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from ambidex.tables import metadata

    mine = {t.name for t in T.MONITOR_TABLES}
    with engine.connect() as c:
        ctx = MigrationContext.configure(c, opts={"compare_type": True,
                                                  "include_object": lambda o, n, t, r, ct: t != "table" or n in mine})
        assert compare_metadata(ctx, metadata) == []


def test_psi_from_sql_equals_psi_from_raw_data(engine, register):
    model = register()
    ref = frame(4000, 1)
    wins = [frame(1500, 10 + i, shift=0.15 * i, plan_p=(0.5 - 0.1 * i, 0.3, 0.2 + 0.1 * i)) for i in range(3)]
    rw = S.set_reference(engine, model, ref).window_id
    ids = [S.profile_window(engine, model, month(i), w).window_id for i, w in enumerate(wins)]
    feats = S.load_features(engine, model.id)
    for cur_ids, cur in (([ids[2]], wins[2]), (ids, pd.concat(wins, ignore_index=True))):
        with engine.connect() as conn:
            stored = Q.load_profiles(conn, model.id, cur_ids, feats)
            ref_prof = Q.load_profiles(conn, model.id, [rw], feats)
        for f in NUMERIC:
            raw = compare_numeric(ref[f], cur[f], feature=f)
            assert abs(Q.psi_sql(engine, model.id, f, [rw], cur_ids) - raw.psi) < 1e-12
            prof = compare_profiles(ref_prof[f], stored[f], grid=feats[f].grid, feature=f)
            assert abs(prof.psi - raw.psi) < 1e-12 and prof.counts_cur == raw.counts_cur
        raw_cat = compare_categorical(ref["plan"], cur["plan"], feature="plan")
        prof = compare_profiles(ref_prof["plan"], stored["plan"], feature="plan")
        assert abs(prof.psi - raw_cat.psi) < 1e-12 and raw_cat.psi > 0.05


def test_a_window_is_profiled_once_and_never_reread(engine, register):
    model = register()
    S.set_reference(engine, model, frame(2000, 1))
    first = S.profile_window(engine, model, month(0), frame(500, 2))
    rows = _count(engine, T.window_num_bins), _count(engine, T.window_cat_levels)
    again = S.profile_window(engine, model, month(0))  # no rows given: the stored profile is used
    assert first.created and not again.created and again.window_id == first.window_id
    assert (_count(engine, T.window_num_bins), _count(engine, T.window_cat_levels)) == rows
    assert S.set_reference(engine, model, frame(10, 3)).created is False
    MO.check_window(engine, model, month(0))
    MO.check_window(engine, model, month(0))
    assert _count(engine, T.monitor_windows) == 2


def test_baselines_reference_t1_and_rolling_from_stored_profiles(sqlite_engine, register_sqlite):
    engine, model = sqlite_engine, register_sqlite()
    ref = frame(3000, 1)
    S.set_reference(engine, model, ref)
    wins = [frame(800, 20 + i, shift=0.1 * i) for i in range(5)]
    ids = [S.profile_window(engine, model, month(i), w).window_id for i, w in enumerate(wins)]
    res = MO.check_window(engine, model, month(4), k=3)
    assert res.baseline_windows["t-1"] == (ids[3],)
    assert res.baseline_windows["rolling"] == (ids[3], ids[2], ids[1])
    rolling = pd.concat(wins[1:4], ignore_index=True)
    raw = compare_numeric(ref["num_00"], wins[4]["num_00"], feature="num_00")
    assert abs(res.baselines["reference"].feature("num_00").psi - raw.psi) < 1e-12
    # T-1 and rolling are binned on the model's reference grid (section 7), not on their own deciles
    edges = bin_edges(np.sort(ref["num_00"].to_numpy()), 10)
    for base, raw_ref in (("t-1", wins[3]), ("rolling", rolling)):
        want = psi(count_bins(edges, raw_ref["num_00"]), count_bins(edges, wins[4]["num_00"]))
        assert abs(res.baselines[base].feature("num_00").psi - want) < 1e-12
    # the rolling baseline merges counts of 3 windows on the reference grid (not their own deciles)
    merged = Q.psi_sql(engine, model.id, "num_00", res.baseline_windows["rolling"], [ids[4]])
    assert abs(res.baselines["rolling"].feature("num_00").psi - merged) < 1e-12
    assert res.baselines["rolling"].feature("num_00").n_ref == len(rolling)
    first = MO.check_window(engine, model, month(0))
    assert set(first.baselines) == {"reference"}  # no earlier window: T-1 and rolling are skipped, not faked


def test_check_stores_every_number_sorted_by_impact_and_alerts(engine, register):
    model = register(importance={"num_00": 6.0, "num_01": 1.0, "num_02": 1.0, "plan": 2.0})
    S.set_reference(engine, model, frame(3000, 1), scores=np.random.default_rng(5).uniform(size=3000))
    S.profile_window(engine, model, month(0), frame(3000, 2))
    S.profile_window(engine, model, month(1), frame(3000, 3, shift=0.7))
    S.profile_scores(engine, model, month(1), np.random.default_rng(6).beta(2, 1, size=3000))
    res = MO.check_window(engine, model, month(1), run_id=None)
    ref = res.baselines["reference"]
    assert res.alert and res.status == "alert" and ref.dataset_drift
    assert [f.feature for f in ref.features][0] == "num_00"
    impacts = [ref.scores.impact[f.feature].impact_psi for f in ref.features]
    assert impacts == sorted(impacts, reverse=True)
    assert res.prediction_drift is not None and res.prediction_drift.status == "alert"
    with engine.connect() as c:
        checks = c.execute(sa.select(T.drift_checks.c.baseline, T.drift_checks.c.dataset_drift)).all()
        assert sorted(checks) == [("reference", True), ("rolling", True), ("t-1", True)]
        psi = c.execute(sa.select(T.drift_result.c.value).where(
            T.drift_result.c.feature == "num_00", T.drift_result.c.metric == "psi",
            T.drift_result.c.baseline == "reference")).scalar_one()
        assert psi == pytest.approx(ref.feature("num_00").psi, rel=1e-12)
        imp = c.execute(sa.select(T.impact_result.c.w, T.impact_result.c.impact_psi).where(
            T.impact_result.c.feature == "num_00", T.impact_result.c.check_id == res.check_ids["reference"])).one()
        assert imp.w == pytest.approx(0.6) and imp.impact_psi == pytest.approx(0.6 * psi)
        assert c.execute(sa.select(sa.func.count()).select_from(T.drift_result)
                         .where(T.drift_result.c.feature == S.SCORE)).scalar_one() > 0


def test_how_did_feature_x_drift_over_the_last_year_is_one_query(sqlite_engine, register_sqlite):
    engine, model = sqlite_engine, register_sqlite()
    S.set_reference(engine, model, frame(2000, 1))
    for i in range(14):
        S.profile_window(engine, model, month(i), frame(600, 30 + i, shift=0.05 * i))
        MO.check_window(engine, model, month(i), baselines=("reference",))
    sql = sa.text("""
        SELECT w.window_start, d.value, d.status
        FROM drift_result d JOIN monitor_windows w ON w.id = d.window_id
        WHERE d.model_version_id = :mv AND d.feature = :f AND d.metric = 'psi' AND d.baseline = 'reference'
          AND w.window_start >= :since
        ORDER BY w.window_start""")
    since = dt.datetime(2025, 2, 1, tzinfo=UTC) - dt.timedelta(days=365)
    with engine.connect() as c:
        rows = c.execute(sql, {"mv": model.id, "f": "num_00", "since": since.replace(tzinfo=None)}).all()
    assert len(rows) == 12 and rows[-1].value > rows[0].value
    hist = MO.drift_history(engine, model="churn", feature="num_00", since=since)
    assert [h["value"] for h in reversed(hist)] == [r.value for r in rows]


# --------------------------------------------------------------------------- bad input

def test_empty_window_is_insufficient_data_never_ok(engine, register):
    model = register()
    S.set_reference(engine, model, frame(1000, 1))
    S.profile_window(engine, model, month(0), frame(0, 2))
    res = MO.check_window(engine, model, month(0))
    assert res.status == "insufficient_data" and not res.alert
    assert {f.status for f in res.baselines["reference"].features} == {"insufficient_data"}


def test_all_missing_and_constant_columns_get_explicit_statuses(sqlite_engine, register_sqlite):
    engine = sqlite_engine
    model = register_sqlite(inputs=[{"name": "x", "type": "double", "nullable": True},
                                    {"name": "flag", "type": "integer", "nullable": True}],
                            importance={"x": 1.0, "flag": 1.0})
    rng = np.random.default_rng(0)
    S.set_reference(engine, model, pd.DataFrame({"x": rng.normal(size=500), "flag": np.ones(500, dtype=np.int64)}))
    cur = pd.DataFrame({"x": np.full(500, np.nan), "flag": np.r_[np.ones(490), np.zeros(10)].astype(np.int64)})
    S.profile_window(engine, model, month(0), cur)
    res = MO.check_window(engine, model, month(0)).baselines["reference"]
    x, flag = res.feature("x"), res.feature("flag")
    assert x.status == "warn" and "missing_delta>=0.05" in x.reasons and x.missing_delta == 1.0
    assert flag.constant_ref and flag.constant_broken and "constant_reference_changed" in flag.reasons


def test_undeclared_type_and_missing_importance_are_clear_errors(sqlite_engine, register_sqlite):
    engine = sqlite_engine
    model = register_sqlite()
    S.set_reference(engine, model, frame(500, 1))
    bad = frame(500, 2).assign(num_01=["a"] * 500)
    with pytest.raises(DataError, match="num_01") as e:
        S.profile_window(engine, model, month(0), bad)
    assert e.value.code == "data.type_mismatch"
    with pytest.raises(DataError, match="plan"):
        S.profile_window(engine, model, month(0), frame(500, 2).drop(columns="plan"))
    plain = register_sqlite(name="noimp", importance=None)
    S.set_reference(engine, plain, frame(500, 1))
    S.profile_window(engine, plain, month(0), frame(500, 2))
    with pytest.raises(ContractError, match="noimp:1 has no feature_importance") as e:
        MO.check_window(engine, plain, month(0))
    assert "--uniform-importance" in e.value.hint
    res = MO.check_window(engine, plain, month(0), uniform_importance=True)
    assert res.baselines["reference"].scores.uniform_importance


def test_reference_with_an_all_missing_column_names_it(sqlite_engine, register_sqlite):
    model = register_sqlite()
    with pytest.raises(DataError, match="'num_02'"):
        S.set_reference(sqlite_engine, model, frame(100, 1).assign(num_02=np.nan))


# --------------------------------------------------------------------------- model drift

def _labelled(n, seed, auc_noise):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    score = 1 / (1 + np.exp(-(2 * y - 1) * 1.5 + rng.normal(0, auc_noise, n)))
    return y, score


def test_kpis_with_ses_and_the_retrain_decision_are_stored(engine, register):
    model = register()
    for i, noise in enumerate((1.0, 1.0, 2.5, 3.5)):
        y, s = _labelled(2000, 40 + i, noise)
        kpis = MK.record_kpis(engine, model, month(i), y, s)
        assert {k.metric for k in kpis} == {"roc_auc", "accuracy", "log_loss"} and all(k.se > 0 for k in kpis)
    MK.freeze_benchmark(engine, model, "roc_auc", 0.85, se=0.005, kind="holdout")
    dec = MK.evaluate_retrain(engine, model, month(3), "roc_auc")
    assert dec.retrain and set(dec.reasons) == {"benchmark_breach", "sustained_decline"}
    calm = MK.evaluate_retrain(engine, model, month(1), "roc_auc")
    assert not calm.trigger_sustained_decline
    with engine.connect() as c:
        rows = c.execute(sa.select(T.kpi_result.c.metric, T.kpi_result.c.se, T.kpi_result.c.is_estimated)).all()
        assert len(rows) == 12 and not any(r.is_estimated for r in rows)
        decided = c.execute(sa.select(T.kpi_decisions.c.decision).order_by(T.kpi_decisions.c.id)).scalars().all()
        assert decided == [True, False]
    assert len(MK.kpi_history(engine, model="churn", metric="roc_auc")) == 4


def test_estimated_kpis_are_flagged_and_never_retrain_or_promote_alone(sqlite_engine, register_sqlite):
    engine, model = sqlite_engine, register_sqlite()
    y, s = _labelled(3000, 1, 1.0)
    MK.fit_label_free(engine, model, s, y)
    MK.freeze_benchmark(engine, model, "accuracy", 0.95)
    est = MK.estimate_window(engine, model, month(0), np.random.default_rng(2).uniform(0.45, 0.55, 3000))
    assert {k.metric for k in est} >= {"accuracy", "roc_auc"} and all(k.is_estimated for k in est)
    quiet = MK.evaluate_retrain(engine, model, month(0), "accuracy")
    assert not quiet.retrain  # the estimate alone does not trigger
    loud = MK.evaluate_retrain(engine, model, month(0), "accuracy", dataset_drift=True)
    assert loud.retrain and loud.reasons == ("drift_escalation",)
    with engine.connect() as c:
        assert all(c.execute(sa.select(T.kpi_result.c.is_estimated)).scalars())
    with pytest.raises(DataError, match="estimated KPIs cannot promote|No captured predictions"):
        MK.decide_promotion_from_capture(engine, "churn-dep", month(0), "churn:1", ["churn:1"])


def test_promotion_uses_labelled_captured_rows_only(sqlite_engine, register_sqlite):
    from ambidex import deploytables as D

    engine = sqlite_engine
    champ, chall = register_sqlite(), register_sqlite()
    start, end = S.parse_window_arg(month(0))
    now = dt.datetime(2024, 2, 2, tzinfo=UTC)
    y, s_champ = _labelled(400, 7, 2.0)
    s_chall = np.clip(0.85 * y + 0.1 + np.random.default_rng(8).normal(0, 0.05, 400), 0.01, 0.99)
    with engine.begin() as c:
        dep = c.execute(sa.insert(D.deployments).values(name="churn-dep", entity_key="id", created_at=now)).inserted_primary_key[0]
        for role, m, sc in (("champion", champ, s_champ), ("shadow", chall, s_chall)):
            b = c.execute(sa.insert(D.capture_batches).values(
                deployment_id=dep, window_start=start, window_end=end, model_version_id=m.id, revision=1, role=role,
                row_count=400, published_rows=400, input_ref="x", features_mode="ref", scored_at=now)).inserted_primary_key[0]
            c.execute(sa.insert(D.predictions), [{"batch_id": b, "row_index": i, "entity_key": str(i),
                                                  "prediction": "yes" if v >= .5 else "no", "score": float(v),
                                                  "published": role == "champion"} for i, v in enumerate(sc)])
    # scores captured, labels not yet: no promotion, whatever an estimate says
    with pytest.raises(DataError, match="estimated KPIs cannot promote"):
        MK.decide_promotion_from_capture(engine, "churn-dep", month(0), champ.label, [chall.label])
    with engine.begin() as c:
        c.execute(sa.insert(D.labels), [{"source": "churn-dep", "entity_key": str(i), "window_start": start,
                                         "window_end": end, "label": "yes" if v else "no", "arrived_at": now}
                                        for i, v in enumerate(y)])
    dec = MK.decide_promotion_from_capture(engine, "churn-dep", month(0), champ.label, [chall.label])
    assert dec.promote and dec.winner == chall.label
    kpis = MK.record_captured(engine, "churn-dep", month(0))
    assert kpis[chall.label][0].value > kpis[champ.label][0].value
    with engine.connect() as c:
        kinds = c.execute(sa.select(T.kpi_decisions.c.kind, T.kpi_decisions.c.decision)).all()
    assert kinds == [("promotion", True)]


def test_profile_window_reads_its_rows_from_the_mart(sqlite_engine, register_sqlite):
    """profile_window(mart=...) reads the window's rows from the feature store itself."""
    import pandas as pd

    from ambidex.featurestore import MartSpec, Window, ingest

    model = register_sqlite()
    S.set_reference(sqlite_engine, model, frame(2000, 1))
    rows = frame(300, 2)
    rows.insert(0, "id", range(300))
    rows["at"] = pd.Timestamp("2024-01-03", tz="UTC") + pd.to_timedelta(rows["id"] % 20, unit="D")
    spec = MartSpec(name="m", key=["id"], time_column="at", load="incremental")
    ingest(sqlite_engine, spec, table=rows, window=Window(pd.Timestamp("2024-01-01", tz="UTC").to_pydatetime(),
                                                         pd.Timestamp("2024-02-01", tz="UTC").to_pydatetime()))
    ref = S.profile_window(sqlite_engine, model, month(0), mart="m")
    assert ref.created and ref.n_rows == 300
