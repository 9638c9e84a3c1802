"""The errors a user can cause, under one base class.

``ConvpropError`` is raised for a mistake the *caller* made: a bad argument, a file that is not what
it claims, an option out of range, a data set that is not there. The command line turns exactly these
into one line, ``convprop: error: ...``, and exit code 2; any other exception is a bug in convprop and
shows its traceback (STYLE rule 16: user errors and bugs look different).

Each child also derives from the built-in exception that code written against convprop 0.1 (or
against NumPy and PyTorch) would catch, so ``except ValueError`` keeps working:

====================  =====================  ==================================================
class                 also a                 raised for
====================  =====================  ==================================================
``ArgumentError``     ``ValueError``         a value out of range, shapes that do not fit
``ArgumentTypeError`` ``TypeError``          an argument of the wrong type or dtype
``ConfigError``       ``ValueError``         a training/CLI option (an ``ArgumentError``)
``DataError``         ``ValueError``         a data set, IDX file or image that is malformed
``ContextError``      ``ValueError``         ``backward`` with no kept forward context (an ``ArgumentError``)
``CheckpointError``   ``ValueError``         a checkpoint that is missing, corrupt or hostile
``OnnxError``         ``ValueError``         an ONNX model convprop cannot read or write (a ``CheckpointError``)
``DownloadError``     ``OSError``            a download that failed or could not be verified
====================  =====================  ==================================================
"""

from __future__ import annotations

__all__ = [
    "ArgumentError",
    "ArgumentTypeError",
    "CheckpointError",
    "ConfigError",
    "ContextError",
    "ConvpropError",
    "DataError",
    "DownloadError",
    "OnnxError",
]


class ConvpropError(Exception):
    """Base class of every error a user of convprop can cause (never raised for a bug)."""


class ArgumentError(ConvpropError, ValueError):
    """An argument's value is out of range, or arrays' shapes do not fit together."""


class ArgumentTypeError(ConvpropError, TypeError):
    """An argument has the wrong type, or an array the wrong dtype."""


class ConfigError(ArgumentError):
    """A training or command-line option is invalid."""


class ContextError(ArgumentError):
    """``layer.backward`` was called with no forward context kept: before any forward, or after a
    forward in eval mode or inside ``convprop.no_grad()`` (which keep none)."""


class DataError(ConvpropError, ValueError):
    """A data set, IDX file or image is missing, malformed or inconsistent."""


class CheckpointError(ConvpropError, ValueError):
    """A checkpoint is missing, truncated, corrupt, foreign or hostile."""


class OnnxError(CheckpointError):
    """An ONNX model file convprop cannot read (malformed, hostile, an operator or attribute it lacks, an
    opset out of range) or a model it cannot write as ONNX. A model file like a checkpoint, so code that
    handles a bad checkpoint (``except CheckpointError``) handles a bad ``.onnx`` file too."""


class DownloadError(ConvpropError, OSError):
    """A download failed, or what arrived could not be verified."""
