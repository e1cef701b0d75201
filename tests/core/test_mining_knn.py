"""Tests of the mining embeddings and their k-NN: exact chunked top-k against a brute-force sort, loading."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aoi_pipeline.core.dataset import write_dataset_csv
from aoi_pipeline.core.mining_knn import knn_topk, load_embeddings
from aoi_pipeline.errors import DatasetError


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
