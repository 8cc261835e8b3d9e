"""Where a layer can go in a timm model: names, layouts, shapes, strides and the aliases ``poolN`` / ``last``.

- ``model_points``: tracing and naming (``ModelPoints``, ``InsertionPoint``, ``analyse``, name resolution);
- ``aliases``: the portable aliases ``poolN`` / ``last``;
- ``shapes``: shape probes on the meta device, layouts (NCHW, NHWC, NLC tokens) and strides.
"""

from ._paths import parent as _parent
from .model_points import InsertionPoint, ModelPoints, analyse, insertion_points
from .shapes import default_input_size

__all__ = ['InsertionPoint', 'ModelPoints', '_parent', 'analyse', 'default_input_size', 'insertion_points']
