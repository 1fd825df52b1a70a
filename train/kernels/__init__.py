"""Fused kernels for logic layers: Triton (CUDA; on CPU only through Triton's interpreter) and
C++ for the CPU (:mod:`dlgn.train.kernels.cpu`, :func:`cpu_gate_forward`).

One fused op covers every layer the trainer builds: :func:`gate_forward` gathers each gate's
``n`` inputs (1 to 6) by the fixed wiring and evaluates its relaxed (or hard) truth table, with
hand-written backward kernels to the tables and to the inputs. The parametrizations (IWP with
sin01 or sigmoid, OP's 16-function mixture, Gumbel straight-through, hard evaluation tables) only
differ in how the ``[gates, 2**n]`` tables are made, which stays in PyTorch (see
:class:`dlgn.train.layers.LogicLayer`). Semantics are those of the reference,
:func:`dlgn.train.functional.gate_forward`.

Importing this package does not import Triton: :func:`gate_forward` loads
:mod:`dlgn.train.kernels.gate` (and Triton) on its first call, so the trainer runs where Triton
or a GPU is missing. :func:`build_reverse_index` is plain PyTorch. The CPU kernels are compiled
on their first use (:func:`cpu_can_run` or :func:`cpu_gate_forward`), once per machine.
"""

import importlib.util
import os
import warnings

from . import cpu
from .reverse_index import ReverseIndex, ReverseIndexCache, build_reverse_index

__all__ = ["gate_forward", "build_reverse_index", "ReverseIndex", "ReverseIndexCache", "triton_available", "can_run",
           "cpu_gate_forward", "cpu_mix_forward", "cpu_can_run", "cpu_cannot_run_reason"]

cpu_gate_forward = cpu.gate_forward
cpu_mix_forward = cpu.mix_forward
_warned_cpu_build = False


def triton_available():
    """Whether Triton is installed (it is not imported)."""
    return importlib.util.find_spec("triton") is not None


def can_run(x):
    """Whether :func:`gate_forward` can run on ``x``'s device: a CUDA tensor with Triton
    installed, or a CPU tensor when the kernels run in Triton's interpreter
    (``TRITON_INTERPRET=1`` set before their first import)."""
    if not triton_available():
        return False
    if x.is_cuda:
        return True
    if os.environ.get("TRITON_INTERPRET", "0").lower() not in ("1", "true", "yes", "on"):
        return False
    from . import gate

    return gate.INTERPRETED


def gate_forward(x, wiring, tables, reverse_index=None, deterministic=True, table_index=None, table_groups=None):
    """One layer of gates through the Triton kernels; differentiable in ``x`` and ``tables``.

    ``x``: ``[in_features, batch]`` float32 / bfloat16 / float16, batch contiguous;
    ``wiring``: ``[gates, n]`` int64 (or int32) indices into ``x``'s rows, ``1 <= n <= 6``;
    ``tables``: ``[gates, 2**n]`` relaxed or hard entries, computed in float32.
    Returns ``[gates, batch]`` in ``x``'s dtype; the table gradient comes back in
    ``tables.dtype``, ``x``'s in ``x.dtype``.

    ``reverse_index``: ``build_reverse_index(wiring, in_features)``, built once per layer and
    cached (it only depends on the fixed wiring; :class:`ReverseIndexCache` does that); without
    it each backward builds one.
    ``deterministic=False`` sums the input gradient with fp32 atomics instead of the reverse
    index (run-to-run sum order then varies).
    ``table_index [gates]``: gate ``g`` evaluates ``tables[table_index[g]]`` (shared tables, as in
    convolutional layers), the table gradient summed over the gates of each table in a fixed
    order (``table_groups``: ``build_reverse_index(table_index[:, None], len(tables))``, cached by
    the caller).
    """
    from .gate import gate_forward as triton_gate_forward

    return triton_gate_forward(x, wiring, tables, reverse_index, deterministic, table_index, table_groups)


def cpu_cannot_run_reason(x):
    """Why :func:`cpu_gate_forward` cannot run on ``x`` (``None`` when it can)."""
    if x.device.type != "cpu":
        return f"train.kernels = 'cpu' needs CPU tensors, not {x.device.type}"
    if x.dtype not in cpu.ACTIVATION_DTYPES:
        return f"train.kernels = 'cpu' needs float32 or float64 activations, not {x.dtype}"
    error = cpu.build_error()
    return f"train.kernels = 'cpu': {error}" if error else None


def cpu_can_run(x, warn=False):
    """Whether :func:`cpu_gate_forward` runs on ``x`` (a float32/float64 CPU tensor, the kernels
    built; the first call builds them). With ``warn``, a failed build warns once."""
    global _warned_cpu_build
    if x.device.type != "cpu" or x.dtype not in cpu.ACTIVATION_DTYPES:
        return False
    if cpu.available():
        return True
    if warn and not _warned_cpu_build:
        _warned_cpu_build = True
        warnings.warn(f"{cpu.build_error()}\nfalling back to the slower PyTorch reference (train.kernels = "
                      "'reference' silences this)", RuntimeWarning, stacklevel=3)
    return False
