"""Item embeddings kept on disk per model version and encoder set-up, keyed by the item's
text, so a pool that starts (or restarts) loads the catalog's vectors instead of
computing them while the first triggers wait.

Layout: ``<root>/<version>-<fingerprint>/seg-<ns>-<pid>.pt``, one segment per save holding
only the vectors new since the last save (a save costs what it adds, not the whole
catalog). Every segment is written under a hidden name and renamed into place, so a
reader never sees half of one; several processes may write beside each other. Loading
reads every segment; past ``COMPACT_AFTER`` segments the loader merges them into one.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog
import torch

log = structlog.get_logger(__name__)
COMPACT_AFTER = 32
SEGMENT_GLOB = "seg-*.pt"


def encoder_fingerprint(model_dir: Path, dtype: Any, *, int8: bool, max_length: int, layout: str) -> str:
    """What decides an item's vector besides its text: the weights (by path, size and
    modification time), the dtype, quantization, the token limit and the batch layout."""
    parts = [str(Path(model_dir).resolve()), str(dtype), f"int8={int8}", f"max_length={max_length}", layout]
    for name in sorted(os.listdir(model_dir)):
        if name.endswith((".safetensors", ".bin")):
            st = (Path(model_dir) / name).stat()
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.blake2b("\n".join(parts).encode(), digest_size=8).hexdigest()


class ItemVectorStore:
    def __init__(self, root: Path, version: str, fingerprint: str) -> None:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in version)[:64]
        self.dir = Path(root) / f"{safe}-{fingerprint}"

    def load(self) -> dict[bytes, torch.Tensor]:
        """Text digest -> vector, from every segment. A segment that cannot be read is
        skipped (and logged): the vectors it held are computed again."""
        vectors: dict[bytes, torch.Tensor] = {}
        segments = sorted(self.dir.glob(SEGMENT_GLOB)) if self.dir.is_dir() else []
        read: list[Path] = []
        for path in segments:
            try:
                data = torch.load(path, weights_only=True)
                digests, matrix = data["digests"], data["vectors"]
            except Exception as exc:  # a damaged file costs recomputation, never the start
                log.warning("item embedding segment unreadable; skipped", path=str(path), error=repr(exc)[:200])
                continue
            for row, digest in enumerate(digests.numpy()):
                vectors.setdefault(bytes(digest), matrix[row])
            read.append(path)
        if len(read) > COMPACT_AFTER:
            self._compact(vectors, read)
        return vectors

    def save(self, vectors: Mapping[bytes, torch.Tensor]) -> Path | None:
        """Write ``vectors`` as one new segment; None when there is nothing to write."""
        if not vectors:
            return None
        self.dir.mkdir(parents=True, exist_ok=True)
        digests = torch.tensor([list(d) for d in vectors], dtype=torch.uint8)
        matrix = torch.stack(list(vectors.values())).contiguous()
        final = self.dir / f"seg-{time.time_ns()}-{os.getpid()}.pt"
        hidden = self.dir / f".{final.name}.partial"
        torch.save({"digests": digests, "vectors": matrix}, hidden)
        os.replace(hidden, final)
        return final

    def _compact(self, vectors: Mapping[bytes, torch.Tensor], segments: list[Path]) -> None:
        merged = self.save(vectors)
        for path in segments:
            if path != merged:
                path.unlink(missing_ok=True)  # another process may have compacted it already
        log.info("item embedding segments merged", segments=len(segments), vectors=len(vectors))
