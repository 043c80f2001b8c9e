"""The built-in evaluation protocols, one module each, named like the protocol; importing this package registers them.

Add a protocol by adding a module here with one ``@register_protocol`` function (and its config
dataclass) and importing it below; see ``organfm.evaluation.protocol``. Protocols never import each other:
pieces two of them share live beside this package (``probes``, ``finetuning``, ``maps``) or in ``organfm.data``.
"""
from __future__ import annotations

from organfm.evaluation.protocols import (clusters, fewshot, finetune, finetune3d, knn, linear,  # noqa: F401
                                          retrieval, segmentation, segmentation3d, subjects, zeroshot)
