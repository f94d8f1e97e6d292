"""Tiny versions of the image-track tasks, registered by the tests so the CLI can run them in seconds."""

from tasks.shapes import ShapesCaptions, ShapesSetting
from tasks.superclasses import ShapeSuperclasses, SuperclassSetting


class TinyShapesCaptions(ShapesCaptions):
    name = "shapes-captions-tiny"
    default_batch_size = 16
    setting = ShapesSetting(n_train=48, n_val=24, n_test=24, size=16)


class TinyShapeSuperclasses(ShapeSuperclasses):
    name = "shapes-superclasses-tiny"
    default_batch_size = 16
    setting = SuperclassSetting(n_train=48, n_val=24, n_test=24, size=16, pool_size=48)
