"""Sharing through the Hub: the real huggingface_hub client against a local Hub-compatible server (tests/hub_server.py).

No mocks of the client: every push and download is real HTTP to 127.0.0.1. huggingface_hub reads HF_ENDPOINT,
HF_HUB_OFFLINE, HF_HUB_CACHE and HF_HUB_DISABLE_XET when it is imported, so the tests set the values those variables
produce on huggingface_hub.constants, which the client consults on every call.
"""

import json
import logging
import traceback
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from huggingface_hub import HfApi, constants
from safetensors.torch import save_file

from glassvit import GlassViTError, cli, zoo
from glassvit.card import GENERATED_MARKER, model_card
from glassvit.evaluation.runner import EvalResult
from glassvit.zoo import ModelSpec
from helpers import TINY_IMG, TINY_VIT, tiny_model
from hub_server import LocalHub

TOKEN = "hf_glassvitTestTokenAlice0123456789"
OTHER_TOKEN = "hf_glassvitTestTokenBob0123456789"
WRONG_TOKEN = "hf_wrongTokenThatIsNotValid42"
TIMM_HUB_ID = "timm/vit_tiny_patch16_224.augreg_in21k_ft_in1k"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A fresh local Hub; the client points at it, with a private cache and no stored or environment token."""
    with LocalHub({TOKEN: "alice", OTHER_TOKEN: "bob"}) as server:
        settings = {
            "ENDPOINT": server.url,
            "HUGGINGFACE_CO_URL_TEMPLATE": server.url + "/{repo_id}/resolve/{revision}/{filename}",
            "HF_HUB_CACHE": str(tmp_path / "cache"),
            "HF_HUB_OFFLINE": False,
            "HF_HUB_DISABLE_XET": True,
            "HF_TOKEN_PATH": str(tmp_path / "hf-home" / "token"),
            "HF_STORED_TOKENS_PATH": str(tmp_path / "hf-home" / "stored_tokens"),
            "AGENT_HARNESSES_PATH": str(tmp_path / "hf-home" / "agent_harnesses.json"),
        }
        for name, value in settings.items():
            monkeypatch.setattr(constants, name, value)
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        yield server
        assert server.unknown == [], "the client called routes the local Hub does not know"


def images(n=3, seed=0):
    return torch.randn(n, 3, TINY_IMG, TINY_IMG, generator=torch.Generator().manual_seed(seed))


def hub_file(hub, repo_id, path, rev="main"):
    return hub.repos[repo_id].resolve(rev).files[path]


def test_push_then_load_in_fresh_cache_is_identical(hub, tmp_path):
    model = tiny_model("vit-ti16", num_classes=3, label_names=["cat", "dog", "bird"]).eval()
    info = model.push_to_hub("tiny-pets", token=TOKEN)
    assert info.repo_url.repo_id == "alice/tiny-pets"
    assert set(hub.repos["alice/tiny-pets"].resolve(info.oid).files) == {
        ".gitattributes", "config.json", "model.safetensors", "README.md"}
    config = json.loads(hub_file(hub, "alice/tiny-pets", "config.json"))
    assert config["architecture"] == "vit_tiny_patch16_224" and config["num_classes"] == 3
    assert config["pretrained_cfg"]["input_size"] == [3, TINY_IMG, TINY_IMG]

    loaded = zoo.load("hf-hub:alice/tiny-pets", cache_dir=tmp_path / "fresh").eval()
    x = images()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.explain(x).saliency, model.explain(x).saliency, rtol=0, atol=0)
    assert loaded.config.label_names == ["cat", "dog", "bird"]
    assert any((tmp_path / "fresh").rglob("model.safetensors"))
    assert not hub.requested("pytorch_model") and not hub.requested("README.md")[1:]


def test_new_num_classes_keeps_the_backbone(hub):
    model = tiny_model("vit-ti16", num_classes=3).eval()
    model.push_to_hub("alice/base", token=TOKEN)
    loaded = zoo.load("hf-hub:alice/base", num_classes=7)
    assert loaded.num_classes == 7
    for (name, a), b in zip(model.backbone.state_dict().items(), loaded.backbone.state_dict().values()):
        assert torch.equal(a, b), name


def test_pin_branch_tag_and_commit_after_later_pushes(hub):
    api = HfApi(token=TOKEN)
    first, second, on_dev = (tiny_model("vit-ti16", seed=s).eval() for s in (1, 2, 3))
    c1 = first.push_to_hub("alice/pinned", token=TOKEN).oid
    api.create_tag("alice/pinned", tag="v1", revision=c1)
    c2 = second.push_to_hub("alice/pinned", token=TOKEN, commit_message="second version").oid
    on_dev.push_to_hub("alice/pinned", token=TOKEN, revision="dev")
    assert c1 != c2 and hub.repos["alice/pinned"].branches["main"] == c2

    x = images()
    expected = {"": second, f"@{c1}": first, "@v1": first, "@dev": on_dev}
    for suffix, model in expected.items():
        loaded = zoo.load(f"hf-hub:alice/pinned{suffix}").eval()
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0, msg=f"revision {suffix or 'default'}")
    torch.testing.assert_close(zoo.load("hf-hub:alice/pinned", revision="v1").eval()(x), first(x), rtol=0, atol=0)
    with pytest.raises(GlassViTError, match="two revisions"):
        zoo.load("hf-hub:alice/pinned@v1", revision="dev")
    with pytest.raises(GlassViTError, match="no such revision"):
        zoo.load("hf-hub:alice/pinned@v9")


def test_offline_load_from_the_cache_makes_no_request(hub, monkeypatch):
    old, new = tiny_model("vit-ti16", seed=1).eval(), tiny_model("vit-ti16", seed=2).eval()
    c1 = old.push_to_hub("alice/offline", token=TOKEN).oid
    new.push_to_hub("alice/offline", token=TOKEN)
    zoo.load("hf-hub:alice/offline")
    zoo.load(f"hf-hub:alice/offline@{c1}")

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # what HF_HUB_OFFLINE=1 sets when the client is imported
    before = len(hub.requests)
    x = images()
    torch.testing.assert_close(zoo.load("hf-hub:alice/offline").eval()(x), new(x), rtol=0, atol=0)
    torch.testing.assert_close(zoo.load(f"hf-hub:alice/offline@{c1}").eval()(x), old(x), rtol=0, atol=0)
    assert hub.requests[before:] == []


def test_offline_without_cache_and_force_download(hub, monkeypatch):
    model = tiny_model("vit-ti16").eval()
    model.push_to_hub("alice/cached", token=TOKEN)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(GlassViTError, match="not in the Hugging Face cache and HF_HUB_OFFLINE=1 is set"):
        zoo.load("hf-hub:alice/cached")
    with pytest.raises(GlassViTError, match="force_download needs the Hub"):
        zoo.load("hf-hub:alice/cached", force_download=True)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)

    zoo.load("hf-hub:alice/cached")
    (cached,) = Path(constants.HF_HUB_CACHE).rglob("snapshots/*/model.safetensors")
    cached.resolve().write_bytes(b"truncated")
    with pytest.raises(GlassViTError, match="not a readable safetensors file"):
        zoo.load("hf-hub:alice/cached")
    x = images()
    torch.testing.assert_close(zoo.load("hf-hub:alice/cached", force_download=True).eval()(x), model(x),
                               rtol=0, atol=0)


def test_missing_repo_revision_and_file(hub):
    with pytest.raises(GlassViTError, match="alice/absent: no such Hub repo"):
        zoo.load("hf-hub:alice/absent")
    api = HfApi(token=TOKEN)
    api.create_repo("alice/empty")
    with pytest.raises(GlassViTError, match=r"has no config.json \(it has: .gitattributes\); it is not a glassvit"):
        zoo.load("hf-hub:alice/empty")
    api.upload_file(repo_id="alice/empty", path_or_fileobj=json.dumps(tiny_model("vit-ti16").to_config_dict()).encode(),
                    path_in_repo="config.json")
    with pytest.raises(GlassViTError, match="has no model.safetensors"):
        zoo.load("hf-hub:alice/empty")


def test_pickle_only_repo_is_refused_without_downloading_it(hub):
    api = HfApi(token=TOKEN)
    api.create_repo("alice/pickled")
    api.upload_file(repo_id="alice/pickled", path_or_fileobj=b"\x80\x02 not for unpickling",
                    path_in_repo="pytorch_model.bin")
    with pytest.raises(GlassViTError, match=r"holds only pickle weights \(pytorch_model.bin\)"):
        zoo.load("hf-hub:alice/pickled")
    config = json.dumps(tiny_model("vit-ti16").to_config_dict()).encode()
    api.upload_file(repo_id="alice/pickled", path_or_fileobj=config, path_in_repo="config.json")
    with pytest.raises(GlassViTError, match="only pickle weights.*refuses to read"):
        zoo.load("hf-hub:alice/pickled")
    assert not [r for r in hub.requested("pytorch_model.bin") if "/resolve/" in r[1]]


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["glassvit"].update(head="no-such-head"), "unknown head 'no-such-head'"),
    (lambda c: c["glassvit"].update(backbone="vit_no_such_backbone"), "unknown timm backbone 'vit_no_such_backbone'"),
    (lambda c: c.update(format_version=99), "format_version 99.*upgrade glassvit"),
    (lambda c: c.pop("glassvit"), "not a glassvit config"),
])
def test_config_is_refused_before_any_weights_download(hub, edit, message):
    model = tiny_model("vit-ti16")
    model.push_to_hub("alice/future", token=TOKEN)
    config = model.to_config_dict()
    edit(config)
    HfApi(token=TOKEN).upload_file(repo_id="alice/future", path_or_fileobj=json.dumps(config).encode(),
                                   path_in_repo="config.json")
    with pytest.raises(GlassViTError, match=message) as err:
        zoo.load("hf-hub:alice/future")
    assert "the weights were not downloaded" in str(err.value)
    assert not hub.requested("model.safetensors"), "weights were requested after a refused config"


def test_overrides_are_checked_before_the_weights(hub):
    tiny_model("vit-ti16").push_to_hub("alice/over", token=TOKEN)
    with pytest.raises(GlassViTError, match="unknown override"):
        zoo.load("hf-hub:alice/over", no_such_option=1)
    assert not hub.requested("model.safetensors")


def test_private_repo_and_tokens_never_leak(hub, caplog, capsys, tmp_path):
    caplog.set_level(logging.DEBUG)
    model = tiny_model("vit-ti16").eval()
    info = model.push_to_hub("alice/secret", private=True, token=TOKEN)
    assert hub.repos["alice/secret"].private
    x = images()
    torch.testing.assert_close(zoo.load("hf-hub:alice/secret", token=TOKEN).eval()(x), model(x), rtol=0, atol=0)

    errors = []
    for kwargs in ({}, {"token": WRONG_TOKEN}):
        with pytest.raises(GlassViTError) as err:
            zoo.load("hf-hub:alice/secret", cache_dir=tmp_path / "other", **kwargs)
        errors.append(err.value)
    assert "private" in str(errors[0])
    assert "token was refused" in str(errors[1])
    with pytest.raises(GlassViTError, match="HTTP 401") as err:
        model.push_to_hub("alice/secret", token=WRONG_TOKEN)
    errors.append(err.value)

    everything = "".join("".join(traceback.format_exception(e)) for e in errors)
    everything += caplog.text + "".join(capsys.readouterr())
    pushed = hub.repos["alice/secret"].resolve(info.oid).files.values()
    everything += "".join(f.decode(errors="replace") for f in pushed)
    for secret in (TOKEN, WRONG_TOKEN):
        assert secret not in everything


def test_card_front_matter_and_body(hub):
    model = tiny_model("vit-ti16", num_classes=2, label_names=["even", "odd"])
    model.push_to_hub("alice/carded", token=TOKEN, results={"test": {"accuracy": 0.91234, "deletion_auc": 0.2}},
                      datasets=["glassvit/digitscenes"])
    card = hub_file(hub, "alice/carded", "README.md").decode()
    front, body = card.split("---\n")[1], card.split("---\n", 2)[2]
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "glassvit" and meta["pipeline_tag"] == "image-classification"
    assert {"glassvit", "timm", "linear", "head:linear"} <= set(meta["tags"])
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["glassvit/digitscenes"]
    assert "base_model" not in meta, "a randomly initialised backbone has no base model"
    assert GENERATED_MARKER in body and 'zoo.load("hf-hub:alice/carded")' in body
    assert "`even`, `odd`" in body and "| test/accuracy | 0.9123 |" in body
    assert "starting from random weights" in body and "Dosovitskiy" in body and "# carded" in body


def test_user_written_card_is_kept_unless_overwrite(hub):
    api = HfApi(token=TOKEN)
    first, second = tiny_model("vit-ti16", seed=1), tiny_model("vit-ti16", seed=2).eval()
    first.push_to_hub("alice/mine", token=TOKEN)
    api.upload_file(repo_id="alice/mine", path_or_fileobj=b"# My model\n\nHand-written.\n", path_in_repo="README.md")
    with pytest.warns(UserWarning, match="kept the README.md"):
        second.push_to_hub("alice/mine", token=TOKEN)
    assert hub_file(hub, "alice/mine", "README.md") == b"# My model\n\nHand-written.\n"
    x = images()
    torch.testing.assert_close(zoo.load("hf-hub:alice/mine").eval()(x), second(x), rtol=0, atol=0)
    second.push_to_hub("alice/mine", token=TOKEN, overwrite_card=True)
    assert GENERATED_MARKER in hub_file(hub, "alice/mine", "README.md").decode()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        second.push_to_hub("alice/mine", token=TOKEN, results={"accuracy": 0.5})  # a generated card is refreshed
    assert "| accuracy | 0.5 |" in hub_file(hub, "alice/mine", "README.md").decode()


def test_pretrained_backbone_warns_once_and_becomes_the_base_model(hub, monkeypatch, tmp_path):
    """`pretrained=True` on a name without published head weights: timm's pretrained backbone (served by the local
    Hub under timm's own repo id, downloaded by timm through the same client), an untrained head, one warning."""
    import timm

    published = timm.create_model("vit_tiny_patch16_224", **TINY_VIT)
    save_file(published.state_dict(), tmp_path / "timm.safetensors")
    api = HfApi(token=TOKEN)
    api.create_repo(TIMM_HUB_ID)
    api.upload_file(repo_id=TIMM_HUB_ID, path_or_fileobj=tmp_path / "timm.safetensors",
                    path_in_repo="model.safetensors")
    monkeypatch.setattr(zoo, "_WARNED_UNTRAINED", set())

    with pytest.warns(UserWarning, match="'linear' head is untrained"):
        model = zoo.load("vit-ti16", pretrained=True, num_classes=4, backbone_kwargs=TINY_VIT)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        zoo.load("vit-ti16", pretrained=True, num_classes=4, backbone_kwargs=TINY_VIT)
    for name, value in model.backbone.model.state_dict().items():
        assert torch.equal(value, published.state_dict()[name]), name
    assert model.config.backbone_weights == f"hf-hub:{TIMM_HUB_ID}"
    assert yaml.safe_load(model_card(model).split("---\n")[1])["base_model"] == TIMM_HUB_ID

    model.push_to_hub("alice/finetuned", token=TOKEN)
    assert yaml.safe_load(hub_file(hub, "alice/finetuned", "README.md").decode().split("---\n")[1])[
        "base_model"] == TIMM_HUB_ID
    assert zoo.load("hf-hub:alice/finetuned").config.backbone_weights == f"hf-hub:{TIMM_HUB_ID}"
    random_init = zoo.load("vit-ti16", num_classes=4, backbone_kwargs=TINY_VIT)
    assert random_init.config.backbone_weights is None


