"""Concept Transformer head: parity with the official code, the linearity identity, the explanation loss, learning.

The parity fixture tests/fixtures/concept_transformer.safetensors was recorded by running the official
ConceptTransformerVIT (IBM/concept_transformer, ctc/vit.py) and its explanation costs (ctc/ctc.py) from a checkout
outside the repository, in eval mode with seeded weights:
    .venv/bin/python tests/fixtures/record_concept_transformer.py /tmp/concept_transformer
"""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from glassvit import GlassViTError, zoo
from glassvit.convert import concept_transformer_state_dict
from glassvit.data import DigitScenes
from glassvit.heads import build_head
from glassvit.heads.concept import attention_entropy, explanation_cost
from glassvit.serialization import load_state_strict
from glassvit.types import BackboneInfo, HeadOutput, Tokens
from helpers import TINY_IMG, TINY_VIT, tiny_model

FIXTURE = Path(__file__).parent / "fixtures" / "concept_transformer.safetensors"
ALL_BRANCHES = dict(num_concepts=4, num_spatial_concepts=5, num_unsup_concepts=3)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on shared cores two threads per process thrash."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def official():
    return load_file(str(FIXTURE))


def official_state(fixture, prefix=""):
    return {prefix + k.removeprefix("official."): v for k, v in fixture.items() if k.startswith("official.")}


def fixture_tokens(fixture):
    return Tokens(cls=fixture["x_cls"][:, 0], patches=fixture["x"], grid=(2, 3), image_size=(8, 12),
                  num_prefix_tokens=1)


