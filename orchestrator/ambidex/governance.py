"""governance: approval policy, approvals bound to the artifact's bytes, and the gates a promotion must pass.

Policy (``governance:`` in the pipeline YAML, :class:`GovernanceSpec`): ``approval: auto | manual``,
``approvers`` (empty: anyone), ``four_eyes`` (the person who trained may not approve), ``allow_as``
(whether ``--as NAME`` may name the approver) and ``gates`` (``smoke``, ``kpi_not_worse``,
``no_drift_alert``).

An approval row records the version, its manifest sha256 and a snapshot of its metrics. At promotion
the files are re-hashed (``Deployments.verify``) and, inside the swap's transaction, the newest
decision for the version must be an unexpired approval of the very same sha256. Refusals are written
to the event log too.

The checks themselves (:func:`check_approval`, :func:`evaluate_gates`) take data and return data.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Literal

import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field

from . import deploytables as T
from .deploy import Deployments, VersionRef, _accepts_kw
from .errors import CheckFailed, RegistryError, UsageError
from .tables import runs

__all__ = ["GovernanceSpec", "GovernanceError", "ApprovalRequest", "GateFacts", "GateResult",
           "check_approval", "evaluate_gates", "Governance"]

GATES = ("smoke", "kpi_not_worse", "no_drift_alert")


class GovernanceSpec(BaseModel):
    """The ``governance:`` section of a pipeline YAML."""

    model_config = ConfigDict(extra="forbid")
    approval: Literal["auto", "manual"] = "auto"
    approvers: list[str] = []
    four_eyes: bool = False
    allow_as: bool = False
    gates: list[Literal["smoke", "kpi_not_worse", "no_drift_alert"]] = ["smoke"]
    kpi: str = "auc"  # manifest metric compared by kpi_not_worse
    kpi_higher_is_better: bool = True
    kpi_tolerance: float = Field(default=0.0, ge=0)
    approval_valid_days: int | None = Field(default=None, ge=1)


class GovernanceError(RegistryError):
    """An approval or a promotion refused by policy."""

    code = "governance.refused"


@dataclass(frozen=True)
class ApprovalRequest:
    """Everything :func:`check_approval` needs, already read from the registry and the disk."""

    version: str  # "model:version"
    approver: str  # the identity recorded (OS user, or --as NAME)
    os_user: str
    as_name: str | None
    trainers: frozenset[str]
    recorded_sha256: str
    reviewed_sha256: str | None  # what the approver says they reviewed (optional)


def check_approval(spec: GovernanceSpec, req: ApprovalRequest, *, decision: str = "approve") -> list[tuple[str, str]]:
    """The reasons (code, message) to refuse this approval or rejection; empty when it may be recorded.

    >>> check_approval(GovernanceSpec(four_eyes=True), ApprovalRequest("m:1", "ann", "ann", None,
    ...     frozenset({"ann"}), "a" * 64, None))[0][0]
    'governance.self_approval'
    """
    out = []
    if req.as_name is not None and not spec.allow_as:
        out.append(("governance.as_not_allowed",
                    f"--as {req.as_name} is not allowed by this policy (allow_as: false); the approver is the "
                    f"operating-system user ({req.os_user})."))
    if spec.approvers and req.approver not in spec.approvers:
        out.append(("governance.not_an_approver",
                    f"{req.approver} is not on the approvers list ({', '.join(spec.approvers)})."))
    if decision == "approve" and spec.four_eyes and ({req.approver, req.os_user} & req.trainers):
        out.append(("governance.self_approval",
                    f"Four-eyes: {req.version} was trained by {', '.join(sorted(req.trainers))}, who may not "
                    "approve it."))
    if req.reviewed_sha256 is not None and req.reviewed_sha256 != req.recorded_sha256:
        out.append(("governance.bytes_changed",
                    f"{req.version} has manifest sha256 {req.recorded_sha256}, not the {req.reviewed_sha256} you "
                    "reviewed."))
    return out


@dataclass(frozen=True)
class GateFacts:
    """What is known about one candidate when the gates are evaluated (None: not known)."""

    version: str
    smoke_passed: bool | None = None
    kpi_candidate: float | None = None
    kpi_champion: float | None = None
    has_champion: bool = False
    drift_alert: bool | None = None


@dataclass(frozen=True)
class GateResult:
    gate: str
    passed: bool
    detail: str


def evaluate_gates(spec: GovernanceSpec, facts: GateFacts) -> list[GateResult]:
    """Each configured gate's verdict. Unknown facts fail closed, except KPI with no champion yet."""
    out = []
    for gate in spec.gates:
        if gate == "smoke":
            ok = facts.smoke_passed is True
            out.append(GateResult(gate, ok, "smoke test passed" if ok else
                                  ("smoke test failed" if facts.smoke_passed is False else "no smoke test result")))
        elif gate == "kpi_not_worse":
            if not facts.has_champion:
                out.append(GateResult(gate, True, "no champion to compare with"))
            elif facts.kpi_candidate is None or facts.kpi_champion is None:
                out.append(GateResult(gate, False, f"KPI '{spec.kpi}' missing from a manifest's metrics"))
            else:
                s = 1 if spec.kpi_higher_is_better else -1
                worse_by = s * (facts.kpi_champion - facts.kpi_candidate)
                out.append(GateResult(gate, worse_by <= spec.kpi_tolerance,
                                      f"{spec.kpi}: candidate {facts.kpi_candidate:.6g} vs champion "
                                      f"{facts.kpi_champion:.6g}"))
        elif gate == "no_drift_alert":
            ok = facts.drift_alert is False
            out.append(GateResult(gate, ok, "no drift alert" if ok else
                                  ("drift alert open" if facts.drift_alert else "no drift result available")))
    return out


