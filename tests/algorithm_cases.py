"""Which registered convolution algorithms the general, every-geometry tables run.

The issue-15 algorithms compute only part of the family (``supports`` says which): ``winograd2`` and
``winograd4`` dense 3×3 stride-1 2-D convolutions, ``direct_compiled`` dense 2-D ones. They are held
to ``direct`` and to PyTorch over the geometries they support, and to their refusals elsewhere, in
``tests/test_conv_winograd.py`` and ``tests/test_conv_direct_compiled.py``; the tables that sweep
every geometry (1-D/3-D, groups, transposed) run the general algorithms.
"""

from convprop.functional import ALGORITHMS

SPECIALISED = ("direct_compiled", "winograd2", "winograd4")
GENERAL = [name for name in ALGORITHMS if name not in SPECIALISED]
