"""The `lake-interp` command line."""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence


def add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="ViT-B-16", help="open_clip model name, hf-hub:org/repo, or lake-tiny")
    parser.add_argument(
        "--pretrained",
        default="openai",
        help="open_clip pretrained tag, a local checkpoint path, or 'none' for random weights (smoke tests only)",
    )
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def load_model(args: argparse.Namespace):
    from lake_interp.model import HookedCLIP
    from lake_interp.model.loading import NONE_TAGS

    model = HookedCLIP.from_pretrained(args.model, args.pretrained, device=args.device)
    if args.pretrained in NONE_TAGS:
        print(
            f"*** WARNING: {args.model} has RANDOM WEIGHTS (--pretrained {args.pretrained}). "
            "Every score below is meaningless; use this only as a smoke test. ***",
            file=sys.stderr,
        )
    return model


def cmd_hooks(args: argparse.Namespace) -> int:
    """Print every hook point with the shape it has for one image and one prompt."""
    import torch

    model = load_model(args)
    images = torch.zeros(1, 3, model.image_size, model.image_size, device=model.device)
    tokens = model.tokenizer(["a photo of a flawless object"]).to(model.device)
    with torch.no_grad():
        _, cache = model.run_with_cache(images, tokens)
    print(f"{args.model} ({args.pretrained}): image {model.image_size}px, grid {model.grid_size}x{model.grid_size}")
    for name in model.hook_names(args.filter or ""):
        print(f"{name:48s} {list(cache[name].shape)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lake-interp", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    hooks = sub.add_parser("hooks", help="load a model and list its hook points with their shapes")
    add_model_args(hooks)
    hooks.add_argument("--filter", help="only hook names starting with this prefix (e.g. visual.blocks.3.)")
    hooks.set_defaults(func=cmd_hooks)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
