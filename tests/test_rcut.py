"""R-Cut (glassvit/heads/rcut.py): the cut against the official code, the weighting variants, degenerate graphs.

The parity fixture tests/fixtures/rcut_ncut.safetensors was recorded by running the official `ncut` of
oniu-uin0/R-Cut (pytorch_grad_cam/base_cam.py, scipy's generalised eigh) on fixed synthetic token features:
`python tests/fixtures/record_rcut_ncut.py /path/to/R-Cut` (see that script for the cases).
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glassvit import GlassViTError, zoo
from glassvit.data import DigitScenes
from glassvit.heads.rcut import ABSENT_EDGE, cluster_maps, masked_scores, normalized_cut
from helpers import TINY_IMG, TINY_SWIN, tiny_model

FIXTURE = Path(__file__).parent / "fixtures" / "rcut_ncut.safetensors"
CASES = ("blob", "three", "lowrank", "weighted")


@pytest.fixture(scope="module")
def reference():
    return load_file(str(FIXTURE))


@pytest.fixture(scope="module")
def model():
    return tiny_model("rcut-s16", num_classes=5).eval()


def test_cut_matches_official_ncut_batched_over_images(reference):
    """All recorded cases in one batch: each image's Fiedler vector equals the official one and its own single cut."""
    feats = torch.stack([reference[f"{case}.features"] for case in CASES])
    taus = {reference[f"{case}.tau"].item() for case in CASES}
    for tau in taus:
        batched, _ = normalized_cut(feats, tau)
        for i, case in enumerate(CASES):
            if reference[f"{case}.tau"].item() == tau:
                torch.testing.assert_close(batched[i], reference[f"{case}.fiedler"], rtol=0, atol=1e-4)
    single, _ = normalized_cut(feats[:1], 0.2)
    torch.testing.assert_close(normalized_cut(feats, 0.2)[0][0], single[0], rtol=0, atol=1e-10)


@pytest.mark.parametrize("edges", ["binary", "weighted"])
def test_cut_solves_the_generalised_eigenproblem(reference, edges):
    feats = reference["lowrank.features"][None]
    v, lam = normalized_cut(feats, 0.2, edges)
    unit = torch.nn.functional.normalize(feats[0], dim=-1)
    cos = unit @ unit.T
    a = torch.where(cos > 0.2, cos if edges == "weighted" else torch.ones_like(cos), ABSENT_EDGE).double()
    d = torch.diag(a.sum(-1))
    torch.testing.assert_close((d - a) @ v[0], lam[0] * (d @ v[0]), rtol=0, atol=1e-9)
    torch.testing.assert_close(v[0] @ d @ v[0], torch.tensor(1.0, dtype=torch.float64))
    assert 0 < lam[0] < 1
    seed = v[0].abs().argmax()
    assert v[0, seed] > v[0].mean()  # the reference's orientation


def test_degenerate_graphs_give_defined_maps():
    constant = torch.ones(2, 16, 8)
    constant[1] = 0  # all-zero features: every edge absent
    v, lam = normalized_cut(constant, 0.2, "weighted")
    assert torch.equal(v, torch.zeros_like(v)) and torch.equal(lam, torch.zeros_like(lam))
    # an isolated node: one token orthogonal to all others in an otherwise two-cluster graph
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 6, generator=g)[torch.arange(16) % 2] + 0.1 * torch.randn(16, 6, generator=g)
    feats = torch.cat([feats, torch.zeros(16, 1)], 1)
    feats[5] = 0
    feats[5, -1] = 1.0
    v, lam = normalized_cut(feats[None], 0.2)
    assert torch.isfinite(v).all() and torch.isfinite(lam).all()
    assert v[0].abs().argmax() == 5  # the cheapest cut separates the isolated node


def test_zero_channel_weights_give_a_zero_map():
    """Gradient weights are all zero for a classifier with zero weights: the weighted features are flat."""
    flat = tiny_model("rcut-s16", num_classes=5).eval()
    torch.nn.init.zeros_(flat.head.fc.weight)
    e = flat.explain(torch.randn(2, 3, TINY_IMG, TINY_IMG), weighting="gradient")
    assert torch.equal(e.saliency, torch.zeros_like(e.saliency))
    assert torch.equal(e.details["channel_weights"], torch.zeros_like(e.details["channel_weights"]))


