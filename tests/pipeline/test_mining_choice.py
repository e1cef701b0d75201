"""The mining stage's rules from the config, and the pool facts they read from the embed output."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from aoi_pipeline.config import DeftSettings
from aoi_pipeline.core.mining_knn import Embeddings
from aoi_pipeline.core.mining_pool import ResolvedPool
from aoi_pipeline.errors import DatasetError, StateError
from aoi_pipeline.pipeline.mining_choice import board_of, pool_facts, pool_scores, rules_of


def embeddings(scores: list[str] | None) -> Embeddings:
    columns = ("input_path", "golden_path", "label", "object_name") + (("siamese_score",) if scores else ())
    rows = tuple(
        {"input_path": f"b{i}/test", "golden_path": f"b{i}/golden", "label": "PASS", "object_name": "T0"}
        | ({"siamese_score": scores[i]} if scores else {})
        for i in range(len(scores or ["x", "y"]))
    )
    return Embeddings(Path("/run/iter1/source_embeddings/embeddings.npy"), np.eye(len(rows), 2), columns, rows)


def test_the_config_keys_become_the_rules_and_the_iteration_seeds_exploration():
    deft = DeftSettings(mining_rank="per_target", mining_max_per_board=3, mining_explore_share=0.1)
    rules = rules_of(SimpleNamespace(deft=deft), "iter2")  # type: ignore[arg-type]
    assert (rules.rank, rules.label_balance, rules.max_per_board, rules.explore_share, rules.seed) == (
        "per_target",
        "pool",
        3,
        0.1,
        2,
    )
    defaults = rules_of(SimpleNamespace(deft=DeftSettings()), "iter1")  # type: ignore[arg-type]
    assert (defaults.rank, defaults.label_balance, defaults.explore_share) == ("uncertainty", "pool", 0.25)


@pytest.mark.parametrize(
    "key", [{"mining_rank": "nearest"}, {"mining_explore_share": 1.0}, {"mining_max_per_board": 0}]
)
def test_invalid_mining_keys_are_refused_by_the_config(key):
    with pytest.raises(ValueError, match=next(iter(key))):
        DeftSettings(**key)


def test_pool_scores_come_from_the_embed_index_and_a_missing_column_names_the_fix():
    np.testing.assert_allclose(pool_scores(embeddings(["0.25", "0.75"])), [0.25, 0.75])
    with pytest.raises(DatasetError, match=r"siamese_score.*mining_rank: per_target"):
        pool_scores(embeddings(None))
    with pytest.raises(DatasetError, match="row 2, column siamese_score"):
        pool_scores(embeddings(["0.25", "nan"]))


def pool(rows: list[dict[str, str]]) -> ResolvedPool:
    return ResolvedPool(Path("/ws/pool.csv"), Path("/ws/images"), tuple(rows[0]), tuple(rows))


def test_pool_facts_mark_pass_rows_boards_and_how_wrong_the_model_is():
    rows = [
        {"label": "PASS", "boardname": "b00041001", "filepath": "b00041001/test/T0.png"},
        {"label": "Open", "boardname": "", "filepath": "b9/test/T1.png"},
    ]
    facts = pool_facts(pool(rows), embeddings(["0.9", "0.2"]), 0.5)
    assert facts.is_pass.tolist() == [True, False]
    assert list(facts.boards) == ["b00041001", "b9/test"]
    np.testing.assert_allclose(facts.weakness, [0.4, 0.3])  # a PASS above and a defect below the threshold
    assert pool_facts(pool(rows), embeddings(None), None).weakness is None
    with pytest.raises(StateError, match="rca_threshold"):
        pool_facts(pool(rows), embeddings(["0.9", "0.2"]), float("nan"))


def test_a_board_is_the_boardname_else_the_test_directory():
    assert board_of({"boardname": " b1 ", "filepath": "x/test/T.png"}) == "b1"
    assert board_of({"filepath": "x/test/T.png"}) == "x/test"
