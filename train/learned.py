"""Learned connections (``model.wiring = "learned"``).

Each input ``j`` of gate ``g`` chooses among ``C`` candidate features of the previous layer, all
taken from the gate's window (the ``windowed`` wiring's ``model.window`` features around
``g * in_features / gates``), so that whatever it chooses stays local and routable. The choice is
a trainable logit per candidate: in training (and ``soft`` mode) the input is the softmax-weighted
mix of its candidates, ``a_gj = sum_c softmax(L_gj)_c x[cand_gjc]`` (on the CPU kernels one fused
op, :func:`dlgn.train.kernels.cpu.mix_forward`; otherwise a gather and a batched matrix product),
fed to the same gate kernels (the mixed inputs as a feature tensor read one to one); in ``discrete`` mode each input reads its
argmax candidate alone. The ``wiring`` buffer always holds that argmax choice, so the discrete
model is a fixed-wiring network: the compiler, the golden model and the hardware see an ordinary
netlist (the idea of DWN's learnable mapping and torchlogix's ``connections="learnable"``).

``model.wiring_temperature_end`` below 1 divides the logits by a temperature that stays 1 for the
first half of the steps and then falls exponentially to that value (:func:`wiring_temperature`), so
that the softmax ends close to the argmax the discrete model reads.

Candidate 0 of every input is the ``windowed`` wiring's choice and starts with a logit of
:data:`INIT_LOGIT` (the others 0), so training starts close to fixed windowed wiring.
"""

import math

import numpy as np
import torch
from torch import nn

from . import kernels as K
from .layers import LogicLayer

__all__ = ["LearnedLogicLayer", "INIT_LOGIT", "candidate_inputs", "wiring_temperature", "set_wiring_temperature"]

#: starting logit of each input's first candidate (the windowed wiring's): with 8 candidates its
#: softmax weight starts at about 0.74
INIT_LOGIT = 3.0


def wiring_temperature(end, step, total_steps):
    """The wiring softmax's temperature at ``step`` (0-based) of ``total_steps``: 1 for the first
    half, then exponentially down to ``end`` at the last step."""
    if end >= 1 or total_steps <= 0:
        return 1.0
    p = min(step, total_steps) / total_steps
    return 1.0 if p <= 0.5 else math.exp(math.log(end) * (p - 0.5) / 0.5)


def set_wiring_temperature(net, temperature):
    """Set the temperature of every learned-wiring layer of ``net``."""
    for layer in net.modules():
        if isinstance(layer, LearnedLogicLayer):
            layer.temperature = float(temperature)


def candidate_inputs(in_features, gates, gate_inputs, candidates, window, seed):
    """``int64 [gates, gate_inputs, candidates]``: distinct features of each gate's window
    (``gate_inputs * candidates`` of them when the window holds that many, else distinct within
    each input); ``[:, :, 0]`` is the ``windowed`` wiring of the same seed."""
    from .wiring import make_wiring

    window = min(window, in_features)
    if candidates > window:
        raise ValueError(f"{candidates} candidates per input need a window of at least as many features, not {window}")
    first = make_wiring(in_features, gates, gate_inputs, "windowed", seed, window)  # [G, n]
    rng = np.random.Generator(np.random.PCG64(seed + 7919))
    starts = np.arange(gates, dtype=np.int64) * in_features // gates - window // 2
    offsets_first = (first - starts[:, None]) % in_features  # position of each first choice in the window
    scores = rng.random((gates, window))
    out = np.empty((gates, gate_inputs, candidates), dtype=np.int64)
    if gate_inputs * candidates <= window:
        # the first choices, then the rest of the window in random order, dealt out to the inputs
        rows = np.arange(gates)[:, None]
        scores[rows, offsets_first] = -1.0  # the first choices sort first, in input order
        scores[rows, offsets_first] -= np.arange(gate_inputs)[None, ::-1]
        order = np.argsort(scores, axis=1)[:, :gate_inputs * candidates]
        extra = order[:, gate_inputs:].reshape(gates, gate_inputs, candidates - 1)
        out[:, :, 0] = offsets_first
        out[:, :, 1:] = extra
    else:
        for j in range(gate_inputs):
            s = rng.random((gates, window))
            s[np.arange(gates), offsets_first[:, j]] = -1.0
            out[:, j, :] = np.argsort(s, axis=1)[:, :candidates]
    return ((starts[:, None, None] + out) % in_features).astype(np.int64)


class LearnedLogicLayer(LogicLayer):
    """A :class:`LogicLayer` whose inputs are chosen by training (see the module doc)."""

    def __init__(self, in_features, gates, gate_inputs=2, parametrization="iwp", estimator="sin01",
                 init="residual", seed=0, gumbel=False, gumbel_tau=1.0, kernels="auto", window=64, candidates=8):
        super().__init__(in_features, gates, gate_inputs, parametrization, estimator, init, "windowed", seed, gumbel,
                         gumbel_tau, kernels, window)
        cand = torch.from_numpy(candidate_inputs(in_features, gates, gate_inputs, candidates, window, seed))
        self.register_buffer("candidates", cand)
        logits = torch.zeros(gates, gate_inputs, candidates)
        logits[:, :, 0] = INIT_LOGIT
        self.connection_logits = nn.Parameter(logits)
        self.temperature = 1.0  # of the softmax; the training loop anneals it (wiring_temperature)
        self.register_buffer("_identity", torch.arange(gates * gate_inputs, dtype=torch.int64).reshape(gates, gate_inputs),
                             persistent=False)
        self._identity_reverse = K.ReverseIndexCache()
        self.sync_wiring()

    @torch.no_grad()
    def chosen_wiring(self):
        """The argmax candidate of every input, ``[gates, gate_inputs]``."""
        pick = self.connection_logits.argmax(-1, keepdim=True)
        return self.candidates.gather(-1, pick).squeeze(-1)

    @torch.no_grad()
    def sync_wiring(self):
        self.wiring.copy_(self.chosen_wiring())

    def forward(self, x, mode=None):
        mode = mode or ("train" if self.training else "discrete")
        tables = self.tables_for(mode, x.dtype)
        if mode == "discrete":  # the run evaluates discretely before every checkpoint: wiring is saved synced
            self.sync_wiring()
            return self.gate_level(x, self.wiring, tables, reverse_index=self._reverse_index)
        weights = torch.softmax(self.connection_logits / self.temperature, dim=-1).to(x.dtype)  # [G, n, C]
        slots, count = self.gates * self.gate_inputs, self.candidates.shape[-1]
        if x.shape[1] and self._kernels_for(x) == "cpu":  # fused: no [G*n, C, B] copy of the candidates
            mixed = K.cpu_mix_forward(x, self.candidates.reshape(slots, count), weights.reshape(slots, count))
        else:
            picked = x.index_select(0, self.candidates.reshape(-1)).reshape(slots, count, x.shape[1])
            mixed = torch.bmm(weights.reshape(slots, 1, count), picked).reshape(slots, x.shape[1])  # [G*n, B]
        return self.gate_level(mixed, self._identity, tables, reverse_index=self._identity_reverse)

    def decided_share(self, margin=0.9):
        """Share of inputs whose chosen candidate has at least ``margin`` of the softmax weight."""
        with torch.no_grad():
            weights = torch.softmax(self.connection_logits / self.temperature, -1)
            return weights.amax(-1).ge(margin).float().mean().item()

    def extra_repr(self):
        return super().extra_repr() + f", learned wiring over {self.candidates.shape[-1]} candidates"
