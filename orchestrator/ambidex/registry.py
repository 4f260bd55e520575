"""registry: runs, params, metrics, models and versions, and the append-only event log.

    >>> reg = Registry(connect("sqlite:///registry.db"), ArtifactStore(Path("artifacts")))  # doctest: +SKIP
    >>> run_id = reg.start_run("experiment", experiment="churn")                            # doctest: +SKIP
    >>> reg.log_metrics(run_id, [{"name": "auc", "value": 0.84}])                            # doctest: +SKIP
    >>> mv = reg.register_model_version("churn", Path("out/model"), run_id=run_id)           # doctest: +SKIP

Every write is one transaction (``BEGIN IMMEDIATE`` on SQLite), every time comes
from the injected clock in UTC, and readers only ever see ``READY`` model
versions. Registration follows the publish protocol of reliability.md: files are
staged and hashed, the version number is allocated inside the writer transaction
and recorded ``PENDING``, the folder is renamed into place, and ``READY`` is
committed together with its ``model_version.registered`` event.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import hashlib
import json
import logging
import math
import operator
import os
import socket
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import sqlalchemy as sa

from . import tables as T
from .artifacts import ArtifactStore, check_name, check_relpath
from .errors import ArtifactError, ContractError, RegistryError

__all__ = ["Registry", "ModelVersion"]

log = logging.getLogger(__name__)
_UTC = dt.timezone.utc
_NOT_FOUND_HINT = "Run 'ambidex models list' to see registered models."


@dataclass(frozen=True)
class ModelVersion:
    """One READY model version: where its folder is and its completed manifest."""

    name: str
    version: int
    status: str
    path: str
    manifest: dict = field(repr=False)
    created_at: dt.datetime
    language: str | None
    task: str | None
    run_id: str | None
    stage: str | None = None
    manifest_sha256: str = ""
    created_by: str | None = None


def _utcnow() -> dt.datetime:
    return dt.datetime.now(_UTC)


def _aware(value, what: str) -> dt.datetime | None:
    if value is None:
        return None
    if not isinstance(value, dt.datetime) or value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise RegistryError(f"{what} must be a timezone-aware datetime, got {value!r}.",
                            code="registry.naive_datetime",
                            hint="Pass e.g. datetime.now(timezone.utc); naive times are never guessed at.")
    return value.astimezone(_UTC)


def _json_default(o):
    if isinstance(o, dt.datetime):
        return _aware(o, "a datetime parameter").isoformat().replace("+00:00", "Z")
    if isinstance(o, (dt.date, Path)):
        return str(o)
    if type(o).__module__ == "numpy" and hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, frozenset, tuple)):
        return sorted(o) if isinstance(o, (set, frozenset)) else list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serializable")


def _json(value) -> str:
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                          allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as e:
        raise RegistryError(f"Cannot store {value!r} as JSON: {e}.", code="registry.invalid_value",
                            hint="Log strings, numbers, booleans, lists or dicts (no NaN).") from None


def _same(a, b) -> bool:
    """JSON values equal as values (1 == 1.0) but never True == 1."""
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _manifest_bytes(manifest: dict) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n").encode()


def _window_label(window) -> str | None:
    if window is None or isinstance(window, str):
        return window
    start, end = (_aware(w, "window bound") for w in window)
    return f"{start.isoformat()}/{end.isoformat()}".replace("+00:00", "Z")


class Registry:
    """The registry of runs, metrics, models and events over one database and one artifact store."""

    def __init__(self, engine: sa.Engine, store: ArtifactStore, *,
                 clock: Callable[[], dt.datetime] | None = None, actor: str | None = None):
        self.engine = engine
        self.store = store
        self._clock = clock or _utcnow
        self.actor = actor or os.environ.get("AMBIDEX_ACTOR") or getpass.getuser()
        self.host = socket.gethostname()
        self._reader = engine.execution_options(ambidex_read_only=True)

    def _now(self) -> dt.datetime:
        return _aware(self._clock(), "the registry clock's value")

    # -- events --------------------------------------------------------------------------------
    def record_event(self, kind: str, *, entity_type: str, entity_id, payload: dict | None = None,
                     reason: str | None = None, conn=None) -> None:
        """Append one event; pass ``conn`` to write it in the caller's transaction."""
        row = {"at": self._now(), "actor": self.actor, "kind": kind, "entity_type": entity_type,
               "entity_id": str(entity_id), "payload": None if payload is None else _json(payload),
               "reason": reason}
        if conn is not None:
            conn.execute(T.events.insert(), row)
        else:
            with self.engine.begin() as c:
                c.execute(T.events.insert(), row)

    def list_events(self, limit: int = 100, kind: str | None = None) -> list[dict]:
        """The newest events first, optionally of one ``kind``."""
        q = sa.select(T.events).order_by(T.events.c.id.desc()).limit(limit)
        if kind is not None:
            q = q.where(T.events.c.kind == kind)
        with self._reader.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(q)]
        for r in rows:
            r["payload"] = json.loads(r["payload"]) if r["payload"] is not None else None
        return rows

    # -- runs ----------------------------------------------------------------------------------
    def start_run(self, kind: str = "pipeline", *, pipeline: str | None = None, experiment: str | None = None,
                  window: tuple[dt.datetime, dt.datetime] | None = None, lineage: dict | None = None) -> str:
        """Record a new RUNNING run and return its id (uuid4 hex). ``window`` is half-open [start, end)."""
        if kind not in T.RUN_KINDS:
            raise RegistryError(f"Unknown run kind {kind!r}.", code="registry.invalid_value",
                                hint=f"Use one of {', '.join(T.RUN_KINDS)}.")
        start = end = None
        if window is not None:
            start, end = (_aware(w, "window bound") for w in window)
            if not start < end:
                raise RegistryError(f"Window start {start} is not before its end {end}.",
                                    code="registry.invalid_value", hint="Windows are half-open [start, end).")
        lineage = dict(lineage or {})
        run_id = uuid.uuid4().hex
        dirty = lineage.get("git_dirty")
        row = {"id": run_id, "kind": kind, "experiment": experiment, "pipeline": pipeline, "status": "RUNNING",
               "started_at": self._now(), "window_start": start, "window_end": end, "actor": self.actor,
               "host": self.host, "git_commit": lineage.get("git_commit"),
               "git_dirty": None if dirty is None else bool(dirty), "config_hash": lineage.get("config_hash"),
               "lineage": _json(lineage) if lineage else None}
        with self.engine.begin() as conn:
            conn.execute(T.runs.insert(), row)
            self.record_event("run.started", entity_type="run", entity_id=run_id,
                              payload={"kind": kind, "pipeline": pipeline, "experiment": experiment}, conn=conn)
        return run_id

    @contextlib.contextmanager
    def _run_writes(self, run_id: str):
        """A write transaction for rows of a run. The run's existence is checked by the foreign key
        (no SELECT on the hot path); a violation becomes the usual registry.not_found."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except sa.exc.IntegrityError:
            with self._reader.connect() as conn:
                self._run_status(conn, run_id)
            raise

    def _run_status(self, conn, run_id: str) -> str:
        status = conn.execute(sa.select(T.runs.c.status).where(T.runs.c.id == run_id)).scalar()
        if status is None:
            raise RegistryError(f"No run {run_id!r}.", code="registry.not_found",
                                hint="Run 'ambidex runs list' to see recorded runs.")
        return status

    def end_run(self, run_id: str, status: str = "FINISHED") -> None:
        """Mark a RUNNING run FINISHED or FAILED (ending it again with the same status is a no-op)."""
        if status not in ("FINISHED", "FAILED"):
            raise RegistryError(f"Cannot end a run with status {status!r}.", code="registry.invalid_value",
                                hint="Use FINISHED or FAILED.")
        with self.engine.begin() as conn:
            # the common case in one statement: RUNNING -> status; anything else is looked at below
            done = conn.execute(T.runs.update().where(T.runs.c.id == run_id, T.runs.c.status == "RUNNING")
                                .values(status=status, ended_at=self._now())).rowcount
            if done:
                self.record_event(f"run.{status.lower()}", entity_type="run", entity_id=run_id, conn=conn)
                return
            current = self._run_status(conn, run_id)
            if current == status:
                return
            raise RegistryError(f"Run {run_id} already ended {current}; refusing to mark it {status}.",
                                code="registry.conflict", hint="Start a new run.")

    def log_params(self, run_id: str, params: Mapping, *, prefix: str | None = None) -> None:
        """Store params as JSON text in one transaction; a key re-logged with another value is a conflict."""
        rows = {}
        for key, value in params.items():
            key = f"{prefix}.{key}" if prefix else str(key)
            if not key or len(key) > 255:
                raise RegistryError(f"Invalid param key {key!r}: 1 to 255 characters.",
                                    code="registry.invalid_value", hint="Shorten the key.")
            rows[key] = _json(value)
        if not rows:
            return
        with self.engine.begin() as conn:
            self._run_status(conn, run_id)
            self._insert_params(conn, run_id, rows)

    def _insert_params(self, conn, run_id: str, rows: dict[str, str]) -> None:
        if True:
            existing = dict(conn.execute(sa.select(T.params.c.key, T.params.c.value).where(
                T.params.c.run_id == run_id, T.params.c.key.in_(list(rows)))).all())
            clashes = {k: (existing[k], v) for k, v in rows.items()
                       if k in existing and not _same(json.loads(existing[k]), json.loads(v))}
            if clashes:
                shown = "; ".join(f"{k}: logged {old}, now {new}" for k, (old, new) in sorted(clashes.items()))
                raise RegistryError(f"Run {run_id} already has different values for params: {shown}.",
                                    code="registry.conflict",
                                    hint="Params are immutable within a run; log under another key or start a new run.",
                                    keys=sorted(clashes))
            new = [{"run_id": run_id, "key": k, "value": v} for k, v in rows.items() if k not in existing]
            if new:
                conn.execute(T.params.insert(), new)

    def log_metrics(self, run_id: str, metrics, *, stage: str | None = None, window=None) -> None:
        """Store metric points in one executemany transaction.

        ``metrics`` is a list of ``{name, value, step=0}`` dicts or ``(name, value[, step])``
        tuples. NaN and None are stored as NULL; infinite values are refused.
        """
        points = self._metric_points(metrics)
        with self._run_writes(run_id) as conn:
            self._insert_metrics(conn, run_id, points, stage=stage, window=window)

    def log_batch(self, run_id: str, *, params: Mapping | None = None, metrics=(), stage: str | None = None,
                  window=None, prefix: str | None = None) -> None:
        """Params and metric points of one run in ONE transaction (the floor of 3 transactions per run:
        start, batch, end). Same rules as :meth:`log_params` and :meth:`log_metrics`."""
        rows = {}
        for key, value in (params or {}).items():
            key = f"{prefix}.{key}" if prefix else str(key)
            if not key or len(key) > 255:
                raise RegistryError(f"Invalid param key {key!r}: 1 to 255 characters.",
                                    code="registry.invalid_value", hint="Shorten the key.")
            rows[key] = _json(value)
        points = self._metric_points(metrics)
        with self._run_writes(run_id) as conn:
            if rows:
                self._insert_params(conn, run_id, rows)
            self._insert_metrics(conn, run_id, points, stage=stage, window=window)

    @staticmethod
    def _metric_points(metrics) -> list[tuple[str, float | None, int]]:
        points = []
        for m in metrics:
            if isinstance(m, Mapping):
                name, value, step = m.get("name", m.get("key")), m.get("value"), m.get("step", 0)
            else:
                name, value, *rest = m
                step = rest[0] if rest else 0
            if not isinstance(name, str) or not 0 < len(name) <= 255:
                raise RegistryError(f"Invalid metric name {name!r}.", code="registry.invalid_value",
                                    hint="Metric names are strings of 1 to 255 characters.")
            try:
                step = operator.index(step)
                if value is not None:
                    if isinstance(value, (bool, str, bytes)):
                        raise TypeError
                    value = float(value)
            except (TypeError, ValueError):
                raise RegistryError(f"Metric {name!r}: value {value!r} / step {step!r} are not a number / an int.",
                                    code="registry.invalid_value", hint="Log numbers.") from None
            if value is not None and math.isnan(value):
                value = None
            elif value is not None and math.isinf(value):
                raise RegistryError(f"Metric {name!r} is {value}; infinite values cannot be stored portably.",
                                    code="registry.invalid_value", hint="Log a finite value or None.")
            points.append((name, value, step))
        return points

    def _insert_metrics(self, conn, run_id: str, points, *, stage, window) -> None:
        if points:
            _insert_many(conn, T.metrics,
                         {"run_id": run_id, "stage": stage, "window": _window_label(window), "logged_at": self._now()},
                         ("key", "value", "step"), points)

    def record_stage_run(self, run_id: str, stage: str, *, lang, runner, status, exit_code, started_at, ended_at,
                         wall_seconds, cpu_seconds, peak_rss_bytes, script_hash, log_dir,
                         error_code=None, error_message=None) -> None:
        """Record how a stage ran; recording the same stage of a run again replaces the earlier record."""
        row = {"lang": lang, "runner": runner, "status": status, "exit_code": exit_code,
               "started_at": _aware(started_at, "started_at"), "ended_at": _aware(ended_at, "ended_at"),
               "wall_seconds": wall_seconds, "cpu_seconds": cpu_seconds, "peak_rss_bytes": peak_rss_bytes,
               "script_hash": script_hash, "log_dir": None if log_dir is None else str(log_dir),
               "error_code": error_code, "error_message": error_message}
        sr = T.stage_runs
        with self.engine.begin() as conn:
            self._run_status(conn, run_id)
            done = conn.execute(sr.update().where(sr.c.run_id == run_id, sr.c.stage == stage).values(**row))
            if done.rowcount == 0:
                conn.execute(sr.insert().values(run_id=run_id, stage=stage, **row))

    def log_artifact(self, run_id: str, path: Path, *, stage: str | None = None, name: str | None = None,
                     kind: str = "file") -> str:
        """Store a file content-addressed in the artifact store, record it on the run, return its sha256."""
        path = Path(path)
        if not path.is_file():
            raise ArtifactError(f"{path} is not a file.", code="artifact.missing", hint="Log an existing file.")
        with self._reader.connect() as conn:
            self._run_status(conn, run_id)
        blob = self.store.put_blob(path)
        with self.engine.begin() as conn:
            self._run_status(conn, run_id)
            conn.execute(T.artifacts.insert(), {
                "run_id": run_id, "stage": stage, "name": name or path.name, "relpath": blob["relpath"],
                "sha256": blob["sha256"], "size": blob["size"], "kind": kind, "logged_at": self._now()})
        return blob["sha256"]

    def list_runs(self, *, experiment: str | None = None, pipeline: str | None = None, limit: int = 50) -> list[dict]:
        """The newest runs first, optionally of one experiment or pipeline."""
        q = sa.select(T.runs).order_by(T.runs.c.started_at.desc(), T.runs.c.id).limit(limit)
        if experiment is not None:
            q = q.where(T.runs.c.experiment == experiment)
        if pipeline is not None:
            q = q.where(T.runs.c.pipeline == pipeline)
        with self._reader.connect() as conn:
            return [_run_dict(r) for r in conn.execute(q)]

    def get_run(self, run_id: str) -> dict:
        """One run with its params, metrics, stage runs, artifacts and the model versions it produced."""
        with self._reader.connect() as conn:
            row = conn.execute(sa.select(T.runs).where(T.runs.c.id == run_id)).first()
            if row is None:
                self._run_status(conn, run_id)
            out = _run_dict(row)
            out["params"] = {r.key: json.loads(r.value) for r in conn.execute(
                sa.select(T.params).where(T.params.c.run_id == run_id).order_by(T.params.c.key))}
            m = T.metrics
            out["metrics"] = [dict(r._mapping) for r in conn.execute(
                sa.select(m.c.key.label("name"), m.c.value, m.c.step, m.c.stage, m.c.window)
                .where(m.c.run_id == run_id).order_by(m.c.key, m.c.step, m.c.id))]
            out["stage_runs"] = [dict(r._mapping) for r in conn.execute(
                sa.select(T.stage_runs).where(T.stage_runs.c.run_id == run_id).order_by(T.stage_runs.c.id))]
            out["artifacts"] = [dict(r._mapping) for r in conn.execute(
                sa.select(T.artifacts).where(T.artifacts.c.run_id == run_id).order_by(T.artifacts.c.id))]
            mv = T.model_versions
            out["model_versions"] = [dict(r._mapping) for r in conn.execute(
                sa.select(T.models.c.name, mv.c.version, mv.c.status, mv.c.stage)
                .join(T.models).where(mv.c.run_id == run_id).order_by(T.models.c.name, mv.c.version))]
        return out

    def delete_run(self, run_id: str) -> None:
        """Delete a run and its params, metrics, stage runs and artifact records.

        Refused (``registry.conflict``) while any model version references the run.
        """
        mv = T.model_versions
        with self.engine.begin() as conn:
            self._run_status(conn, run_id)
            refs = conn.execute(sa.select(T.models.c.name, mv.c.version, mv.c.status).join(T.models)
                                .where(mv.c.run_id == run_id)).all()
            if refs:
                shown = ", ".join(f"{r.name} v{r.version} ({r.status})" for r in refs)
                raise RegistryError(f"Refusing to delete run {run_id}: model versions were produced by it: {shown}.",
                                    code="registry.conflict",
                                    hint="A run whose model is registered is kept as that model's lineage.")
            for table in (T.params, T.metrics, T.stage_runs, T.artifacts):
                conn.execute(table.delete().where(table.c.run_id == run_id))
            conn.execute(T.runs.delete().where(T.runs.c.id == run_id))
            self.record_event("run.deleted", entity_type="run", entity_id=run_id, conn=conn)

    # -- models --------------------------------------------------------------------------------
    def register_model_version(self, name: str, model_dir: Path, *, run_id: str | None = None,
                               stage: str | None = None, lineage: dict | None = None,
                               resources: dict | None = None) -> ModelVersion:
        """Publish the folder ``model_dir`` as the next version of ``name`` and return it READY.

        On any failure the version row (if one was allocated) is marked FAILED, the
        staged or published files are removed and nothing becomes READY.
        """
        name, model_dir = check_name(name), Path(model_dir)
        manifest = _read_manifest(name, model_dir)
        if run_id is not None:
            with self._reader.connect() as conn:
                self._run_status(conn, run_id)
        lineage = dict(lineage if lineage is not None else (manifest.get("lineage") or {}))
        lineage.setdefault("run_id", run_id)
        lineage.setdefault("stage", stage)
        staging, files = self.store.stage_folder(model_dir)
        version_id = version = None
        try:
            payload = manifest["runtime"]["payload"]
            res = dict(resources if resources is not None else (manifest.get("resources") or {}))
            res.setdefault("payload_bytes", files[payload]["size"])
            completed = {**manifest, "lineage": lineage, "resources": res, "files": files}
            _validate_with_contract({**completed, "version": 1})
            version_id, version, data = self._insert_pending(name, completed, files, run_id, stage)
            self.store.write_file(staging, "model.json", data)
            self.store.publish(staging, name, version)
            with self.engine.begin() as conn:
                done = conn.execute(T.model_versions.update().where(
                    T.model_versions.c.id == version_id, T.model_versions.c.status == "PENDING"
                ).values(status="READY"))
                if done.rowcount != 1:
                    raise RegistryError(f"Version {version} of {name!r} stopped being PENDING while it was published.",
                                        code="registry.conflict", hint="Run 'ambidex verify'.")
                self.record_event("model_version.registered", entity_type="model_version",
                                  entity_id=f"{name}/{version}", conn=conn,
                                  payload={"name": name, "version": version, "run_id": run_id, "stage": stage,
                                           "manifest_sha256": hashlib.sha256(data).hexdigest()})
        except BaseException as exc:
            ready = self._fail_version(version_id, name, version, exc)
            if not ready:
                self.store.discard(staging)
                if version is not None:  # the number is ours alone, so is any folder under it
                    self.store.discard(self.store.root / "models" / name / str(version))
            raise
        return self.get_model_version(name, version)

    def _ensure_model(self, name: str) -> int:
        q = sa.select(T.models.c.id).where(T.models.c.name == name)
        with self._reader.connect() as conn:
            model_id = conn.execute(q).scalar()
        if model_id is None:
            try:
                with self.engine.begin() as conn:
                    model_id = conn.execute(T.models.insert().values(name=name, created_at=self._now())
                                            ).inserted_primary_key[0]
                    self.record_event("model.created", entity_type="model", entity_id=name, conn=conn)
            except sa.exc.IntegrityError:  # another writer created it first
                with self._reader.connect() as conn:
                    model_id = conn.execute(q).scalar()
        return model_id

    def _insert_pending(self, name: str, completed: dict, files: dict, run_id, stage) -> tuple[int, int, bytes]:
        model_id = self._ensure_model(name)
        mv = T.model_versions
        with self.engine.begin() as conn:  # BEGIN IMMEDIATE on SQLite: the version number is ours
            if conn.dialect.name != "sqlite":
                conn.execute(sa.select(T.models.c.id).where(T.models.c.id == model_id).with_for_update())
            version = (conn.execute(sa.select(sa.func.max(mv.c.version)).where(mv.c.model_id == model_id))
                       .scalar() or 0) + 1
            completed["version"] = version
            data = _manifest_bytes(completed)
            runtime = completed.get("runtime") or {}
            version_id = conn.execute(mv.insert().values(
                model_id=model_id, version=version, status="PENDING", run_id=run_id, stage=stage,
                path=f"models/{name}/{version}", language=runtime.get("language"), task=completed.get("task"),
                manifest=data.decode(), manifest_sha256=hashlib.sha256(data).hexdigest(),
                created_at=self._now(), created_by=self.actor)).inserted_primary_key[0]
            conn.execute(T.artifact_files.insert(), [
                {"version_id": version_id, "relpath": rel, "sha256": f["sha256"], "size": f["size"]}
                for rel, f in files.items()])
        return version_id, version, data

    def _fail_version(self, version_id, name, version, exc) -> bool:
        """Mark an allocated version FAILED (with an event); True if it is in fact READY."""
        if version_id is None:
            return False
        mv = T.model_versions
        try:
            with self.engine.begin() as conn:
                status = conn.execute(sa.select(mv.c.status).where(mv.c.id == version_id)).scalar()
                if status == "READY":
                    return True
                conn.execute(mv.update().where(mv.c.id == version_id).values(status="FAILED"))
                self.record_event("model_version.failed", entity_type="model_version", entity_id=f"{name}/{version}",
                                  payload={"name": name, "version": version}, reason=repr(exc)[:2000], conn=conn)
        except Exception:  # the original error matters more; gc reclaims PENDING rows
            log.exception("could not mark %s v%s FAILED", name, version)
        return False

    def get_model_version(self, name: str, version: int | None = None) -> ModelVersion:
        """A READY version of ``name`` (the latest when ``version`` is None); never PENDING or FAILED."""
        mv = T.model_versions
        q = _version_select().where(T.models.c.name == name, mv.c.status == "READY")
        q = q.order_by(mv.c.version.desc()).limit(1) if version is None else q.where(mv.c.version == int(version))
        with self._reader.connect() as conn:
            row = conn.execute(q).first()
        if row is None:
            what = f"no READY version {version}" if version is not None else "no READY version"
            raise RegistryError(f"Model {name!r} has {what}.", code="registry.not_found", hint=_NOT_FOUND_HINT,
                                name=name, version=version)
        return _model_version(row)

    def list_versions(self, name: str) -> list[ModelVersion]:
        """Every READY version of ``name``, oldest first."""
        mv = T.model_versions
        q = _version_select().where(T.models.c.name == name, mv.c.status == "READY").order_by(mv.c.version)
        with self._reader.connect() as conn:
            rows = conn.execute(q).all()
        if not rows:
            raise RegistryError(f"No model {name!r} with a READY version.", code="registry.not_found",
                                hint=_NOT_FOUND_HINT, name=name)
        return [_model_version(r) for r in rows]

    def list_models(self) -> list[dict]:
        """One dict per model with a READY version: name, latest_version, n_versions, language, created_at."""
        mv, m = T.model_versions, T.models
        agg = (sa.select(mv.c.model_id, sa.func.max(mv.c.version).label("latest"),
                         sa.func.count().label("n")).where(mv.c.status == "READY").group_by(mv.c.model_id).subquery())
        q = (sa.select(m.c.name, agg.c.latest, agg.c.n, mv.c.language, mv.c.task, m.c.created_at)
             .join(agg, agg.c.model_id == m.c.id)
             .join(mv, sa.and_(mv.c.model_id == m.c.id, mv.c.version == agg.c.latest))
             .order_by(m.c.name))
        with self._reader.connect() as conn:
            return [{"name": r.name, "latest_version": r.latest, "n_versions": r.n, "language": r.language,
                     "task": r.task, "created_at": r.created_at} for r in conn.execute(q)]

    def model_path(self, mv: ModelVersion) -> Path:
        """The folder of a READY version after every file (and model.json) is hash-checked."""
        if mv.status != "READY":
            raise RegistryError(f"{mv.name} v{mv.version} is {mv.status}, not READY.", code="registry.not_found",
                                hint=_NOT_FOUND_HINT)
        for rel in mv.manifest.get("files") or {}:
            self.store.verified_path(mv, rel)
        folder = self.store.version_dir(mv.path)
        problems = self._manifest_problems(mv.path, mv.manifest_sha256)
        if problems:
            p = problems[0]
            raise ArtifactError(f"{p['path']} does not match its recorded digest: expected {p['expected']}, "
                                f"found {p['actual']}.", code="artifact.hash_mismatch",
                                hint="Run 'ambidex verify' and re-register the model from its run.")
        return folder

    def _manifest_problems(self, path: str, digest: str) -> list[dict]:
        try:
            from .artifacts import sha256_file

            actual, _ = sha256_file(self.store.version_dir(path) / "model.json")
        except (OSError, ArtifactError) as e:
            return [{"path": f"{path}/model.json", "problem": "missing", "expected": digest, "actual": str(e)}]
        if actual != digest:
            return [{"path": f"{path}/model.json", "problem": "sha256", "expected": digest, "actual": actual}]
        return []

    def verify(self) -> list[dict]:
        """Check every READY version's files, sizes, digests and manifest; return the problems (empty: all good)."""
        mv, af = T.model_versions, T.artifact_files
        problems: list[dict] = []
        with self._reader.connect() as conn:
            versions = conn.execute(_version_select().add_columns(mv.c.id).where(mv.c.status == "READY")
                                    .order_by(T.models.c.name, mv.c.version)).all()
            recorded: dict[int, dict] = {}
            for r in conn.execute(sa.select(af).join(mv).where(mv.c.status == "READY")):
                recorded.setdefault(r.version_id, {})[r.relpath] = {"sha256": r.sha256, "size": r.size}
            blobs = conn.execute(sa.select(T.artifacts.c.sha256, T.artifacts.c.relpath).distinct()).all()
        for v in versions:
            files = recorded.get(v.id, {})
            found = self.store.verify_files(v.path, files)
            if hashlib.sha256(v.manifest.encode()).hexdigest() != v.manifest_sha256:
                found.append({"path": f"{v.path}/model.json", "problem": "manifest_digest",
                              "expected": v.manifest_sha256, "actual": "registry row altered"})
            elif json.loads(v.manifest).get("files") != files:
                found.append({"path": v.path, "problem": "files_table", "expected": "manifest files",
                              "actual": "artifact_files rows differ"})
            found += self._manifest_problems(v.path, v.manifest_sha256)
            problems += [{"name": v.name, "version": v.version, **p} for p in found]
        for b in blobs:
            try:
                self.store.blob_path(b.sha256)
            except (OSError, ArtifactError) as e:
                problems.append({"name": None, "version": None, "path": b.relpath, "problem": "blob",
                                 "expected": b.sha256, "actual": str(e)})
        return problems


