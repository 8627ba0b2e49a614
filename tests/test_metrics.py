"""Every metric on hand-made cases whose answer is known."""

import math

import pytest
import torch
from torch import nn

from glassvit import GlassViTError
from glassvit.evaluation import metrics as M
from glassvit.types import Explanation
from helpers import tiny_model


def test_topk_and_per_class_accuracy():
    logits = torch.tensor([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [1.0, 2.0, 3.0], [3.0, 1.0, 2.0]])
    labels = torch.tensor([0, 2, 2, 1])
    assert M.topk_accuracy(logits, labels, 1).tolist() == [1, 0, 1, 0]
    assert M.topk_accuracy(logits, labels, 2).tolist() == [1, 1, 1, 0]
    assert M.topk_accuracy(logits, labels, 5).tolist() == [1, 1, 1, 1]
    per_class = M.per_class_accuracy(logits, labels, 4)
    assert per_class[:3].tolist() == [1.0, 0.0, 0.5] and math.isnan(per_class[3])


def test_average_precision_known_and_sklearn():
    # ranking: pos, neg, pos -> precision at the positives 1 and 2/3 -> AP = (1 + 2/3) / 2
    ap = M.average_precision(torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 0, 1]))
    assert ap.item() == pytest.approx(5 / 6)
    assert math.isnan(M.average_precision(torch.rand(4), torch.zeros(4)))
    sklearn = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (40, 6), generator=g).float()  # many ties
    targets = torch.rand(40, 6, generator=g) > 0.6
    ours = M.mean_average_precision(scores, targets)
    ref = sklearn.average_precision_score(targets.numpy(), scores.numpy(), average="macro")
    assert ours.item() == pytest.approx(ref, abs=1e-6)


class MaskedSum(nn.Module):
    """logit 0 = sum of the pixels in the top half of a 1-channel 4x4 image, logit 1 = 0."""

    def forward(self, x):
        s = x[:, 0, :2].sum((-2, -1))
        return torch.stack([s, torch.zeros_like(s)], 1)


def test_deletion_and_insertion_known_curves():
    x = torch.ones(1, 1, 4, 4)
    good = torch.zeros(1, 4, 4)
    good[:, :2] = 1.0  # the 8 pixels the model reads come first
    target = torch.tensor([0])
    curve = M.perturbation_curve(MaskedSum(), x, good, target, "deletion", step=0.25, activation="logit")
    assert curve.tolist() == [[8, 4, 0, 0, 0]]
    # trapezoid over [0,1] in steps of 1/4: (8+4)/2/4 + (4+0)/2/4 = 2
    auc = M.deletion_auc(MaskedSum(), x, good, target, step=0.25, activation="logit")
    assert auc.item() == pytest.approx(2.0)
    bad = 1 - good  # the model's pixels go last: deletion stays high
    assert M.deletion_auc(MaskedSum(), x, bad, target, step=0.25, activation="logit").item() == pytest.approx(6.0)
    ins = M.perturbation_curve(MaskedSum(), x, good, target, "insertion", step=0.25, baseline="zero",
                               activation="logit")
    assert ins.tolist() == [[0, 4, 8, 8, 8]]
    assert M.insertion_auc(MaskedSum(), x, good, target, step=0.25, baseline="zero",
                           activation="logit").item() == pytest.approx(6.0)
    # a step that does not divide 1: fractions 0, .4, .8, 1 remove round(6.4) = 6, 13 and 16 pixels
    c = M.perturbation_curve(MaskedSum(), x, good, target, "deletion", step=0.4, activation="logit")
    assert c.tolist() == [[8, 2, 0, 0]]
    assert M.curve_auc(c, 0.4).item() == pytest.approx((8 + 2) / 2 * 0.4 + (2 + 0) / 2 * 0.4)
    # one step per pass gives the same curve as all steps in one pass
    x2 = torch.rand(3, 1, 4, 4)
    sal = torch.rand(3, 4, 4)
    t2 = torch.tensor([0, 1, 0])
    together = M.perturbation_curve(MaskedSum(), x2, sal, t2, "insertion", step=0.25, baseline="mean")
    apart = M.perturbation_curve(MaskedSum(), x2, sal, t2, "insertion", step=0.25, baseline="mean", max_batch=3)
    torch.testing.assert_close(together, apart)