def test_registered_name_with_hub_weights_loads_them(hub, monkeypatch):
    model = tiny_model("vit-ti16", num_classes=4).eval()
    commit = model.push_to_hub("alice/published", token=TOKEN).oid
    spec = ModelSpec(name="tiny-published", backbone="vit_tiny_patch16_224", head="linear", num_classes=4,
                     description="tiny", paper="-", backbone_kwargs=dict(TINY_VIT),
                     weights=f"hf-hub:alice/published@{commit}")
    monkeypatch.setitem(zoo.REGISTRY, spec.name, spec)
    before = len(hub.requests)
    untrained = zoo.load("tiny-published")
    assert len(hub.requests) == before, "pretrained=False must not touch the Hub"
    loaded = zoo.load("tiny-published", pretrained=True).eval()
    x = images()
    torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    assert loaded.config.name == "tiny-published"
    assert not torch.equal(untrained.eval()(x), model(x))


def test_cli_push_with_report_and_environment_token(hub, tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    model = tiny_model("vit-ti16").eval()
    model.save_pretrained(run_dir)
    EvalResult(model="vit-ti16", data="digitscenes-test", num_images=20, settings={},
               accuracy={"accuracy": 0.75, "per_class": [0.5, 1.0]},
               explanations={"native": {"deletion": 0.25, "pointing": 0.5}}).save(run_dir)  # eval.json + eval.md
    assert cli.main(["push", str(run_dir), "alice/from-cli", "--revision", "main"]) == 2
    assert "HTTP 401" in capsys.readouterr().err

    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert cli.main(["push", str(run_dir), "alice/from-cli", "--dataset", "glassvit/digitscenes",
                     "--commit-message", "from the CLI"]) == 0
    out = capsys.readouterr()
    assert "alice/from-cli" in out.out and TOKEN not in out.out + out.err
    card = hub_file(hub, "alice/from-cli", "README.md").decode()
    assert "On `digitscenes-test` (20 images)." in card and "| accuracy | 0.75 |" in card and "per_class" not in card
    assert "| explainer | deletion AUC ↓ | pointing game ↑ |" in card and "| native | 0.250 | 0.500 |" in card
    assert "- \"glassvit/digitscenes\"" in card
    assert hub.repos["alice/from-cli"].resolve("main").message == "from the CLI"
    torch.testing.assert_close(zoo.load("hf-hub:alice/from-cli").eval()(images()), model(images()), rtol=0, atol=0)

    (run_dir / "README.md").write_text("# Written by me\n")
    assert cli.main(["push", str(run_dir), "alice/by-hand"]) == 0
    assert hub_file(hub, "alice/by-hand", "README.md") == b"# Written by me\n"


def test_backbone_from_a_local_file_names_no_base_model(tmp_path, monkeypatch):
    import timm

    monkeypatch.setattr(zoo, "_WARNED_UNTRAINED", set())
    save_file(timm.create_model("vit_tiny_patch16_224", **TINY_VIT).state_dict(), tmp_path / "mine.safetensors")
    with pytest.warns(UserWarning, match="untrained"):
        model = zoo.load("vit-ti16", pretrained=True, pretrained_file=str(tmp_path / "mine.safetensors"),
                         num_classes=3, backbone_kwargs=TINY_VIT)
    assert model.config.backbone_weights == "file:mine.safetensors"
    card = model_card(model)
    assert "base_model" not in yaml.safe_load(card.split("---\n")[1])
    assert "initialised from `file:mine.safetensors`" in card
