"""cli.deploy: `ambidex deploy ...`, `ambidex score`, `ambidex approve` / `reject` and `ambidex notifications`."""
from __future__ import annotations

from pathlib import Path

import click

from .output import emit, emit_table, json_option

__all__ = ["deploy", "score", "approve", "reject", "notifications"]

dry_run_option = click.option("--dry-run", is_flag=True, help="Check everything, change nothing.")


def _section(ws, name, cls):
    value = getattr(ws.settings, name, None)
    if value is None:
        return cls()
    return value if isinstance(value, cls) else cls.model_validate(value if isinstance(value, dict) else
                                                                    value.model_dump())


class _Ctx:
    """The library objects one command needs, built from the project found from the working directory."""

    def __init__(self):
        from ..capture import Scorer
        from ..deploy import Deployments
        from ..governance import Governance, GovernanceSpec
        from ..notify import Notifier, NotifySpec
        from ..scoring import score_model
        from ..smoke import SmokeTester
        from ..workspace import Workspace

        self.ws = ws = Workspace.find(Path.cwd())
        reg = ws.registry()
        self.engine = reg.engine
        self.notifier = Notifier(reg.engine, _section(ws, "notify", NotifySpec))
        self.deps = Deployments(reg.engine, store=reg.store, actor=reg.actor, notify=self.notifier)
        self.rscript = rscript = ws.rscript
        work = ws.state_dir / "scoring"

        def launch(model_dir, inp, out, keep=None, chunk_size=None, feed=None):
            return score_model(model_dir, inp, out, project_root=ws.root, work_dir=work, keep=keep,
                               chunk_size=chunk_size, rscript=rscript, feed=feed)

        self.launch = launch
        self.smoke = SmokeTester(self.deps, lambda m, i, o: launch(m, i, o), workdir=ws.state_dir / "smoke")
        self.gov = Governance(self.deps, _section(ws, "governance", GovernanceSpec), smoke=self.smoke,
                              spec_for=lambda ref: _pipeline_policy(ws, reg, ref))
        self.deps.gate = self.gov.gate
        self.Scorer = Scorer


def _pipeline_policy(ws, reg, ref):
    """``governance:`` of the pipeline whose run trained ``ref`` (None for experiments or when absent)."""
    from ..config import load_pipeline

    if not ref.run_id:
        return None
    lineage = reg.get_run(ref.run_id).get("lineage") or {}
    rel = lineage.get("config_path")
    if not rel or not (ws.root / rel).is_file():
        return None
    return load_pipeline(ws.root / rel, ws.root).governance


def _members(champion, shadow, canary):
    from ..deploy import parse_member

    out = [parse_member(champion, "champion")] if champion else []
    out += [parse_member(s, "shadow") for s in shadow]
    out += [parse_member(c, "canary") for c in canary]
    return out


def _version(text: str) -> tuple[str, int]:
    from ..deploy import parse_member

    m = parse_member(text, "champion")
    return m.model, m.version


def _revision_rows(revs) -> list[dict]:
    return [{"revision": r.revision, "kind": r.kind, "live_from": r.live_from, "by": r.created_by,
             "champion": r.champion.label,
             "challengers": ", ".join(f"{m.role} {m.label}" + (f" ({m.share:g})" if m.share else "")
                                      for m in r.members if m.role != "champion"),
             "reason": r.reason} for r in revs]


member_options = [
    click.option("--champion", required=True, metavar="MODEL:VERSION", help="The version whose rows are published."),
    click.option("--shadow", multiple=True, metavar="MODEL:VERSION", help="Scored and captured, never published."),
    click.option("--canary", multiple=True, metavar="MODEL:VERSION=SHARE",
                 help="Publishes the rows whose entity key hashes into SHARE (0-1)."),
]


def _with_members(f):
    for opt in reversed(member_options):
        f = opt(f)
    return f


