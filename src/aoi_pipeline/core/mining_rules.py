"""Which of the k-NN candidates mining keeps when it may not keep them all: spread, balance, uncertainty, exploration.

Taking the candidates of highest similarity over all targets, up to the pool budget, lets a few targets that
resemble many pool tiles (a generic trace tile of a common design) fill the budget with their neighbourhood, and it
keeps whatever label those neighbours carry: on DeepPCB a defect target's nearest tiles are PASS tiles half of the
time, so the mined rows were worth less than random pool rows. The rules here pick instead:

* **per target** (`rank`): round robin over the targets (worst first, the routing's order), each taking its next
  neighbour in turn, so every target gets its share; a target's neighbours come nearest first (`per_target`) or
  the ones the current model gets most wrong first (`uncertainty`: the pool row's label against its score at the
  RCA's threshold, among the target's top-k nearest). `similarity` keeps the old global order.
* **label balance** (`label_balance: pool`): the kept neighbours hold PASS and defect rows in the pool's shares
  (the other class fills a class that runs out).
* **a cap per board** (`max_per_board`): at most that many kept rows of one pool board.
* **exploration** (`explore_share`): that share of the kept rows is random pool rows, stratified by label, for
  coverage (never a row mined before or a validation/KPI sample).

Everything is a pure function of the k-NN result and the pool's labels, boards and scores; the count each rule
picked and each cap removed is returned for the mining log, the state and the report.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from aoi_pipeline.core.dataset import PASS_LABEL
from aoi_pipeline.core.mining import KEPT, Candidate, Selection
from aoi_pipeline.errors import ConfigError

RANK_SIMILARITY = "similarity"
RANK_PER_TARGET = "per_target"
RANK_UNCERTAINTY = "uncertainty"
RANKS = (RANK_SIMILARITY, RANK_PER_TARGET, RANK_UNCERTAINTY)
BALANCE_NONE = "none"
BALANCE_POOL = "pool"
BALANCES = (BALANCE_NONE, BALANCE_POOL)

#: Rules that pick a row (Candidate.rule) and outcomes of the candidates the rules passed over.
RULE_NEIGHBOUR = "neighbour"
RULE_EXPLORE = "explore"
OVER_BOARD_CAP = "over_board_cap"
NOT_PICKED = "over_pool_budget"


@dataclass(frozen=True)
class MiningRules:
    """How mining chooses among its candidates (the `deft.mining_*` keys)."""

    rank: str = RANK_SIMILARITY
    label_balance: str = BALANCE_NONE
    max_per_board: int | None = None
    explore_share: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.rank not in RANKS:
            raise ConfigError.at("deft.mining_rank", f"{self.rank!r} is not a ranking", f"use one of {RANKS}")
        if self.label_balance not in BALANCES:
            raise ConfigError.at(
                "deft.mining_label_balance", f"{self.label_balance!r} is not a balance", f"use one of {BALANCES}"
            )
        if self.max_per_board is not None and (isinstance(self.max_per_board, bool) or self.max_per_board < 1):
            raise ConfigError.at(
                "deft.mining_max_per_board", f"{self.max_per_board!r} is not a positive count", "set 1 or more, or null"
            )
        if not 0.0 <= self.explore_share < 1.0:
            raise ConfigError.at(
                "deft.mining_explore_share", f"{self.explore_share!r} is not a share in [0, 1)", "set e.g. 0.25, or 0"
            )

    @property
    def legacy(self) -> bool:
        """True when the old global similarity order decides everything (no rule of this module applies)."""
        plain = self.label_balance == BALANCE_NONE and self.max_per_board is None and self.explore_share == 0.0
        return self.rank == RANK_SIMILARITY and plain

    def text(self) -> str:
        parts = [f"rank {self.rank}", f"label balance {self.label_balance}"]
        parts.append(f"at most {self.max_per_board} per board" if self.max_per_board else "no board cap")
        parts.append(f"explore share {self.explore_share:g}")
        return ", ".join(parts)


@dataclass(frozen=True)
class PoolFacts:
    """What the rules know of every pool row: PASS or not, its board, and how wrong the model is on it."""

    is_pass: np.ndarray  # bool [P]
    boards: Sequence[str]  # [P]
    weakness: np.ndarray | None = None  # float [P]: >0 = on the wrong side of the RCA threshold

    @classmethod
    def of(
        cls, labels: Sequence[str], boards: Sequence[str], scores: np.ndarray | None, threshold: float | None
    ) -> PoolFacts:
        is_pass = np.array([label == PASS_LABEL for label in labels], dtype=bool)
        weakness = None
        if scores is not None and threshold is not None:
            scores = np.asarray(scores, dtype=np.float64)
            weakness = np.where(is_pass, scores - threshold, threshold - scores)
        return cls(is_pass=is_pass, boards=tuple(boards), weakness=weakness)


@dataclass(frozen=True)
class RuleCounts:
    """Rows each rule picked and candidates each limit passed over."""

    picked: dict[str, int]
    over_board_cap: int
    pass_share: float | None

    def text(self) -> str:
        picked = ", ".join(f"{count} by {rule}" for rule, count in self.picked.items())
        share = "" if self.pass_share is None else f", {self.pass_share:.0%} PASS"
        return f"picked {picked or 'none'}{share}; board cap removed {self.over_board_cap}"


def apply_rules(
    selection: Selection,
    indices: np.ndarray,
    *,
    rules: MiningRules,
    pool: PoolFacts,
    max_kept: int | None,
    explore_exclude: Callable[[Collection[int]], Collection[int]] = lambda rows: (),
    history: Collection[int] = (),
    targets: np.ndarray | None = None,
    pool_vectors: np.ndarray | None = None,
) -> tuple[Selection, RuleCounts]:
    """The selection after the rules: the kept candidates (neighbours, then explore rows), every other eligible
    candidate marked `over_board_cap` or `over_pool_budget`.

    `indices` is the k-NN result [T, k] (each target's neighbours, nearest first); only candidates `select` kept
    are eligible. Explore rows are drawn from pool rows that are not candidates kept here, not in `history` (pool
    indices mined before) and not returned by `explore_exclude` (the leak check); with `targets` and
    `pool_vectors` each gets its nearest target and similarity for the record.
    """
    if rules.rank == RANK_UNCERTAINTY and pool.weakness is None:
        raise ConfigError.at(
            "deft.mining_rank",
            "'uncertainty' needs the model's score of every pool row, and the embed output has none",
            "use an embed action that writes siamese_score into embeddings_index.csv, or set mining_rank: per_target",
        )
    eligible = {c.pool_index: c for c, outcome in selection.decisions if outcome == KEPT}
    # Never more rows than the similarity order would keep: exploration replaces neighbours, it adds none.
    total = len(eligible) if max_kept is None else min(max_kept, len(eligible))
    n_explore = math.floor(rules.explore_share * total + 0.5)
    order = _neighbour_order(selection, indices, eligible, rules, pool)
    chosen, capped = _take_neighbours(order, eligible, total - n_explore, rules, pool)
    explore = _explore(rules, pool, n_explore, set(chosen) | set(history), explore_exclude)
    picked = [dataclasses.replace(eligible[i], rule=RULE_NEIGHBOUR) for i in chosen]
    picked += [_explore_candidate(i, targets, pool_vectors) for i in explore]
    taken = set(chosen) | set(explore)
    decisions = [(c, KEPT) for c in picked]
    for candidate, outcome in selection.decisions:
        if candidate.pool_index in taken:
            continue  # recorded above with the rule that picked it
        if outcome == KEPT:
            outcome = OVER_BOARD_CAP if candidate.pool_index in capped else NOT_PICKED
        decisions.append((candidate, outcome))
    passes = int(sum(pool.is_pass[c.pool_index] for c in picked))
    counts = RuleCounts(
        picked={RULE_NEIGHBOUR: len(chosen), RULE_EXPLORE: len(explore)},
        over_board_cap=sum(1 for _, outcome in decisions if outcome == OVER_BOARD_CAP),
        pass_share=passes / len(picked) if picked else None,
    )
    result = dataclasses.replace(
        selection,
        kept=tuple(picked),
        over_pool_budget=selection.over_pool_budget + sum(1 for _, o in decisions if o == NOT_PICKED),
        decisions=tuple(decisions),
    )
    return result, counts


def _neighbour_order(
    selection: Selection, indices: np.ndarray, eligible: dict[int, Candidate], rules: MiningRules, pool: PoolFacts
) -> list[int]:
    """Eligible pool rows in the order the rules consider them (a row may appear more than once)."""
    if rules.rank == RANK_SIMILARITY:
        return [c.pool_index for c, outcome in selection.decisions if outcome == KEPT]
    lists = []
    for row in np.asarray(indices).tolist():
        mine = [index for index in dict.fromkeys(row) if index in eligible]
        if rules.rank == RANK_UNCERTAINTY:
            assert pool.weakness is not None
            # Most wrong first; ties (and equal scores) keep the nearest first.
            mine.sort(key=lambda index: -float(pool.weakness[index]))  # type: ignore[index]
        lists.append(mine)
    order: list[int] = []
    for depth in range(max((len(items) for items in lists), default=0)):
        order.extend(items[depth] for items in lists if depth < len(items))
    return order


def _take_neighbours(
    order: Sequence[int], eligible: dict[int, Candidate], wanted: int, rules: MiningRules, pool: PoolFacts
) -> tuple[list[int], set[int]]:
    """Up to `wanted` rows in `order` under the board cap and the label quotas; (chosen, rows the cap refused)."""
    quota = _quotas(wanted, eligible, rules, pool)
    chosen: list[int] = []
    taken: set[int] = set()
    per_board: Counter[str] = Counter()
    per_class: Counter[bool] = Counter()
    capped: set[int] = set()
    for index in order:
        if len(chosen) >= wanted:
            break
        if index in taken:
            continue
        board, kind = pool.boards[index], bool(pool.is_pass[index])
        if rules.max_per_board is not None and per_board[board] >= rules.max_per_board:
            capped.add(index)
            continue
        if per_class[kind] >= quota[kind]:
            continue
        chosen.append(index)
        taken.add(index)
        per_board[board] += 1
        per_class[kind] += 1
    return chosen, capped - taken


def _quotas(wanted: int, eligible: Collection[int], rules: MiningRules, pool: PoolFacts) -> dict[bool, int]:
    """Rows of each class (True = PASS) the neighbours may hold: the pool's shares, the shortfall moved over."""
    if rules.label_balance == BALANCE_NONE or not len(pool.is_pass):
        return {True: wanted, False: wanted}
    share = float(np.mean(pool.is_pass))
    available = {
        True: sum(1 for i in eligible if pool.is_pass[i]),
        False: sum(1 for i in eligible if not pool.is_pass[i]),
    }
    passes = min(math.floor(share * wanted + 0.5), available[True])
    defects = min(wanted - passes, available[False])
    passes = min(wanted - defects, available[True])
    return {True: passes, False: defects}


def _explore(
    rules: MiningRules,
    pool: PoolFacts,
    wanted: int,
    unavailable: set[int],
    exclude: Callable[[Collection[int]], Collection[int]],
) -> list[int]:
    """`wanted` random pool rows, stratified by PASS/defect in the pool's shares, none unavailable or excluded."""
    if wanted <= 0 or rules.explore_share == 0.0:
        return []
    rng = np.random.default_rng(rules.seed)
    strata = {
        kind: [i for i in np.flatnonzero(pool.is_pass == kind).tolist() if i not in unavailable]
        for kind in (True, False)
    }
    for rows in strata.values():
        rng.shuffle(rows)
    share = float(np.mean(pool.is_pass)) if len(pool.is_pass) else 0.0
    targets = {True: math.floor(share * wanted + 0.5)}
    targets[False] = wanted - targets[True]
    picked: list[int] = []
    for kind in (True, False):
        picked += _first_allowed(strata[kind], targets[kind], exclude)
    if len(picked) < wanted:  # a stratum ran out: fill from what is left of either
        rest = [i for kind in (True, False) for i in strata[kind] if i not in set(picked)]
        picked += _first_allowed(rest, wanted - len(picked), exclude)
    return picked


def _first_allowed(
    rows: Sequence[int], wanted: int, exclude: Callable[[Collection[int]], Collection[int]]
) -> list[int]:
    """The first `wanted` of `rows` that `exclude` lets through, asking it about a few more rows than needed at
    a time (the leak check hashes images, so it sees only the rows that may be taken)."""
    picked: list[int] = []
    start = 0
    while len(picked) < wanted and start < len(rows):
        batch = rows[start : start + max(8, 2 * (wanted - len(picked)))]
        start += len(batch)
        excluded = set(exclude(batch))
        picked += [i for i in batch if i not in excluded][: wanted - len(picked)]
    return picked


def _explore_candidate(index: int, targets: np.ndarray | None, pool_vectors: np.ndarray | None) -> Candidate:
    if targets is None or pool_vectors is None or not len(targets):
        return Candidate(pool_index=index, target_index=0, similarity=float("nan"), rule=RULE_EXPLORE)
    sims = np.asarray(targets, dtype=np.float32) @ np.asarray(pool_vectors[index], dtype=np.float32)
    best = int(np.argmax(sims))
    return Candidate(pool_index=index, target_index=best, similarity=float(sims[best]), rule=RULE_EXPLORE)
