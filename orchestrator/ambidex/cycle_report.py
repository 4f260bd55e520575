"""cycle_report: the cycle's last steps: notify the team (outbox + dispatch) and write the window's static HTML report.

The report (``<state>/reports/<pipeline>/<window start>.html``) is one self-contained page a
manager can open: what was decided and why, the KPIs that arrived with the labels, the
champion/challenger contest, the most drifted features by impact, and what the run was made
from (config hash, git commit). Plain HTML and CSS; no scripts.
"""
from __future__ import annotations

import html
import json
import os
from pathlib import Path

__all__ = ["step_notify", "step_report", "render_report"]

_CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:60em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.promote{color:#05620b;font-weight:bold}.keep{color:#444}.rollback{color:#a00;font-weight:bold}
.small{color:#666;font-size:.9em}"""


def _e(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return html.escape("" if v is None else str(v))


def _table(rows: list[dict], cols: list[str]) -> str:
    if not rows:
        return "<p class=small>(none)</p>"
    head = "".join(f"<th>{_e(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{_e(r.get(c))}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def render_report(pipeline: str, window: str, details: dict, decisions: list[dict], steps: list[dict],
                  lineage: dict) -> str:
    """The HTML page of one window (pure: data in, text out)."""
    dec_rows = [{"decision": d["kind"], "champion": d.get("champion"), "winner": d.get("winner"),
                 "gain": d.get("gain"), "z": d.get("z"), "revision": d.get("revision"),
                 "why": (d.get("reasons") or {}).get("summary")} for d in decisions]
    labels = details.get("labels") or {}
    kpi_rows = [{"model": m, "metric": k, "value": v["value"], "se": v["se"], "n": v["n"]}
                for m, ks in (labels.get("kpis") or {}).items() for k, v in ks.items()]
    ev = details.get("evaluate") or details.get("bootstrap") or {}
    contest = [{"model": m, "language": d.get("language"), "mean loss": d.get("mean_loss"),
                f"{ev.get('metric', 'kpi')}": (d.get("kpi") or {}).get("value"),
                "gain vs champion": ((ev.get("tests") or {}).get(m) or {}).get("gain"),
                "z": ((ev.get("tests") or {}).get(m) or {}).get("z")} for m, d in (ev.get("models") or {}).items()]
    drift = details.get("drift") or {}
    parts = [f"<!doctype html><html><head><meta charset=utf-8><title>{_e(pipeline)} {_e(window)}</title>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>{_e(pipeline)}: window {_e(window)}</h1>",
             "<h2>Decisions</h2>", _table(dec_rows, ["decision", "champion", "winner", "gain", "z", "revision", "why"]),
             f"<h2>KPIs of the labelled window {_e(' / '.join(map(str, labels.get('window') or [])) or '(none yet)')}</h2>",
             _table(kpi_rows, ["model", "metric", "value", "se", "n"])]
    if contest:
        parts += [f"<h2>Contest on the out-of-time hold-out {_e(' / '.join(map(str, ev.get('holdout') or [])))} "
                  f"({_e(ev.get('n'))} rows, {_e(ev.get('loss'))})</h2>",
                  _table(contest, list(contest[0]))]
    parts += [f"<h2>Data drift of {_e(drift.get('model'))}: {_e(drift.get('status'))}"
              f"{' (alert)' if drift.get('alert') else ''}</h2>",
              "<p class=small>Against the champion's training reference, sorted by impact = PSI x importance.</p>",
              _table(drift.get("top") or [], ["feature", "impact_psi", "psi", "median_shift", "status"]),
              "<h2>Steps</h2>", _table(steps, ["step", "status", "seconds"]),
              f"<p class=small>config {_e(lineage.get('config_path'))} sha256 {_e(lineage.get('config_hash'))}; "
              f"git {_e(lineage.get('git_commit'))}{' (dirty)' if lineage.get('git_dirty') else ''}</p>",
              "</body></html>\n"]
    return "\n".join(parts)


def step_notify(svc, state) -> dict:
    """One ``cycle.window_finished`` event (outbox rows for its routes), then a dispatch; failures never undo."""
    from .cycle import decisions

    mine = [d for d in decisions(svc.engine, svc.name) if d["window_start"] == state.start]
    payload = {"pipeline": svc.name, "window": f"{state.start:%Y-%m-%d}/{state.end:%Y-%m-%d}",
               "decisions": [{"kind": d["kind"], "winner": d["winner"], "why": d["reasons"].get("summary")}
                             for d in mine],
               "drift_alert": (state.details.get("drift") or {}).get("alert")}
    with svc.engine.begin() as conn:
        svc.deps.event(conn, "cycle.window_finished", svc.name, payload, entity_type="pipeline",
                       reason="; ".join(d["reasons"].get("summary") or d["kind"] for d in mine) or None)
    try:
        counts = svc.notifier.dispatch()
    except Exception as e:  # noqa: BLE001 - a notification never undoes the window; the outbox retries
        counts = {"error": str(e)[:300]}
    return {"dispatched": counts}


def step_report(svc, state) -> dict:
    """Write the window's HTML report and a JSON summary next to it (atomically)."""
    from .cycle import decisions

    mine = [d for d in decisions(svc.engine, svc.name) if d["window_start"] == state.start]
    folder = svc.ws.state_dir / "reports" / svc.name
    folder.mkdir(parents=True, exist_ok=True)
    page = render_report(svc.name, f"{state.start:%Y-%m-%d}/{state.end:%Y-%m-%d}", state.details, mine, state.ran,
                         svc.lineage)
    path = folder / f"{state.tag}.html"
    _write(path, page)
    _write(path.with_suffix(".json"), json.dumps({"window": [state.start, state.end], "details": state.details,
                                                  "decisions": mine}, default=str, indent=1))
    return {"path": str(path)}


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
