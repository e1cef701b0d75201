"""Mixed image modes: a colour image among grey ones is reported with its file and CSV row."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from aoi_pipeline.core.image_modes import ImageUse, mixed_mode_problems


def _image(path: Path, mode: str) -> ImageUse:
    Image.new(mode, (4, 4)).save(path, format="PNG")
    return ImageUse("train.csv", len(path.stem), str(path))


def test_one_colour_image_among_grey_ones_is_named_with_its_row(tmp_path: Path) -> None:
    uses = [_image(tmp_path / f"{'g' * n}.png", "L") for n in range(1, 5)]
    uses.append(_image(tmp_path / "rgb.png", "RGB"))
    uses.append(_image(tmp_path / "wide.png", "I;16"))

    problems = mixed_mode_problems(uses)

    assert len(problems) == 1
    assert "5 grey and 1 colour images" in problems[0].what
    assert f"{tmp_path / 'rgb.png'} (RGB, train.csv row 3)" in problems[0].what
    assert "convert the colour images to grey" in problems[0].fix


def test_one_mode_throughout_and_unreadable_files_give_no_problem(tmp_path: Path) -> None:
    uses = [_image(tmp_path / "a.png", "RGB"), _image(tmp_path / "b.png", "RGBA")]
    (tmp_path / "broken.png").write_bytes(b"not an image")
    uses.append(ImageUse("train.csv", 9, str(tmp_path / "broken.png")))
    uses.append(ImageUse("train.csv", 9, str(tmp_path / "absent.png")))

    assert mixed_mode_problems(uses) == []
