"""Swap the backbone of an mmdet / mmseg config for ConvNeXt (``swap_backbone``)."""
from .errors import SwapRefused
from .plan import SwapPlan, plan_swap, swap_backbone

__all__ = ['SwapPlan', 'SwapRefused', 'plan_swap', 'swap_backbone']
