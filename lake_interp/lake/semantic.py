"""The semantic branch: WinCLIP-style prompt ensemble compared with every patch token."""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F


def prompts(states: Sequence[str], templates: Sequence[str], class_name: str) -> list[str]:
    """Every state word filled with the class name, in every template."""
    return [t.format(s.format(class_name)) for s in states for t in templates]


def require_text_tower(model, text_weight: float | None = None) -> None:
    """ValueError where the semantic branch cannot run: the model has no text tower (a vision-only
    HookedViT, e.g. DINOv2)."""
    if getattr(model, "text", None) is not None:
        return
    weight = "" if text_weight is None else f" (text_weight={text_weight:g} > 0)"
    name = getattr(model.cfg, "name", None) or type(model).__name__
    raise ValueError(f"LAKE's semantic branch{weight} compares patch tokens with text prompts, but model {name!r} "
                     f"has no text tower (vision-only): methods that need text (text_dense, WinCLIP, LAKE with "
                     f"text_weight > 0) cannot run on it; for LAKE use text_weight=0 (CLI: --text-weight 0)")


@torch.no_grad()
def text_features(model, class_name: str, normal_states, anomalous_states, templates) -> torch.Tensor:
    """[2, embed_dim]: unit mean of the unit prompt embeddings of the normal and anomalous states."""
    require_text_tower(model)
    feats = []
    for states in (normal_states, anomalous_states):
        tokens = model.tokenizer(prompts(states, templates, class_name)).to(model.device)
        emb = F.normalize(model.encode_text(tokens).float(), dim=-1)
        feats.append(F.normalize(emb.mean(dim=0), dim=-1))
    return torch.stack(feats)


def anomaly_probability(tokens: torch.Tensor, text_feats: torch.Tensor, temperature: float = 0.07) -> torch.Tensor:
    """tokens: [B, P, embed_dim] patch tokens in the joint space; text_feats: [2, embed_dim].

    Returns [B, P]: softmax over (normal, anomalous) of cosine similarity / temperature, anomalous part.
    """
    logits = F.normalize(tokens.float(), dim=-1) @ text_feats.float().T / temperature
    return logits.softmax(dim=-1)[..., 1]
