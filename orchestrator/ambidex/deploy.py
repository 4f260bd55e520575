"""deploy: deployments as numbered immutable revisions, switched by one compare-and-swap; rollback and history.

A revision names a champion and optional challengers (``shadow``: scored and captured, never
published; ``canary`` with a share: publishes the rows whose entity key hashes into its share).
Every revision goes live in the transaction that creates it, so the live revision is always the
newest one and "which model version was live at time t" is the last revision with
``live_from <= t``.

Promotion is one transaction: ``UPDATE deployment_live SET live_revision = n+1 WHERE
deployment_id = :d AND live_revision = :n`` (zero rows: someone else switched first, the caller is
told who and what), then the new revision and its members, the event and the outbox rows.

    >>> deps = Deployments(engine, store=ArtifactStore(root))                     # doctest: +SKIP
    >>> deps.promote("churn-nightly", [Member("churn", 7, "champion")])            # doctest: +SKIP
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Sequence

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from . import deploytables as T
from .errors import ArtifactError, CheckFailed, RegistryError, UsageError
from .tables import events, model_versions, models
from .workspace import current_actor

__all__ = [
    "DeploymentSpec", "Member", "VersionRef", "Revision", "Deployments", "ConflictError",
    "parse_member", "validate_members", "canary_bucket", "assign_rows", "live_at", "utcnow",
]

BUCKETS = 10_000
EVENT_KINDS = {"create": "deploy.created", "promote": "deploy.promoted", "rollback": "deploy.rolled_back",
               "auto_rollback": "deploy.auto_rolled_back"}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class ConflictError(RegistryError):
    """Another promotion or rollback switched the deployment after the caller read it."""

    code = "deploy.conflict"


class DeploymentSpec(BaseModel):
    """A deployment in the pipeline YAML (``deploy:`` section)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")
    entity_key: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
    source: str | None = None  # feature-store mart (or transform) whose window is scored
    champion: str | None = None  # "model:version"
    shadow: list[str] = []
    canary: dict[str, float] = {}  # "model:version" -> share in (0, 1]
    capture_features: bool = False  # True: every row's input features as JSON; False: a reference
    publish_dir: str | None = None  # where published CSVs go; default <state>/published/<name>
    chunk_size: int = Field(default=100_000, ge=1000)
    smoke_after_switch: bool = True


@dataclass(frozen=True)
class Member:
    """One model version in a revision, with its role and (canary only) its share of rows."""

    model: str
    version: int
    role: str = "champion"
    share: float | None = None

    @property
    def label(self) -> str:
        return f"{self.model}:{self.version}"


