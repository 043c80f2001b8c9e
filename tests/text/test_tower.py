"""Text towers: built by name or from a folder, with clear errors; the joint image/text side saves and loads."""
from __future__ import annotations

import pytest
import torch

from organfm.text.small import SmallTextEncoder
from organfm.text.tokenizer import WordTokenizer


def test_a_hugging_face_folder_without_config_is_a_clear_error(tmp_path):
    from organfm.text.tower import create_text_tower

    with pytest.raises(FileNotFoundError, match="no config.json"):
        create_text_tower(str(tmp_path))
    with pytest.raises(ValueError, match="unknown text tower 'bert'; valid: hash, hf, small, or a local"):
        create_text_tower("bert")


def test_joint_text_saves_and_loads_the_same_embeddings(tmp_path):
    from organfm.text.tower import JointText, load_joint_text, save_joint_text, text_folder

    tok = WordTokenizer.from_corpus(["a ct of the liver", "an mri of the brain"])
    torch.manual_seed(0)
    joint = JointText(SmallTextEncoder(tok, width=8, depth=1, heads=2), image_dim=5, embed_dim=4)
    with torch.no_grad():
        joint.logit_scale.fill_(3.0)
    save_joint_text(joint, tmp_path / "export" / "text")
    assert text_folder(tmp_path) == tmp_path / "export" / "text"  # a run folder finds its export's text side
    loaded = load_joint_text(tmp_path / "export")
    texts = ["a ct of the liver", "an mri of the brain", "a ct of the liver"]
    assert torch.equal(loaded.embed_texts(texts), joint.embed_texts(texts))
    emb = joint.embed_texts(texts)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3)) and torch.equal(emb[0], emb[2])
    feats = torch.randn(3, 5)
    assert torch.equal(loaded.image(feats), joint.image(feats)) and loaded.logit_scale.item() == 3.0
    with pytest.raises(FileNotFoundError, match="no text tower"):
        load_joint_text(tmp_path / "nothing")
