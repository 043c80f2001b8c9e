"""Hugging Face text tower: tokens and [CLS] vectors of a local folder, gradient, self-contained export."""
from __future__ import annotations

import shutil
import sys

import pytest
import torch

transformers = pytest.importorskip("transformers")

from organfm.text import TextEncoder  # noqa: E402
from organfm.text.hf import HFTextTower  # noqa: E402
from organfm.text.tower import (  # noqa: E402
    TEXT_TOWERS,
    JointText,
    create_text_tower,
    load_joint_text,
    save_joint_text,
)

TEXTS = ["a CT image of the liver", "lung", "an MRI of the brain with a tumor"]


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """No network here: any attempt to reach the Hub would fail instead of hanging."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _id(tower: HFTextTower, word: str) -> int:
    return tower.tokenizer.convert_tokens_to_ids(word)


def test_tokens_are_padded_cpu_tensors_and_forward_gives_one_vector_per_text(tiny_bert):
    tower = HFTextTower(tiny_bert)
    tokens = tower.tokenize(TEXTS[:2])
    assert set(tokens) == {"input_ids", "attention_mask", "token_type_ids"}
    assert all(v.device.type == "cpu" and v.shape == (2, 8) for v in tokens.values())
    # [CLS] a ct image of the liver [SEP]; [CLS] lung [SEP] then padding (id 0)
    words = ["a", "ct", "image", "of", "the", "liver"]
    assert tokens["input_ids"][0].tolist() == [2, *[_id(tower, w) for w in words], 3]
    assert tokens["input_ids"][1].tolist() == [2, _id(tower, "lung"), 3, 0, 0, 0, 0, 0]
    assert tokens["attention_mask"].sum(1).tolist() == [8, 3]
    out = tower(tokens)
    assert tower.width == 32 and out.shape == (2, 32) and out.dtype == torch.float32


def test_texts_are_cut_at_max_len_and_at_the_models_position_table(tiny_bert):
    short = HFTextTower(tiny_bert, max_len=4).tokenize(TEXTS[:1])["input_ids"]
    tower = HFTextTower(tiny_bert)
    assert short[0].tolist() == [2, _id(tower, "a"), _id(tower, "ct"), 3]  # [SEP] kept at the cut
    # the default 256 is longer than this model's 64 positions: it reads 64
    assert tower.max_len == 64 and tower.describe()["max_len"] == 64
    ids = tower.tokenize(["liver " * 100])["input_ids"]
    assert ids.shape == (1, 64) and ids[0, -1].item() == 3
    assert tower(tower.tokenize(["liver " * 100])).shape == (1, 32)


def test_output_is_the_last_layer_cls_vector_of_the_transformers_model(tiny_bert):
    tower = HFTextTower(tiny_bert).eval()
    reference = transformers.BertModel.from_pretrained(tiny_bert, local_files_only=True).eval()
    batch = transformers.AutoTokenizer.from_pretrained(tiny_bert, local_files_only=True)(
        TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**batch)
        got = tower(tower.tokenize(TEXTS))
    torch.testing.assert_close(got, expected.last_hidden_state[:, 0], rtol=0, atol=1e-6)
    assert not torch.allclose(got, expected.pooler_output, atol=1e-3)  # [CLS], not BERT's pooler


def test_gradient_reaches_every_trainable_parameter_and_the_unused_pooler_is_frozen(tiny_bert):
    tower = HFTextTower(tiny_bert).train()
    tower(tower.tokenize(TEXTS)).pow(2).sum().backward()
    trainable = {n: p for n, p in tower.named_parameters() if p.requires_grad}
    frozen = {n for n, p in tower.named_parameters() if not p.requires_grad}
    assert frozen and all(n.startswith("model.pooler.") for n in frozen)
    assert "model.embeddings.word_embeddings.weight" in trainable
    for name, p in trainable.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_registered_as_hf_and_built_from_a_folder_spec(tiny_bert):
    assert TEXT_TOWERS.get("hf") is HFTextTower
    tower = create_text_tower(str(tiny_bert))
    assert isinstance(tower, HFTextTower)
    assert tower.describe() == {"kind": "hf", "max_len": 64, "source": str(tiny_bert)}


def _trained_joint(folder) -> JointText:
    torch.manual_seed(1)
    joint = JointText(HFTextTower(folder), image_dim=8, embed_dim=16)
    with torch.no_grad():  # weights that differ from the folder's: the export must carry them
        joint.tower.model.embeddings.word_embeddings.weight.add_(0.05)
    return joint


def test_export_round_trip_is_exact_and_needs_no_original_folder(tiny_bert, tmp_path):
    joint = _trained_joint(tiny_bert)
    expected = joint.embed_texts(TEXTS)
    text = save_joint_text(joint, tmp_path / "export" / "text")
    assert (text / "hf" / "config.json").is_file() and (text / "hf" / "tokenizer_config.json").is_file()
    assert not list((text / "hf").glob("*.safetensors")) and not list((text / "hf").glob("*.bin"))
    shutil.rmtree(tiny_bert)
    loaded = load_joint_text(tmp_path / "export")
    assert isinstance(loaded.tower, HFTextTower) and not loaded.training
    assert loaded.tower.describe() == {"kind": "hf", "max_len": 64, "source": str(tiny_bert)}
    assert torch.equal(loaded.embed_texts(TEXTS), expected)
    assert torch.equal(loaded.tower.tokenize(TEXTS)["input_ids"], joint.tower.tokenize(TEXTS)["input_ids"])


def test_an_export_without_hf_files_falls_back_to_the_source_folder_then_errors(tiny_bert, tmp_path):
    joint = _trained_joint(tiny_bert)
    expected = joint.embed_texts(TEXTS)
    text = save_joint_text(joint, tmp_path / "text")
    shutil.rmtree(text / "hf")
    assert torch.equal(load_joint_text(text).embed_texts(TEXTS), expected)  # weights still from the export
    shutil.rmtree(tiny_bert)
    with pytest.raises(FileNotFoundError, match=r"hf: no config\.json .*bert"):
        load_joint_text(text)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        HFTextTower.from_description({"kind": "hf", "max_len": 8, "source": str(tiny_bert)}, None)


def test_a_folder_without_config_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        HFTextTower(tmp_path)


def test_missing_transformers_is_an_import_error_naming_the_folder(tiny_bert, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` now raises ImportError
    with pytest.raises(ImportError, match=rf"{tiny_bert.name}: .*pip install transformers"):
        HFTextTower(tiny_bert)


def test_frozen_encoder_is_deterministic_without_gradient(tiny_bert):
    encoder = HFTextTower(tiny_bert, max_len=16).eval().requires_grad_(False)
    assert isinstance(encoder, TextEncoder) and encoder.dim == 32
    first, again = encoder.encode(TEXTS), encoder.encode(TEXTS)
    assert first.shape == (3, 32) and first.dtype == torch.float32 and not first.requires_grad
    assert torch.equal(first, again)
    with torch.no_grad():  # the same vectors as the trainable tower in eval mode
        torch.testing.assert_close(first, HFTextTower(tiny_bert).eval()(encoder.tokenize(TEXTS)))
    frozen = create_text_tower(str(tiny_bert)).eval().requires_grad_(False)  # Triad's text_encoder=<folder>
    torch.testing.assert_close(frozen.encode(TEXTS), HFTextTower(tiny_bert).eval()(frozen.tokenize(TEXTS)))


@pytest.mark.slow
def test_imagetext_trains_a_hugging_face_tower_and_its_export_stands_alone(tiny_bert, tmp_path, monkeypatch):
    """``organfm pretrain --method imagetext method.text_tower=<folder>``: the tower learns, resumes, and the export
    is read back after the user's folder is gone."""
    from organfm.config import load_config
    from organfm.engine.pretrain import pretrain
    from tests.engine.test_every_method import SMALL

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = tmp_path / "run"
    overrides = SMALL + ["backbone.name=test_convnext", "views.global_size=32", "views.num_local_views=0",
                         f"method.text_tower={tiny_bert}", "trainer.max_steps=2", f"trainer.out_dir={run}"]
    pretrain(load_config("imagetext", None, overrides))
    assert not (run / "text" / "tokenizer.json").exists()  # the Hugging Face tokenizer, not a corpus one
    before = HFTextTower(tiny_bert).state_dict()
    shutil.rmtree(tiny_bert)
    joint = load_joint_text(run / "export")
    assert isinstance(joint.tower, HFTextTower) and (run / "export" / "text" / "hf" / "config.json").is_file()
    after = joint.tower.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)  # two steps moved the encoder
    assert joint.embed_texts(["a ct image of the liver"]).shape == (1, 128)