@click.group()
def deploy():
    """Deployments: numbered revisions of champion, shadow and canary models.

    \b
    Example:
      ambidex deploy create churn-nightly --champion churn:3 --shadow churn_r:2 --key customer_id --source churn
      ambidex deploy promote churn-nightly --champion churn_r:2 --shadow churn:3
      ambidex deploy history churn-nightly --at 2024-06-01T00:00:00Z
    """


@deploy.command("create")
@click.argument("name")
@_with_members
@click.option("--key", "entity_key", required=True, help="Entity key column (canary split, capture, labels).")
@click.option("--source", help="Feature-store mart (or transform .sql) whose window is scored.")
@click.option("--reason", help="Why (recorded in the event log).")
@dry_run_option
@json_option
def create_cmd(name, champion, shadow, canary, entity_key, source, reason, dry_run, as_json):
    """Create deployment NAME with revision 1 live (after gates: smoke test, approval).

    \b
    Example:
      ambidex deploy create churn-nightly --champion churn_r:3 --shadow churn_py:5 --key customer_id
    """
    c = _Ctx()
    rev = c.deps.create(name, _members(champion, shadow, canary), entity_key=entity_key, source=source,
                        reason=reason, dry_run=dry_run)
    emit(rev, as_json, f"{'Would create' if dry_run else 'Created'} {name} revision {rev.revision}: "
                       f"champion {rev.champion.label}")


@deploy.command("promote")
@click.argument("name")
@_with_members
@click.option("--expect-revision", type=int, help="Fail unless this revision is still live (default: the one "
                                                   "live when the command started).")
@click.option("--reason", help="Why (recorded in the event log).")
@click.option("--no-check-after", is_flag=True, help="Skip the smoke test of the live models after the switch.")
@dry_run_option
@json_option
def promote_cmd(name, champion, shadow, canary, expect_revision, reason, no_check_after, dry_run, as_json):
    """Make a new revision live in one compare-and-swap; a failed check after the switch rolls back.

    \b
    Example:
      ambidex deploy promote churn-nightly --champion churn_py:5 --canary churn_r:4=0.1 --expect-revision 3
    """
    c = _Ctx()
    rev = c.deps.promote(name, _members(champion, shadow, canary), expected_revision=expect_revision,
                         reason=reason, dry_run=dry_run)
    if not dry_run and not no_check_after:
        c.deps.check_after_switch(name, c.smoke)
    emit(rev, as_json, f"{'Would promote' if dry_run else 'Promoted'} {name} to revision {rev.revision}: "
                       f"champion {rev.champion.label}")


@deploy.command("rollback")
@click.argument("name")
@click.option("--to", "to_revision", type=int, help="Revision to restore (default: the one before the live one).")
@click.option("--reason", help="Why (recorded in the event log).")
@dry_run_option
@json_option
def rollback_cmd(name, to_revision, reason, dry_run, as_json):
    """Make an earlier revision's models live again, as a new revision.

    \b
    Example:
      ambidex deploy rollback churn-nightly --to 2
    """
    c = _Ctx()
    rev = c.deps.rollback(name, to_revision=to_revision, reason=reason, dry_run=dry_run)
    emit(rev, as_json, f"{'Would roll' if dry_run else 'Rolled'} {name} back: revision {rev.revision} "
                       f"= champion {rev.champion.label}")


@deploy.command("history")
@click.argument("name")
@click.option("--at", "at", help="Only the revision live at this UTC time (RFC 3339).")
@json_option
def history_cmd(name, at, as_json):
    """Every revision of NAME, or the one live at --at.

    \b
    Example:
      ambidex deploy history churn-nightly --at 2026-03-01T02:00:00Z
    """
    from ..capture import _parse_ts
    from ..errors import UsageError

    when = None
    if at:
        try:
            when = _parse_ts(at)
        except ValueError:
            raise UsageError(f"Invalid --at {at!r}: expected RFC 3339 UTC, e.g. 2024-06-01T00:00:00Z.") from None
    revs = _Ctx().deps.history(name, at=when)
    emit_table(_revision_rows(revs), ["revision", "kind", "live_from", "by", "champion", "challengers", "reason"],
               as_json, empty="(no revision live then)")


