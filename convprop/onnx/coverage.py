"""Which of ONNX's own node tests convprop runs (tests/test_onnx_backend.py), and the one list of exclusions.

``NODE_TESTS`` maps each operator convprop implements to the regular expression that selects its node tests
(names as ``onnx.backend.test.BackendTest`` gives them: ``test_<case>_cpu``). The ``_expanded`` variants are
not selected: they test the function body an operator is defined by (ReduceMax, Exp, Where, ...), i.e.
other operators. ``EXCLUDED`` is every selected test convprop does not pass, with the reason; docs/onnx.md
shows the same list.
"""

from __future__ import annotations

NODE_TESTS: dict[str, str] = {
    "Conv": r"^test_(basic_conv_with(out)?_padding|conv_with_\w+)_cpu$",
    "ConvTranspose": r"^test_convtranspose\w*_cpu$",
    "MaxPool": r"^test_maxpool_\w+_cpu$",
    "AveragePool": r"^test_averagepool_\w+_cpu$",
    "GlobalAveragePool": r"^test_globalaveragepool\w*_cpu$",
    "GlobalMaxPool": r"^test_globalmaxpool\w*_cpu$",
    "Relu": r"^test_relu_cpu$",
    "LeakyRelu": r"^test_leakyrelu(_default|_example)?_cpu$",
    "Sigmoid": r"^test_sigmoid(_example)?_cpu$",
    "Tanh": r"^test_tanh(_example)?_cpu$",
    "Gelu": r"^test_gelu_(default|tanh)_[12]_cpu$",
    "Softmax": r"^test_softmax_(?!.*expanded)\w+_cpu$",
    "LogSoftmax": r"^test_logsoftmax_(?!.*expanded)\w+_cpu$",
    "Gemm": r"^test_gemm_\w+_cpu$",
    "MatMul": r"^test_matmul_(?!integer)\w+_cpu$",
    "Add": r"^test_add(_\w+)?_cpu$",
    "Sub": r"^test_sub(_\w+)?_cpu$",
    "Mul": r"^test_mul(_\w+)?_cpu$",
    "Div": r"^test_div(_\w+)?_cpu$",
    "Concat": r"^test_concat_\w+_cpu$",
    "Flatten": r"^test_flatten_\w+_cpu$",
    "Reshape": r"^test_reshape_\w+_cpu$",
    "Transpose": r"^test_transpose_\w+_cpu$",
    "BatchNormalization": r"^test_batchnorm_\w+_cpu$",
    "Dropout": r"^test_dropout_\w+_cpu$",
    "Pad": r"^test_(constant|edge|reflect|wrap)_pad\w*_cpu$",
    "Identity": r"^test_identity\w*_cpu$",
    "Constant": r"^test_constant_cpu$",
}

# pattern → why convprop does not run those tests
EXCLUDED: dict[str, str] = {
    r"^test_((add|sub|mul|div)_u?int\d+\w*|maxpool_2d_uint8|(edge|reflect|wrap)_pad)_cpu$": "integer tensors: "
    "convprop computes in float32 and float64",
    r"^test_maxpool_with_argmax_\w+_cpu$": "MaxPool's second output (the argmax indices)",
    r"^test_dropout_default_mask\w*_cpu$": "Dropout's second output (the mask)",
    r"^test_batchnorm_\w+_training_mode_cpu$": "BatchNormalization in training mode (imports are inference form)",
    r"^test_averagepool_\w+_dilations\w*_cpu$": "AveragePool with dilations (convprop's, like PyTorch's, has none)",
    r"^test_averagepool_2d_pads_cpu$": "AveragePool with pads beyond half the kernel, padding not counted "
    "(convprop's pools, like PyTorch's, pad at most half the kernel)",
    r"^test_identity_(opt|sequence)_cpu$": "optional and sequence values: convprop's values are tensors",
}
