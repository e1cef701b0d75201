"""Tests of k-NN mining: candidate selection, leak exclusion, mined rows and the stage's evidence files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aoi_pipeline.core.dataset import read_csv_table, read_dataset_csv
from aoi_pipeline.core.leakage import CsvInRoot
from aoi_pipeline.core.mining import (
    ALREADY_MINED,
    BELOW_MIN_SIMILARITY,
    EXCLUDED_LEAK,
    KEPT,
    Candidate,
    MiningRun,
    Selection,
    leak_exclusions,
    mined_rows,
    pool_dataset_rows,
    pool_keys,
    select,
    write_mining_outputs,
)
from aoi_pipeline.core.mining_ledger import MiningLedger
from aoi_pipeline.core.mining_pool import resolve_mining_pool
from aoi_pipeline.core.stage_artifacts import STAGE_FIELDS
from aoi_pipeline.errors import ConfigError, DatasetError
from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

POOL = "augmentation/mining_pool/mining_pool.csv"
LIGHT = ("SolderLight",)


# ------------------------------------------------------------------------------------------- selection

KEYS = [f"b{i}/test/T00_SolderLight.png" for i in range(8)]


def test_select_keeps_each_pool_row_once_with_its_best_similarity_and_counts_every_cut():
    indices = np.array([[0, 1, 2, 3], [1, 4, 5, 6]])
    sims = np.array([[0.96875, 0.9375, 0.875, 0.5], [0.984375, 0.96875, 0.9375, 0.90625]], dtype=np.float32)
    selection = select(
        indices,
        sims,
        min_similarity=0.90625,
        excluded_pool_indices={6, 2},
        history={KEYS[4]},
        pool_keys=KEYS,
    )
    # Pool row 1 is near both targets: one candidate, similarity 0.984375 from target 1.
    assert selection.kept == (Candidate(1, 1, 0.984375), Candidate(0, 0, 0.96875), Candidate(5, 1, 0.9375))
    assert selection.candidate_count == 7
    # Rows 2 and 3 fall below 0.90625 (row 2 is also excluded: the similarity cut is counted first).
    assert (selection.rejected_by_similarity, selection.already_mined, selection.excluded_leak) == (2, 1, 1)
    assert selection.similarity_threshold == 0.90625
    decided = {candidate.pool_index: outcome for candidate, outcome in selection.decisions}
    assert decided == {
        0: KEPT,
        1: KEPT,
        2: BELOW_MIN_SIMILARITY,
        3: BELOW_MIN_SIMILARITY,
        4: ALREADY_MINED,
        5: KEPT,
        6: EXCLUDED_LEAK,
    }


def test_a_similarity_equal_to_the_threshold_is_kept():
    selection = select(
        np.array([[0, 1]]),
        np.array([[0.9, 0.8999]], dtype=np.float32),
        min_similarity=0.9,
        excluded_pool_indices=set(),
        history=set(),
        pool_keys=KEYS,
    )
    assert [c.pool_index for c in selection.kept] == [0]
    assert selection.rejected_by_similarity == 1


def test_two_pool_rows_naming_the_same_file_are_one_candidate():
    keys = ["b1/test/T00.png", "b1\\test\\.\\T00.png", "b2/test/T00.png"]
    selection = select(
        np.array([[1, 0, 2]]),
        np.array([[0.99, 0.98, 0.97]], dtype=np.float32),
        min_similarity=0.5,
        excluded_pool_indices=set(),
        history=set(),
        pool_keys=keys,
    )
    assert [c.pool_index for c in selection.kept] == [1, 2]
    assert selection.candidate_count == 2


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 5).flatmap(
        lambda k: st.lists(
            st.lists(st.tuples(st.integers(0, 7), st.integers(0, 8)), min_size=k, max_size=k), min_size=1, max_size=6
        )
    ),
    st.integers(0, 8),
    st.sets(st.integers(0, 7)),
    st.sets(st.integers(0, 7)),
)
def test_select_counts_add_up_and_respect_every_rule(pairs, threshold_eighths, excluded, mined):
    indices = np.array([[index for index, _ in row] for row in pairs])
    sims = np.array([[eighths / 8 for _, eighths in row] for row in pairs], dtype=np.float32)
    threshold = threshold_eighths / 8
    selection = select(
        indices,
        sims,
        min_similarity=threshold,
        excluded_pool_indices=excluded,
        history={KEYS[i] for i in mined},
        pool_keys=KEYS,
    )
    best = {}
    for index, sim in zip(indices.ravel().tolist(), sims.ravel().tolist(), strict=True):
        best[index] = max(best.get(index, -2.0), sim)
    assert selection.candidate_count == len(best)
    total = len(selection.kept) + selection.rejected_by_similarity + selection.already_mined + selection.excluded_leak
    assert total == selection.candidate_count
    assert selection.rejected_by_similarity == sum(sim < threshold for sim in best.values())
    expected_kept = {i for i, sim in best.items() if sim >= threshold and i not in mined and i not in excluded}
    assert [c.pool_index for c in selection.kept] == sorted(expected_kept, key=lambda i: (-best[i], i))
    assert all(c.similarity == best[c.pool_index] for c in selection.kept)


def test_select_refuses_a_threshold_outside_the_cosine_range():
    with pytest.raises(ConfigError, match=r"mining_filter\.min_similarity"):
        select(
            np.zeros((1, 1), int),
            np.ones((1, 1)),
            min_similarity=1.5,
            excluded_pool_indices=set(),
            history=set(),
            pool_keys=KEYS,
        )


# --------------------------------------------------------------------------------------------- leakage


def test_pool_rows_that_are_validation_samples_in_another_coordinate_system_are_excluded(ws):
    pool_rows = [ws.sample("b1", "T00"), ws.sample("b1", "T01", "spur"), ws.sample("b2", "T00")]
    pool = resolve_mining_pool(ws.csv(POOL, pool_rows), images_root=ws.images)
    # The validation CSV is workspace-relative (images/ prefix) and spells a path with a redundant segment.
    validation_rows = [{**pool_rows[1], "input_path": "images/b1/./test", "golden_path": "images/b1/golden"}]
    validation = CsvInRoot(read_dataset_csv(ws.csv("val.csv", validation_rows)), ws.root)
    assert leak_exclusions(pool, protected=[validation], lights=LIGHT, image_ext=".jpg") == {1}


def test_a_byte_identical_copy_under_another_name_is_excluded_only_by_content(ws):
    kpi_row = ws.sample("k1", "T05", "open")
    ws.image("copied/test/X99_SolderLight.jpg", (ws.images / "k1/test/T05_SolderLight.jpg").read_bytes())
    ws.image("copied/golden/X99_SolderLight.jpg")
    pool_rows = [
        {"input_path": "copied/test", "golden_path": "copied/golden", "label": "open", "object_name": "X99"},
        ws.sample("b2", "T00"),
    ]
    pool = resolve_mining_pool(ws.csv(POOL, pool_rows), images_root=ws.images)
    kpi = CsvInRoot(read_dataset_csv(ws.csv("kpi/testing_set.csv", [kpi_row])), ws.images)
    assert leak_exclusions(pool, protected=[kpi], lights=LIGHT, image_ext=".jpg") == {0}
    assert leak_exclusions(pool, protected=[kpi], lights=LIGHT, image_ext=".jpg", content_hashes=False) == set()
    assert leak_exclusions(pool, protected=[kpi], lights=LIGHT, image_ext=".jpg", candidates=[1]) == set()


def test_pool_rows_of_other_samples_are_never_excluded(ws):
    pool = resolve_mining_pool(ws.csv(POOL, [ws.sample("b1", "T00"), ws.sample("b1", "T01")]), images_root=ws.images)
    # Same golden folder and object names, other boards: not the same sample.
    validation = CsvInRoot(read_dataset_csv(ws.csv("val.csv", [ws.sample("b9", "T00")])), ws.images)
    assert leak_exclusions(pool, protected=[validation], lights=LIGHT, image_ext=".jpg") == set()


# ------------------------------------------------------------------------------------------ mined rows


@pytest.fixture(scope="module")
def synth_ws(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "ws"
    write_workspace(root, SynthSpec(boards=12, size=32, seed=1))
    return root


def kept_selection(indices: list[int]) -> Selection:
    kept = tuple(Candidate(pool_index=i, target_index=n, similarity=0.95) for n, i in enumerate(indices))
    return Selection(
        kept=kept,
        candidate_count=len(kept),
        rejected_by_similarity=0,
        already_mined=0,
        excluded_leak=0,
        similarity_threshold=0.9,
        decisions=tuple((c, KEPT) for c in kept),
    )


def test_mined_rows_are_workspace_relative_and_open_existing_images(synth_ws):
    pool = resolve_mining_pool(synth_ws / POOL, images_root=synth_ws / "images", image_ext=".png")
    chosen = [0, 5, len(pool.rows) - 1]
    rows = mined_rows(pool, kept_selection(chosen))
    assert len(rows) == 3
    for row, index in zip(rows, chosen, strict=True):
        source = pool.rows[index]
        for column in ("input_path", "golden_path"):
            assert row[column] == f"images/{source[column]}"
            assert (synth_ws / row[column] / f"{row['object_name']}_SolderLight.png").is_file()
        assert (row["label"], row["boardname"], row["pool_row"]) == (
            source["label"],
            source["boardname"],
            str(index + 1),
        )
    assert rows[1]["target_row"] == "2"


def test_mined_rows_normalise_labels_and_refuse_rows_without_golden(ws):
    rows = [ws.sample("b1", "T00", " Pass "), ws.sample("b1", "T01", "Spur ")]
    pool = resolve_mining_pool(ws.csv(POOL, rows), images_root=ws.images)
    assert [row["label"] for row in mined_rows(pool, kept_selection([0, 1]))] == ["PASS", "spur"]
    ws.image("flat/T02_SolderLight.jpg")
    flat = resolve_mining_pool(
        ws.csv("flat.csv", [{"filepath": "flat/T02_SolderLight.jpg", "label": "open"}], ("filepath", "label")),
        images_root=ws.images,
    )
    with pytest.raises(DatasetError, match="has no golden_path"):
        mined_rows(flat, kept_selection([0]))


def test_pool_dataset_rows_are_image_root_relative(ws):
    pool = resolve_mining_pool(ws.csv(POOL, [ws.sample("b1", "T00", prefix="images/")]), images_root=ws.images)
    assert pool_dataset_rows(pool) == [
        {"input_path": "b1/test", "golden_path": "b1/golden", "label": "PASS", "object_name": "T00"}
    ]
    assert pool_keys(pool) == ("b1/test/T00_SolderLight.jpg",)


# --------------------------------------------------------------------------------------------- outputs


def test_write_mining_outputs_writes_consistent_evidence_for_the_state_commit(synth_ws, tmp_path):
    pool = resolve_mining_pool(synth_ws / POOL, images_root=synth_ws / "images", image_ext=".png")
    keys = pool_keys(pool)
    ledger = MiningLedger(tmp_path / "mining_history.json")
    ledger.record(1, [keys[3]], summary={})
    indices = np.array([[3, 4, 5], [4, 6, 7]])
    sims = np.array([[0.99, 0.98, 0.5], [0.97, 0.96, 0.95]], dtype=np.float32)
    selection = select(
        indices,
        sims,
        min_similarity=0.9,
        excluded_pool_indices={7},
        history=ledger.mined_keys(before_iteration=2),
        pool_keys=keys,
    )
    rows = mined_rows(pool, selection)
    run = MiningRun(iteration=2, target_count=2, embedding_dim=8, top_k=3, timings={"knn_topk": 0.25})
    paths = write_mining_outputs(tmp_path / "out", run=run, pool=pool, selection=selection, mined=rows, ledger=ledger)
    assert set(paths) <= set(STAGE_FIELDS["data_mining"][0])
    assert all(path.stat().st_size > 0 for path in paths.values())
    summary = read_csv_table(paths["mining_summary"], required_columns=()).rows
    assert summary == (
        {
            "candidate_count": "5",
            "kept_count": "2",
            "rejected_count": "1",
            "similarity_threshold": "0.9",
            "already_mined": "1",
            "excluded_leak": "1",
            "below_target_cut": "0",
            "over_pool_budget": "0",
        },
    )
    mined = read_dataset_csv(paths["mining_mined_csv"]).rows
    assert [row["pool_row"] for row in mined] == ["5", "7"]
    decisions = [row["decision"] for row in read_csv_table(paths["mining_candidate_csv"], required_columns=()).rows]
    assert sorted(decisions) == sorted([KEPT, KEPT, ALREADY_MINED, EXCLUDED_LEAK, BELOW_MIN_SIMILARITY])
    history = json.loads(paths["mining_history_summary"].read_text())
    assert (history["history_count_before"], history["selected_count"], history["cumulative_unique_count"]) == (1, 2, 3)
    log = paths["mining_knn_log"].read_text()
    assert "unique candidates: 5" in log and "time knn_topk: 0.250 s" in log
    assert "kept: 2\n" in log  # before the selection rules, no rule named


def test_the_mining_evidence_names_the_rule_that_kept_each_row(synth_ws, tmp_path):
    pool = resolve_mining_pool(synth_ws / POOL, images_root=synth_ws / "images", image_ext=".png")
    indices, sims = np.array([[3, 4, 5]]), np.array([[0.99, 0.98, 0.97]], dtype=np.float32)
    selection = select(
        indices, sims, min_similarity=0.0, excluded_pool_indices=(), history=(), pool_keys=pool_keys(pool)
    )
    ruled = dataclasses.replace(
        selection,
        kept=(
            dataclasses.replace(selection.kept[0], rule="neighbour"),
            dataclasses.replace(selection.kept[1], rule="explore"),
            dataclasses.replace(selection.kept[2], rule="explore"),
        ),
    )
    ruled = dataclasses.replace(ruled, decisions=tuple((c, KEPT) for c in ruled.kept))
    ledger = MiningLedger(tmp_path / "mining_history.json")
    run = MiningRun(iteration=1, target_count=1, embedding_dim=8, top_k=3)
    rows = mined_rows(pool, ruled)
    paths = write_mining_outputs(tmp_path / "out", run=run, pool=pool, selection=ruled, mined=rows, ledger=ledger)
    assert "kept: 3 (1 by neighbour, 2 by explore)" in paths["mining_knn_log"].read_text()
    candidates = read_csv_table(paths["mining_candidate_csv"], required_columns=()).rows
    assert [row["rule"] for row in candidates] == ["neighbour", "explore", "explore"]


def test_an_empty_selection_still_writes_a_header_only_mined_csv(ws, tmp_path):
    pool = resolve_mining_pool(ws.csv(POOL, [ws.sample("b1", "T00")]), images_root=ws.images)
    selection = select(
        np.array([[0]]),
        np.array([[0.1]], dtype=np.float32),
        min_similarity=0.9,
        excluded_pool_indices=set(),
        history=set(),
        pool_keys=pool_keys(pool),
    )
    run = MiningRun(iteration=1, target_count=1, embedding_dim=4, top_k=5)
    ledger = MiningLedger(tmp_path / "mining_history.json")
    paths = write_mining_outputs(tmp_path / "out", run=run, pool=pool, selection=selection, mined=[], ledger=ledger)
    assert read_dataset_csv(paths["mining_mined_csv"]).rows == ()
    assert "lower it" in json.loads(paths["mining_history_summary"].read_text())["recommendation"]