@deploy.command("show")
@click.argument("name")
@json_option
def show_cmd(name, as_json):
    """NAME's settings and live revision.

    \b
    Example:
      ambidex deploy show churn-nightly --json
    """
    info = _Ctx().deps.show(name)
    live = info["live"]
    human = (f"{name}  key={info['entity_key']}  source={info['source'] or '-'}\n"
             f"live revision {live['revision']} since {live['live_from']:%Y-%m-%d %H:%M:%S}Z\n" +
             "\n".join(f"  {m['role']:<8} {m['model']}:{m['version']}" + (f"  share {m['share']:g}" if m['share']
                                                                           else "") for m in live["members"]))
    emit(info, as_json, human)


@deploy.command("list")
@json_option
def list_cmd(as_json):
    """Every deployment and its live revision.

    \b
    Example:
      ambidex deploy list
    """
    emit_table(_Ctx().deps.list(), ["name", "live_revision", "switched_at"], as_json)


@deploy.command("smoke")
@click.argument("version", metavar="MODEL:VERSION")
@json_option
def smoke_cmd(version, as_json):
    """Replay MODEL:VERSION's golden examples in a fresh process; exit 4 if it fails.

    \b
    Example:
      ambidex deploy smoke churn_r:3
    """
    from ..errors import CheckFailed

    c = _Ctx()
    model, ver = _version(version)
    with c.engine.connect() as conn:
        ref = c.deps.resolve(conn, model, ver)
    res = c.smoke.run(ref)
    emit(res, as_json, f"smoke {version}: {'passed' if res.passed else 'FAILED'} ({len(res.cases)} checks, "
                       f"load {res.load_seconds or 0:.2f} s)" +
         "".join(f"\n  {f.kind} #{f.index}: {f.message}" for f in res.failures))
    if not res.passed:
        raise CheckFailed(f"Smoke test of {version} failed: {len(res.failures)} check(s).", code="check.smoke_failed")