@pytest.mark.parametrize("weighting", ["score", "cosine", "gradient", "none"])
def test_batch_of_one_and_batch_independence(model, weighting):
    x = torch.randn(3, 3, TINY_IMG, TINY_IMG)
    batch = model.explain(x, target=torch.tensor([0, 2, 4]), weighting=weighting, batch_size=5)
    assert batch.method == "rcut"
    assert batch.saliency.shape == (3, TINY_IMG, TINY_IMG)
    assert batch.details["fiedler"].shape == (3, 8, 8) and batch.details["channel_weights"].shape == (3, 48)
    for i in range(3):
        one = model.explain(x[i:i + 1], target=[0, 2, 4][i], weighting=weighting)
        torch.testing.assert_close(one.saliency[0], batch.saliency[i], rtol=0, atol=1e-4)


def test_score_weights_follow_the_reference_scheme(model):
    """One forward per channel: channel map min-max normalised, upsampled, masking the input; softmax of p_t."""
    x = torch.randn(1, 3, TINY_IMG, TINY_IMG)
    e = model.explain(x, target=3, batch_size=7)
    captured = {}
    handle = model.backbone.model.blocks[-1].norm1.register_forward_hook(lambda m, i, o: captured.update(t=o))
    with torch.no_grad():
        model(x)
        handle.remove()
        feats = captured["t"][0, 1:]  # (N,D)
        scores = []
        for c in range(feats.shape[1]):
            grid = feats[:, c].view(1, 1, 8, 8)
            grid = (grid - grid.min()) / (grid.max() - grid.min())
            mask = torch.nn.functional.interpolate(grid, size=(TINY_IMG, TINY_IMG), mode="bilinear")
            mask = (mask - mask.min()) / (mask.max() - mask.min())
            scores.append(model(x * mask).softmax(-1)[0, 3])
    torch.testing.assert_close(e.details["channel_weights"][0], torch.stack(scores).softmax(0), rtol=0, atol=1e-6)


def test_channel_reduction_forwards_fewer_masks(model):
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    seen = []
    handle = model.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    try:
        full = model.explain(x, batch_size=1000)
        n_full, seen[:] = sum(seen), []
        reduced = model.explain(x, num_masks=6, batch_size=1000)
        n_reduced = sum(seen)
    finally:
        handle.remove()
    assert n_full == 2 * 48 and n_reduced == 2 * 6  # masked images through model(); the clean pass is detailed
    for w in reduced.details["channel_weights"]:
        assert len(torch.unique(w)) <= 6
    same = model.explain(x, num_masks=48)
    torch.testing.assert_close(same.saliency, full.saliency, rtol=0, atol=0)


def test_cluster_maps_groups_identical_maps():
    base = torch.rand(2, 3, 10)
    maps = base[:, torch.tensor([0, 1, 2, 0, 1, 2, 2])]  # (2,7,10): three distinct maps, repeated
    groups, centres = cluster_maps(maps, 3)
    for b in range(2):
        assert len(torch.unique(groups[b])) == 3
        assert groups[b, 0] == groups[b, 3] and groups[b, 1] == groups[b, 4] and groups[b, 2] == groups[b, 6]
        torch.testing.assert_close(centres[b, groups[b]], maps[b])


def test_masked_scores_batch_across_images(model):
    """Masks of all images share the forward queue; every score is the masked image's own p_t (or p_t / ||p||)."""
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    maps = torch.rand(2, 5, 64)
    target = torch.tensor([1, 4])
    with torch.no_grad():
        score = masked_scores(model, x, maps, (8, 8), target, "score", 3)
        cosine = masked_scores(model, x, maps, (8, 8), target, "cosine", 100)
        for b in range(2):
            for m in range(5):
                mask = torch.nn.functional.interpolate(maps[b, m].view(1, 1, 8, 8), size=(TINY_IMG, TINY_IMG),
                                                       mode="bilinear")
                mask = (mask - mask.min()) / (mask.max() - mask.min())
                p = model(x[b:b + 1] * mask).softmax(-1)[0]
                torch.testing.assert_close(score[b, m], p[target[b]], rtol=0, atol=1e-6)
                torch.testing.assert_close(cosine[b, m], p[target[b]] / p.norm(), rtol=0, atol=1e-6)


def test_frozen_model_gradient_mode():
    frozen = tiny_model("rcut-s16", num_classes=5).eval().requires_grad_(False)
    e = frozen.explain(torch.randn(2, 3, TINY_IMG, TINY_IMG), weighting="gradient")
    assert torch.isfinite(e.saliency).all() and e.saliency.amax((1, 2)).gt(0).all()


