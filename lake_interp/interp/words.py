"""Neuron to language: the direction a neuron writes, carried to the joint space, against words.

Two readings of "the direction a neuron writes" (`NeuronWords.path` says which was used):

- "carried" (the default): the change of the final patch tokens when the neuron's activation is
  raised by 1 at every patch of the reference images, carried through every block after the
  neuron's layer (a forward-mode Jacobian-vector product, exact to first order), averaged over the
  reference images and patches. A residual channel's direction thus depends on its layer; for the
  last block it is e_i itself (nothing comes after), for an MLP neuron of the last block its output
  weight column W_out[i] (times LayerScale).
- "direct": the neuron's immediate write, W_out[i] (times LayerScale) for an MLP neuron and e_i for a
  residual channel, as if read by ln_post right away. For residual channels it is the same at every
  layer by construction: NeuronWords refuses to list one channel of several layers under this path.

Either direction is carried through `ln_post` linearised (centred, times the LayerNorm weight; the
positive 1/scale factor is dropped, it does not change cosines) and `proj`, as in Gandelsman et
al.'s decomposition of CLIP's image representation, then compared by cosine with the text
embeddings of a vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from lake_interp.interp.targets import Neurons, check_neurons
from lake_interp.model.hook_sites import RESIDUAL_SITES, hook_name, parse_hook_name, pattern_hook_names

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


@dataclass
class NeuronWords:
    words: list[str]
    neurons: list[tuple[str, int]]
    similarity: torch.Tensor  # [n_neurons, n_words] cosine
    path: str = "carried"  # "carried" through the later blocks, or "direct" (see the module docstring)
    n_reference: int = 0  # reference images the carried directions are averaged over

    def rows(self) -> list[dict]:
        """One record per (neuron, word): the numbers behind `words_figure`."""
        return [{"hook": hook, "index": i, "word": w, "cosine": float(c), "path": self.path}
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


PATHS = ("carried", "direct")


def neuron_direction(model, hook: str, index: int) -> torch.Tensor:
    """[d_model] direction the neuron adds to the residual stream right away ("direct" path)."""
    parsed = parse_hook_name(hook)
    site, block = parsed.site, parsed.block
    if parsed.tower != "visual" or block is None:
        raise ValueError(f"neuron_words reads vision-tower block hooks, not {hook!r}")
    if site == "mlp.hook_post":
        blk = model.visual.blocks[block]
        d = blk.mlp.c_proj.weight[:, index]
        gamma = getattr(blk.ls2, "gamma", None)
        return d * gamma if gamma is not None else d
    if site in RESIDUAL_SITES:
        return F.one_hot(torch.tensor(index), model.cfg.vision.block.d_model).to(model.visual.W_E)
    raise ValueError(f"neuron_words supports mlp.hook_post and residual hooks {RESIDUAL_SITES}, not {hook!r}")


def carried_directions(model, hook: str, channels: Sequence[int], reference, chunk: int = 8) -> torch.Tensor:
    """[len(channels), d_model]: per channel, the mean change of the last block's patch tokens when
    the channel is raised by 1 at every patch token of `reference` (images: a tensor batch, PIL
    images or paths), carried through the later blocks (forward-mode AD, one pass per channel)."""
    import torch.autograd.forward_ad as fwAD

    from lake_interp.lake.inputs import iter_batches, to_batch

    neuron_direction(model, hook, channels[0])  # the same checks (site, tower) as the direct path
    batch = to_batch(reference, model)
    n_layers = model.cfg.vision.n_layers
    final = hook_name("visual", n_layers - 1, "hook_resid_post")
    # the explicit attention path (forward AD has no rule for the fused kernel)
    explicit = [(name, lambda act, hook: None) for name in pattern_hook_names(model)]
    out = []
    for channel in channels:
        seen = {}

        def inject(act, hook, c=int(channel)):
            tangent = torch.zeros_like(act)
            tangent[:, model.n_prefix:, c] = 1.0  # every patch token; prefix tokens (class, registers) are not patches
            return fwAD.make_dual(act, tangent)

        def read(act, hook):
            seen["tangent"] = fwAD.unpack_dual(act).tangent

        total = 0
        for part in iter_batches(batch, chunk):
            with torch.no_grad(), fwAD.dual_level():
                model.run_with_hooks(part, fwd_hooks=[(hook, inject), (final, read), *explicit])
            total = total + model.patch_tokens(seen["tangent"]).float().sum(dim=(0, 1))
        out.append(total / (batch.shape[0] * model.cfg.vision.grid_size**2))
    return torch.stack(out)


def joint_direction(model, direction: torch.Tensor) -> torch.Tensor:
    """A residual direction [..., d_model] through ln_post (linearised) and proj -> [..., embed_dim]."""
    ln = model.visual.ln_post
    if ln is None or getattr(ln, "weight", None) is None:
        raise NotImplementedError(f"{model.cfg.name}: neuron_words reads the embedding through ln_post; this tower has none")
    try:
        proj = model.visual.W_proj
    except NotImplementedError as e:  # pooling that is not linear (MAP head, fc_norm): no joint-space direction
        raise NotImplementedError(f"neuron_words on {model.cfg.name}: {e}") from e
    centred = direction - direction.mean(dim=-1, keepdim=True)
    return (centred * ln.weight.to(centred.dtype)) @ proj.to(centred.dtype)


@torch.no_grad()
def neuron_words(model, neurons: Neurons, vocabulary: Sequence[str] = VOCABULARY,
                 template: str = "a photo of {}.", text_features: Optional[torch.Tensor] = None,
                 reference=None, path: str = "carried") -> NeuronWords:
    """Cosine of each neuron's joint-space direction with each word's text embedding.

    path "carried" (default) needs `reference` images (e.g. the normal support): the direction is
    carried through the blocks after the neuron's layer (see the module docstring); "direct" reads
    the immediate write and refuses a residual channel listed at more than one layer (their rows
    would be identical by construction)."""
    if path not in PATHS:
        raise ValueError(f"path={path!r}; expected one of {PATHS}")
    grouped = check_neurons(model, neurons)
    pairs = [(h, int(i)) for h, idx in grouped.items() for i in idx.tolist()]
    if path == "carried" and reference is None:
        raise ValueError("neuron_words(path='carried') needs reference images (e.g. reference=support) to carry "
                         "each direction through the later blocks; path='direct' reads the immediate write instead")
    if path == "direct":
        residual = {}
        for h, i in pairs:
            if parse_hook_name(h).site in RESIDUAL_SITES:
                residual.setdefault(i, set()).add(h)
        repeated = {i: sorted(hs) for i, hs in residual.items() if len(hs) > 1}
        if repeated:
            i, hs = next(iter(repeated.items()))
            raise ValueError(f"path='direct' gives residual channel {i} the same direction at {hs} (e_{i} read by "
                             f"ln_post, whatever the layer): use path='carried' with reference images")
    if text_features is None:
        tokens = model.tokenizer([template.format(w) for w in vocabulary]).to(model.device)
        text_features = model.encode_text(tokens)
    text = F.normalize(text_features.float(), dim=-1).to(model.device)
    if path == "direct":
        dirs = torch.stack([neuron_direction(model, h, i) for h, i in pairs]).float()
    else:
        from lake_interp.lake.inputs import to_batch

        reference = to_batch(reference, model)  # read once (a generator is consumed)
        by_hook = {h: carried_directions(model, h, idx.tolist(), reference) for h, idx in grouped.items()}
        dirs = torch.cat([by_hook[h] for h in grouped]).to(model.device)
    joint = joint_direction(model, dirs.float()).float()
    n_ref = 0 if path == "direct" else int(reference.shape[0])
    return NeuronWords(list(vocabulary), pairs, (F.normalize(joint, dim=-1) @ text.T).cpu(), path, n_ref)

