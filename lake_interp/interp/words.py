"""Neuron to language: the direction a neuron writes, carried to the joint space, against words.

For an MLP neuron (`blocks.l.mlp.hook_post`, channel i) the direction is its output weight
column W_out[:, i] (times LayerScale); for a residual-stream channel it is the unit vector e_i.
It is carried through `ln_post` linearised (centred, times the LayerNorm weight; the positive
1/scale factor is dropped, it does not change cosines) and `proj`, as in Gandelsman et al.'s
decomposition of CLIP's image representation, then compared by cosine with the text embeddings
of a vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from lake_interp.interp.targets import Neurons, check_neurons

DEFECT_WORDS = (
    "scratch", "crack", "hole", "stain", "dent", "rust", "contamination", "missing part", "broken",
    "bent", "cut", "fold", "glue", "discoloration", "tear", "wear", "burn", "chip", "leak", "defect",
    "damage", "flawless", "perfect", "clean", "smooth", "normal",
)
MATERIAL_WORDS = (
    "metal", "plastic", "wood", "leather", "fabric", "glass", "carpet", "tile", "rubber", "paper",
    "red", "green", "blue", "yellow", "magenta", "white", "black", "texture", "grid", "object",
)
VOCABULARY = DEFECT_WORDS + MATERIAL_WORDS
RESIDUAL_SITES = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post", "hook_attn_out", "hook_mlp_out")


@dataclass
class NeuronWords:
    words: list[str]
    neurons: list[tuple[str, int]]
    similarity: torch.Tensor  # [n_neurons, n_words] cosine

    def rows(self) -> list[dict]:
        """One record per (neuron, word): the numbers behind `words_figure`."""
        return [{"hook": hook, "index": i, "word": w, "cosine": float(c)}
                for (hook, i), sims in zip(self.neurons, self.similarity) for w, c in zip(self.words, sims)]

    def top(self, k: int = 5) -> list[dict]:
        """Per neuron, the k words it writes most (highest cosine) and least."""
        rows = []
        for (hook, i), sims in zip(self.neurons, self.similarity):
            order = sims.argsort(descending=True)
            rows.append({
                "hook": hook, "index": i,
                "top": [(self.words[j], float(sims[j])) for j in order[:k]],
                "bottom": [(self.words[j], float(sims[j])) for j in order[-k:].flip(0)],
            })
        return rows


def neuron_direction(model, hook: str, index: int) -> torch.Tensor:
    """[d_model] direction the neuron adds to the residual stream of the vision tower."""
    site = hook.split(".", 3)[3]
    block = int(hook.split(".")[2])
    if site == "mlp.hook_post":
        blk = model.visual.blocks[block]
        d = blk.mlp.c_proj.weight[:, index]
        gamma = getattr(blk.ls2, "gamma", None)
        return d * gamma if gamma is not None else d
    if site in RESIDUAL_SITES:
        return F.one_hot(torch.tensor(index), model.cfg.vision.block.d_model).to(model.visual.proj)
    raise ValueError(f"neuron_words supports mlp.hook_post and residual hooks {RESIDUAL_SITES}, not {hook!r}")


def joint_direction(model, direction: torch.Tensor) -> torch.Tensor:
    """A residual direction [d_model] through ln_post (linearised) and proj -> [embed_dim]."""
    ln = model.visual.ln_post
    centred = direction - direction.mean()
    return (centred * ln.weight) @ model.visual.proj


@torch.no_grad()
def neuron_words(model, neurons: Neurons, vocabulary: Sequence[str] = VOCABULARY,
                 template: str = "a photo of {}.", text_features: Optional[torch.Tensor] = None) -> NeuronWords:
    """Cosine of each neuron's joint-space direction with each word's text embedding."""
    pairs = [(h, int(i)) for h, idx in check_neurons(model, neurons).items() for i in idx.tolist()]
    if text_features is None:
        tokens = model.tokenizer([template.format(w) for w in vocabulary]).to(model.device)
        text_features = model.encode_text(tokens)
    text = F.normalize(text_features.float(), dim=-1).to(model.device)
    dirs = torch.stack([joint_direction(model, neuron_direction(model, h, i)) for h, i in pairs]).float()
    return NeuronWords(list(vocabulary), pairs, (F.normalize(dirs, dim=-1) @ text.T).cpu())
