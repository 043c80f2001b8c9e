"""Texts of images: a manifest's text column, or captions templated from what a dataset knows.

An image's text is its manifest's ``text`` column (any name, ``text_column``) when the manifest has one;
otherwise a caption is templated from its organ, its modality (a manifest ``modality`` column, else the
``modality`` argument) and, if asked, its label: "a CT image of the liver".
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["TEXT_MODES", "caption", "check_template", "prompts", "record_texts"]

TEMPLATE = "a {modality} image of the {organ}{label}"
# auto: the column where the data has one (else no text); column: the column, required; captions: templated;
# none: images only
TEXT_MODES = ("auto", "column", "captions", "none")


def caption(organ: str | None, *, modality: str = "medical", label: str | None = None,
            template: str = TEMPLATE) -> str:
    """``caption("liver", modality="CT", label="tumour")`` -> ``"a CT image of the liver with tumour"``.

    Underscores become spaces; an unknown organ (None) becomes "body".
    """
    organ_text = (organ or "body").replace("_", " ")
    label_text = f" with {str(label).replace('_', ' ')}" if label else ""
    return template.format(modality=modality, organ=organ_text, label=label_text)


def check_template(template: str, key: str) -> str:
    """``template`` when it formats as a caption; else a ValueError naming the setting ``key`` and the placeholders.

    Args:
        template: a caption template (placeholders ``{modality}``, ``{organ}``, ``{label}``).
        key: the setting that holds it (``zeroshot.template``), for the message.
    """
    try:
        caption("organ", template=template)
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"{key}={template!r} is not a caption template ({type(e).__name__}: {e}); it may use "
                         "{modality}, {organ} and {label}") from None
    return template


def prompts(class_names: list[str], *, modality: str = "medical", template: str = TEMPLATE) -> list[str]:
    """One zero-shot prompt per class name (the same template as the training captions)."""
    return [caption(name, modality=modality, template=template) for name in class_names]


def record_texts(records: Sequence[Any], *, mode: str = "auto", column: str = "text", modality: str = "medical",
                 with_label: bool = False, where: str = "data") -> list[str] | None:
    """One text per record, or None when ``mode`` leaves the images without text.

    Args:
        records: :class:`organfm.data.records.Record` items (``meta``, ``organ``, ``label``, ``where``).
        mode: one of :data:`TEXT_MODES`. ``auto`` uses ``column`` when any record has it, else returns None.
        column: the manifest column that holds each image's text.
        modality: the modality word of templated captions for records without a ``modality`` column.
        with_label: add the record's label to templated captions ("... with pneumonia").
        where: the data source, named in errors.

    Raises:
        ValueError: an unknown mode.
        organfm.data.errors.DataError: ``column`` mode without the column, or a record whose text is empty or
            missing while others have one (naming the record's file).
    """
    from organfm.data.errors import DataError

    if mode not in TEXT_MODES:
        raise ValueError(f"text mode must be one of {', '.join(TEXT_MODES)}, got {mode!r}")
    if mode == "none":
        return None
    if mode == "captions":
        return [caption(r.organ, modality=str(r.meta.get("modality") or modality),
                        label=r.label if with_label else None) for r in records]
    has = [column in r.meta for r in records]
    if not any(has):
        if mode == "column":
            raise DataError(f"{where}: no record has a {column!r} column; add it to the manifest, or use "
                            "texts=captions to template captions from organ and modality")
        return None
    out = []
    for r in records:
        text = r.meta.get(column)
        if not isinstance(text, str) or not text.strip():
            raise DataError(f"{r.where}: its {column!r} text is empty ({text!r}); every image needs one "
                            "(or use texts=captions, or texts=none for images only)")
        out.append(text.strip())
    return out
