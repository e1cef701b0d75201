"""Tests of k-NN mining: exact chunked top-k, candidate selection, the run ledger, leak exclusion, mined rows."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aoi_pipeline.core.dataset import read_csv_table, read_dataset_csv, write_dataset_csv
from aoi_pipeline.core.leakage import CsvInRoot
from aoi_pipeline.core.mining import (
    ALREADY_MINED,
    BELOW_MIN_SIMILARITY,
    EXCLUDED_LEAK,
    KEPT,
    Candidate,
    MiningLedger,
    MiningRun,
    Selection,
    knn_topk,
    leak_exclusions,
    load_embeddings,
    mined_rows,
    pool_dataset_rows,
    pool_keys,
    select,
    write_mining_outputs,
)
from aoi_pipeline.core.mining_pool import resolve_mining_pool
from aoi_pipeline.core.stage_artifacts import STAGE_FIELDS
from aoi_pipeline.errors import ConfigError, DatasetError, StateError
from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

POOL = "augmentation/mining_pool/mining_pool.csv"
LIGHT = ("SolderLight",)


def brute_force_topk(targets: np.ndarray, pool: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The full similarity matrix sorted per row by (similarity desc, pool index asc)."""
    sims = targets @ pool.T
    order = np.lexsort((np.broadcast_to(np.arange(pool.shape[0]), sims.shape), -sims), axis=1)[:, :k]
    return order, np.take_along_axis(sims, order, axis=1)


# ------------------------------------------------------------------------------------------------ k-NN


@st.composite
def knn_cases(draw):
    """Small-integer vectors: every dot product is exact in float32 whatever the summation order, and ties
    are common, so the chunked result must equal the full-matrix sort bit for bit."""
    targets, pool, dim = draw(st.integers(0, 5)), draw(st.integers(1, 30)), draw(st.integers(1, 4))
    values = st.integers(-2, 2)
    t = draw(st.lists(st.lists(values, min_size=dim, max_size=dim), min_size=targets, max_size=targets))
    p = draw(st.lists(st.lists(values, min_size=dim, max_size=dim), min_size=pool, max_size=pool))
    k = draw(st.integers(1, 8))
    chunk = draw(st.integers(1, pool + 1))
    as_array = lambda rows: np.array(rows, dtype=np.float32).reshape(len(rows), dim)  # noqa: E731
    return as_array(t), as_array(p), k, chunk


@settings(max_examples=300, deadline=None)
@given(knn_cases())
def test_knn_topk_equals_the_brute_force_sort_for_every_chunk_size(case):
    targets, pool, k, chunk = case
    indices, sims = knn_topk(targets, pool, k=k, chunk_rows=chunk)
    expected_indices, expected_sims = brute_force_topk(targets, pool, min(k, pool.shape[0]))
    assert indices.dtype == np.int64 and sims.dtype == np.float32
    np.testing.assert_array_equal(indices, expected_indices)
    np.testing.assert_array_equal(sims, expected_sims)


def test_knn_topk_on_unit_vectors_returns_the_true_nearest_neighbours():
    rng = np.random.default_rng(7)
    targets = rng.standard_normal((20, 16)).astype(np.float32)
    pool = rng.standard_normal((500, 16)).astype(np.float32)
    targets /= np.linalg.norm(targets, axis=1, keepdims=True)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    indices, sims = knn_topk(targets, pool, k=5, chunk_rows=64)
    full = targets.astype(np.float64) @ pool.T.astype(np.float64)
    np.testing.assert_allclose(sims, np.sort(full, axis=1)[:, ::-1][:, :5], atol=1e-5)
    np.testing.assert_allclose(np.take_along_axis(full, indices, axis=1), sims, atol=1e-5)
    assert (np.diff(sims, axis=1) <= 0).all()


def test_identical_pool_vectors_go_to_the_lowest_pool_indices():
    targets = np.array([[1.0, 0.0]], dtype=np.float32)
    pool = np.tile(np.array([[1.0, 0.0]], dtype=np.float32), (10, 1))
    pool[2] = [0.0, 1.0]
    indices, sims = knn_topk(targets, pool, k=3, chunk_rows=4)
    assert indices.tolist() == [[0, 1, 3]]
    assert sims.tolist() == [[1.0, 1.0, 1.0]]


