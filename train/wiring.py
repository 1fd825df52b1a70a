"""Fixed random wiring between layers (DESIGN §2.7).

Wiring is drawn once, from a seed, with numpy's PCG64 so that the same seed gives the same
wiring on every machine and process. It is stored with the weights, never trained.
"""

import numpy as np

__all__ = ["WIRINGS", "make_wiring"]

WIRINGS = ("random", "unique", "windowed")


def make_wiring(in_features, gates, gate_inputs, scheme="random", seed=0, window=64):
    """Return an ``int64`` array ``[gates, gate_inputs]`` of input indices.

    ``random``: every input is used ``floor`` or ``ceil`` of ``gates * n / in_features`` times
    when ``gates * n >= in_features`` (difflogic's scheme, generalised to n inputs); a gate may
    read one input twice.
    ``unique``: as ``random`` but each gate reads ``n`` distinct inputs; every input of the
    previous layer is still read at least once when ``gates * n >= in_features``.
    ``windowed``: gate ``g`` reads ``n`` distinct inputs from the ``window`` consecutive features
    starting at ``floor(g * in_features / gates) - window // 2`` (wrapping around), so that
    neighbouring gates read neighbouring features: local wiring that places and routes far
    better on an FPGA (DESIGN §4).
    """
    if scheme not in WIRINGS:
        raise ValueError(f"wiring must be one of {WIRINGS}, not {scheme!r}")
    if in_features < 1 or gates < 1 or not 1 <= gate_inputs <= 6:
        raise ValueError(
            f"need in_features >= 1, gates >= 1 and 1 <= gate_inputs <= 6, "
            f"not ({in_features}, {gates}, {gate_inputs})"
        )
    if scheme == "unique" and gate_inputs > in_features:
        raise ValueError(
            f"'unique' wiring needs at least {gate_inputs} inputs per gate, the previous layer "
            f"has {in_features}"
        )
    rng = np.random.Generator(np.random.PCG64(seed))
    if scheme == "windowed":
        return _windowed(in_features, gates, gate_inputs, window, rng)
    slots = gates * gate_inputs
    # Concatenated permutations: the first covers every input once, the rest spread the load.
    copies = -(-slots // in_features)
    pool = np.concatenate([rng.permutation(in_features) for _ in range(copies)])[:slots]
    wiring = rng.permutation(pool).reshape(gates, gate_inputs)
    if scheme == "unique" and gate_inputs > 1:
        _make_distinct(wiring, in_features, rng)
    return wiring.astype(np.int64)


def _make_distinct(wiring, in_features, rng):
    """Replace repeated inputs inside a gate; every value a replaced slot held stays used by
    the slot it duplicated, so coverage of the previous layer is kept."""
    ordered = np.sort(wiring, axis=1)
    bad = np.nonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))[0]
    for g in bad:
        row = wiring[g]
        seen = set()
        for j in range(row.size):
            if row[j] in seen:
                while True:
                    candidate = int(rng.integers(in_features))
                    if candidate not in seen and candidate not in row[j + 1 :]:
                        break
                row[j] = candidate
            seen.add(int(row[j]))


def _windowed(in_features, gates, gate_inputs, window, rng):
    window = min(window, in_features)
    if window < gate_inputs:
        raise ValueError(f"'windowed' wiring needs a window of at least {gate_inputs} features, not {window}")
    starts = np.arange(gates, dtype=np.int64) * in_features // gates - window // 2
    # n distinct offsets per gate: the first n of a random permutation of the window
    offsets = np.argsort(rng.random((gates, window)), axis=1)[:, :gate_inputs]
    return ((starts[:, None] + offsets) % in_features).astype(np.int64)
