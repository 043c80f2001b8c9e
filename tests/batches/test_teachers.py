"""MMKD's teacher preparation says what it does while it takes minutes: embedding each teacher, fitting the projector."""
from __future__ import annotations

from organfm.batches import create_batch_source
from tests.batches.test_features import _ctx


def test_progress_lines_while_embedding_teachers_and_fitting_the_projector(tmp_path, capsys):
    create_batch_source("features", _ctx(tmp_path))
    err = capsys.readouterr().err
    assert "organfm mmkd: embedding teacher a (random:test_resnet) on 16 images" in err
    assert "organfm mmkd: embedding teacher b (random:test_convnext) on 16 images" in err
    assert "organfm mmkd: teacher a: " in err and "features per image" in err
    assert "organfm mmkd: fitting the projector of 2 teachers to a 8-d space (10 steps)" in err
    assert "organfm mmkd: projector fitted in" in err
