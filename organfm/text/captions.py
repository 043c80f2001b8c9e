"""Captions templated from what a dataset knows (organ, modality, label), for images without a text column."""
from __future__ import annotations

__all__ = ["caption", "prompts"]

TEMPLATE = "a {modality} image of the {organ}{label}"


def caption(organ: str | None, *, modality: str = "medical", label: str | None = None,
            template: str = TEMPLATE) -> str:
    """``caption("liver", modality="CT", label="tumour")`` -> ``"a CT image of the liver with tumour"``.

    Underscores become spaces; an unknown organ (None) becomes "body".
    """
    organ_text = (organ or "body").replace("_", " ")
    label_text = f" with {str(label).replace('_', ' ')}" if label else ""
    return template.format(modality=modality, organ=organ_text, label=label_text)


def prompts(class_names: list[str], *, modality: str = "medical") -> list[str]:
    """One zero-shot prompt per class name (the same template as the training captions)."""
    return [caption(name, modality=modality) for name in class_names]
