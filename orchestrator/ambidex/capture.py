"""capture: score a deployment's window with every live model, capture every prediction in SQL, publish the output.

Each model of the live revision scores the window's typed table in its own runtime, one process per
model (run concurrently), through the injected launcher. Each model's predictions are then captured
in ONE transaction per (deployment, window, model version): the ``capture_batches`` row is unique on
that key, so a re-run skips (or, with ``replace``, swaps) the set and a crash mid-capture leaves
nothing to clean: exactly one set exists after any sequence of runs and crashes.

Inputs are captured by reference by default: the batch records ``input_ref`` (the feature store's
data version, or ``sha256:<hex>`` of the scored table) and every prediction its ``row_index`` in that
table and its entity key, which is enough to fetch the exact features again. With
``capture_features`` each row's features are stored as JSON as well (slower, self-contained).

Published output: the champion's rows, except rows whose entity key hashes into a canary's share,
which come from that canary (``deploy.assign_rows``). It is written atomically to
``<publish_dir>/<start>_<end>.csv`` (typed CSV + schema), and the same rows carry ``published = true``
in ``predictions``.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

from . import deploytables as T
from .deploy import Deployments, Member, VersionRef, assign_rows
from .errors import DataError, UsageError

__all__ = ["ScoreReport", "Scorer", "parse_window", "record_labels", "predictions_with_labels"]

Launcher = Callable[[Path, Path, Path, list], dict]


def parse_window(text: str) -> tuple[dt.datetime, dt.datetime]:
    """``START/END`` in RFC 3339 (``Z`` or an offset; a bare date means midnight UTC) -> a half-open UTC window."""
    start_s, sep, end_s = (text or "").partition("/")
    try:
        start, end = (_parse_ts(start_s), _parse_ts(end_s)) if sep else (None, None)
    except ValueError:
        start = end = None
    if start is None or end is None or not start < end:
        raise UsageError(f"Invalid window {text!r}: expected START/END in UTC with START < END, "
                         "e.g. 2024-06-01T00:00:00Z/2024-06-02T00:00:00Z.", code="usage.invalid_window")
    return start, end


def _parse_ts(s: str) -> dt.datetime:
    s = s.strip()
    value = dt.datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    if value.tzinfo is None:
        if len(s) != 10:  # a naive time of day is refused, a bare date is UTC midnight
            raise ValueError(s)
        value = value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def _window_tag(start: dt.datetime, end: dt.datetime) -> str:
    return f"{start:%Y%m%dT%H%M%SZ}_{end:%Y%m%dT%H%M%SZ}"


def sha256_of(path: Path) -> str:
    from .artifacts import sha256_file

    return sha256_file(path)[0]


@dataclass
class ScoreReport:
    deployment: str
    revision: int
    window_start: dt.datetime
    window_end: dt.datetime
    rows: int
    input_ref: str
    published_path: str | None
    members: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class Scorer:
    """Scores windows for :class:`~ambidex.deploy.Deployments`; ``launcher(model_dir, input_csv, output_csv,
    keep)`` runs one model over one table in a fresh process (default: :func:`ambidex.scoring.score_folder`)."""

    def __init__(self, deployments: Deployments, launcher: Launcher, *, workdir: Path, publish_dir: Path,
                 chunk_size: int = 100_000, capture_features: bool = False, parallel: int = 2):
        self.deps = deployments
        self.launcher = launcher
        self.workdir = Path(workdir)
        self.publish_dir = Path(publish_dir)
        self.chunk_size = chunk_size
        self.capture_features = capture_features
        self.parallel = max(1, parallel)

    def score(self, name: str, window: tuple[dt.datetime, dt.datetime], input_csv: Path, *,
              input_ref: str | None = None, replace: bool = False, dry_run: bool = False) -> ScoreReport:
        """Score ``input_csv`` (the window's typed table) with every model of the live revision; capture; publish."""
        start, end = window
        with self.deps.engine.connect() as conn:
            dep = self.deps._deployment_row(conn, name)
        live = self.deps.live(name)
        with self.deps.engine.connect() as conn:
            refs = [self.deps.resolve(conn, m.model, m.version) for m in live.members]
            done = {r[0] for r in conn.execute(
                sa.select(T.capture_batches.c.model_version_id).where(
                    T.capture_batches.c.deployment_id == dep["id"], T.capture_batches.c.window_start == start,
                    T.capture_batches.c.window_end == end))}
        input_csv = Path(input_csv)
        schema = self._check_input(input_csv, dep["entity_key"], refs)
        input_ref = input_ref or f"sha256:{sha256_of(input_csv)}"
        report = ScoreReport(name, live.revision, start, end, int(schema.get("row_count") or 0), input_ref, None)
        todo = [(m, r) for m, r in zip(live.members, refs) if replace or r.id not in done]
        pub_path = self.publish_dir / f"{_window_tag(start, end)}.csv"
        if not todo and pub_path.exists():
            report.published_path = str(pub_path)
            report.members = [{"model": m.label, "role": m.role, "status": "skipped"} for m in live.members]
            return report
        need = {r.id for _, r in todo} | {r.id for m, r in zip(live.members, refs) if m.role != "shadow"}
        if dry_run:
            report.members = [{"model": m.label, "role": m.role, "status": "would score" if r.id in need else
                               "skipped"} for m, r in zip(live.members, refs)]
            return report
        for ref in refs:
            if self.deps.verify is not None:
                self.deps.verify(ref)
        work = self.workdir / name / _window_tag(start, end)
        work.mkdir(parents=True, exist_ok=True)
        outputs = self._run_models([(m, r) for m, r in zip(live.members, refs) if r.id in need], input_csv,
                                   work, dep["entity_key"])
        canaries = [m for m in live.members if m.role == "canary"]
        assignment = self._assign(name, outputs[refs[[m.role for m in live.members].index("champion")].id],
                                  dep["entity_key"], canaries)
        expected = schema.get("row_count")
        with ThreadPoolExecutor(max_workers=1) as pool:
            # the published file is written beside the captures (pyarrow releases the GIL) and moved into
            # place only after every capture committed, so a failed capture never publishes
            pub = pool.submit(self._publish, pub_path, live.members, refs, outputs, dep["entity_key"], assignment,
                              canaries, expected)
            try:
                for m, r in zip(live.members, refs):
                    status = "skipped"
                    if r.id in {x.id for _, x in todo}:
                        n, published = self._capture(dep["id"], live.revision, (start, end), m, r, outputs[r.id],
                                                     dep["entity_key"], assignment, canaries, input_ref, input_csv,
                                                     replace, expected)
                        status = "captured"
                        report.rows = n
                    report.members.append({"model": m.label, "role": m.role, "status": status})
            except BaseException:
                pub.cancel()
                with contextlib.suppress(BaseException):
                    tmp, _ = pub.result()
                    tmp.unlink(missing_ok=True)
                raise
            tmp, rows = pub.result()
        report.published_path = str(self._publish_commit(tmp, pub_path, dep["entity_key"], rows))
        shutil.rmtree(work, ignore_errors=True)
        return report

    # -- steps ---------------------------------------------------------------------------------------
    def _check_input(self, input_csv: Path, key: str, refs: list[VersionRef]) -> dict:
        schema_path = input_csv.with_name(input_csv.stem + ".schema.json")
        try:
            schema = json.loads(schema_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise DataError(f"Input {input_csv} has no readable schema sidecar {schema_path.name}: {e}.",
                            code="data.invalid_input", hint="Export the window with the feature store.") from None
        have = {c["name"] for c in schema.get("columns") or []}
        if key not in have:
            raise DataError(f"Input {input_csv} lacks the entity key column '{key}'. Nothing was scored.",
                            code="contract.missing_column", hint="Check the deployment's entity_key.")
        for ref in refs:
            need = [c["name"] for c in (ref.manifest.get("signature") or {}).get("inputs") or []]
            missing = [c for c in need if c not in have]
            if missing:
                raise DataError(f"Input {input_csv} lacks column(s) {', '.join(missing)} required by {ref.label}. "
                                "Nothing was scored or captured.", code="contract.missing_column",
                                hint="Fix the mart or transform that feeds this deployment.", missing=missing)
        return schema

    def _run_models(self, pairs: list[tuple[Member, VersionRef]], input_csv: Path, work: Path, key: str) -> dict:
        def one(pair):
            _, ref = pair
            out = work / f"{ref.name}_{ref.version}.csv"
            self.launcher(self.deps.folder(ref), input_csv, out, [key])
            return ref.id, out
        with ThreadPoolExecutor(max_workers=min(self.parallel, len(pairs) or 1)) as pool:
            return dict(pool.map(one, pairs))

    def _chunks(self, path: Path, key: str):
        """The predictions file ``path`` as pyarrow Tables of exactly ``chunk_size`` rows (the last may be
        shorter): ``key`` and ``prediction`` as text, ``score`` as double. Streams (flat memory)."""
        return _csv_chunks(path, {key: "string", "prediction": "string", "score": "double"}, self.chunk_size)

    def _assign(self, name: str, champion_csv: Path, key: str, canaries: list[Member]):
        import numpy as np

        if not canaries:
            return None
        parts = [np.asarray(assign_rows(name, c.column(key).to_pylist(), canaries), dtype=np.int8)
                 for c in self._chunks(champion_csv, key)]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int8)

    def _published_mask(self, role: str, member: Member, canaries: list[Member], assignment, lo: int, hi: int):
        import numpy as np

        n = hi - lo
        if role == "shadow":
            return np.zeros(n, dtype=bool)
        if assignment is None:
            return np.ones(n, dtype=bool)
        part = assignment[lo:hi]
        return part == -1 if role == "champion" else part == canaries.index(member)

    def _capture(self, dep_id, revision, window, member: Member, ref: VersionRef, out_csv: Path, key: str,
                 assignment, canaries, input_ref: str, input_csv: Path, replace: bool,
                 expected_rows: int | None = None) -> tuple[int, int]:
        from ambidex_stage.tables import prefetch

        b, p = T.capture_batches, T.predictions
        start, end = window
        feats = self._feature_chunks(input_csv) if self.capture_features else None
        with self.deps.engine.begin() as conn:
            old = conn.execute(sa.select(b.c.id).where(b.c.deployment_id == dep_id, b.c.window_start == start,
                                                       b.c.window_end == end, b.c.model_version_id == ref.id)
                               ).scalar()
            if old is not None and not replace:
                return 0, 0  # captured by a concurrent run since we looked
            if old is not None:
                conn.execute(p.delete().where(p.c.batch_id == old))
                conn.execute(b.delete().where(b.c.id == old))
            batch_id = conn.execute(b.insert().values(
                deployment_id=dep_id, window_start=start, window_end=end, model_version_id=ref.id, revision=revision,
                role=member.role, share=member.share, row_count=0, published_rows=0, input_ref=input_ref,
                features_mode="json" if self.capture_features else "reference", scored_at=self.deps.clock(),
                scored_by=self.deps.actor)).inserted_primary_key[0]
            n = published = 0
            write = _PredictionWriter(conn, p, batch_id, with_features=feats is not None)
            for chunk, fjson in prefetch(_zip_features(self._chunks(out_csv, key), feats)):
                m = chunk.num_rows
                mask = self._published_mask(member.role, member, canaries, assignment, n, n + m)
                write(n, chunk.column(key), chunk.column("prediction"), chunk.column("score"), mask, fjson)
                n += m
                published += int(mask.sum())
            if expected_rows is not None and n != expected_rows:
                raise DataError(f"{ref.label} returned {n} prediction rows for {expected_rows} input rows; "
                                "nothing was captured.", code="contract.invalid_table",
                                hint="A model must return exactly one row per input row (contract/SPEC.md 4.1).")
            conn.execute(b.update().where(b.c.id == batch_id).values(row_count=n, published_rows=published))
            self.deps.event(conn, "capture.completed", self.deps_name(dep_id, conn),
                            {"window": [start, end], "model": ref.label, "role": member.role, "rows": n,
                             "published_rows": published, "revision": revision, "replaced": old is not None},
                            entity_type="deployment")
        return n, published

    def deps_name(self, dep_id: int, conn) -> str:
        return conn.execute(sa.select(T.deployments.c.name).where(T.deployments.c.id == dep_id)).scalar_one()

    def _feature_chunks(self, input_csv: Path):
        """Each input row's features as one JSON text, in lists aligned with the prediction chunks (streamed)."""
        from ambidex_stage.tables import read_table_chunks

        for df in read_table_chunks(input_csv, self.chunk_size):
            yield df.to_json(orient="records", lines=True, date_format="iso").splitlines()

    def _publish(self, path: Path, members, refs, outputs: dict, key: str, assignment, canaries,
                 expected: int | None = None) -> tuple[Path, int]:
        """Write the published rows to a temporary file beside ``path``; returns (temporary path, rows)."""
        import pyarrow as pa
        import pyarrow.compute as pc
        import pyarrow.csv as pacsv

        pubs = [(m, r) for m, r in zip(members, refs) if m.role != "shadow"]
        readers = [(m, r, self._chunks(outputs[r.id], key)) for m, r in pubs]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        lo = 0
        try:
            with open(tmp, "wb") as f:
                f.write(f'"{key}","prediction","score","model","version","role"\n'.encode("utf-8"))
                opts = pacsv.WriteOptions(include_header=False, quoting_style="needed")
                while True:
                    chunks = [(m, r, next(it, None)) for m, r, it in readers]
                    if all(c is None for _, _, c in chunks):
                        break
                    if any(c is None or c.num_rows != chunks[0][2].num_rows for _, _, c in chunks):
                        raise DataError("The published models returned different numbers of rows; nothing was "
                                        "published.", code="contract.invalid_table",
                                        hint="A model must return exactly one row per input row.")
                    hi = lo + chunks[0][2].num_rows
                    for m, r, c in chunks:
                        mask = self._published_mask(m.role, m, canaries, assignment, lo, hi)
                        sel = c.filter(pa.array(mask))
                        k = len(sel)
                        score = sel.column("score")
                        table = pa.table({key: _as_text(sel.column(key)), "prediction": _as_text(sel.column("prediction")),
                                          "score": pc.if_else(pc.is_nan(score), pa.scalar(None, pa.float64()), score),
                                          "model": pa.repeat(pa.scalar(r.name, pa.string()), k),
                                          "version": pa.repeat(pa.scalar(int(r.version), pa.int64()), k),
                                          "role": pa.repeat(pa.scalar(m.role, pa.string()), k)})
                        pacsv.write_csv(table, f, opts)
                    lo = hi
                f.flush()
                os.fsync(f.fileno())
            if expected is not None and pubs and lo != expected:
                raise DataError(f"The published models returned {lo} rows for {expected} input rows; nothing was "
                                "published.", code="contract.invalid_table",
                                hint="A model must return exactly one row per input row.")
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp, lo

    def _publish_commit(self, tmp: Path, path: Path, key: str, rows: int) -> Path:
        os.replace(tmp, path)
        schema = {"contract_version": 1, "row_count": rows, "columns": [
            {"name": key, "type": "string", "nullable": False}, {"name": "prediction", "type": "string", "nullable": True},
            {"name": "score", "type": "double", "nullable": True}, {"name": "model", "type": "string", "nullable": False},
            {"name": "version", "type": "integer", "nullable": False}, {"name": "role", "type": "string", "nullable": False}]}
        path.with_name(path.stem + ".schema.json").write_text(json.dumps(schema, indent=2), encoding="utf-8")
        return path


def _csv_chunks(path: Path, types: dict[str, str], chunk_rows: int):
    """Columns ``types`` ({name: "string" | "double"}) of the typed CSV ``path`` as pyarrow Tables of exactly
    ``chunk_rows`` rows (the last may be shorter), parsed by pyarrow's streaming reader (flat memory).
    An unquoted empty field is missing, a quoted ``""`` the empty string (contract/SPEC.md 3)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv

    kinds = {"string": pa.string(), "double": pa.float64()}
    try:
        reader = pcsv.open_csv(
            path, read_options=pcsv.ReadOptions(block_size=1 << 22),
            parse_options=pcsv.ParseOptions(newlines_in_values=True, ignore_empty_lines=False),
            convert_options=pcsv.ConvertOptions(column_types={k: kinds[v] for k, v in types.items()},
                                                include_columns=list(types), null_values=[""],
                                                strings_can_be_null=True, quoted_strings_can_be_null=False))
    except (pa.ArrowInvalid, KeyError) as e:
        raise DataError(f"Predictions file {path} does not parse: {e}.", code="contract.invalid_table",
                        hint="The model's score stage must write a typed table (contract/SPEC.md 3, 4.1).") from None
    pending, rows = [], 0
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            break
        except pa.ArrowInvalid as e:
            raise DataError(f"Predictions file {path} does not parse: {e}.", code="contract.invalid_table",
                            hint="The model's score stage must write a typed table (contract/SPEC.md 3, 4.1).") from None
        pending.append(batch)
        rows += batch.num_rows
        while rows >= chunk_rows:
            table = pa.Table.from_batches(pending)
            yield table.slice(0, chunk_rows).combine_chunks()
            rest = table.slice(chunk_rows)
            pending, rows = rest.to_batches(), rest.num_rows
    if rows:
        yield pa.Table.from_batches(pending).combine_chunks()


def _zip_features(chunks, feats):
    """(prediction chunk, feature JSON list or None) pairs; the two streams must align row for row."""
    for chunk in chunks:
        fj = next(feats, None) if feats is not None else None
        if feats is not None and (fj is None or len(fj) != chunk.num_rows):
            raise DataError("The predictions and the input features do not align row for row; nothing was "
                            "captured.", code="contract.invalid_table",
                            hint="A model must return exactly one row per input row, in input order.")
        yield chunk, fj


class _PredictionWriter:
    """Appends prediction rows of one capture batch inside the caller's transaction, as fast as each
    backend allows: PostgreSQL (psycopg 3) ``COPY ... FROM STDIN`` of CSV built by pyarrow; every other
    backend one DBAPI ``executemany`` per chunk through :func:`ambidex.db.insert_columns` (bind
    processors applied per column, no per-row dicts). Same rows and values as ``conn.execute(table.insert(), dicts)``."""

    def __init__(self, conn, table: sa.Table, batch_id: int, *, with_features: bool):
        dialect = conn.dialect
        self.table, self.batch_id = table, batch_id
        self.keys = ["batch_id", "row_index", "entity_key", "prediction", "score", "published"]
        if with_features:
            self.keys.append("features")
        self.cursor = conn.connection.dbapi_connection.cursor()
        self.copy = dialect.name == "postgresql" and dialect.driver == "psycopg"
        if self.copy:
            prep = dialect.identifier_preparer
            self.sql = (f"COPY {prep.format_table(table)} ({', '.join(prep.quote(k) for k in self.keys)}) "
                        "FROM STDIN (FORMAT csv)")
            return
        self.conn = conn

    def __call__(self, lo: int, keys, preds, scores, mask, features) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(keys)
        scores = pc.if_else(pc.is_nan(scores), pa.scalar(None, pa.float64()), scores)  # NaN is stored as NULL
        if self.copy:
            self._copy(lo, n, keys, preds, scores, mask, features)
            return
        from .db import insert_columns

        cols = {"row_index": list(range(lo, lo + n)), "entity_key": keys.to_pylist(),
                "prediction": preds.to_pylist(), "score": scores.to_pylist(), "published": mask.tolist()}
        if features is not None:
            cols["features"] = list(features)
        insert_columns(self.conn, self.table, {"batch_id": self.batch_id}, cols)

    def _copy(self, lo, n, keys, preds, scores, mask, features) -> None:
        import io

        import numpy as np
        import pyarrow as pa
        import pyarrow.csv as pacsv

        data = {"batch_id": pa.array(np.full(n, self.batch_id, dtype=np.int64)),
                "row_index": pa.array(np.arange(lo, lo + n, dtype=np.int64)),
                "entity_key": _as_text(keys), "prediction": _as_text(preds), "score": scores,
                "published": pa.array(np.asarray(mask, dtype=bool))}
        if features is not None:
            data["features"] = pa.array(features, pa.string())
        buf = io.BytesIO()
        pacsv.write_csv(pa.table(data), buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        with self.cursor.copy(self.sql) as cp:
            cp.write(buf.getbuffer())


def _as_text(arr):
    import pyarrow as pa

    return arr.cast(pa.string())


def record_labels(engine: sa.Engine, source: str, rows: list[dict], *, clock=None) -> int:
    """Store labels ``{entity_key, window_start, window_end, label}`` for ``source`` (the deployment's source
    or name); a label given again for the same key and window replaces the old one."""
    now = (clock or (lambda: dt.datetime.now(dt.timezone.utc)))()
    lab = T.labels
    with engine.begin() as conn:
        for r in rows:
            conn.execute(lab.delete().where(lab.c.source == source, lab.c.entity_key == str(r["entity_key"]),
                                            lab.c.window_start == r["window_start"]))
        conn.execute(lab.insert(), [{"source": source, "entity_key": str(r["entity_key"]),
                                     "window_start": r["window_start"], "window_end": r["window_end"],
                                     "label": None if r.get("label") is None else str(r["label"]),
                                     "arrived_at": now} for r in rows])
    return len(rows)


def predictions_with_labels(engine: sa.Engine, deployment: str, window_start: dt.datetime) -> list[dict]:
    """Captured predictions of one window, every model, with the label joined by entity key and window."""
    d, b, p, lab = T.deployments, T.capture_batches, T.predictions, T.labels
    from .tables import model_versions, models

    q = (sa.select(p.c.entity_key, p.c.row_index, models.c.name.label("model"), model_versions.c.version, b.c.role,
                   b.c.revision, p.c.prediction, p.c.score, p.c.published, b.c.scored_at, lab.c.label)
         .select_from(p.join(b, b.c.id == p.c.batch_id).join(d, d.c.id == b.c.deployment_id)
                      .join(model_versions, model_versions.c.id == b.c.model_version_id)
                      .join(models, models.c.id == model_versions.c.model_id)
                      .outerjoin(lab, sa.and_(lab.c.source == sa.func.coalesce(d.c.source, d.c.name),
                                              lab.c.entity_key == p.c.entity_key,
                                              lab.c.window_start == b.c.window_start)))
         .where(d.c.name == deployment, b.c.window_start == window_start)
         .order_by(b.c.role, p.c.row_index))
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(q)]
