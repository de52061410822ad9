"""Register `ops.DepthwiseConv2d` as a leaf module for timm's fx feature extraction.

Traced through, the fx graph records the Python function `ops.dwconv2d`, which TorchScript
cannot compile (timm's `test_model_forward_fx_torchscript` scripts the traced graph). As a leaf,
the graph calls the module, whose forward has a TorchScript path to the registered op.
"""

from timm.layers import register_notrace_module

from ops import DepthwiseConv2d

register_notrace_module(DepthwiseConv2d)
