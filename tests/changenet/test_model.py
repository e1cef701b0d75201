"""The network: shift-tolerant matching, shapes, scores, backbones and configuration rules."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from aoi_pipeline.changenet.model import ChangeNetClassifier, ModelConfig, mean_at_strongest, nearest_in_window


def test_nearest_in_window_matches_a_brute_force_search() -> None:
    generator = torch.Generator().manual_seed(0)
    query = torch.randn(2, 3, 5, 6, generator=generator)
    reference = torch.randn(2, 3, 5, 6, generator=generator)
    matched, distance = nearest_in_window(query, reference, 1)
    padded = F.pad(reference, (1, 1, 1, 1), mode="replicate")
    for b, y, x in itertools.product(range(2), range(5), range(6)):
        candidates = [padded[b, :, y + 1 + dy, x + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)]
        best = min(candidates, key=lambda c: (query[b, :, y, x] - c).square().sum().item())
        assert torch.allclose(matched[b, :, y, x], best)
        assert distance[b, 0, y, x].item() == pytest.approx((query[b, :, y, x] - best).square().mean().item())


def test_a_shift_within_the_window_costs_nothing() -> None:
    reference = torch.randn(1, 4, 12, 12, generator=torch.Generator().manual_seed(1))
    shifted = torch.roll(reference, shifts=(2, -1), dims=(2, 3))
    _, distance = nearest_in_window(shifted, reference, 2)
    assert distance[0, 0, 3:-3, 3:-3].abs().max().item() == pytest.approx(0.0, abs=1e-7)
    _, unaligned = nearest_in_window(shifted, reference, 0)
    assert unaligned[0, 0, 3:-3, 3:-3].mean().item() > 0.5


def test_gradients_reach_both_images() -> None:
    query = torch.randn(1, 2, 4, 4, requires_grad=True)
    reference = torch.randn(1, 2, 4, 4, requires_grad=True)
    _, distance = nearest_in_window(query, reference, 1)
    distance.sum().backward()
    assert query.grad is not None and query.grad.abs().sum() > 0
    assert reference.grad is not None and reference.grad.abs().sum() > 0


def test_mean_at_strongest_averages_each_channel_where_the_strength_peaks() -> None:
    values = torch.arange(2 * 3 * 3, dtype=torch.float32).view(1, 2, 3, 3)  # channel 0: 0..8, channel 1: 9..17
    strength = torch.zeros(1, 1, 3, 3)
    strength[0, 0, 0, 1], strength[0, 0, 2, 2] = 5.0, 7.0  # flat positions 1 and 8
    assert mean_at_strongest(values, strength, 2).tolist() == [[4.5, 13.5]]
    assert mean_at_strongest(values, strength, 1).tolist() == [[8.0, 17.0]]


def _board(background_seed: int, size: int = 64) -> torch.Tensor:
    """A binary 'board': random traces from a seed, as a [1, 1, size, size] image."""
    noise = torch.rand(1, 1, size // 8, size // 8, generator=torch.Generator().manual_seed(background_seed))
    return (F.interpolate(noise, size=(size, size), mode="nearest") > 0.5).float()


def _with_defect(board: torch.Tensor, shape: str) -> torch.Tensor:
    test = board.clone()
    if shape == "blob":
        test[..., 4:10, 4:10] = 1.0  # a 6 px square of extra copper in the empty corner
    else:
        test[..., 6:8, 2:14] = 1.0  # a 2 px by 12 px line of extra copper in the same corner
    return test


@pytest.mark.parametrize("module", ["euclidean", "learnable"])
def test_the_mining_descriptor_follows_the_defect_more_than_the_board(module: str) -> None:
    torch.manual_seed(0)
    model = ChangeNetClassifier(ModelConfig(in_channels=1, difference_module=module, num_scales=3)).eval()
    one, other = _board(1), _board(2)
    one[..., :16, :16], other[..., :16, :16] = 0.0, 0.0  # the same empty corner, where the defects go
    pairs = [(_with_defect(board, shape), board) for board, shape in ((one, "blob"), (other, "blob"), (one, "line"))]
    with torch.no_grad():
        blob_one, blob_other, line_one = (model.describe(test, golden)[0] for test, golden in pairs)
    half = blob_one.shape[0] // 2 if module == "euclidean" else None
    for vector in (blob_one, line_one):
        assert vector.norm().item() == pytest.approx(2**0.5, abs=1e-4)  # two unit halves
    if half is not None:
        assert blob_one[:half].norm().item() == pytest.approx(1.0, abs=1e-4)
    # The same defect on another board is nearer than another defect on the same board.
    assert F.cosine_similarity(blob_one, blob_other, dim=0) > F.cosine_similarity(blob_one, line_one, dim=0)


@pytest.mark.parametrize(
    ("module", "loss", "scales", "embedding"),
    [("learnable", "ce", 4, 2 * 6 * 4), ("learnable", "ce", 2, 2 * 6 * 2), ("euclidean", "contrastive", 1, 16)],
)
def test_outputs_scores_and_embedding_sizes(module: str, loss: str, scales: int, embedding: int) -> None:
    config = ModelConfig(in_channels=2, difference_module=module, num_scales=scales, embed_dec=6, loss=loss)
    model = ChangeNetClassifier(config).eval()
    test, golden = torch.randn(3, 2, 32, 32), torch.randn(3, 2, 32, 32)
    with torch.no_grad():
        head_output, features = model(test, golden)
    assert features.shape == (3, embedding)
    scores = model.scores(head_output)
    assert scores.shape == (3,) and bool(((scores >= 0) & (scores <= 1)).all())
    loss_value = model.loss(head_output, torch.tensor([0, 1, 1]), torch.tensor([1.0, 10.0]))
    assert torch.isfinite(loss_value)


@pytest.mark.parametrize("backbone", ["small", "resnet"])
def test_both_backbones_give_logits_and_an_embedding_of_the_configured_size(backbone: str) -> None:
    config = ModelConfig(in_channels=1, num_scales=3, embed_dec=5, backbone=backbone)
    model = ChangeNetClassifier(config).eval()
    with torch.no_grad():
        head_output, embedding = model(torch.randn(2, 1, 48, 48), torch.randn(2, 1, 48, 48))
    assert head_output.shape == (2, 2) and embedding.shape == (2, 2 * 5 * 3)


def test_the_resnet_backbone_is_the_larger_one() -> None:
    small = ChangeNetClassifier(ModelConfig(in_channels=1, backbone="small"))
    resnet = ChangeNetClassifier(ModelConfig(in_channels=1, backbone="resnet"))
    assert sum(p.numel() for p in resnet.parameters()) > 5 * sum(p.numel() for p in small.parameters())


def test_a_misregistered_copy_of_the_golden_scores_as_a_perfect_match() -> None:
    golden = (torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(4)) > 0.5).float()
    shifted = torch.roll(golden, shifts=(3, -2), dims=(2, 3))
    model = ChangeNetClassifier(ModelConfig(in_channels=1)).eval()
    unregistered = ChangeNetClassifier(ModelConfig(in_channels=1, register_fraction=0.0)).eval()
    unregistered.load_state_dict(model.state_dict())
    with torch.no_grad():
        perfect = model(shifted, shifted)[1]
        assert torch.allclose(model(shifted, golden)[1], perfect, atol=1e-6)
        assert not torch.allclose(unregistered(shifted, golden)[1], perfect, atol=1e-3)


def test_a_checkpoint_of_the_earlier_siamese_layout_is_refused_with_the_reason() -> None:
    stored = ModelConfig(in_channels=1).to_dict()
    del stored["version"], stored["backbone"], stored["register_fraction"]
    with pytest.raises(ValueError, match="layout 1"):
        ModelConfig.from_dict(stored)
    with pytest.raises(ValueError, match="backbone"):
        ModelConfig(in_channels=1, backbone="vit")


def test_learnable_difference_modules_sets_the_compared_scales() -> None:
    one = ChangeNetClassifier(ModelConfig(in_channels=1, num_scales=1))
    four = ChangeNetClassifier(ModelConfig(in_channels=1, num_scales=4))
    assert len(one.differences) == 1 and len(four.differences) == 4
    assert sum(p.numel() for p in one.parameters()) < sum(p.numel() for p in four.parameters())


def test_contrastive_loss_needs_the_euclidean_module() -> None:
    with pytest.raises(ValueError, match="euclidean"):
        ModelConfig(in_channels=1, difference_module="learnable", loss="contrastive")
    assert ModelConfig.from_dict(ModelConfig(in_channels=3).to_dict()) == ModelConfig(in_channels=3)


@pytest.mark.parametrize("difference_module", ["euclidean", "learnable"])
def test_a_pair_equal_to_its_golden_still_has_a_mining_descriptor(difference_module: str) -> None:
    model = ChangeNetClassifier(ModelConfig(in_channels=1, difference_module=difference_module)).eval()
    golden = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    other = torch.rand(3, 1, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        same = model.describe(golden, golden)
        different = model.describe(other, golden)
    # The change half is zero for an unchanged pair; the half of what it looks like keeps cosine similarity defined.
    assert torch.all(same.norm(dim=1) > 0.5)
    assert not torch.allclose(same, different)
