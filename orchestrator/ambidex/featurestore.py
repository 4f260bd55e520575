"""featurestore: the feature store's public API (versioned SQL marts, loads, point-in-time reads, lineage), re-exported.

Row validity model
------------------
Every mart ``m`` is two tables in the feature-store database:

* ``m``: the rows that are current now, each tagged with ``_dv``, the per-mart version
  number of the load that wrote it;
* ``m__hist``: rows that a later load replaced, still tagged with their ``_dv`` and with
  ``_replaced_by``, the version that replaced them.

A full load moves all current rows to history and inserts the new rows; a window load
moves exactly the rows with ``time_column`` in ``[start, end)`` (UTC, half-open) and
inserts the window's new rows; a watermark load appends the rows whose watermark is
greater than the last loaded one. All of it is one transaction, together with the data
version row and the profile rows, so a failure leaves the mart as it was.

Hence a row is *valid as of version X* iff ``_dv <= X`` and (``_replaced_by`` is null or
``_replaced_by > X``), which makes every historical state readable exactly:

* ``read_window(engine, mart, window)`` on a window or watermark mart returns the current
  rows with time in ``[start, end)``; with ``as_of`` it returns the rows valid at that time.
* On a full-load mart it returns the rows of the data version current at the window's
  end: the highest version whose effective time (the load's ``--window`` start if given,
  else its ``created_at``) is before ``window.end``.
* ``version=N`` returns exactly the rows that load N wrote.

Each data version records the mart, version, window, row count, schema (column ->
contract type, category levels), the redacted source, a content hash (see
:func:`content_hash`), the run that made it, ``created_at`` (UTC) and the schema changes
it applied. History is kept until pruned (pruning is not implemented yet).

Modules
-------
The implementation lives in private modules, each with one job:

=================  ===============================================================
``fs_spec``        config models (``MartSpec``, ``SourceSpec``, ``ColumnSpec``), ``Window``, ``LoadResult``
``fs_source``      reading a source (CSV, Parquet, SQL query, in-memory table) into Arrow
``fs_conform``     casting to contract types, key checks, the canonical content hash
``fs_mart``        a mart's SQL tables and bookkeeping row
``fs_insert``      the bulk insert per backend (COPY, executemany)
``fs_load``        ``ingest``: one load as one transaction
``fs_profiles``    storing per-window profiles and the frozen grids
``fs_bind``        bound parameters of transforms and SQL sources
``fs_read``        point-in-time reads, transforms, typed CSV export for R
``fs_catalog``     list/show/diff data versions, run inputs, lineage
``fs_churn``       the churn example's mart frame
=================  ===============================================================
"""
from __future__ import annotations

from ambidex.fs_bind import check_transform_sql
from ambidex.fs_catalog import diff_data_versions, lineage, list_data_versions, list_marts, record_inputs, run_inputs, show_data_version
from ambidex.fs_churn import prepare_churn
from ambidex.fs_conform import content_hash
from ambidex.fs_load import ingest
from ambidex.fs_mart import init_featurestore
from ambidex.fs_profiles import load_grids
from ambidex.fs_read import export_window_for_r, read_transform, read_window, window_schema
from ambidex.fs_spec import ColumnSpec, LoadResult, MartSpec, SourceSpec, Window, parse_window

__all__ = [
    "ColumnSpec", "SourceSpec", "MartSpec", "Window", "LoadResult", "init_featurestore", "parse_window",
    "ingest", "read_window", "export_window_for_r", "window_schema", "check_transform_sql", "read_transform",
    "record_inputs", "lineage", "list_marts", "list_data_versions", "show_data_version",
    "diff_data_versions", "content_hash", "prepare_churn", "load_grids", "run_inputs",
]