def test_k_larger_than_the_pool_returns_every_pool_row():
    indices, _ = knn_topk(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32)[::-1], k=5, chunk_rows=1)
    assert indices.tolist() == [[1, 0], [0, 1]]


def test_knn_topk_refuses_mismatched_dimensions_and_non_finite_vectors():
    with pytest.raises(DatasetError, match="dim 3 but pool embeddings dim 2"):
        knn_topk(np.ones((1, 3), np.float32), np.ones((4, 2), np.float32), k=1)
    pool = np.ones((4, 2), np.float32)
    pool[3, 1] = np.nan
    with pytest.raises(DatasetError) as excinfo:
        knn_topk(np.ones((1, 2), np.float32), pool, k=1, chunk_rows=2)
    assert excinfo.value.problems[0].where == "pool embeddings: vector 3"


# ------------------------------------------------------------------------------------------ embeddings


def write_embeddings(folder: Path, vectors: np.ndarray, rows: list[dict[str, str]]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "embeddings.npy", vectors)
    indexed = [{"row_index": str(i), **row} for i, row in enumerate(rows)]
    columns = ["row_index", *rows[0]] if rows else ["row_index"]
    write_dataset_csv(folder / "embeddings_index.csv", columns, indexed)
    return folder / "embeddings.npy", folder / "embeddings_index.csv"


def sample_rows(count: int) -> list[dict[str, str]]:
    return [
        {"input_path": f"b{i}/test", "golden_path": f"b{i}/golden", "label": "PASS", "object_name": "T00"}
        for i in range(count)
    ]


def test_load_embeddings_re_normalises_and_keeps_the_csv_rows(tmp_path):
    vectors = np.array([[3.0, 4.0], [0.0, -2.0], [1.0, 1.0]], dtype=np.float64)
    npy, index = write_embeddings(tmp_path, vectors, sample_rows(3))
    embeddings = load_embeddings(npy, index, expect_rows=sample_rows(3))
    assert embeddings.vectors.dtype == np.float32 and embeddings.dim == 2 and len(embeddings) == 3
    s = 1 / np.sqrt(2)
    np.testing.assert_allclose(embeddings.vectors, [[0.6, 0.8], [0.0, -1.0], [s, s]], rtol=1e-6)
    assert embeddings.rows[1] == sample_rows(3)[1]
    assert embeddings.columns == ("input_path", "golden_path", "label", "object_name")


def test_load_embeddings_names_the_file_and_vector_holding_nan(tmp_path):
    vectors = np.ones((3, 4), dtype=np.float32)
    vectors[2, 1] = np.nan
    npy, index = write_embeddings(tmp_path, vectors, sample_rows(3))
    with pytest.raises(DatasetError) as excinfo:
        load_embeddings(npy, index)
    assert excinfo.value.problems[0].where == f"{npy}: vector 2 (row_index 2)"
    assert "NaN" in excinfo.value.problems[0].what


def test_load_embeddings_refuses_a_row_count_mismatch(tmp_path):
    npy, index = write_embeddings(tmp_path, np.ones((3, 4), dtype=np.float32), sample_rows(2))
    with pytest.raises(DatasetError, match=r"has 2 data rows but .* holds 3 vectors"):
        load_embeddings(npy, index)


def test_load_embeddings_refuses_rows_of_another_csv_or_order(tmp_path):
    npy, index = write_embeddings(tmp_path, np.ones((3, 4), dtype=np.float32), sample_rows(3))
    with pytest.raises(DatasetError, match="input_path is 'b0/test', expected 'b1/test'"):
        load_embeddings(npy, index, expect_rows=list(reversed(sample_rows(3)))[1:] + sample_rows(1))
    text = index.read_text().replace("\n0,", "\n7,", 1)
    index.write_text(text)
    with pytest.raises(DatasetError, match="is '7', expected 0"):
        load_embeddings(npy, index)


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


# ---------------------------------------------------------------------------------------------- ledger