def test_parity_with_official_forward(official):
    state, counts = concept_transformer_state_dict(official_state(official))
    assert counts == ALL_BRANCHES
    info = BackboneInfo(embed_dim=16, grid=(2, 3), num_prefix_tokens=1, has_cls=True, num_blocks=1, num_heads=2,
                        image_size=(8, 12))
    head = build_head("concept", info, 3, num_heads=2, **counts).eval()
    load_state_strict(head, {k.removeprefix("head."): v for k, v in state.items()}, "fixture")
    with torch.no_grad():
        out = head(fixture_tokens(official))
    torch.testing.assert_close(out.logits, official["out"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.aux["global_attention"].mean(1), official["concept_attn"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.aux["unsup_attention"].mean(1), official["unsup_attn"], atol=1e-5, rtol=0)
    torch.testing.assert_close(out.aux["spatial_attention"].mean(1), official["spatial_attn"], atol=1e-5, rtol=0)
    # the explanation costs agree with the official ones on annotations with NaN rows
    torch.testing.assert_close(explanation_cost(official["concept_attn"], official["concepts"][:, None]),
                               official["concepts_cost"], atol=1e-6, rtol=0)
    torch.testing.assert_close(explanation_cost(official["spatial_attn"], official["spatial_concepts"]),
                               official["spatial_concepts_cost"], atol=1e-6, rtol=0)


def test_convert_lightning_cvit_checkpoint(official):
    """A whole official CVIT inside a Lightning checkpoint ("model.feature_extractor.*", "model.classifier.*")."""
    backbone = dict(TINY_VIT, embed_dim=16, num_heads=2)
    source = tiny_model("ct-ti16", num_classes=3, backbone_kwargs=backbone, num_heads=2, **ALL_BRANCHES)
    checkpoint = {f"model.feature_extractor.{k}": v for k, v in source.backbone.model.state_dict().items()}
    checkpoint.update(official_state(official, "model.classifier."))
    state, counts = concept_transformer_state_dict(checkpoint)
    model = tiny_model("ct-ti16", num_classes=3, seed=1, backbone_kwargs=backbone, num_heads=2, **counts).eval()
    load_state_strict(model, state, "checkpoint")
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    torch.testing.assert_close(model.backbone(x).patches, source.eval().backbone(x).patches)
    with torch.no_grad():
        torch.testing.assert_close(model.head(fixture_tokens(official)).logits, official["out"], atol=1e-5, rtol=0)


def test_convert_rejects_foreign_state_dicts(official):
    with pytest.raises(GlassViTError, match="'concept_tranformer.q.weight' is missing"):
        concept_transformer_state_dict({"concepts": torch.zeros(1, 2, 16)})
    with pytest.raises(GlassViTError, match="unexpected keys.*extra.weight"):
        concept_transformer_state_dict({**official_state(official), "extra.weight": torch.zeros(1)})


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("backbone", [{}, dict(class_token=False, global_pool="avg")], ids=["cls", "pooled"])
def test_contributions_reproduce_the_logit(batch, backbone):
    """Linearity: per-concept contributions (per-head attention x fixed logit vectors) + bias = the target logit."""
    model = tiny_model("ct-ti16", num_classes=4, backbone_kwargs=backbone, **ALL_BRANCHES).eval()
    with torch.no_grad():  # spread the concepts so that attention differs across heads and concepts
        for branch in model.head.branches.values():
            branch.concepts.mul_(20)
    x = torch.randn(batch, 3, TINY_IMG, TINY_IMG)
    for target in range(4):
        e = model.explain(x, target=target)
        assert e.contributions.shape == (batch, 12) and e.components.shape == (batch, 12, 8, 8)
        assert e.component_names == ["c0", "c1", "c2", "c3", "u0", "u1", "u2", "s0", "s1", "s2", "s3", "s4"]
        torch.testing.assert_close(e.contributions.sum(-1) + e.details["bias"], e.logits[:, target],
                                   atol=1e-5, rtol=0)
        assert (e.saliency >= 0).all() and e.saliency.shape == (batch, TINY_IMG, TINY_IMG)
    assert e.details["global_attention"].shape == (batch, 3, 4)
    assert e.details["spatial_attention"].shape == (batch, 3, 5, 8, 8)
    torch.testing.assert_close(e.details["query_weights"].sum((1, 2)), torch.ones(batch))
    # head-averaged attention does not decompose the logit when heads disagree: per-head attention is needed
    head_mean = e.details["global_attention"].mean(1)
    logit_t = model.head.branches["global"].concept_logits()[..., target].sum(0)  # (K,)
    assert not torch.allclose(head_mean * logit_t, e.contributions[:, :4], atol=1e-3)


def test_saliency_is_class_specific():
    model = tiny_model("ct-ti16", num_classes=4, **ALL_BRANCHES).eval()
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    assert not torch.allclose(model.explain(x, target=0).saliency, model.explain(x, target=1).saliency)


def test_explanation_attention_is_taken_before_dropout():
    model = tiny_model("ct-ti16", num_classes=4, attention_dropout=0.5, **ALL_BRANCHES).train()
    out = model.forward_detailed(torch.randn(2, 3, TINY_IMG, TINY_IMG))
    for name in ("global", "unsup", "spatial"):
        torch.testing.assert_close(out.aux[f"{name}_attention"].sum(-1), torch.ones(out.aux[f"{name}_attention"].shape[:-1]))


def test_per_query_logits_in_training_match_pooled_attention_in_eval():
    """Training with projection dropout forms each query's logits; eval averages attention first: same function."""
    model = tiny_model("ct-ti16", num_classes=4, attention_dropout=0.0, projection_dropout=1e-12, **ALL_BRANCHES)
    x = torch.randn(2, 3, TINY_IMG, TINY_IMG)
    with torch.no_grad():
        trained = model.train().head(model.backbone(x)).logits
        model.eval()
        torch.testing.assert_close(trained, model(x), atol=1e-5, rtol=0)


def test_head_count_must_divide_the_width():
    with pytest.raises(GlassViTError, match="num_heads=5 does not divide the backbone width 48"):
        tiny_model("ct-ti16", num_heads=5)
    with pytest.raises(GlassViTError, match="at least one concept"):
        tiny_model("ct-ti16", num_concepts=0, num_spatial_concepts=0)
    with pytest.raises(GlassViTError, match="2 global concept names for 13"):
        tiny_model("ct-ti16", concept_names=["a", "b"])


@pytest.mark.parametrize("name", ["ct-ti16", "ct-s16", "ct-b16", "ct-l16"])
def test_zoo_entries_build_at_full_width(name):
    spec = zoo.get_spec(name)
    width = {"ct-ti16": 192, "ct-s16": 384, "ct-b16": 768, "ct-l16": 1024}[name]
    info = BackboneInfo(width, (14, 14), 1, True, 12, spec.head_kwargs["num_heads"], (224, 224))
    head = build_head("concept", info, spec.num_classes, **spec.head_kwargs)
    assert width % head.num_heads == 0 and set(head.branches) == {"global", "spatial"}


def hand_output(head_attention, spatial_attention, logits):
    tokens = Tokens(cls=None, patches=torch.zeros(logits.shape[0], spatial_attention.shape[2], 6), grid=(1, 2),
                    image_size=(4, 8), num_prefix_tokens=0)
    return HeadOutput(logits, tokens, {"global_attention": head_attention[:, :, None],
                                       "spatial_attention": spatial_attention})


def test_explanation_loss_against_hand_computed_values():
    info = BackboneInfo(6, (1, 2), 0, False, 1, 2, (4, 8))
    head = build_head("concept", info, 2, num_concepts=3, num_spatial_concepts=2, num_heads=2, expl_lambda=2.0,
                      entropy_weight=0.5)
    nan = float("nan")
    # global: image 0 attends [0.2,0.3,0.5] and [0.4,0.5,0.1] (mean [0.3,0.4,0.3]); image 1 is unannotated
    glob = torch.tensor([[[0.2, 0.3, 0.5], [0.4, 0.5, 0.1]], [[1 / 3] * 3] * 2])
    concepts = torch.tensor([[1.0, 1.0, 0.0], [nan, nan, nan]])  # normalised: [0.5, 0.5, 0]
    expected_global = 0.2**2 + 0.1**2 + 0.3**2  # 0.14
    # spatial (B=2, H=2, N=2, K=2): head-mean rows [0.5,0.5], [0.9,0.1] | [0.25,0.75], [0.6,0.4]
    spat = torch.tensor([[[[0.5, 0.5], [1.0, 0.0]], [[0.5, 0.5], [0.8, 0.2]]],
                         [[[0.0, 1.0], [0.6, 0.4]], [[0.5, 0.5], [0.6, 0.4]]]])
    spatial = torch.tensor([[[0.0, 2.0], [1.0, 0.0]], [[nan, nan], [0.5, 0.5]]])  # 3 annotated patches
    expected_spatial = ((0.5**2 + 0.5**2) + (0.1**2 + 0.1**2) + (0.1**2 + 0.1**2)) / 3  # 0.22
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    terms = head.loss(hand_output(glob, spat, logits), {"label": torch.tensor([0, 0]), "concepts": concepts,
                                                          "spatial_concepts": spatial})
    ce = torch.nn.functional.cross_entropy(logits, torch.tensor([0, 0]))
    torch.testing.assert_close(terms["concept"], torch.tensor(expected_global), atol=1e-6, rtol=0)
    torch.testing.assert_close(terms["spatial_concept"], torch.tensor(expected_spatial), atol=1e-6, rtol=0)
    # entropy: mean over the per-head distributions of each supervised branch, summed over the branches
    ent = lambda p: float(-(p * p.log()).sum(-1).mean())  # noqa: E731
    expected_entropy = ent(glob) + ent(spat.clamp_min(1e-30))
    torch.testing.assert_close(terms["entropy"], torch.tensor(expected_entropy), atol=1e-5, rtol=0)
    torch.testing.assert_close(terms["loss"], ce + 2.0 * (expected_global + expected_spatial) + 0.5 * expected_entropy,
                               atol=1e-5, rtol=0)
    assert attention_entropy(torch.tensor([[1.0, 0.0]])) < 1e-6


def test_explanation_loss_edge_cases():
    info = BackboneInfo(6, (1, 2), 0, False, 1, 2, (4, 8))
    head = build_head("concept", info, 2, num_concepts=3, num_spatial_concepts=2, num_heads=2)
    out = hand_output(torch.full((1, 2, 3), 1 / 3), torch.full((1, 2, 2, 2), 0.5), torch.zeros(1, 2))
    nan = float("nan")
    batch = {"label": torch.tensor([1]), "concepts": torch.full((1, 3), nan),
             "spatial_concepts": torch.tensor([[[nan, nan], [0.0, 0.0]]])}
    terms = head.loss(out, batch)  # batch of one, nothing annotated: no explanation terms
    assert float(terms["concept"]) == 0 and float(terms["spatial_concept"]) == 0
    torch.testing.assert_close(terms["loss"], terms["classification"])
    with pytest.raises(GlassViTError, match=r"batch\['concepts'\] must have shape \(1, 3\)"):
        head.loss(out, {"label": torch.tensor([1]), "concepts": torch.zeros(1, 4)})


def test_loss_from_digitscenes_batch_of_one():
    model = tiny_model("ct-ti16", num_classes=2, num_concepts=10, num_spatial_concepts=10, expl_lambda=5.0).train()
    item = DigitScenes("train", "evenodd", size=TINY_IMG, num_scenes=1, grid=model.backbone.info.grid)[0]
    batch = {k: v[None] for k, v in item.items()}
    terms = model.loss(model.forward_detailed(batch["image"]), batch)
    assert terms["concept"] > 0 and terms["spatial_concept"] > 0
    torch.testing.assert_close(terms["loss"], terms["classification"] + 5.0 * (terms["concept"] +
                                                                                terms["spatial_concept"]))
    terms["loss"].backward()
    assert model.head.branches["spatial"].concepts.grad.abs().sum() > 0


def test_figures(tmp_path):
    pytest.importorskip("matplotlib")
    from glassvit.viz import head_figures

    model = tiny_model("ct-ti16", num_classes=2, num_concepts=10, num_spatial_concepts=3,
                       concept_names=[f"digit {d}" for d in range(10)], label_names=["even", "odd"]).eval()
    data = DigitScenes("test", "evenodd", size=TINY_IMG, num_scenes=2)
    x = torch.stack([data[i]["image"] for i in range(2)])
    paths = head_figures("concept")(model, x, model.explain(x), tmp_path, "ct")
    assert [p.name for p in paths] == ["ct_0_concepts.png", "ct_0_maps.png", "ct_1_concepts.png", "ct_1_maps.png"]
    assert all(p.read_bytes().startswith(b"\x89PNG") for p in paths)


def test_figure_labels_name_the_branch_when_names_repeat():
    from glassvit.viz.concept import _concept_labels

    names = ["0", "1"]
    model = tiny_model("ct-ti16", num_classes=2, num_concepts=2, num_spatial_concepts=2, concept_names=names,
                       spatial_concept_names=names).eval()
    e = model.explain(torch.randn(1, 3, TINY_IMG, TINY_IMG))
    assert _concept_labels(model, e) == ["0 (global)", "1 (global)", "0 (spatial)", "1 (spatial)"]


def test_explanation_loss_puts_the_attention_on_the_annotated_digits():
    """A short fit on DigitScenes even/odd: with the explanation loss, the top global concept becomes the digit."""
    from glassvit.training import evaluate, fit

    model = tiny_model("ct-ti16", num_classes=2, backbone_kwargs=dict(patch_size=8, class_token=False, global_pool="avg"),
                       num_concepts=10, num_spatial_concepts=10, expl_lambda=5.0)
    scenes = DigitScenes("train", "evenodd", size=TINY_IMG, num_scenes=128, grid=model.backbone.info.grid)
    data = [scenes[i] for i in range(len(scenes))]
    before = evaluate(model, data, batch_size=128)
    fit(model, data, epochs=50, batch_size=64, lr=5e-3, val_fraction=0, progress=False)
    after = evaluate(model, data, batch_size=128)
    assert before["concept_accuracy"] < 0.2 and before["concept"] > 0.85  # uniform attention: cost 1 - 1/10
    assert after["concept_accuracy"] >= 0.5 and after["concept"] < 0.7 and after["spatial_concept"] < 0.7
