"""Output folders: what a command with ``--out`` may write, and how.

A command never deletes or overwrites what it did not write. ``organfm cache``, ``embed``, ``synth`` and
``export`` each recognise their own output folders by a marker file (``.organfm-output``, or the folder's own
index file for folders written before the marker existed) and refuse any other non-empty folder. Folders
that are replaced whole (cache, synth) are written into ``<out>.partial`` and renamed into place, so a
failure leaves the previous folder as it was and no partial folder behind. A full disk becomes one line
naming the folder. One process at a time writes a folder (:class:`FolderLock`).
"""
from organfm.outputs.atomic import atomic_path, file_mode, write_atomic
from organfm.outputs.folder import (MARKER, DiskFullError, OutputFolderError, StagedFolder, check_output_folder,
                                    disk_full_guard, is_disk_full, require_free_space, write_marker)
from organfm.outputs.lock import FolderBusy, FolderLock
from organfm.outputs.npy import NpyWriter, write_npy

__all__ = ["MARKER", "DiskFullError", "FolderBusy", "FolderLock", "NpyWriter", "OutputFolderError", "StagedFolder",
           "atomic_path", "check_output_folder", "disk_full_guard", "file_mode", "is_disk_full", "require_free_space",
           "write_atomic", "write_marker", "write_npy"]
