"""TransformerLens weight views of a tower, stacked over its blocks (copies, not views).

Shapes as in TransformerLens: W_Q/W_K/W_V [n_layers, n_heads, d_model, d_head], W_O
[n_layers, n_heads, d_head, d_model], b_Q/b_K/b_V [n_layers, n_heads, d_head], b_O [n_layers, d_model],
W_in [n_layers, d_model, d_mlp], b_in [n_layers, d_mlp], W_out [n_layers, d_mlp, d_model], b_out
[n_layers, d_model]; QK and OV as FactoredMatrix. They are the weights of the forward pass as it
is: where the model has LayerScale, `ls1.gamma` / `ls2.gamma` multiply attention and MLP outputs
after W_O / W_out (per block `blocks[l].ls1.gamma`; stacked in `ls_attn` / `ls_mlp`, ones without).
Per block the same views are `blocks[l].attn.W_Q`, `blocks[l].mlp.W_in`, ...
"""

import torch
from transformer_lens import FactoredMatrix


def _stack(tower, part: str, name: str) -> torch.Tensor:
    return torch.stack([getattr(getattr(b, part), name) for b in tower.blocks])


def _gammas(tower, which: str) -> torch.Tensor:
    d = tower.cfg.block.d_model
    ref = tower.blocks[0].attn.out_proj.weight
    return torch.stack([getattr(getattr(b, which), "gamma", torch.ones(d, device=ref.device, dtype=ref.dtype))
                        for b in tower.blocks])


class TowerWeights:
    W_Q = property(lambda self: _stack(self, "attn", "W_Q"))
    W_K = property(lambda self: _stack(self, "attn", "W_K"))
    W_V = property(lambda self: _stack(self, "attn", "W_V"))
    W_O = property(lambda self: _stack(self, "attn", "W_O"))
    b_Q = property(lambda self: _stack(self, "attn", "b_Q"))
    b_K = property(lambda self: _stack(self, "attn", "b_K"))
    b_V = property(lambda self: _stack(self, "attn", "b_V"))
    b_O = property(lambda self: _stack(self, "attn", "b_O"))
    W_in = property(lambda self: _stack(self, "mlp", "W_in"))
    b_in = property(lambda self: _stack(self, "mlp", "b_in"))
    W_out = property(lambda self: _stack(self, "mlp", "W_out"))
    b_out = property(lambda self: _stack(self, "mlp", "b_out"))
    ls_attn = property(lambda self: _gammas(self, "ls1"), doc="[n_layers, d_model] LayerScale after attention")
    ls_mlp = property(lambda self: _gammas(self, "ls2"), doc="[n_layers, d_model] LayerScale after the MLP")

    @property
    def QK(self) -> FactoredMatrix:
        """[n_layers, n_heads, d_model, d_model] = W_Q @ W_K^T, factored."""
        return FactoredMatrix(self.W_Q, self.W_K.transpose(-2, -1))

    @property
    def OV(self) -> FactoredMatrix:
        """[n_layers, n_heads, d_model, d_model] = W_V @ W_O, factored."""
        return FactoredMatrix(self.W_V, self.W_O)
