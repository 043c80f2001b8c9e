"""The built-in evaluation protocols, one module each; importing this package registers them.

Add a protocol by adding a module here with one ``@register_protocol`` function (and its config
dataclass) and importing it below; see ``organfm.evaluation.protocol``.
"""
from __future__ import annotations

from organfm.evaluation.protocols import clusters, fewshot, finetune, knn, linear, segmentation  # noqa: F401
from organfm.evaluation import volumes as _volumes  # noqa: E402,F401  (finetune3d, segmentation3d)
from organfm.evaluation import subjects as _subjects  # noqa: E402,F401  (subjects: Pan-FM organ sets)
