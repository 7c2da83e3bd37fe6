import warnings

import open_clip
import pytest
import torch

from lake_interp import HookedCLIP
from lake_interp.data import make_synthetic_dataset
from tests.planted import MAGENTA, plant_color_channel

CHANNEL = 7  # the planted magenta channel of `planted_model`


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


@pytest.fixture(scope="session")
def magenta_root(tmp_path_factory):
    """Synthetic "disc" category whose defects are all painted magenta."""
    return make_synthetic_dataset(tmp_path_factory.mktemp("syn"), categories=["disc"], seed=0, image_size=64, defect_color=MAGENTA)


@pytest.fixture(scope="session")
def planted_model(tiny_open_clip):
    """Tiny model whose residual channel CHANNEL responds to magenta (tests/planted.py)."""
    model = HookedCLIP.from_open_clip(tiny_open_clip, "lake-tiny")
    return plant_color_channel(model, CHANNEL, gain=30.0, brightness=0.0)