def test_feature_layer_option(model):
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    first = model.explain(x, layer=0, weighting="none")
    last = model.explain(x, weighting="none")
    assert not torch.allclose(first.details["fiedler"], last.details["fiedler"])
    with pytest.raises(GlassViTError, match="block index 5 out of range"):
        model.explain(x, layer=5)


def test_swin_backbone_fails_clearly():
    swin = zoo.load("rcut-s16", num_classes=5, backbone="swin_tiny_patch4_window7_224", backbone_kwargs=TINY_SWIN)
    with pytest.raises(GlassViTError, match="not available"):
        swin.explain(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("kwargs, match", [
    (dict(weighting="scores"), "did you mean: score"),
    (dict(edges="binry"), "did you mean: binary"),
    (dict(tau=1.5), "tau"),
    (dict(batch_size=0), "batch_size"),
    (dict(num_masks=0), "num_masks"),
])
def test_bad_options(model, kwargs, match):
    with pytest.raises(GlassViTError, match=match):
        model.explain(torch.randn(1, 3, TINY_IMG, TINY_IMG), **kwargs)


def test_zoo_entries_default_to_rcut():
    for name in ("rcut-s16", "rcut-b16"):
        spec = zoo.get_spec(name)
        assert spec.head == "linear" and spec.explainer == "rcut" and "Niu" in spec.paper
    m = tiny_model("rcut-b16", num_classes=3, explainer_kwargs=dict(weighting="gradient"))
    e = m.explain(torch.randn(1, 3, TINY_IMG, TINY_IMG))
    assert e.method == "rcut" and "fiedler" in e.details
    assert m.explain(torch.randn(1, 3, TINY_IMG, TINY_IMG), method="native").method == "native"


@pytest.fixture(scope="module")
def two_digit_scene():
    """The first DigitScenes "multi" test scene with exactly two digits: image (1,3,32,32), the two digit classes,
    and the per-token coverage of each digit (64,10)."""
    data = DigitScenes("test", "multi", size=TINY_IMG, num_scenes=20, grid=(8, 8))
    item = next(data[i] for i in range(len(data)) if data[i]["label"].sum() == 2)
    return item["image"][None], item["label"].nonzero().flatten().tolist(), item["spatial_concepts"].nan_to_num()


@pytest.fixture(scope="module")
def digit_readout(two_digit_scene):
    """Constructed case: a tiny ten-class model whose linear read-out of mean-pooled tokens responds to the
    scene's two digits. Class c's weight is the direction from the mean token to the mean token on digit c (x50);
    the bias makes a half-dark image score 0, because masked images are darker on average and would otherwise
    push every probability to 0 (uniform Score-CAM weights)."""
    image, digits, cover = two_digit_scene
    model = tiny_model("rcut-s16", num_classes=10, head_kwargs=dict(pool="avg")).eval()
    with torch.no_grad():
        tokens = model.forward_detailed(image).tokens.patches[0]
        dark = model.forward_detailed(image * 0.5).tokens.patches[0]
        model.head.fc.weight.zero_()
        for c in digits:
            d = tokens[cover[:, c] > 0.2].mean(0) - tokens.mean(0)
            model.head.fc.weight[c] = 50 * d / d.norm()
        model.head.fc.bias.copy_(-model.head.fc.weight @ dark.mean(0))
    return model


@pytest.mark.parametrize("weighting", ["score", "cosine", "gradient"])
def test_each_weighting_is_class_specific(two_digit_scene, digit_readout, weighting):
    """Explaining the scene's two digits gives different channel weights and different maps; the class-agnostic
    mode gives the same map for both. tau=0.8: the random backbone's tokens are alike (cosine 0.5-0.95)."""
    image, (a, b), _ = two_digit_scene
    ea = digit_readout.explain(image, target=a, weighting=weighting, tau=0.8)
    eb = digit_readout.explain(image, target=b, weighting=weighting, tau=0.8)
    assert not torch.allclose(ea.details["channel_weights"], eb.details["channel_weights"])
    assert (ea.saliency - eb.saliency).abs().max() > 0.05
    agnostic = [digit_readout.explain(image, target=t, weighting="none", tau=0.8).saliency for t in (a, b)]
    torch.testing.assert_close(agnostic[0], agnostic[1], rtol=0, atol=0)
