"""Built-in tasks: registry name -> "module:Class". Adding a task is one file and one line here."""

BUILTIN = {
    "synthetic": "tasks.synthetic:Synthetic",
    "shapes-captions": "tasks.shapes:ShapesCaptions",
    "shapes-superclasses": "tasks.superclasses:ShapeSuperclasses",
    "shapes-superclasses-class-words-0": "tasks.superclasses:ClassWords0",
    "shapes-superclasses-class-words-32": "tasks.superclasses:ClassWords32",
    "shapes-superclasses-class-words-63": "tasks.superclasses:ClassWords63",
    "shapes-superclasses-assignment-2": "tasks.superclasses:Assignment2",
    "shapes-superclasses-assignment-3": "tasks.superclasses:Assignment3",
    "imagenet": "tasks.imagenet:ImageNet",
    "imagenet-100": "tasks.imagenet:ImageNet100",
    "synthetic-shared": "tasks.synthetic:SyntheticShared",
    "synthetic-unique": "tasks.synthetic:SyntheticUnique",
    "synthetic-public-views": "tasks.synthetic_public_views:SyntheticPublicViews",
    "mimic": "tasks.mimic:Mimic",
    "mosi": "tasks.multibench:Mosi",
    "mosei": "tasks.multibench:Mosei",
    "ur-funny": "tasks.multibench:UrFunny",
    "mustard": "tasks.multibench:Mustard",
    "irfl": "tasks.irfl:Irfl",
}
