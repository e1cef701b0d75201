"""What changed since the last night, by content; and drift of the deployed model on newly labelled rows."""

from __future__ import annotations

from pathlib import Path

from aoi_pipeline.core.nightly_changes import (
    Snapshot,
    compare,
    content_hash,
    drift_on_new_rows,
    labelled_set_hashes,
    read_snapshot,
    row_key,
    write_snapshot,
)


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_the_content_hash_follows_bytes_and_label_not_names(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.png", b"pixels")
    renamed = _write(tmp_path / "other" / "b.png", b"pixels")
    assert content_hash("PASS", [a]) == content_hash("PASS", [renamed])
    assert content_hash("PASS", [a]) != content_hash("short", [a])
    assert content_hash("PASS", [a]) != content_hash("PASS", [_write(tmp_path / "c.png", b"pixelz")])


def test_labelled_rows_are_keyed_by_identity_and_hashed_by_content(tmp_path: Path) -> None:
    images = tmp_path / "images"
    for side in ("test", "golden"):
        _write(images / f"b1/{side}/T00_SolderLight.png", side.encode())
    csv = tmp_path / "kpi.csv"
    csv.write_text("input_path,golden_path,label,object_name\n./b1/test,b1/golden/,PASS,T00\n")
    hashes = labelled_set_hashes(csv, images_dir=images, lights=("SolderLight",), image_ext=".png")
    assert list(hashes) == [row_key({"input_path": "b1/test", "golden_path": "b1/golden", "object_name": "T00"})]
    _write(images / "b1/test/T00_SolderLight.png", b"re-shot")
    assert labelled_set_hashes(csv, images_dir=images, lights=("SolderLight",), image_ext=".png") != hashes
    assert labelled_set_hashes(tmp_path / "absent.csv", images_dir=images, lights=("x",), image_ext=".png") == {}


def test_compare_splits_appended_changed_and_removed_and_new_pool_content() -> None:
    before = Snapshot({"kpi": {"r1": "h1", "r2": "h2"}, "confirm": {"c1": "x"}}, frozenset({"p1", "p2"}))
    after = Snapshot({"kpi": {"r1": "h1", "r2": "h2b", "r3": "h3"}, "confirm": {}}, frozenset({"p1", "p2", "p3"}))
    changes = compare(before, after)
    assert changes.new_pool == {"p3"}
    assert (changes.appended["kpi"], changes.changed["kpi"], changes.removed["confirm"]) == (("r3",), ("r2",), ("c1",))
    assert changes.rows_added() == {"pool": 1, "validation": 0, "kpi": 1, "confirm": 0}
    assert changes.newly_labelled() == {"r3"}
    breaches = changes.breaches()
    assert len(breaches) == 2 and "kpi set: 1 changed, 0 removed" in breaches[0]
    assert not changes.nothing_new
    assert compare(after, after).nothing_new and compare(after, after).breaches() == []


def test_a_pool_row_renamed_is_not_new() -> None:
    before = Snapshot({}, frozenset({"same-content"}))
    assert compare(before, Snapshot({}, frozenset({"same-content"}))).nothing_new


def test_snapshots_round_trip(tmp_path: Path) -> None:
    snapshot = Snapshot({"kpi": {"r1": "h1"}}, frozenset({"p1"}))
    assert read_snapshot(tmp_path) is None
    write_snapshot(tmp_path, snapshot)
    assert read_snapshot(tmp_path) == snapshot


def test_drift_is_a_far_worse_than_recorded_by_more_than_the_spread() -> None:
    scored = [("PASS", "a", 0.9), ("PASS", "b", 0.1), ("PASS", "c", 0.2), ("PASS", "d", 0.7), ("open", "e", 0.95)]
    drift = drift_on_new_rows(scored, threshold=0.5, recorded_far_pct=10.0, spread=5.0)
    assert (drift.far_pct, drift.pass_rows, drift.drifted) == (50.0, 4, True)
    assert "drifted" in drift.describe()
    assert not drift_on_new_rows(scored, threshold=0.5, recorded_far_pct=48.0, spread=5.0).drifted
    unmeasured = drift_on_new_rows([("open", "e", 0.9)], threshold=0.5, recorded_far_pct=1.0, spread=0.0)
    assert unmeasured.far_pct is None and not unmeasured.drifted