def test_perturbation_baselines_and_errors():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    assert M.baseline_images(x, "zero").abs().sum() == 0
    torch.testing.assert_close(M.baseline_images(x, "mean"), torch.full_like(x, 7.5))
    blurred = M.baseline_images(x, "blur", blur_sigma=1.0)
    assert blurred.shape == x.shape and blurred.std() < x.std()
    torch.testing.assert_close(M.gaussian_blur(torch.full((1, 3, 8, 8), 2.0), 2.0), torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(GlassViTError, match="baseline"):
        M.baseline_images(x, "noise")
    with pytest.raises(GlassViTError, match="step"):
        M.perturbation_curve(MaskedSum(), x, x[:, 0], torch.tensor([0]), step=0)
    with pytest.raises(GlassViTError, match="does not match"):
        M.perturbation_curve(MaskedSum(), x, torch.rand(1, 3, 3), torch.tensor([0]))


def test_class_scores_activations():
    logits = torch.tensor([[0.0, math.log(3.0)]])
    assert M.class_scores(logits, torch.tensor([1])).item() == pytest.approx(0.75)
    assert M.class_scores(logits, torch.tensor([0]), "sigmoid").item() == pytest.approx(0.5)
    assert M.class_scores(logits, torch.tensor([1]), "logit").item() == pytest.approx(math.log(3.0))


def _mask(rows, cols, size=8):
    m = torch.zeros(1, size, size, dtype=torch.bool)
    m[:, rows[0]:rows[1], cols[0]:cols[1]] = True
    return m


def test_pointing_game_with_tolerance():
    mask = _mask((0, 2), (0, 2))
    sal = torch.zeros(1, 8, 8)
    sal[0, 1, 1] = 1.0
    assert M.pointing_game(sal, mask).tolist() == [1.0]
    sal = torch.zeros(1, 8, 8)
    sal[0, 1, 4] = 1.0  # 3 px right of the mask's last column (x = 1)
    assert M.pointing_game(sal, mask).tolist() == [0.0]
    assert M.pointing_game(sal, mask, tolerance=2).tolist() == [0.0]
    assert M.pointing_game(sal, mask, tolerance=3).tolist() == [1.0]
    assert math.isnan(M.pointing_game(sal, torch.zeros_like(mask)).item())


def test_relevance_mass_rank_and_energy_pointing_game():
    mask = _mask((0, 4), (0, 4))  # 16 of 64 pixels
    sal = torch.zeros(1, 8, 8)
    sal[0, :4, :4] = 3.0
    sal[0, 4:, 4:] = 1.0
    assert M.relevance_mass(sal, mask).item() == pytest.approx(48 / 64)
    assert M.relevance_rank(sal, mask).item() == pytest.approx(1.0)
    flipped = sal.flip(-1).flip(-2)
    assert M.relevance_rank(flipped, mask).item() == pytest.approx(0.0)
    box = torch.tensor([[0.0, 0.0, 3.0, 3.0]])  # inclusive bounds = the same 4x4 square
    assert M.boxes_to_masks(box, (8, 8)).equal(mask)
    assert M.energy_pointing_game(sal, box).item() == pytest.approx(0.75)
    assert not M.boxes_to_masks(torch.full((1, 4), float("nan")), (8, 8)).any()
    assert math.isnan(M.relevance_mass(torch.zeros(1, 8, 8), mask).item())


def test_iou_and_miou_of_thresholded_maps():
    mask = _mask((0, 4), (0, 8))  # top half
    sal = torch.zeros(1, 8, 8)
    sal[0, :4, :4] = 1.0  # predicts a quarter inside the mask
    assert M.iou(sal, mask).item() == pytest.approx(16 / 32)
    # background: predicted 48 px, true 32 px, intersection 32 -> 32/48
    assert M.miou(sal, mask).item() == pytest.approx(0.5 * (0.5 + 32 / 48))
    perfect = mask.float()
    assert M.iou(perfect, mask).item() == 1.0 and M.miou(perfect, mask).item() == 1.0
    assert M.iou(torch.zeros(1, 8, 8), torch.zeros_like(mask)).item() == 1.0
    with pytest.raises(GlassViTError, match="differ in shape"):
        M.iou(sal, mask[:, :4])


def test_confusion_and_class_maps():
    gt = torch.tensor([[[0, 1], [2, 2]]])
    pred = torch.tensor([[[0, 1], [2, 1]]])
    conf = M.confusion_matrix(pred, gt, 3)
    assert conf.tolist() == [[1, 0, 0], [0, 1, 0], [0, 1, 1]]
    per_class, mean = M.miou_from_confusion(conf)
    assert per_class.tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert mean.item() == pytest.approx(2 / 3)
    maps = torch.zeros(1, 2, 2, 2)
    maps[0, 0, 0, 0] = 1.0  # class 0 at the top-left pixel
    maps[0, 1, 1, 1] = 1.0  # class 1 at the bottom-right pixel
    assert M.class_maps_to_labels(maps).tolist() == [[[1, 0], [0, 2]]]
    present = torch.tensor([[True, False]])
    assert M.class_maps_to_labels(maps, present).tolist() == [[[1, 0], [0, 0]]]


def test_complexity_and_sparseness():
    n = 16
    uniform = torch.ones(1, 4, 4)
    point = torch.zeros(1, 4, 4)
    point[0, 2, 3] = 5.0
    assert M.complexity(uniform).item() == pytest.approx(math.log(n))
    assert M.complexity(point).item() == pytest.approx(0.0)
    assert M.sparseness(uniform).item() == pytest.approx(0.0)
    assert M.sparseness(point).item() == pytest.approx(1 - 1 / n)
    assert M.sparseness(torch.zeros(1, 4, 4)).item() == 0.0


def test_spearman():
    a = torch.arange(16.0).view(1, 4, 4)
    assert M.spearman(a, a.exp()).item() == pytest.approx(1.0)
    assert M.spearman(a, -a).item() == pytest.approx(-1.0)


def test_randomization_check_separates_model_dependent_methods():
    torch.manual_seed(0)
    model = tiny_model("vit-ti16").eval()
    x = torch.randn(2, 3, 32, 32)

    def brightness(m, images, target):  # an "explanation" that ignores the model
        logits = m(images)
        return Explanation(logits, logits.argmax(-1) if target is None else target, images.mean(1))

    ignores = M.randomization_check(model, x, brightness)
    assert list(ignores) == ["head", "block1", "block0", "embedding"]
    assert all(torch.allclose(v, torch.ones(2)) for v in ignores.values())
    depends = M.randomization_check(model, x, "gradcam")
    assert depends["embedding"].abs().max() < 0.9
    before = [p.clone() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the original is untouched


def test_concept_accuracy():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3], [0.4, 0.35, 0.25], [0.1, 0.2, 0.3]])
    concepts = torch.tensor([[0, 1, 0], [0, 1, 0], [1, 1, 0], [float("nan")] * 3])
    acc = M.concept_accuracy(scores, concepts)
    assert acc[:3].tolist() == [1.0, 0.0, 1.0] and math.isnan(acc[3])
    with pytest.raises(GlassViTError, match="differ"):
        M.concept_accuracy(scores, concepts[:, :2])
