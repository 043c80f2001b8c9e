"""The built-in evaluation protocols, one module each; importing this package registers them.

Add a protocol by adding a module here with one ``@register_protocol`` function (and its config
dataclass) and importing it below; see ``organfm.evaluation.protocol``.
"""
from __future__ import annotations

from organfm.evaluation import subjects, volumes  # noqa: F401  (subjects: Pan-FM; finetune3d, segmentation3d)
from organfm.evaluation.protocols import (clusters, fewshot, finetune, knn, linear, retrieval,  # noqa: F401
                                          segmentation, zeroshot)
