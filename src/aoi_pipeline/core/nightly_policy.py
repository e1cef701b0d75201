"""The standing approval of nightly runs: a policy a person approves once, and whether a night stays inside it.

A policy names the platform, the container images, the KPI target and a budget per night (GPU-hours, DEFT
iterations, the share of the new pool rows a night may mine, Phase 3 on or off). Its hash (canonical JSON) is
what the approval record names. A night proposes the policy its config implies; it proceeds without a person
only when an approved, unrevoked policy exists and the proposal stays inside it: the same platform, images and
target, a budget no larger on any axis, and no row changed or removed in the validation, KPI or confirm set
(appended rows stay inside). Otherwise the night pauses on the gate with one line per limit it passed. The
approval is stored as `policy.json` in the nightly directory; revoking keeps the record and marks it revoked.
Pure: values in, verdicts out, plus the small JSON file of the approval.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.errors import ConfigError, StateError

POLICY_FILE = "policy.json"


@dataclass(frozen=True)
class NightlyBudget:
    """What one night may spend."""

    gpu_hours: float
    iterations: int
    pool_share: float
    phase3: bool

    def __post_init__(self) -> None:
        where = "nightly budget"
        if not self.gpu_hours > 0:
            raise ConfigError.at(f"{where} gpu_hours", f"{self.gpu_hours!r} is not above 0", "give GPU-hours > 0")
        if not 0 <= self.iterations <= 50:
            raise ConfigError.at(f"{where} iterations", f"{self.iterations!r} is outside 0..50", "give 0 to 50")
        if not 0 < self.pool_share <= 1:
            raise ConfigError.at(f"{where} pool_share", f"{self.pool_share!r} is outside (0, 1]", "give 0.05 .. 1")


@dataclass(frozen=True)
class NightlyPolicy:
    """What a person approves once for every night: where jobs run, with which images, to which target."""

    platform: str
    images: Mapping[str, str]
    kpi_target: str
    budget: NightlyBudget

    def to_dict(self) -> dict[str, Any]:
        return {
            "platform": self.platform,
            "images": dict(sorted(self.images.items())),
            "kpi_target": self.kpi_target,
            "budget": asdict(self.budget),
        }

    @property
    def hash(self) -> str:
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], *, where: str) -> NightlyPolicy:
        try:
            budget = raw["budget"]
            return cls(
                platform=str(raw["platform"]),
                images={str(k): str(v) for k, v in raw["images"].items()},
                kpi_target=str(raw["kpi_target"]),
                budget=NightlyBudget(
                    gpu_hours=float(budget["gpu_hours"]),
                    iterations=int(budget["iterations"]),
                    pool_share=float(budget["pool_share"]),
                    phase3=bool(budget["phase3"]),
                ),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as error:
            raise StateError.at(where, f"the policy is incomplete or malformed ({error!r})", _REAPPROVE) from None

    def describe(self) -> str:
        """The policy in a few Markdown lines, as the gate shows it."""
        images = ", ".join(f"{kind} `{image}`" for kind, image in sorted(self.images.items()))
        budget = self.budget
        return "\n".join(
            [
                f"- Platform: {self.platform}",
                f"- Images: {images}",
                f"- KPI target: {self.kpi_target}",
                f"- Budget per night: {budget.gpu_hours:g} GPU-hours, {budget.iterations} DEFT iterations, "
                f"{budget.pool_share:.0%} of the new pool rows, Phase 3 {'on' if budget.phase3 else 'off'}",
            ]
        )


_REAPPROVE = "revoke it (`aoi-pipeline nightly revoke`) and approve the policy again on the next night's gate"


def policy_breaches(approved: NightlyPolicy, proposed: NightlyPolicy) -> list[str]:
    """One line per limit the proposed night passes; empty when it stays inside the approved policy."""
    breaches: list[str] = []
    if proposed.platform != approved.platform:
        breaches.append(f"another platform: {proposed.platform!r} (approved {approved.platform!r})")
    for kind in sorted(set(approved.images) | set(proposed.images)):
        was, now = approved.images.get(kind), proposed.images.get(kind)
        if was != now:
            breaches.append(f"another image for {kind}: {now!r} (approved {was!r})")
    if proposed.kpi_target != approved.kpi_target:
        breaches.append(f"another KPI target: {proposed.kpi_target!r} (approved {approved.kpi_target!r})")
    mine, limit = proposed.budget, approved.budget
    if mine.gpu_hours > limit.gpu_hours:
        breaches.append(f"a larger budget: {mine.gpu_hours:g} GPU-hours per night (approved {limit.gpu_hours:g})")
    if mine.iterations > limit.iterations:
        breaches.append(f"a larger budget: {mine.iterations} DEFT iterations per night (approved {limit.iterations})")
    if mine.pool_share > limit.pool_share:
        breaches.append(
            f"a larger budget: {mine.pool_share:.0%} of the new pool rows (approved {limit.pool_share:.0%})"
        )
    if mine.phase3 and not limit.phase3:
        breaches.append("a larger budget: Phase 3 on (approved off)")
    return breaches


@dataclass(frozen=True)
class PolicyApproval:
    """The standing approval: the policy, who approved it and when, and a revocation if there was one."""

    policy: NightlyPolicy
    policy_hash: str
    reviewer: str
    comment: str
    decided_at: str
    revoked: Mapping[str, str] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.to_dict(),
            "policy_hash": self.policy_hash,
            "reviewer": self.reviewer,
            "comment": self.comment,
            "decided_at": self.decided_at,
            "revoked": None if self.revoked is None else dict(self.revoked),
        }


@dataclass(frozen=True)
class Standing:
    """Whether a night may proceed without a person, and if not, every reason why."""

    reasons: tuple[str, ...]

    @property
    def inside(self) -> bool:
        return not self.reasons


def standing(approval: PolicyApproval | None, proposed: NightlyPolicy, data_breaches: Sequence[str]) -> Standing:
    """The night's verdict: inside an approved, unrevoked policy, or the reasons it needs a person."""
    if approval is None:
        return Standing(("no nightly policy is approved yet",))
    if approval.revoked is not None:
        by = approval.revoked.get("by", "?")
        return Standing((f"the policy {approval.policy_hash} was revoked by {by} at {approval.revoked.get('at')}",))
    return Standing((*policy_breaches(approval.policy, proposed), *data_breaches))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_policy_approval(nightly_dir: Path) -> PolicyApproval | None:
    """The stored approval, or None when no policy was ever approved."""
    path = Path(nightly_dir) / POLICY_FILE
    if not path.is_file():
        return None
    where = str(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        policy = NightlyPolicy.from_dict(raw["policy"], where=where)
        record = PolicyApproval(
            policy=policy,
            policy_hash=str(raw["policy_hash"]),
            reviewer=str(raw["reviewer"]),
            comment=str(raw.get("comment", "")),
            decided_at=str(raw["decided_at"]),
            revoked=raw.get("revoked"),
        )
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise StateError.at(where, f"is not a policy approval ({error!r})", _REAPPROVE) from None
    if record.policy_hash != policy.hash:
        raise StateError.at(
            where, f"names policy {record.policy_hash} but holds policy {policy.hash} (edited by hand)", _REAPPROVE
        )
    return record


def approve_policy(nightly_dir: Path, policy: NightlyPolicy, *, reviewer: str, comment: str) -> PolicyApproval:
    """Record `policy` as the standing approval (replacing an earlier or revoked one)."""
    record = PolicyApproval(policy, policy.hash, reviewer, comment, _now())
    Path(nightly_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(nightly_dir) / POLICY_FILE, record.to_dict())
    return record


def revoke_policy(nightly_dir: Path, *, by: str, reason: str) -> PolicyApproval:
    """Mark the standing approval revoked, so the next night waits for a person."""
    record = read_policy_approval(nightly_dir)
    if record is None:
        raise StateError.at(
            str(Path(nightly_dir) / POLICY_FILE),
            "no nightly policy is approved, so there is nothing to revoke",
            "check --config points at the workspace whose nightly runs you mean",
        )
    revoked = PolicyApproval(
        record.policy,
        record.policy_hash,
        record.reviewer,
        record.comment,
        record.decided_at,
        {"by": by, "at": _now(), "reason": reason},
    )
    atomic_write_json(Path(nightly_dir) / POLICY_FILE, revoked.to_dict())
    return revoked