def metrics_snapshot(ref: VersionRef) -> str:
    return json.dumps(ref.manifest.get("metrics") or {}, sort_keys=True)


class Governance:
    """Approvals and gates over one registry; plug :meth:`gate` into :class:`~ambidex.deploy.Deployments`.

    ``smoke(ref)`` runs a smoke test and returns an object with ``passed`` (injected: the smoke
    module's tester); ``drift_alert(ref, deployment)`` returns True/False/None.
    """

    def __init__(self, deployments: Deployments, spec: GovernanceSpec | None = None, *,
                 smoke: Callable[[VersionRef], object] | None = None,
                 drift_alert: Callable[[VersionRef, str], bool | None] | None = None,
                 spec_for: Callable[[VersionRef], GovernanceSpec | None] | None = None):
        self.deps = deployments
        self.spec = spec or GovernanceSpec()
        self.spec_for = spec_for  # the policy of the pipeline that trained a version, when it has one
        self.smoke = smoke
        self.drift_alert = drift_alert

    def policy(self, ref: VersionRef) -> GovernanceSpec:
        """The policy that governs ``ref``: its pipeline's ``governance:``, else the project's."""
        return (self.spec_for(ref) if self.spec_for else None) or self.spec

    @property
    def engine(self):
        return self.deps.engine

    def _trainers(self, conn, ref: VersionRef) -> frozenset[str]:
        who = {ref.created_by} if ref.created_by else set()
        if ref.run_id:
            actor = conn.execute(sa.select(runs.c.actor).where(runs.c.id == ref.run_id)).scalar()
            if actor:
                who.add(actor)
        return frozenset(who)

    def decide(self, model: str, version: int, decision: str, *, note: str, as_name: str | None = None,
               reviewed_sha256: str | None = None, dry_run: bool = False) -> dict:
        """Record an approval or a rejection of ``model:version`` bound to its current bytes."""
        if decision not in ("approve", "reject"):
            raise UsageError(f"Unknown decision {decision!r}.", code="usage.invalid")
        if not (note or "").strip():
            raise UsageError("A note is required (--note): say why.", code="usage.note_required")
        with self.engine.connect() as conn:
            ref = self.deps.resolve(conn, model, version)
            trainers = self._trainers(conn, ref)
        label = f"{model}:{version}"
        req = ApprovalRequest(label, as_name or self.deps.actor, self.deps.actor, as_name, trainers,
                              ref.manifest_sha256, reviewed_sha256)
        spec = self.policy(ref)
        problems = check_approval(spec, req, decision=decision)
        try:
            if problems:
                code, _ = problems[0]
                raise GovernanceError(" ".join(m for _, m in problems), code=code,
                                      hint="Ask an approver on the list to run 'ambidex approve'.",
                                      problems=[c for c, _ in problems])
            if self.deps.verify is not None:
                self.deps.verify(ref)  # changed bytes: refused before anything is recorded
        except Exception as e:
            if not dry_run:  # a dry run records nothing, not even its refusal
                self.deps.audit_refusal(f"approval.{decision}_refused", label, e, {"approver": req.approver})
            raise
        now = self.deps.clock()
        expires = now + dt.timedelta(days=spec.approval_valid_days) if spec.approval_valid_days else None
        row = {"model_version_id": ref.id, "manifest_sha256": ref.manifest_sha256, "decision": decision,
               "approver": req.approver, "os_user": self.deps.actor, "note": note,
               "metrics_snapshot": metrics_snapshot(ref), "at": now, "expires_at": expires}
        out = {"version": label, **{k: v for k, v in row.items() if k != "model_version_id"}}
        if dry_run:
            return out
        with self.engine.begin() as conn:
            conn.execute(T.approvals.insert().values(**row))
            self.deps.event(conn, f"approval.{'approved' if decision == 'approve' else 'rejected'}", label,
                            {"manifest_sha256": ref.manifest_sha256, "approver": req.approver,
                             "as": as_name, "metrics_sha256": hashlib.sha256(
                                 row["metrics_snapshot"].encode()).hexdigest()},
                            reason=note, entity_type="model_version")
        return out

    def approve(self, model: str, version: int, **kw) -> dict:
        return self.decide(model, version, "approve", **kw)

    def reject(self, model: str, version: int, **kw) -> dict:
        return self.decide(model, version, "reject", **kw)

    def decisions(self, model: str, version: int) -> list[dict]:
        with self.engine.connect() as conn:
            ref = self.deps.resolve(conn, model, version)
            rows = conn.execute(sa.select(T.approvals).where(T.approvals.c.model_version_id == ref.id)
                                .order_by(T.approvals.c.id)).mappings().all()
        return [dict(r) for r in rows]

    # -- gates -----------------------------------------------------------------------------------
    def _smoke_passed(self, conn, ref: VersionRef) -> bool | None:
        row = conn.execute(sa.select(T.smoke_results.c.passed)
                           .where(T.smoke_results.c.model_version_id == ref.id,
                                  T.smoke_results.c.manifest_sha256 == ref.manifest_sha256)
                           .order_by(T.smoke_results.c.id.desc()).limit(1)).scalar()
        return None if row is None else bool(row)

    def _approved(self, conn, ref: VersionRef) -> tuple[bool, str]:
        row = conn.execute(sa.select(T.approvals).where(T.approvals.c.model_version_id == ref.id)
                           .order_by(T.approvals.c.id.desc()).limit(1)).mappings().first()
        if row is None:
            return False, f"{ref.label} has no approval (approval: manual)."
        if row["decision"] != "approve":
            return False, f"{ref.label} was rejected by {row['approver']}: {row['note']}"
        if row["manifest_sha256"] != ref.manifest_sha256:
            return False, (f"{ref.label} was approved for manifest sha256 {row['manifest_sha256']}, but it is now "
                           f"{ref.manifest_sha256}: the bytes changed after approval.")
        if row["expires_at"] is not None and row["expires_at"] <= self.deps.clock():
            return False, f"The approval of {ref.label} expired at {row['expires_at'].isoformat()}."
        return True, f"approved by {row['approver']}"

    def gate(self, conn, refs: list[VersionRef], deployment: str, *, dry_run: bool = False) -> None:
        """Refuse the promotion of ``refs`` unless every gate passes. ``conn=None``: before the swap (may run
        smoke tests); with ``conn``: re-checked inside the swap's transaction (smoke and approval, by sha256).
        ``dry_run``: a smoke test with no recorded result is run in a fresh process but not recorded."""
        if conn is None:
            return self._gate_before(refs, deployment, dry_run=dry_run)
        for ref in refs:
            spec = self.policy(ref)
            if "smoke" in spec.gates and self._smoke_passed(conn, ref) is not True:
                raise CheckFailed(f"No passing smoke test for {ref.label} with its current bytes.",
                                  code="check.smoke_failed", hint=f"Run 'ambidex deploy smoke {ref.label}'.")
            if spec.approval == "manual":
                ok, why = self._approved(conn, ref)
                if not ok:
                    raise GovernanceError(why, code="governance.not_approved",
                                          hint=f"Run 'ambidex approve {ref.label} --note ...' (another person).")

    def _champion_kpi(self, deployment: str, kpi: str) -> tuple[bool, float | None]:
        try:
            live = self.deps.live(deployment)
        except RegistryError:
            return False, None
        with self.engine.connect() as conn:
            champ = self.deps.resolve(conn, live.champion.model, live.champion.version)
        return True, (champ.manifest.get("metrics") or {}).get(kpi)

    def _run_smoke(self, ref: VersionRef, *, record: bool):
        """Run the injected smoke test; unrecorded when ``record`` is False (the tester's ``record=False``)."""
        if not record:
            if callable(getattr(self.smoke, "run", None)):
                return self.smoke.run(ref, record=False)
            if _accepts_kw(self.smoke, "record"):
                return self.smoke(ref, record=False)
        return self.smoke(ref)

    def _gate_before(self, refs: list[VersionRef], deployment: str, *, dry_run: bool = False) -> None:
        for ref in refs:
            spec = self.policy(ref)
            has_champion, champ_kpi = (self._champion_kpi(deployment, spec.kpi) if "kpi_not_worse" in spec.gates
                                       else (False, None))
            with self.engine.connect() as conn:
                smoke = self._smoke_passed(conn, ref)
                approved = self._approved(conn, ref) if spec.approval == "manual" else (True, "")
            if "smoke" in spec.gates and smoke is None and self.smoke is not None:
                smoke = bool(getattr(self._run_smoke(ref, record=not dry_run), "passed", False))
            facts = GateFacts(ref.label, smoke_passed=smoke,
                              kpi_candidate=(ref.manifest.get("metrics") or {}).get(spec.kpi),
                              kpi_champion=champ_kpi, has_champion=has_champion,
                              drift_alert=(self.drift_alert(ref, deployment) if self.drift_alert else None))
            failed = [g for g in evaluate_gates(spec, facts) if not g.passed]
            if failed:
                code = "check.smoke_failed" if failed[0].gate == "smoke" else f"check.gate_{failed[0].gate}"
                raise CheckFailed(f"{ref.label} fails gate(s): " + "; ".join(f"{g.gate}: {g.detail}" for g in failed),
                                  code=code, hint="Fix the model or the policy's gates, then promote again.",
                                  gates=[g.gate for g in failed])
            if not approved[0]:
                raise GovernanceError(approved[1], code="governance.not_approved",
                                      hint=f"Run 'ambidex approve {ref.label} --note ...' (another person).")