@click.command()
@click.argument("deployment")
@click.option("--window", "window", required=True, help="START/END in UTC (half-open), e.g. 2024-06-01/2024-06-02.")
@click.option("--input", "input_csv", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A typed CSV (with .schema.json) to score instead of reading the feature store.")
@click.option("--replace", is_flag=True, help="Re-score and replace this window's captured predictions.")
@dry_run_option
@json_option
def score(deployment, window, input_csv, replace, dry_run, as_json):
    """Score a window with every model of DEPLOYMENT's live revision, capture it and publish it.

    \b
    Example:
      ambidex score churn-nightly --window 2024-06-01T00:00:00Z/2024-06-02T00:00:00Z
    """
    import contextlib

    from ..runners import stage_zygotes

    # the Python zygote starts loading at once (the orchestrator's own start-up uses one core): while the
    # registry is opened, the live revision read and the window exported; it is stopped as soon as the live
    # revision turns out to have no Python model. R models start fresh, unless the zygote pays: it loads while
    # the window is exported from the feature store, or serves several R models.
    with stage_zygotes("python", lazy=False) if not dry_run else contextlib.nullcontext() as zygotes:
        from ..capture import parse_window

        c = _Ctx()
        start, end = parse_window(window)
        info = c.deps.show(deployment)
        live = c.deps.live(deployment)
        languages = c.deps.languages(live)
        python = "python" in languages
        if zygotes is not None:
            if not python:
                zygotes.stop("python")
            if languages.get("r", 0) > (0 if input_csv is None else 1):
                zygotes.prestart("r", rscript=c.rscript)
        _score(c, info, deployment, (start, end), window, input_csv, replace, dry_run, as_json, python)


def _score(c, info, deployment, bounds, window, input_csv, replace, dry_run, as_json, python):
    from ..deploy import DeploymentSpec
    from ..errors import UsageError

    start, end = bounds
    spec = info.get("spec") or {}
    chunk = int(spec.get("chunk_size") or DeploymentSpec.model_fields["chunk_size"].default)
    scorer = c.Scorer(c.deps, lambda m, i, o, keep, **kw: c.launch(m, i, o, keep, chunk, **kw),
                      workdir=c.ws.state_dir / "scoring", chunk_size=chunk,
                      publish_dir=Path(spec.get("publish_dir") or c.ws.state_dir / "published" / deployment),
                      capture_features=bool(spec.get("capture_features")))
    if input_csv is not None:
        rep = scorer.score(deployment, (start, end), input_csv, replace=replace, dry_run=dry_run)
    elif not info["source"]:
        raise UsageError(f"Deployment '{deployment}' has no source mart; pass --input CSV.",
                         code="usage.no_source", hint="Or re-create it with --source MART.")
    else:
        from ..scoring import stream_window

        input_csv = c.ws.state_dir / "scoring" / deployment / f"input_{start:%Y%m%dT%H%M%SZ}.csv"
        rep = stream_window(scorer, c.engine, info["source"], deployment, (start, end), input_csv, stream=python,
                            replace=replace, dry_run=dry_run)
    emit(rep, as_json, f"{deployment} revision {rep.revision}, window {start:%Y-%m-%d %H:%M}Z/{end:%Y-%m-%d %H:%M}Z: "
                       f"{rep.rows} rows; " + ", ".join(f"{m['role']} {m['model']} {m['status']}" for m in rep.members)
         + (f"\npublished: {rep.published_path}" if rep.published_path else ""))


def _decision_command(decision: str):
    @click.command(decision)
    @click.argument("version", metavar="MODEL:VERSION")
    @click.option("--note", required=True, help="Why (required; recorded with the decision).")
    @click.option("--as", "as_name", help="Record NAME as the approver (only where governance.allow_as is true).")
    @click.option("--sha256", "reviewed", help="The manifest sha256 you reviewed; refused if the bytes differ.")
    @dry_run_option
    @json_option
    def cmd(version, note, as_name, reviewed, dry_run, as_json):
        c = _Ctx()
        model, ver = _version(version)
        rec = c.gov.decide(model, ver, decision, note=note, as_name=as_name, reviewed_sha256=reviewed, dry_run=dry_run)
        emit(rec, as_json, f"{'Would record' if dry_run else 'Recorded'}: {rec['approver']} {decision}s {version} "
                           f"(manifest {rec['manifest_sha256'][:12]}...)")
    cmd.help = (f"{decision.capitalize()} MODEL:VERSION, bound to its manifest sha256 and metrics.\n\n"
                f"\b\nExample:\n  ambidex {decision} churn:7 --note \"validated on June data\"")
    return cmd


approve = _decision_command("approve")
reject = _decision_command("reject")


@click.group()
def notifications():
    """The notification outbox: list pending and failed ones, dispatch them.

    \b
    Example:
      ambidex notifications list
      ambidex notifications dispatch
    """


@notifications.command("list")
@click.option("--all", "show_all", is_flag=True, help="Include sent notifications.")
@json_option
def notifications_list(show_all, as_json):
    """Pending and failed notifications (newest first).

    \b
    Example:
      ambidex notifications list --all
    """
    statuses = ("pending", "failed", "sent") if show_all else ("pending", "failed")
    emit_table(_Ctx().notifier.list(statuses=statuses),
               ["id", "event_kind", "channel", "status", "attempts", "next_attempt_at", "last_error"], as_json)


@notifications.command("dispatch")
@click.option("--limit", default=100, show_default=True, help="At most this many notifications.")
@json_option
def notifications_dispatch(limit, as_json):
    """Send due notifications once (retries back off; failures never undo the change).

    \b
    Example:
      ambidex notifications dispatch --limit 100
    """
    counts = _Ctx().notifier.dispatch(limit=limit)
    emit(counts, as_json, f"sent {counts['sent']}, will retry {counts['retry']}, failed {counts['failed']}")