def test_the_ledger_keeps_an_earlier_iteration_s_picks_out_of_the_next(tmp_path):
    ledger = MiningLedger(tmp_path / "mining_history.json")
    assert ledger.mined_keys() == set()
    ledger.record(1, [KEYS[0], KEYS[1]], summary={"selected_count": 2})
    indices = np.array([[0, 1, 2]])
    sims = np.ones((1, 3), dtype=np.float32)
    selection = select(
        indices, sims, min_similarity=0.9, excluded_pool_indices=set(), history=ledger.mined_keys(), pool_keys=KEYS
    )
    assert [c.pool_index for c in selection.kept] == [2]
    assert selection.already_mined == 2
    ledger.record(2, [KEYS[2]], summary={})
    assert ledger.mined_keys() == {KEYS[0], KEYS[1], KEYS[2]}
    assert ledger.mined_keys(before_iteration=2) == {KEYS[0], KEYS[1]}
    data = json.loads(ledger.path.read_text())
    assert data["cumulative_unique_count"] == 3
    assert [entry["iteration"] for entry in data["iterations"]] == [1, 2]


def test_a_skipped_iteration_or_a_gap_does_not_break_later_iterations(tmp_path):
    skipped = MiningLedger(tmp_path / "a.json")
    skipped.record(1, [KEYS[0]], summary={})
    skipped.record(2, [], skipped=True, summary={"reason": "no routed mining rows"})
    skipped.record(3, [KEYS[1]], summary={})
    assert [(e["iteration"], e["skipped"]) for e in skipped.entries()] == [(1, False), (2, True), (3, False)]
    gap = MiningLedger(tmp_path / "b.json")
    gap.record(3, [KEYS[1]], summary={})  # iterations 1 and 2 never mined and were never recorded
    assert gap.mined_keys() == {KEYS[1]}


def test_re_recording_the_same_iteration_is_a_no_op(tmp_path):
    ledger = MiningLedger(tmp_path / "mining_history.json")
    ledger.record(1, [KEYS[0], KEYS[1]], summary={"took_s": 1.0})
    before = ledger.path.read_bytes()
    ledger.record(1, [KEYS[1], KEYS[0].replace("/", "\\")], summary={"took_s": 2.0})
    assert ledger.path.read_bytes() == before
    # A resumed stage selects against the history before its own iteration, so it selects the same rows.
    assert ledger.mined_keys(before_iteration=1) == set()


def test_conflicting_or_repeated_selections_raise_and_leave_the_ledger_unchanged(tmp_path):
    ledger = MiningLedger(tmp_path / "mining_history.json")
    ledger.record(1, [KEYS[0]], summary={})
    ledger.record(3, [KEYS[1]], summary={})
    before = ledger.path.read_bytes()
    with pytest.raises(StateError, match="already recorded with 1 files"):
        ledger.record(3, [KEYS[2]], summary={})
    with pytest.raises(StateError, match="already mined in iteration 1"):
        ledger.record(4, [KEYS[3], KEYS[0]], summary={})
    with pytest.raises(StateError, match="comes after iteration 3"):
        ledger.record(2, [KEYS[5]], summary={})
    with pytest.raises(StateError, match="marked skipped"):
        ledger.record(4, [KEYS[4]], skipped=True, summary={})
    with pytest.raises(StateError, match="more than once"):
        ledger.record(4, [KEYS[4], KEYS[4]], summary={})
    assert ledger.path.read_bytes() == before


def test_a_tampered_ledger_is_a_state_error(tmp_path):
    ledger = MiningLedger(tmp_path / "mining_history.json")
    ledger.record(1, [KEYS[0]], summary={})
    data = json.loads(ledger.path.read_text())
    data["iterations"].append({**data["iterations"][0], "iteration": 2})
    data["cumulative_unique_count"] = 2
    ledger.path.write_text(json.dumps(data))
    with pytest.raises(StateError, match="already selected by iteration 1"):
        ledger.mined_keys()
    ledger.path.write_text("{not json")
    with pytest.raises(StateError, match="not a readable JSON ledger"):
        ledger.mined_keys()


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
