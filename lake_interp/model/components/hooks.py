"""Whether anyone looks at a hook point (so a fused kernel may replace the explicit computation)."""

from transformer_lens.hook_points import HookPoint


def has_hooks(hook: HookPoint) -> bool:
    return bool(hook._forward_hooks or hook._backward_hooks)
