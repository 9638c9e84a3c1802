"""Pure array functions: every operation as a forward/backward pair. No state, no I/O."""

from .activation import (
    gelu,
    gelu_backward,
    leaky_relu,
    leaky_relu_backward,
    log_softmax,
    log_softmax_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    softmax,
    softmax_backward,
    tanh,
    tanh_backward,
)
from .conv import ALGORITHMS, conv2d, conv2d_backward
from .linear import linear, linear_backward, linear_param_grads
from .loss import REDUCTIONS, binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy, mse_loss
from .norm import batch_norm, batch_norm_backward, dropout, dropout_backward, dropout_mask
from .pool import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    global_avg_pool2d,
    global_avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
    max_pool2d_with_indices,
)

__all__ = [
    "ALGORITHMS",
    # losses: each returns (loss, grad_input)
    "REDUCTIONS",
    "adaptive_avg_pool2d",
    "adaptive_avg_pool2d_backward",
    "avg_pool2d",
    "avg_pool2d_backward",
    # normalisation and dropout
    "batch_norm",
    "batch_norm_backward",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "conv2d",
    "conv2d_backward",
    "cross_entropy",
    "dropout",
    "dropout_backward",
    "dropout_mask",
    "gelu",
    "gelu_backward",
    "global_avg_pool2d",
    "global_avg_pool2d_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "linear_backward",
    "linear_param_grads",
    "log_softmax",
    "log_softmax_backward",
    # pooling
    "max_pool2d",
    "max_pool2d_backward",
    "max_pool2d_with_indices",
    "mse_loss",
    # activations
    "relu",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "softmax_backward",
    "tanh",
    "tanh_backward",
]
