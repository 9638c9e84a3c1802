"""PyTorch as the oracle: reference results for convprop's ops, computed independently.

Only tests import torch; convprop itself never does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from reference import rel_error  # noqa: F401  (the one definition lives in reference.py; importable here too)

TORCH_PAD_MODE = {"reflect": "reflect", "replicate": "replicate", "circular": "circular"}


def as_pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def explicit_pads(padding, in_size, kernel, stride, dilation):
    """((top, bottom), (left, right)) from the documented rules, written independently of convprop."""
    if padding == "valid":
        return (0, 0), (0, 0)
    if padding == "same":
        pads = []
        for size, k, s, d in zip(in_size, kernel, stride, dilation, strict=True):
            extent = d * (k - 1) + 1
            # PyTorch (stride 1): total padding d*(k-1), odd pixel after; TensorFlow's rule otherwise
            total = d * (k - 1) if s == 1 else max((math.ceil(size / s) - 1) * s + extent - size, 0)
            pads.append((total // 2, total - total // 2))
        return tuple(pads)
    ph, pw = as_pair(padding)
    return (ph, ph), (pw, pw)


def torch_conv2d(x, weight, bias, grad_output, *, stride, padding, dilation, groups, padding_mode):
    """(y, dx, dw, db) from torch autograd, in float64 numpy arrays."""
    unbatched = x.ndim == 3
    xt = torch.tensor(x[None] if unbatched else x, requires_grad=True)
    wt = torch.tensor(weight, requires_grad=True)
    bt = torch.tensor(bias, requires_grad=True) if bias is not None else None
    stride, dilation = as_pair(stride), as_pair(dilation)
    if padding_mode == "zeros" and not (padding == "same" and stride != (1, 1)):
        tpad = padding if isinstance(padding, str) else as_pair(padding)
        y = F.conv2d(xt, wt, bt, stride=stride, padding=tpad, dilation=dilation, groups=groups)
    else:
        (t, b), (l, r) = explicit_pads(padding, x.shape[-2:], weight.shape[2:], stride, dilation)
        mode = TORCH_PAD_MODE.get(padding_mode, "constant")
        xp = F.pad(xt, (l, r, t, b), mode=mode)
        y = F.conv2d(xp, wt, bt, stride=stride, padding=0, dilation=dilation, groups=groups)
    g = torch.tensor(grad_output[None] if unbatched else grad_output)
    y.backward(g)
    out = y.detach().numpy()
    dx = xt.grad.numpy()
    db = bt.grad.numpy() if bt is not None else g.sum(dim=(0, 2, 3)).numpy()
    if unbatched:
        out, dx = out[0], dx[0]
    return out, dx, wt.grad.numpy(), db


def torch_conv_zero_padded(x, weight, bias, grad_output, *, stride, pads, dilation, groups=1):
    """(y, dx, dw, db) of a 1-D or 2-D convolution with zero padding ``pads`` (one (before, after) pair
    per axis), from torch autograd: the input padded explicitly (torch takes only symmetric padding),
    dx cropped back to x's size."""
    import numpy as np

    xp = np.pad(x, [(0, 0), (0, 0), *pads])
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (xp, weight, bias))
    y = (F.conv2d if x.ndim == 4 else F.conv1d)(xt, wt, bt, stride=stride, dilation=dilation, groups=groups)
    y.backward(torch.tensor(grad_output))
    crop = (slice(None), slice(None), *(slice(p[0], p[0] + n) for p, n in zip(pads, x.shape[2:], strict=True)))
    return y.detach().numpy(), xt.grad.numpy()[crop], wt.grad.numpy(), bt.grad.numpy()
