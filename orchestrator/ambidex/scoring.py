"""scoring: score a typed table with a model folder in the runtime that produced it (one process per batch).

The model's language decides the runtime: a Python model is scored by ``ambidex_stage``, an R
model by ``Rscript`` and the R package, so an R model and a Python model are served alike.

    >>> out = score_folder(ws, Path("contract/golden/r/model"), Path("contract/golden/r/input.csv"),
    ...                    Path("/tmp/pred.csv"))                      # doctest: +SKIP
"""
from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

from .errors import ContractError
from .runners import StageLaunch, run_stage
from .workspace import Workspace

__all__ = ["score_folder", "score_model", "parts_dir", "InputFeed", "stream_window"]


def score_folder(ws: Workspace, model_dir: Path, input_csv: Path, output_csv: Path, *,
                 keep: list[str] | None = None, timeout: float = 3600, runner: str | None = None) -> dict:
    """Score ``input_csv`` (typed table) with the model in ``model_dir`` within a project; write
    ``output_csv`` and its schema sidecar. Returns the stage's result.json. Raises StageError."""
    return score_model(model_dir, input_csv, output_csv, project_root=ws.root,
                       work_dir=ws.state_dir / "scoring", keep=keep, timeout=timeout, rscript=ws.rscript,
                       runner=runner)


def parts_dir(output_csv: Path) -> Path:
    """Where a streaming score stage hands on its predictions chunk by chunk: ``<output>.parts/``.

    A caller that wants the predictions while the model is still scoring (capture overlapping the
    scoring process) creates this folder before it calls :func:`score_model`; a stage that streams
    (the Python built-in) then writes ``part-000000.csv``, ``part-000001.csv``, ... there, each
    appearing by rename when complete; a stage that does not (R) leaves it empty, and only the
    output file counts. The caller removes the folder when done."""
    output_csv = Path(output_csv)
    return output_csv.with_name(output_csv.stem + ".parts")


class InputFeed:
    """A typed table that its scoring stages may start on while it is still being written.

    :meth:`start` runs ``write(on_chunk)`` (say, ``export_window_for_r(..., on_chunk=on_chunk)``) in a
    thread of its own; every chunk is handed on as a part with its sidecar in ``parts_dir(csv_path)``
    (:func:`ambidex_stage.tables.part_writer`), then ``END`` (or ``ABORT`` if the writing failed). A
    built-in Python score stage given the folder (``params.input_parts``, see :func:`score_model`) reads
    the parts as they appear, so the model predicts while the window is still being read from the
    feature store; an R stage, and anything else that needs the whole table, waits for :meth:`wait`.
    ``schema`` is the table's sidecar without its row count (the columns are known before the rows).
    Used as a context manager, it waits for the writing to end (telling it to stop if the reader
    failed) and removes the parts.
    """

    def __init__(self, csv_path: Path, schema: dict):
        import threading

        from ambidex_stage.tables import part_writer

        self.path = Path(csv_path)
        self.folder = parts_dir(self.path)
        shutil.rmtree(self.folder, ignore_errors=True)
        self.schema = {"contract_version": 1, "columns": list(schema["columns"])}
        self._part = part_writer(self.folder, self.schema["columns"])
        self.parts = self.rows = 0
        self._done = threading.Event()
        self._stop = False
        self._thread = None
        self.result = self.error = None

    def on_chunk(self, data: bytes, rows: int) -> None:
        if self._stop:
            raise _FeedStopped()
        self._part(data, rows)
        self.parts += 1
        self.rows += rows

    def start(self, write) -> InputFeed:
        import threading

        def run():
            try:
                self.result = write(self.on_chunk)
                self._mark("END", {"parts": self.parts, "rows": self.rows})
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                self.error = exc
                try:
                    self._mark("ABORT", {"error": type(exc).__name__})
                except OSError:  # a full disk, say: without the folder, its readers stop all the same
                    shutil.rmtree(self.folder, ignore_errors=True)
            finally:
                self._done.set()

        self._thread = threading.Thread(target=run, name="ambidex-input-feed", daemon=True)
        self._thread.start()
        return self

    def _mark(self, name: str, doc: dict) -> None:
        from ambidex_stage._files import atomic_open

        with atomic_open(self.folder / name, durable=False) as f:
            f.write(json.dumps(doc).encode("utf-8"))

    def wait(self):
        """What ``write`` returned, once it has; its exception if it failed."""
        self._done.wait()
        if self.error is not None:
            raise self.error
        return self.result

    def input_ref(self) -> str:
        """Once written: what the capture records as the scored input, the feature store's data versions
        the table was read from (``export_window_for_r``'s ``data_versions``)."""
        return data_versions_ref(self.wait())

    def failure(self) -> BaseException | None:
        """For a reader that failed: stop the writing at its next chunk, wait for it to end, and return why it
        failed by itself (the root cause to report), or None."""
        self._stop = True
        if self._thread is not None:
            self._thread.join()
        return None if isinstance(self.error, _FeedStopped) else self.error

    def __enter__(self) -> InputFeed:
        return self

    def __exit__(self, *exc) -> None:
        self.failure()
        shutil.rmtree(self.folder, ignore_errors=True)