def _version_select():
    mv = T.model_versions
    return sa.select(T.models.c.name, mv.c.version, mv.c.status, mv.c.path, mv.c.manifest, mv.c.created_at,
                     mv.c.language, mv.c.task, mv.c.run_id, mv.c.stage, mv.c.manifest_sha256,
                     mv.c.created_by).join(T.models, T.models.c.id == mv.c.model_id)


def _model_version(row) -> ModelVersion:
    return ModelVersion(name=row.name, version=row.version, status=row.status, path=row.path,
                        manifest=json.loads(row.manifest), created_at=row.created_at, language=row.language,
                        task=row.task, run_id=row.run_id, stage=row.stage, manifest_sha256=row.manifest_sha256,
                        created_by=row.created_by)


def _run_dict(row) -> dict:
    out = dict(row._mapping)
    out["lineage"] = json.loads(out["lineage"]) if out.get("lineage") else None
    return out


def _read_manifest(name: str, folder: Path) -> dict:
    """Minimal model.json checks; the full JSON Schema lives in ambidex.contract."""
    path = folder / "model.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(f"{folder} has no model.json.", code="contract.invalid_manifest",
                            hint="A model folder holds model.json and its payload (contract/SPEC.md section 4).") from None
    except (ValueError, UnicodeDecodeError) as e:
        raise ContractError(f"{path} is not valid JSON: {e}.", code="contract.invalid_manifest",
                            hint="Write model.json with the stage SDK.") from None
    if not isinstance(manifest, dict):
        raise ContractError(f"{path} is not a JSON object.", code="contract.invalid_manifest",
                            hint="Write model.json with the stage SDK.")
    cv = manifest.get("contract_version")
    if isinstance(cv, int) and not isinstance(cv, bool) and cv > 1:
        raise ContractError(f"{path} has contract_version {cv}; this ambidex implements 1.",
                            code="contract.version_unsupported", hint="Upgrade ambidex.")
    if cv != 1 or isinstance(cv, bool):
        raise ContractError(f"{path} has contract_version {cv!r}; expected 1.", code="contract.invalid_manifest",
                            hint="Write model.json with the stage SDK.")
    if manifest.get("name") != name:
        raise ContractError(f"{path} names model {manifest.get('name')!r}, but it is being registered as {name!r}.",
                            code="contract.invalid_manifest", hint="Register it under the name in its manifest.")
    payload = (manifest.get("runtime") or {}).get("payload") if isinstance(manifest.get("runtime"), dict) else None
    if not isinstance(payload, str):
        raise ContractError(f"{path} has no runtime.payload.", code="contract.invalid_manifest",
                            hint="Name the payload file in runtime.payload.")
    try:
        check_relpath(payload)
    except ArtifactError as e:
        raise ContractError(f"{path}: runtime.payload {payload!r} is not a valid path: {e.message}",
                            code="contract.invalid_manifest", hint="Name a file inside the model folder.") from None
    if not (folder / payload).is_file():
        raise ContractError(f"{path} names payload {payload!r}, which is not in {folder}.",
                            code="contract.invalid_manifest", hint="Write the payload into the model folder.")
    return manifest


def _validate_with_contract(manifest: dict) -> None:
    try:
        from .contract import validate_manifest
    except ImportError:  # the contract module is optional until it lands
        return
    validate_manifest(manifest)


def _insert_many(conn, table, constants: dict, keys: tuple[str, ...], rows: list[tuple]) -> None:
    """INSERT many rows: a few through SQLAlchemy, a batch through :func:`ambidex.db.insert_columns`."""
    if len(rows) < 64:
        conn.execute(table.insert(), [{**constants, **dict(zip(keys, r))} for r in rows])
        return
    from .db import insert_columns

    insert_columns(conn, table, constants, {k: list(col) for k, col in zip(keys, zip(*rows))})
