"""File names that are not UTF-8 are shown as readable, writable escapes; ordinary text passes untouched."""
from __future__ import annotations

import os

from organfm.data.runfiles import printable


def test_a_non_utf8_file_name_is_shown_as_a_backslash_escape():
    name = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name as Python receives it on a UTF-8 system
    assert name == "caf\udce9.png"
    shown = printable(name)
    assert shown == "caf\\xe9.png"
    shown.encode("utf-8")  # writable to a UTF-8 log: no UnicodeEncodeError


def test_utf8_text_is_returned_itself():
    text = "café/Leber_Ø.nii.gz"
    assert printable(text) is text
