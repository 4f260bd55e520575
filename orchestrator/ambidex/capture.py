"""capture: score a deployment's window with every live model, capture every prediction in SQL, publish the output.

Each model of the live revision scores the window's typed table in its own runtime, one process per
model (run concurrently), through the injected launcher. Each model's predictions are captured in ONE
transaction per (deployment, window, model version), models in revision order: the ``capture_batches``
row is unique on that key, so a re-run skips (or, with ``replace``, swaps) the set and a crash
mid-capture leaves nothing to clean: exactly one set exists after any sequence of runs and crashes.

The capture overlaps the scoring: a stage that streams (the Python built-in) hands each chunk of
predictions on as it makes it (``scoring.parts_dir``), and the chunk is inserted, and for the champion
published, while the model scores the next; the transaction commits only after the process ended
well and every row arrived. A stage that does not stream (R) is captured from its output file.

Inputs are captured by reference by default: the batch records ``input_ref`` (the feature store's
data version, or ``sha256:<hex>`` of the scored table) and every prediction its ``row_index`` in that
table and its entity key, which is enough to fetch the exact features again. With
``capture_features`` each row's features are stored as JSON as well (slower, self-contained).

Published output: the champion's rows, except rows whose entity key hashes into a canary's share,
which come from that canary (``deploy.assign_rows`` of the champion's keys). It is written atomically to
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
from .scoring import InputFeed

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
              input_ref: str | None = None, replace: bool = False, dry_run: bool = False,
              feed: InputFeed | None = None) -> ScoreReport:
        """Score ``input_csv`` (the window's typed table) with every model of the live revision; capture; publish.

        With ``feed`` (``scoring.InputFeed``), ``input_csv`` is still being written (from the feature store)
        when this is called: the Python models start on its first parts, the capture once it is complete,
        and ``input_ref`` defaults to the data versions it was read from."""
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
        key = dep["entity_key"]
        schema = self._check_input(input_csv, key, refs, feed.schema if feed is not None else None)
        report = ScoreReport(name, live.revision, start, end, int(schema.get("row_count") or 0), input_ref or "",
                             None)
        todo = {r.id for r in refs if replace or r.id not in done}
        pub_path = self.publish_dir / f"{_window_tag(start, end)}.csv"

        def whole() -> tuple[str, int | None]:
            """Once the fed table is complete (this waits for it): its data versions and row count (the sidecar's)."""
            ref = input_ref or feed.input_ref()
            rows = self._check_input(input_csv, key, refs).get("row_count")
            report.rows = int(rows or 0)
            return ref, rows

        if feed is not None and (dry_run or not todo and pub_path.exists()):
            input_ref, _ = whole()  # nothing to start early: the table is whole once this returns
        if not todo and pub_path.exists():
            report.input_ref = input_ref or f"sha256:{sha256_of(input_csv)}"
            report.published_path = str(pub_path)
            report.members = [{"model": m.label, "role": m.role, "status": "skipped"} for m in live.members]
            return report
        need = todo | {r.id for m, r in zip(live.members, refs) if m.role != "shadow"}
        if dry_run:
            report.input_ref = input_ref or f"sha256:{sha256_of(input_csv)}"
            report.members = [{"model": m.label, "role": m.role, "status": "would score" if r.id in need else
                               "skipped"} for m, r in zip(live.members, refs)]
            return report
        for ref in refs:
            if self.deps.verify is not None:
                self.deps.verify(ref)
        work = self.workdir / name / _window_tag(start, end)
        work.mkdir(parents=True, exist_ok=True)
        canaries = [m for m in live.members if m.role == "canary"]
        expected = schema.get("row_count")
        runs = _ModelRuns(self.launcher, [(self.deps.folder(r), r) for r in refs if r.id in need], input_csv, work,
                          key, self.parallel, self.chunk_size, feed)
        pub = _PublishWriter(pub_path, key)
        pool = ThreadPoolExecutor(max_workers=1)
        try:
            if feed is not None:
                # the Python models score the parts as they come; the capture starts once the table is complete
                # (measured: capturing while the window is still read makes both slower, as both need the GIL)
                input_ref, expected = whole()
            # the models are starting (an interpreter and its imports take a second or more): hash meanwhile
            input_ref = report.input_ref = input_ref or f"sha256:{sha256_of(input_csv)}"
            # with canaries the published rows come from several models, so they are written by a thread of
            # their own (pyarrow releases the GIL); otherwise the champion's chunks are published as captured
            later = pool.submit(self._publish, pub, runs, name, live.members, refs, key, canaries) \
                if canaries else None
            for m, r in zip(live.members, refs):
                tee = pub if m.role == "champion" and not canaries else None
                status = "skipped"
                if r.id in todo:
                    n, _ = self._capture(dep["id"], name, live.revision, (start, end), m, r, runs.stream(r.id), key,
                                         canaries, input_ref, input_csv, replace, expected, tee)
                    status = "captured"
                    report.rows = n
                elif tee is not None:
                    for chunk in runs.stream(r.id):
                        tee.write(r, m.role, chunk, True)
                report.members.append({"model": m.label, "role": m.role, "status": status})
            if later is not None:
                later.result()
            rows = pub.finish()
            if expected is not None and rows != expected:
                raise DataError(f"The published models returned {rows} rows for {expected} input rows; nothing was "
                                "published.", code="contract.invalid_table",
                                hint="A model must return exactly one row per input row.")
        except BaseException as exc:
            # a failed export has marked its parts ABORT (or removed them), so the models reading them stop;
            # then the streams and the processes end
            cause = feed.failure() if feed is not None else None
            pool.shutdown(wait=True)  # the publishing thread ends with the models' streams
            runs.close()
            pub.abort()
            if cause is not None and cause is not exc:
                raise cause from exc  # the table could not be read: that, not the stage it starved, is the error
            raise
        pool.shutdown(wait=True)
        runs.close()
        report.published_path = str(self._publish_commit(pub.tmp, pub_path, key, rows))
        shutil.rmtree(work, ignore_errors=True)
        return report

    # -- steps ---------------------------------------------------------------------------------------
    def _check_input(self, input_csv: Path, key: str, refs: list[VersionRef], schema: dict | None = None) -> dict:
        """The input's schema (``schema``, else its sidecar) after checking it has every column needed."""
        schema_path = input_csv.with_name(input_csv.stem + ".schema.json")
        try:
            schema = schema if schema is not None else json.loads(schema_path.read_text(encoding="utf-8"))
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

    @staticmethod
    def _published_mask(name: str, member: Member, canaries: list[Member], keys):
        """Which rows of a chunk ``member`` publishes: ``True`` / ``False`` for all of them, else a numpy mask."""
        import numpy as np

        if member.role == "shadow":
            return False
        if not canaries:
            return True
        part = np.asarray(assign_rows(name, keys.to_pylist(), canaries), dtype=np.int8)
        return part == -1 if member.role == "champion" else part == canaries.index(member)

    def _capture(self, dep_id, name: str, revision, window, member: Member, ref: VersionRef, chunks, key: str,
                 canaries, input_ref: str, input_csv: Path, replace: bool, expected_rows: int | None = None,
                 tee: _PublishWriter | None = None) -> tuple[int, int]:
        from ambidex_stage.tables import prefetch

        b, p = T.capture_batches, T.predictions
        start, end = window
        feats = self._feature_chunks(input_csv) if self.capture_features else None
        with self.deps.engine.begin() as conn:
            old = conn.execute(sa.select(b.c.id).where(b.c.deployment_id == dep_id, b.c.window_start == start,
                                                       b.c.window_end == end, b.c.model_version_id == ref.id)
                               ).scalar()
            if old is not None and not replace:
                skipped = True  # captured by a concurrent run since we looked
            else:
                skipped = False
                if old is not None:
                    conn.execute(p.delete().where(p.c.batch_id == old))
                    conn.execute(b.delete().where(b.c.id == old))
                batch_id = conn.execute(b.insert().values(
                    deployment_id=dep_id, window_start=start, window_end=end, model_version_id=ref.id,
                    revision=revision, role=member.role, share=member.share, row_count=0, published_rows=0,
                    input_ref=input_ref, features_mode="json" if self.capture_features else "reference",
                    scored_at=self.deps.clock(), scored_by=self.deps.actor)).inserted_primary_key[0]
                n = published = 0
                write = _PredictionWriter(conn, p, batch_id, with_features=feats is not None)
                for chunk, fjson in prefetch(_zip_features(chunks, feats)):
                    m = chunk.num_rows
                    mask = self._published_mask(name, member, canaries, chunk.column(key))
                    write(n, chunk.column(key), chunk.column("prediction"), chunk.column("score"), mask, fjson)
                    if tee is not None:
                        tee.write(ref, member.role, chunk, mask)
                    n += m
                    published += m if mask is True else 0 if mask is False else int(mask.sum())
                if expected_rows is not None and n != expected_rows:
                    raise DataError(f"{ref.label} returned {n} prediction rows for {expected_rows} input rows; "
                                    "nothing was captured.", code="contract.invalid_table",
                                    hint="A model must return exactly one row per input row (contract/SPEC.md 4.1).")
                conn.execute(b.update().where(b.c.id == batch_id).values(row_count=n, published_rows=published))
                self.deps.event(conn, "capture.completed", self.deps_name(dep_id, conn),
                                {"window": [start, end], "model": ref.label, "role": member.role, "rows": n,
                                 "published_rows": published, "revision": revision, "replaced": old is not None},
                                entity_type="deployment")
        if skipped:
            for chunk in chunks if tee is not None else ():
                tee.write(ref, member.role, chunk, True)
            return 0, 0
        return n, published

    def deps_name(self, dep_id: int, conn) -> str:
        return conn.execute(sa.select(T.deployments.c.name).where(T.deployments.c.id == dep_id)).scalar_one()

    def _feature_chunks(self, input_csv: Path):
        """Each input row's features as one JSON text, in lists aligned with the prediction chunks (streamed)."""
        from ambidex_stage.tables import read_table_chunks

        for df in read_table_chunks(input_csv, self.chunk_size):
            yield df.to_json(orient="records", lines=True, date_format="iso").splitlines()

    def _publish(self, pub: _PublishWriter, runs: _ModelRuns, name: str, members, refs, key: str,
                 canaries: list[Member]) -> None:
        """Write the champion's rows and the canaries' (by the hash of the champion's keys) to ``pub``."""
        pubs = [(m, r) for m, r in zip(members, refs) if m.role != "shadow"]
        readers = [(m, r, runs.stream(r.id)) for m, r in pubs]
        while True:
            chunks = [(m, r, next(it, None)) for m, r, it in readers]
            if all(c is None for _, _, c in chunks):
                break
            if any(c is None or c.num_rows != chunks[0][2].num_rows for _, _, c in chunks):
                raise DataError("The published models returned different numbers of rows; nothing was "
                                "published.", code="contract.invalid_table",
                                hint="A model must return exactly one row per input row.")
            keys = next(c for m, _, c in chunks if m.role == "champion").column(key)
            if any(not c.column(key).equals(keys) for _, _, c in chunks):
                raise DataError(f"The published models returned the rows in different orders (by '{key}'); "
                                "nothing was published.", code="contract.invalid_table",
                                hint="A model must return one row per input row, in input order.")
            for m, r, c in chunks:
                pub.write(r, m.role, c, self._published_mask(name, m, canaries, keys))

    def _publish_commit(self, tmp: Path, path: Path, key: str, rows: int) -> Path:
        os.replace(tmp, path)
        schema = {"contract_version": 1, "row_count": rows, "columns": [
            {"name": key, "type": "string", "nullable": False}, {"name": "prediction", "type": "string", "nullable": True},
            {"name": "score", "type": "double", "nullable": True}, {"name": "model", "type": "string", "nullable": False},
            {"name": "version", "type": "integer", "nullable": False}, {"name": "role", "type": "string", "nullable": False}]}
        path.with_name(path.stem + ".schema.json").write_text(json.dumps(schema, indent=2), encoding="utf-8")
        return path


class _ModelRuns:
    """The scoring processes of one window (started at once through the launcher, ``parallel`` at a time) and
    each model's predictions as a stream of pyarrow Tables of exactly ``chunk_rows`` rows (the last may be
    shorter): the chunks its stage hands on while it scores, else its output file's once it ended."""

    def __init__(self, launcher: Launcher, models: list, input_csv: Path, work: Path, key: str, parallel: int,
                 chunk_rows: int, feed=None):
        import ambidex_stage.tables  # noqa: F401 - before the threads: the launchers and the capture import it,
        import ambidex_stage.validate  # noqa: F401 - and a package imported by two threads at once can deadlock

        from .scoring import parts_dir

        self.key, self.chunk_rows = key, chunk_rows
        self.types = {key: "string", "prediction": "string", "score": "double"}
        self.outs: dict = {}
        self.futures: dict = {}
        self.pool = ThreadPoolExecutor(max_workers=min(parallel, len(models) or 1))
        for folder, ref in models:
            out = work / f"{ref.name}_{ref.version}.csv"
            out.unlink(missing_ok=True)
            parts = parts_dir(out)
            shutil.rmtree(parts, ignore_errors=True)
            parts.mkdir(parents=True)  # asks a streaming stage to hand its chunks on (scoring.parts_dir)
            self.outs[ref.id] = out
            more = {"feed": feed} if feed is not None else {}  # the launcher passes it on to scoring.score_model
            self.futures[ref.id] = self.pool.submit(launcher, folder, input_csv, out, [key], **more)
        # what the capture needs, loaded while the models start rather than when their first chunk is waiting
        import numpy  # noqa: F401
        import pyarrow.compute  # noqa: F401
        import pyarrow.csv  # noqa: F401

    def stream(self, ref_id: int):
        return _rechunk(self._arrivals(ref_id), self.chunk_rows)

    def _arrivals(self, ref_id: int):
        from concurrent.futures import wait

        from .scoring import parts_dir

        fut, out = self.futures[ref_id], self.outs[ref_id]
        folder = parts_dir(out)
        i = rows = body = 0
        header = b""
        while True:
            part = folder / f"part-{i:06d}.csv"
            if part.is_file():
                if i == 0:
                    with open(part, "rb") as f:
                        header = f.readline()
                body += part.stat().st_size - len(header)
                for table in _csv_chunks(part, self.types, 1 << 62):
                    rows += table.num_rows
                    yield table
                i += 1
            elif not fut.done():
                wait([fut], timeout=0.02)
            elif part.is_file():
                continue  # written just before the process ended
            else:
                fut.result()  # the launcher's error, if it failed
                break
        if i == 0:  # the stage did not stream: its output file
            yield from _csv_chunks(out, self.types, self.chunk_rows)
            return
        try:
            declared = json.loads(out.with_name(out.stem + ".schema.json").read_text(encoding="utf-8"))["row_count"]
            size = out.stat().st_size
        except (OSError, ValueError, KeyError):
            declared = size = None
        if declared != rows or size != len(header) + body:
            raise DataError(f"Predictions file {out} ({declared} rows, {size} bytes) is not the {rows} rows "
                            f"({len(header) + body} bytes) its stage handed on while scoring; nothing was captured.",
                            code="contract.invalid_table",
                            hint="The score stage must write exactly the chunks it streams (scoring.parts_dir).")

    def close(self) -> None:
        self.pool.shutdown(wait=True)


def _rechunk(tables, rows: int):
    """pyarrow Tables -> Tables of exactly ``rows`` rows (the last may be shorter)."""
    import pyarrow as pa

    pending, n = [], 0
    for t in tables:
        if not pending and t.num_rows == rows:
            yield t
            continue
        pending.append(t)
        n += t.num_rows
        while n >= rows:
            table = pa.concat_tables(pending)
            yield table.slice(0, rows).combine_chunks()
            rest = table.slice(rows)
            pending, n = ([rest] if rest.num_rows else []), rest.num_rows
    if n:
        yield pa.concat_tables(pending).combine_chunks()


class _PublishWriter:
    """The published file, appended chunk by chunk to a temporary name beside ``path`` (moved into place by
    ``Scorer._publish_commit`` only after every capture committed, so a failed capture never publishes).
    Each chunk is formatted and written by a thread of its own (pyarrow releases the GIL) while the caller
    inserts the next; one chunk at most is pending."""

    def __init__(self, path: Path, key: str):
        self.path, self.key = path, key
        self.tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        self.rows = 0
        self.file = None
        self.pool = ThreadPoolExecutor(max_workers=1)
        self.pending = None

    def write(self, ref: VersionRef, role: str, chunk, mask) -> None:
        """Append the rows of ``chunk`` that ``mask`` (True, False or a numpy mask) selects, as ``ref``'s."""
        self._wait()
        self.pending = self.pool.submit(self._write, ref, role, chunk, mask)

    def _wait(self) -> None:
        if self.pending is not None:
            pending, self.pending = self.pending, None
            pending.result()

    def _open(self):
        if self.file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.tmp, "wb")
            self.file.write(f'"{self.key}","prediction","score","model","version","role"\n'.encode("utf-8"))
        return self.file

    def _write(self, ref: VersionRef, role: str, chunk, mask) -> None:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        f = self._open()
        if mask is False:
            return
        sel = chunk if mask is True else chunk.filter(_from_numpy(mask))
        k = sel.num_rows
        table = pa.table({self.key: _as_text(sel.column(self.key)), "prediction": _as_text(sel.column("prediction")),
                          "score": _nan_to_null(sel.column("score")), "model": _repeat(ref.name, k),
                          "version": _repeat(int(ref.version), k), "role": _repeat(role, k)})
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        self.rows += k

    def finish(self) -> int:
        self._wait()
        self.pool.shutdown()
        f = self._open()
        f.flush()
        os.fsync(f.fileno())
        f.close()
        return self.rows

    def abort(self) -> None:
        with contextlib.suppress(Exception):  # the caller is raising the error that matters
            self._wait()
        self.pool.shutdown()
        if self.file is not None:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


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
    backend allows: PostgreSQL (psycopg 3) ``COPY ... FROM STDIN`` of CSV built by pyarrow; a driver with a
    positional paramstyle (SQLite) one DBAPI ``executemany`` per chunk over columns zipped as they come
    from pyarrow; any other through :func:`ambidex.db.insert_columns`. No per-row dicts. Same rows and
    values as ``conn.execute(table.insert(), dicts)``."""

    GROUP = 500

    def __init__(self, conn, table: sa.Table, batch_id: int, *, with_features: bool):
        dialect = conn.dialect
        self.table, self.batch_id, self.dialect = table, batch_id, dialect
        self.keys = ["batch_id", "row_index", "entity_key", "prediction", "score", "published"]
        if with_features:
            self.keys.append("features")
        self.cursor = conn.connection.dbapi_connection.cursor()
        self.copy = dialect.name == "postgresql" and dialect.driver == "psycopg"
        self.conn = conn
        if self.copy:
            prep = dialect.identifier_preparer
            self.sql = (f"COPY {prep.format_table(table)} ({', '.join(prep.quote(k) for k in self.keys)}) "
                        "FROM STDIN (FORMAT csv)")
            return
        compiled = table.insert().compile(dialect=dialect, column_keys=self.keys)
        self.sql = str(compiled)
        self.procs = {k: table.c[k].type._cached_bind_processor(dialect) for k in self.keys}
        if dialect.name == "sqlite":
            self.procs["score"] = None  # its float() is the identity on the Python floats pyarrow returns
        self.positional = (compiled.positional and list(compiled.positiontup) == self.keys
                           and all(self.procs[k] is None for k in ("row_index", "entity_key", "prediction", "score")))
        if self.positional:
            # rows go in statements of GROUP rows each (multi-row VALUES): SQLite then spends about 40% less
            # per row than on one statement per row; the limit on bound variables caps the group
            import sqlite3

            dbapi = conn.connection.dbapi_connection
            limit = (dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if isinstance(dbapi, sqlite3.Connection)
                     and hasattr(dbapi, "getlimit") else 999)
            self.group = max(1, min(self.GROUP, limit // len(self.keys)))
            multi = table.insert().values([dict.fromkeys(self.keys) for _ in range(self.group)]).compile(dialect=dialect)
            assert multi.positional and len(multi.positiontup) == self.group * len(self.keys)
            self.multi_sql = str(multi)

    def _bind(self, key, value):
        proc = self.procs[key]
        return value if value is None or proc is None else proc(value)

    def __call__(self, lo: int, keys, preds, scores, mask, features) -> None:
        n = len(keys)
        scores = _nan_to_null(scores)
        if self.copy:
            self._copy(lo, n, keys, preds, scores, mask, features)
            return
        published = [bool(v) for v in mask] if not isinstance(mask, bool) else None
        if not self.positional:
            from .db import insert_columns

            cols = {"row_index": list(range(lo, lo + n)), "entity_key": keys.to_pylist(),
                    "prediction": preds.to_pylist(), "score": scores.to_pylist()}
            const = {"batch_id": self.batch_id}
            if published is None:
                const["published"] = mask
            else:
                cols["published"] = published
            if features is not None:
                cols["features"] = list(features)
            insert_columns(self.conn, self.table, const, cols)
            return
        from itertools import repeat

        pub = repeat(self._bind("published", mask), n) if published is None else \
            [self._bind("published", v) for v in published]
        cols = [repeat(self._bind("batch_id", self.batch_id), n), range(lo, lo + n), keys.to_pylist(),
                preds.to_pylist(), scores.to_pylist(), pub]
        if features is not None:
            cols.append([self._bind("features", v) for v in features])
        from itertools import chain

        flat = list(chain.from_iterable(zip(*cols)))
        width, full = self.group * len(cols), n // self.group
        self.cursor.executemany(self.multi_sql, (flat[i * width:(i + 1) * width] for i in range(full)))
        rest = flat[full * width:]
        if rest:
            self.cursor.executemany(self.sql, (rest[i:i + len(cols)] for i in range(0, len(rest), len(cols))))

    def _copy(self, lo, n, keys, preds, scores, mask, features) -> None:
        import io

        import numpy as np
        import pyarrow as pa
        import pyarrow.csv as pacsv

        data = {"batch_id": _repeat(int(self.batch_id), n), "row_index": _from_numpy(np.arange(lo, lo + n)),
                "entity_key": _as_text(keys), "prediction": _as_text(preds), "score": scores,
                "published": _from_numpy(np.full(n, mask, dtype=bool) if isinstance(mask, bool)
                                         else np.asarray(mask, dtype=bool))}
        if features is not None:
            data["features"] = pa.array(features, pa.string())
        buf = io.BytesIO()
        pacsv.write_csv(pa.table(data), buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        with self.cursor.copy(self.sql) as cp:
            cp.write(buf.getbuffer())


def _as_text(arr):
    import pyarrow as pa

    return arr.cast(pa.string())


# pa.array / pa.scalar of Python or numpy values make pyarrow import pandas (about a second) to check for
# pandas types; the capture path needs no pandas, so its arrays are built from buffers.

def _nan_to_null(arr):
    """A float64 array with NaN as null (the capture stores NaN as NULL)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    return pc.if_else(pc.is_nan(arr), pa.nulls(len(arr), pa.float64()), arr)


def _repeat(value, n: int):
    """``n`` copies of a str or int as a pyarrow array."""
    import numpy as np
    import pyarrow as pa

    if isinstance(value, str):
        b = value.encode("utf-8")
        one = pa.Array.from_buffers(pa.string(), 1, [None, pa.py_buffer(np.array([0, len(b)], dtype=np.int32)),
                                                     pa.py_buffer(b)])
    else:
        one = _from_numpy(np.array([value], dtype=np.int64))
    return pa.repeat(one[0], n)


def _from_numpy(a):
    """A pyarrow array of a 1-d numpy int64 or bool array (no nulls)."""
    import numpy as np
    import pyarrow as pa

    if a.dtype == np.bool_:
        bits = np.packbits(a, bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(a), [None, pa.py_buffer(bits)])
    return pa.Array.from_buffers(pa.int64(), len(a), [None, pa.py_buffer(np.ascontiguousarray(a, dtype=np.int64))])


def record_labels(engine: sa.Engine, source: str, rows: list[dict], *, clock=None) -> int:
    """Store labels ``{entity_key, window_start, window_end, label}`` for ``source`` (the deployment's source
    or name); a label given again for the same key and window replaces the old one. Set-based: per window,
    one column-wise insert (see :func:`ambidex.capture_columns.record_label_columns`)."""
    from .capture_columns import replace_labels

    groups: dict[tuple, tuple[list, list]] = {}
    for r in rows:
        keys, labels = groups.setdefault((r["window_start"], r["window_end"]), ([], []))
        keys.append(r["entity_key"])
        labels.append(r.get("label"))
    with engine.begin() as conn:
        for (start, end), (keys, labels) in groups.items():
            replace_labels(conn, source, (start, end), keys, labels, clock)
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