@dataclass(frozen=True)
class VersionRef:
    """A READY model version as the deployment code needs it."""

    id: int
    name: str
    version: int
    path: str
    language: str | None
    task: str | None
    manifest_sha256: str
    created_by: str | None
    run_id: str | None
    manifest: dict = field(repr=False, compare=False, default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"


@dataclass(frozen=True)
class Revision:
    deployment: str
    revision: int
    kind: str
    live_from: dt.datetime
    created_by: str | None
    reason: str | None
    parent_revision: int | None
    members: tuple[Member, ...]

    @property
    def champion(self) -> Member:
        return next(m for m in self.members if m.role == "champion")

    def to_dict(self) -> dict:
        return {"deployment": self.deployment, "revision": self.revision, "kind": self.kind,
                "live_from": self.live_from, "created_by": self.created_by, "reason": self.reason,
                "parent_revision": self.parent_revision,
                "members": [{"model": m.model, "version": m.version, "role": m.role, "share": m.share}
                            for m in self.members]}


# -- pure logic ------------------------------------------------------------------------------------

def parse_member(text: str, role: str) -> Member:
    """``"churn:7"`` (or ``"churn:7=0.1"`` for a canary) as a :class:`Member`.

    >>> parse_member("churn:7=0.25", "canary")
    Member(model='churn', version=7, role='canary', share=0.25)
    """
    ref, _, share = text.partition("=")
    name, sep, ver = ref.partition(":")
    if not sep or not ver.isdigit() or not name:
        raise UsageError(f"Invalid model version {text!r}: expected MODEL:VERSION (e.g. churn:7).",
                         code="usage.invalid_member", hint="Run 'ambidex models list' to see versions.")
    if role == "canary" and not share:
        raise UsageError(f"Canary {text!r} needs a share: MODEL:VERSION=SHARE (e.g. churn:7=0.1).",
                         code="usage.invalid_member")
    try:
        value = float(share) if share else None
    except ValueError:
        raise UsageError(f"Invalid share in {text!r}: expected a number in (0, 1].",
                         code="usage.invalid_member") from None
    return Member(name, int(ver), role, value)


def validate_members(members: Sequence[Member]) -> tuple[Member, ...]:
    """Exactly one champion, canary shares in (0, 1] summing to at most 1, no version twice."""
    members = tuple(members)
    champions = [m for m in members if m.role == "champion"]
    if len(champions) != 1:
        raise UsageError(f"A revision needs exactly one champion; got {len(champions)}.",
                         code="deploy.invalid_revision", hint="Pass --champion MODEL:VERSION once.")
    seen: set[str] = set()
    for m in members:
        if m.role not in T.ROLES:
            raise UsageError(f"Unknown role {m.role!r} for {m.label}; allowed: {', '.join(T.ROLES)}.",
                             code="deploy.invalid_revision")
        if m.label in seen:
            raise UsageError(f"{m.label} appears twice in the revision.", code="deploy.invalid_revision",
                             hint="Give each model version one role.")
        seen.add(m.label)
        if m.role == "canary" and not (m.share is not None and 0 < m.share <= 1):
            raise UsageError(f"Canary {m.label} has share {m.share!r}; expected a number in (0, 1].",
                             code="deploy.invalid_revision")
        if m.role != "canary" and m.share is not None:
            raise UsageError(f"{m.label} is {m.role}; only a canary takes a share.", code="deploy.invalid_revision")
    total = sum(m.share or 0 for m in members if m.role == "canary")
    if total > 1 + 1e-9:
        raise UsageError(f"Canary shares sum to {total:g}, more than 1.", code="deploy.invalid_revision")
    return members


def canary_bucket(deployment: str, key) -> int:
    """The row's bucket in [0, 10000): ``int(sha256(f"{deployment}:{key}")[:8], big-endian) % 10000``.

    The key's text is its canonical form (integers in decimal, strings as-is, UTF-8), so R, Python and
    SQL compute the same bucket and an entity stays on the same model across runs.

    >>> canary_bucket("churn-nightly", 42) == canary_bucket("churn-nightly", "42")
    True
    """
    digest = hashlib.sha256(f"{deployment}:{key}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def assign_rows(deployment: str, keys: Iterable, canaries: Sequence[Member]) -> list[int]:
    """For each key, the index into ``canaries`` of the canary that publishes it, or -1 (champion).

    Canary i owns buckets [sum(shares before i), + share_i) * 10000, in the given order.
    """
    bounds, lo = [], 0
    for m in canaries:
        hi = lo + int(round((m.share or 0) * BUCKETS))
        bounds.append((lo, hi))
        lo = hi
    out = []
    for k in keys:
        b = canary_bucket(deployment, k)
        out.append(next((i for i, (a, z) in enumerate(bounds) if a <= b < z), -1))
    return out


def live_at(revisions: Sequence[Revision], at: dt.datetime) -> Revision | None:
    """The revision live at ``at``: the newest revision whose ``live_from <= at`` (revision order wins)."""
    live = None
    for r in sorted(revisions, key=lambda r: r.revision):
        if r.live_from <= at:
            live = r
    return live


def conflict_message(deployment: str, expected: int, current: Revision | None) -> str:
    """What the loser of a compare-and-swap is told."""
    if current is None:
        return f"Deployment '{deployment}' changed while you were promoting (expected revision {expected})."
    members = ", ".join(f"{m.role} {m.label}" for m in current.members)
    return (f"Deployment '{deployment}' is no longer at revision {expected}: revision {current.revision} "
            f"({current.kind} by {current.created_by} at {current.live_from.isoformat()}: {members}) "
            "went live first. Nothing was changed.")


def _accepts_kw(fn: Callable, name: str) -> bool:
    """Whether ``fn`` takes keyword argument ``name`` (injected gates and smoke callables may not)."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) or p.kind == p.VAR_KEYWORD
               for p in params)


# -- the database side ------------------------------------------------------------------------------

class Deployments:
    """Deployments in one registry database; the clock, the actor and the gates are injected.

    ``gate(conn_or_none, refs, phase)`` is called for versions new to the deployment: with
    ``conn=None`` before the swap (slow work such as smoke tests), then inside the swap's
    transaction (re-checks bound to bytes). It raises to refuse. On a dry run it is called before
    the swap only, with ``dry_run=True`` when it accepts that keyword, and must record nothing. ``verify(ref)`` checks a
    version's files against their recorded hashes. ``notify(conn, kind, payload)`` writes
    outbox rows in the same transaction as the event.
    """

    def __init__(self, engine: sa.Engine, *, store=None, clock: Callable[[], dt.datetime] = utcnow,
                 actor: str | None = None, gate=None, notify=None, verify=None):
        self.engine = engine
        self.store = store
        self.clock = clock
        self.actor = actor or current_actor()
        self.gate = gate
        self.notify = notify
        self.verify = verify or (self._verify_with_store if store is not None else None)

    # -- reads ------------------------------------------------------------------------------------
    def _deployment_row(self, conn, name: str):
        row = conn.execute(sa.select(T.deployments).where(T.deployments.c.name == name)).mappings().first()
        if row is None:
            raise RegistryError(f"No deployment '{name}'.", code="deploy.not_found",
                                hint="Run 'ambidex deploy create' first, or check the name.", deployment=name)
        return row

    def _revisions(self, conn, dep_id: int, name: str, revision: int | None = None) -> list[Revision]:
        r, m, mv, mo = T.deployment_revisions, T.revision_members, model_versions, models
        q = (sa.select(r.c.revision, r.c.kind, r.c.live_from, r.c.created_by, r.c.reason, r.c.parent_revision,
                       mo.c.name, mv.c.version, m.c.role, m.c.share)
             .select_from(r.join(m, m.c.revision_id == r.c.id).join(mv, mv.c.id == m.c.model_version_id)
                          .join(mo, mo.c.id == mv.c.model_id))
             .where(r.c.deployment_id == dep_id).order_by(r.c.revision, m.c.position))
        if revision is not None:
            q = q.where(r.c.revision == revision)
        out: dict[int, Revision] = {}
        for row in conn.execute(q):
            member = Member(row.name, row.version, row.role, row.share)
            prev = out.get(row.revision)
            if prev is None:
                out[row.revision] = Revision(name, row.revision, row.kind, row.live_from, row.created_by,
                                             row.reason, row.parent_revision, (member,))
            else:
                out[row.revision] = replace(prev, members=prev.members + (member,))
        return list(out.values())

    def _live_number(self, conn, dep_id: int) -> int:
        return conn.execute(sa.select(T.deployment_live.c.live_revision)
                            .where(T.deployment_live.c.deployment_id == dep_id)).scalar_one()

    def live(self, name: str) -> Revision:
        """The revision live now."""
        with self.engine.connect() as conn:
            dep = self._deployment_row(conn, name)
            return self._revisions(conn, dep["id"], name, self._live_number(conn, dep["id"]))[0]

    def languages(self, revision: Revision) -> dict[str, int]:
        """How many of ``revision``'s models run in each runtime ("python", "r"); one that no longer resolves
        (scoring then says why) is left out."""
        out: dict[str, int] = {}
        with self.engine.connect() as conn:
            for m in revision.members:
                try:
                    lang = self.resolve(conn, m.model, m.version).language
                except RegistryError:
                    continue
                out[lang] = out.get(lang, 0) + 1
        return out

    def history(self, name: str, *, at: dt.datetime | None = None) -> list[Revision]:
        """Every revision, oldest first; with ``at``, only the one live at that instant (or none)."""
        with self.engine.connect() as conn:
            dep = self._deployment_row(conn, name)
            revs = self._revisions(conn, dep["id"], name)
        if at is None:
            return revs
        hit = live_at(revs, at)
        return [hit] if hit else []

    def show(self, name: str) -> dict:
        """The deployment's settings and live revision."""
        with self.engine.connect() as conn:
            dep = self._deployment_row(conn, name)
        live = self.live(name)
        return {"name": name, "entity_key": dep["entity_key"], "source": dep["source"],
                "spec": json.loads(dep["spec"]) if dep["spec"] else None, "created_at": dep["created_at"],
                "created_by": dep["created_by"], "live": live.to_dict()}

    def list(self) -> list[dict]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(T.deployments.c.name, T.deployment_live.c.live_revision,
                                          T.deployment_live.c.switched_at)
                                .join(T.deployment_live, T.deployment_live.c.deployment_id == T.deployments.c.id)
                                .order_by(T.deployments.c.name)).mappings().all()
        return [dict(r) for r in rows]

    def resolve(self, conn, model: str, version: int) -> VersionRef:
        """The READY version ``model:version``; refused (naming what and why) otherwise."""
        row = conn.execute(
            sa.select(model_versions, models.c.name).join(models, models.c.id == model_versions.c.model_id)
            .where(models.c.name == model, model_versions.c.version == version)).mappings().first()
        if row is None:
            raise RegistryError(f"No model version {model}:{version}.", code="registry.not_found",
                                hint="Run 'ambidex models list' to see registered versions.")
        if row["status"] != "READY":
            raise RegistryError(f"Model version {model}:{version} is {row['status']}, not READY; it cannot be "
                                "deployed.", code="deploy.version_not_ready",
                                hint="Deploy a READY version; see 'ambidex models show'.")
        return VersionRef(row["id"], model, row["version"], row["path"], row["language"], row["task"],
                          row["manifest_sha256"], row["created_by"], row["run_id"], json.loads(row["manifest"]))

    def _verify_with_store(self, ref: VersionRef) -> None:
        problems = self.store.verify_files(ref.path, ref.manifest.get("files") or {})
        folder = self.store.root / ref.path
        try:
            digest = hashlib.sha256((folder / "model.json").read_bytes()).hexdigest()
        except OSError:
            digest = None
        if digest != ref.manifest_sha256:
            problems.append({"path": f"{ref.path}/model.json", "problem": "sha256",
                             "expected": ref.manifest_sha256, "actual": digest})
        if problems:
            raise ArtifactError(f"Model version {ref.label} fails verification: {problems[0]['path']} "
                                f"({problems[0]['problem']}); {len(problems)} problem(s). It was not deployed.",
                                code="artifact.hash_mismatch", hint="Run 'ambidex verify'; re-register the model.",
                                problems=problems)

    def folder(self, ref: VersionRef):
        """The model's folder in the artifact store (inside the store, by realpath)."""
        return self.store.version_dir(ref.path)

    # -- writes -----------------------------------------------------------------------------------
    def event(self, conn, kind: str, entity_id: str, payload: dict, reason: str | None = None,
              entity_type: str = "deployment") -> None:
        """Append to the event log and the outbox, in the caller's transaction."""
        conn.execute(events.insert().values(at=self.clock(), actor=self.actor, kind=kind, entity_type=entity_type,
                                            entity_id=entity_id, payload=json.dumps(payload, default=str),
                                            reason=reason))
        if self.notify is not None:
            self.notify(conn, kind, {"kind": kind, "entity": entity_id, "actor": self.actor,
                                     "reason": reason, **payload})

    def audit_refusal(self, kind: str, entity_id: str, error: Exception, payload: dict | None = None) -> None:
        """Record a refused change in its own transaction (the change itself wrote nothing)."""
        with self.engine.begin() as conn:
            self.event(conn, kind, entity_id, {**(payload or {}), "code": getattr(error, "code", None),
                                               "error": str(error)}, reason=getattr(error, "message", str(error)))

    def create(self, name: str, members: Sequence[Member], *, entity_key: str, source: str | None = None,
               spec: dict | None = None, reason: str | None = None, dry_run: bool = False) -> Revision:
        """Create deployment ``name`` with revision 1 live."""
        members = validate_members(members)
        with self.engine.connect() as conn:
            if conn.execute(sa.select(T.deployments.c.id).where(T.deployments.c.name == name)).first():
                raise RegistryError(f"Deployment '{name}' already exists.", code="deploy.exists",
                                    hint=f"Use 'ambidex deploy promote {name}' to change it.")
            refs = [self.resolve(conn, m.model, m.version) for m in members]
        self._pre_gate(name, refs, dry_run=dry_run)
        now = self.clock()
        rev = Revision(name, 1, "create", now, self.actor, reason, None, members)
        if dry_run:
            return rev
        with self.engine.begin() as conn:
            dep_id = conn.execute(T.deployments.insert().values(
                name=name, entity_key=entity_key, source=source, spec=json.dumps(spec) if spec else None,
                created_at=now, created_by=self.actor)).inserted_primary_key[0]
            conn.execute(T.deployment_live.insert().values(deployment_id=dep_id, live_revision=1,
                                                           switched_at=now, switched_by=self.actor))
            self._insert_revision(conn, dep_id, rev, refs)
            self._in_tx_gate(conn, name, refs)
            self.event(conn, EVENT_KINDS["create"], name, rev.to_dict(), reason)
        return rev

    def promote(self, name: str, members: Sequence[Member], *, expected_revision: int | None = None,
                reason: str | None = None, dry_run: bool = False, kind: str = "promote") -> Revision:
        """Make a new revision with ``members`` live, if the live revision is still ``expected_revision``
        (default: the one live when this call started). Raises :class:`ConflictError` otherwise."""
        members = validate_members(members)
        with self.engine.connect() as conn:
            dep = self._deployment_row(conn, name)
            live_no = self._live_number(conn, dep["id"])
            current = self._revisions(conn, dep["id"], name, live_no)[0]
            refs = [self.resolve(conn, m.model, m.version) for m in members]
        expected = live_no if expected_revision is None else expected_revision
        if expected != live_no:
            raise ConflictError(conflict_message(name, expected, current), hint="Run 'ambidex deploy show' and retry.",
                                expected=expected, live=live_no)
        known = {m.label for m in current.members}
        new_refs = [r for r in refs if r.label not in known]
        try:
            self._pre_gate(name, new_refs, all_refs=refs, dry_run=dry_run)
        except Exception as e:
            if not dry_run:  # a dry run records nothing, not even its refusal
                self.audit_refusal("deploy.promote_refused", name, e, {"members": [r.label for r in refs]})
            raise
        rev = Revision(name, expected + 1, kind, self.clock(), self.actor, reason, expected, members)
        if dry_run:
            return rev
        return self._swap(dep["id"], rev, refs, new_refs)

    def rollback(self, name: str, *, to_revision: int | None = None, expected_revision: int | None = None,
                 reason: str | None = None, dry_run: bool = False, kind: str = "rollback") -> Revision:
        """Make an earlier revision's members live again as a NEW revision (default: the parent of the live one)."""
        with self.engine.connect() as conn:
            dep = self._deployment_row(conn, name)
            live_no = self._live_number(conn, dep["id"])
            current = self._revisions(conn, dep["id"], name, live_no)[0]
            target_no = to_revision if to_revision is not None else current.parent_revision
            if target_no is None or target_no >= live_no or target_no < 1:
                raise UsageError(f"Deployment '{name}' has no earlier revision to roll back to "
                                 f"(live: {live_no}, asked: {target_no}).", code="deploy.no_rollback_target",
                                 hint="Run 'ambidex deploy history' and pass --to REVISION.")
            target = self._revisions(conn, dep["id"], name, target_no)[0]
            refs = [self.resolve(conn, m.model, m.version) for m in target.members]
        expected = live_no if expected_revision is None else expected_revision
        if expected != live_no:
            raise ConflictError(conflict_message(name, expected, current), expected=expected, live=live_no)
        for ref in refs:  # bytes must still be the ones that were deployed
            if self.verify is not None:
                self.verify(ref)
        rev = Revision(name, expected + 1, kind, self.clock(), self.actor,
                       reason or f"rollback to revision {target_no}", expected, target.members)
        if dry_run:
            return rev
        return self._swap(dep["id"], rev, refs, [])

    def _pre_gate(self, name: str, refs: list[VersionRef], all_refs: list[VersionRef] | None = None,
                  dry_run: bool = False) -> None:
        for ref in all_refs if all_refs is not None else refs:
            if self.verify is not None:
                self.verify(ref)
        if self.gate is not None and refs:
            if dry_run and _accepts_kw(self.gate, "dry_run"):
                self.gate(None, refs, name, dry_run=True)  # checks (may smoke-test) but records nothing
            else:
                self.gate(None, refs, name)

    def _in_tx_gate(self, conn, name: str, refs: list[VersionRef]) -> None:
        if self.gate is not None and refs:
            self.gate(conn, refs, name)

    def _insert_revision(self, conn, dep_id: int, rev: Revision, refs: list[VersionRef]) -> None:
        rev_id = conn.execute(T.deployment_revisions.insert().values(
            deployment_id=dep_id, revision=rev.revision, kind=rev.kind, parent_revision=rev.parent_revision,
            live_from=rev.live_from, created_by=rev.created_by, reason=rev.reason)).inserted_primary_key[0]
        conn.execute(T.revision_members.insert(), [
            {"revision_id": rev_id, "model_version_id": ref.id, "role": m.role, "share": m.share, "position": i}
            for i, (m, ref) in enumerate(zip(rev.members, refs))])

    def _swap(self, dep_id: int, rev: Revision, refs: list[VersionRef], new_refs: list[VersionRef]) -> Revision:
        live = T.deployment_live
        try:
            with self.engine.begin() as conn:
                now = self.clock()
                rev = replace(rev, live_from=now)
                done = conn.execute(live.update()
                                    .where(live.c.deployment_id == dep_id, live.c.live_revision == rev.parent_revision)
                                    .values(live_revision=rev.revision, switched_at=now, switched_by=self.actor))
                if done.rowcount != 1:
                    raise ConflictError("lost the swap")  # replaced below, after the rollback
                self._insert_revision(conn, dep_id, rev, refs)
                self._in_tx_gate(conn, rev.deployment, new_refs)
                self.event(conn, EVENT_KINDS[rev.kind], rev.deployment, rev.to_dict(), rev.reason)
        except (ConflictError, sa.exc.IntegrityError):
            with self.engine.connect() as conn:
                now_no = self._live_number(conn, dep_id)
                cur = self._revisions(conn, dep_id, rev.deployment, now_no)
            raise ConflictError(conflict_message(rev.deployment, rev.parent_revision, cur[0] if cur else None),
                                hint="Run 'ambidex deploy show' to see the live revision, then retry if still wanted.",
                                expected=rev.parent_revision, live=now_no) from None
        return rev

    def check_after_switch(self, name: str, smoke: Callable[[VersionRef], object]) -> Revision:
        """Smoke-test the live revision's models in fresh processes; on failure roll back automatically
        (a new ``auto_rollback`` revision, evented and notified) and raise :class:`CheckFailed`."""
        live = self.live(name)
        with self.engine.connect() as conn:
            refs = [self.resolve(conn, m.model, m.version) for m in live.members]
        failed = []
        for ref in refs:
            result = smoke(ref)
            if not getattr(result, "passed", False):
                failed.append(ref.label)
        if not failed:
            return live
        if live.parent_revision is None:
            raise CheckFailed(f"Smoke test failed after the switch for {', '.join(failed)}; deployment '{name}' "
                              "has no earlier revision to roll back to.", code="check.smoke_failed")
        back = self.rollback(name, expected_revision=live.revision, kind="auto_rollback",
                             reason=f"automatic: smoke test failed after the switch for {', '.join(failed)}")
        raise CheckFailed(f"Smoke test failed after switching '{name}' to revision {live.revision} "
                          f"({', '.join(failed)}); rolled back automatically as revision {back.revision}.",
                          code="check.smoke_failed", hint="See 'ambidex deploy history' and the smoke results.",
                          failed=failed, rollback_revision=back.revision)
