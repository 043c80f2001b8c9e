"""The exported encoder in other frameworks' layouts: nnU-Net v2 (``PlainConvUNet``) and MONAI (``SwinUNETR``)."""
from organfm.interop.formats import (EXPORT_FORMATS, FORMAT_FILES, check_export_format, remove_stale_formats,
                                     save_export_format)
from organfm.interop.monai import build_monai_weights, build_swinunetr_args
from organfm.interop.nnunet import build_nnunet_architecture, build_nnunet_weights

__all__ = ["EXPORT_FORMATS", "FORMAT_FILES", "build_monai_weights", "build_nnunet_architecture",
           "build_nnunet_weights", "build_swinunetr_args", "check_export_format", "remove_stale_formats",
           "save_export_format"]