def stream_window(scorer, engine, source: str, deployment: str, window, input_csv: Path, *, stream: bool = True,
                  **kw):
    """``scorer.score`` of the feature-store window ``window`` of ``source`` (a mart, or a transform ``.sql``),
    exported to ``input_csv`` meanwhile: a mart's rows are handed on through an :class:`InputFeed` as they are
    read, so the Python models predict while the rest of the window is still read; a transform's result, or
    any window when ``stream`` is false (no Python model is live), is exported first. The parts are removed
    afterwards; the exported table stays."""
    from .featurestore import Window, export_window_for_r, window_schema

    start, end = window
    input_csv = Path(input_csv)
    input_csv.parent.mkdir(parents=True, exist_ok=True)
    if str(source).endswith(".sql") or not stream:
        written = export_window_for_r(engine, source, Window(start, end), input_csv)
        return scorer.score(deployment, window, input_csv, input_ref=data_versions_ref(written), **kw)
    with InputFeed(input_csv, window_schema(engine, source)) as feed:
        feed.start(lambda on_chunk: export_window_for_r(engine, source, Window(start, end), input_csv,
                                                        on_chunk=on_chunk))
        return scorer.score(deployment, window, input_csv, feed=feed, **kw)


def data_versions_ref(written: dict | None) -> str:
    """The capture's ``input_ref`` of a table ``export_window_for_r`` wrote: the data versions it was read from."""
    return "data_versions:" + ",".join(str(v) for v in (written or {}).get("data_versions") or [])


class _FeedStopped(Exception):
    """Raised into the writer of an InputFeed whose readers have given up."""


def score_model(model_dir: Path, input_csv: Path, output_csv: Path, *, project_root: Path, work_dir: Path,
                keep: list[str] | None = None, chunk_size: int | None = None, timeout: float = 3600,
                rscript: str = "Rscript", runner: str | None = None, feed: InputFeed | None = None) -> dict:
    """Like :func:`score_folder` without a Workspace: one fresh process of the model's own runtime scores
    ``input_csv`` (its schema sidecar is passed inline, as context.v1 requires), streaming in ``chunk_size``
    rows; writes ``output_csv`` and its sidecar; returns result.json. Raises StageError / ContractError.

    With ``feed`` (``input_csv`` still being written through it): a Python model starts at once and reads
    the feed's parts as they appear; an R model starts once the table is complete."""
    from .pipeline import write_context

    manifest = json.loads((Path(model_dir) / "model.json").read_text(encoding="utf-8"))
    lang = (manifest.get("runtime") or {}).get("language")
    if lang not in ("python", "r"):
        raise ContractError(f"Model at {model_dir} has runtime language {lang!r}; expected 'python' or 'r'.",
                            code="contract.invalid_manifest", hint="Re-train it with an ambidex SDK.")
    streamed = feed is not None and lang == "python"
    if feed is not None and not streamed:
        feed.wait()
    run_id = uuid.uuid4().hex
    stage_dir = Path(work_dir) / run_id
    out_dir = stage_dir / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    input_csv = Path(input_csv).resolve()
    schema = feed.schema if streamed else \
        json.loads(input_csv.with_name(input_csv.stem + ".schema.json").read_text(encoding="utf-8"))
    params: dict = {"keep": list(keep or [])}
    if streamed:
        params["input_parts"] = str(feed.folder.resolve())
    if chunk_size:
        params["chunk_size"] = int(chunk_size)
    if parts_dir(output_csv).is_dir():
        params["parts_dir"] = str(parts_dir(output_csv).resolve())
    context = {
        "contract_version": 1, "run_id": run_id, "pipeline": "deploy-score", "stage": "score",
        "lang": lang, "project_root": str(project_root), "output_dir": str(out_dir), "params": params,
        "inputs": {"data": {"kind": "table", "path": str(input_csv), "schema": schema},
                   "model": {"kind": "model", "path": str(Path(model_dir).resolve())}},
        "outputs": {"predictions": {"kind": "table", "path": str(out_dir / "predictions.csv")}},
        "window": None, "seed": 0,
    }
    write_context(stage_dir / "context.json", context)
    launch = StageLaunch(
        stage="score", lang=lang, runner=("subprocess" if lang == "python" else (runner or "rscript")),
        script=None, builtin="score", context_path=stage_dir / "context.json", stage_dir=stage_dir,
        project_root=Path(project_root), timeout=timeout, rscript=rscript)
    outcome = run_stage(launch)
    if outcome.error:
        raise outcome.error  # the stage dir stays, with its logs
    from .pipeline import check_outputs

    check_outputs("score", outcome, context["outputs"])  # result.json and the table honour the contract
    output_csv = Path(output_csv)
    output_csv.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(out_dir / "predictions.csv", output_csv)
    shutil.move(out_dir / "predictions.schema.json", output_csv.with_name(output_csv.stem + ".schema.json"))
    shutil.rmtree(stage_dir, ignore_errors=True)
    return outcome.result
