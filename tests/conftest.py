import warnings

import open_clip
import pytest
import torch

from lake_interp import HookedCLIP


def perturbed(oc: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Add noise to every parameter (LayerNorm weights and biases included) so that a
    mix-up of any two weights changes the output; returns the model in eval mode."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in oc.parameters():
            p.add_(std * torch.randn(p.shape, generator=g))
    return oc.eval()


@pytest.fixture(scope="session")
def tiny_open_clip():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return perturbed(open_clip.create_model("lake-tiny", pretrained=None))


@pytest.fixture(scope="session")
def tiny_model(tiny_open_clip):
    return HookedCLIP.from_open_clip(tiny_open_clip, "lake-tiny")
