"""Counter-style random streams: one generator per (seed, key), so any work unit can be
regenerated alone and the output does not depend on how Spark partitions the units."""

from __future__ import annotations

import hashlib

import numpy as np


def key_int(part: object) -> int:
    """A stable 32-bit integer for an int or a string (Python's hash() is salted per process)."""
    if isinstance(part, bool):
        return int(part)
    if isinstance(part, int | np.integer):
        return int(part) & 0xFFFFFFFF
    return int.from_bytes(hashlib.sha1(str(part).encode("utf-8")).digest()[:4], "big")


def rng_for(seed: int, *key: object) -> np.random.Generator:
    """An independent generator for one purpose/unit; same (seed, key) -> same stream."""
    entropy = [key_int(seed), *(key_int(k) for k in key)]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy)))
