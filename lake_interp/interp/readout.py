"""What reads the effect of an ablation or a patch: a detector that is not the ablated units.

An ablation result is only a finding about the network when the detector that reads it does not
read the ablated channels themselves: LAKE fitted on its own selected neurons and then ablated on
exactly those neurons compares zero vectors (cosine distance 1 everywhere, a constant map) and
reports an artefact. The readouts here:

- "downstream" (the default): nearest-neighbour matching on ALL channels of the final block's
  `hook_resid_post` (the stream the image embedding is read from), fitted once on the clean model;
  under the ablation its bank is rebuilt from the support with the same hooks. It answers "how much
  anomaly information do these units carry that the rest of the network uses": units of earlier
  blocks (and MLP neurons of any block) act only through what later blocks and the residual
  stream carry to the output. Ablated residual channels of the final block's `hook_resid_post` are
  read directly among its d channels: they are listed in `overlap` and warned about; the random
  control removes as many channels of the same hooks.
- "all_channels": nearest neighbour on all channels of the ablated units' own hooks: removing K
  channels compared with removing K random channels of the same hooks (the overlap is the
  ablated units themselves, among all channels, by design).
- a fitted detector (any of the protocol, e.g. the user's Lake): used as given, refitted under the
  ablation. Refused when it is a LAKE-family detector whose selected channels are all among the
  ablated units (the circular reading); a partial overlap is warned about and recorded.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any, Union

from lake_interp.interp.targets import Neurons, check_neurons
from lake_interp.model.hook_sites import parse_hook_name

READOUTS = ("downstream", "all_channels")
ReadoutSpec = Union[str, Any]


@dataclass
class Readout:
    """The detector that reads an ablation or patch, and what it reads."""

    name: str  # "downstream", "all_channels" or "detector"
    detector: Any  # fitted on the clean model
    hooks: list[str]  # the hook points it reads
    overlap: list[tuple[str, int]] = field(default_factory=list)  # ablated units it reads directly
    description: str = ""

    def record(self) -> dict:
        return {"readout": self.name, "readout_hooks": list(self.hooks), "readout_method": self.description,
                "readout_reads_ablated": [list(p) for p in self.overlap]}


def _knn_config(detector):
    """Nearest neighbour on all channels, visual branch only, with the detector's distance and map
    settings where it has them (LakeConfig)."""
    from lake_interp.lake import LakeConfig

    base = getattr(detector, "config", None)
    base = base if isinstance(base, LakeConfig) else LakeConfig()
    return base.replace(criterion="all", text_weight=0.0, standardize=False)


def _lake_hooks_and_units(detector) -> tuple[list[str], set]:
    hooks = list(getattr(detector, "required_hooks", None) or getattr(detector, "hooks", []) or [])
    neurons = getattr(detector, "neurons", None)
    units = set(neurons) if neurons is not None and getattr(neurons, "criterion", None) != "all" else set()
    return hooks, units


def make_readout(detector, neurons: Neurons, support, readout: ReadoutSpec = "downstream") -> Readout:
    """The readout for ablating `neurons`, fitted on the clean model with `support` (see the module
    docstring). `detector` gives the model, class name and map settings; with readout=None it is
    itself the readout."""
    from lake_interp.lake import Lake

    model = detector.model
    grouped = check_neurons(model, neurons)
    ablated = {(h, int(i)) for h, idx in grouped.items() for i in idx.tolist()}
    class_name = getattr(detector, "class_name", "object")
    if isinstance(readout, str):
        if readout not in READOUTS:
            raise ValueError(f"readout={readout!r}; expected one of {READOUTS} or a fitted detector")
        if readout == "downstream":
            config = _knn_config(detector).replace(sites=("hook_resid_post",), layers=(-1,))
            desc = "knn_all on the final block's hook_resid_post (all channels), fitted on the clean model"
        else:
            parsed = [parse_hook_name(h) for h in grouped]
            if any(p.block is None for p in parsed):
                raise ValueError("readout='all_channels' reads block hooks; ablated units at tower-level hooks "
                                 f"({[h for h, p in zip(grouped, parsed) if p.block is None]}) need readout='downstream'")
            sites = tuple(dict.fromkeys(p.site for p in parsed))
            config = _knn_config(detector).replace(sites=sites, layers=tuple(sorted({p.block for p in parsed})))
            desc = ("knn_all on all channels of the ablated units' hooks (every site of theirs at every block of "
                    "theirs), fitted on the clean model")
        reader = Lake(model, config, class_name).fit(support)
        hooks = list(reader.hooks)
        overlap = sorted(p for p in ablated if p[0] in hooks)
        out = Readout(readout, reader, hooks, overlap, desc)
    else:
        reader = readout if readout is not None else detector
        hooks, units = _lake_hooks_and_units(reader)
        if units and units <= ablated:
            raise ValueError(
                f"the readout detector reads exactly the ablated channels (all {len(units)} of its selected neurons are "
                f"among the units ablated or patched): its map would read back the values put into them (zeroed ones "
                f"give a constant map), not what the network does with them; use readout='downstream' (default) or "
                f"'all_channels'")
        overlap = sorted(units & ablated)
        out = Readout("detector", reader, hooks, overlap, f"the given detector ({type(reader).__name__})")
    if out.overlap and out.name != "all_channels":
        warnings.warn(f"the readout ({out.description}) reads {len(out.overlap)} of the ablated units directly "
                      f"(e.g. {out.overlap[0]}): for those the effect is partly their own removal, not only what the "
                      f"network does without them (recorded in readout_reads_ablated)", stacklevel=3)
    return out
