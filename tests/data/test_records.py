"""``content_hash`` and ``hash_file``: one digest for bytes in memory and the same bytes on disk."""
from __future__ import annotations

import hashlib

from organfm.data.records import content_hash, hash_file


def test_a_file_hashes_like_its_bytes_across_chunk_boundaries(tmp_path):
    data = bytes(range(256)) * ((3 << 20) // 256 + 7)  # more than three 1 MiB chunks, not a multiple of one
    path = tmp_path / "v.bin"
    path.write_bytes(data)
    assert hash_file(path) == content_hash(data) == hashlib.blake2b(data, digest_size=16).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert hash_file(tmp_path / "empty") == content_hash(b"") == "cae66941d9efbd404e4d88758ea67670"
