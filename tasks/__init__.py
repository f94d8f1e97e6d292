"""Built-in tasks: registry name -> "module:Class". Adding a task is one file and one line here."""

BUILTIN = {
    "synthetic": "tasks.synthetic:Synthetic",
    "shapes-captions": "tasks.shapes:ShapesCaptions",
    "imagenet": "tasks.imagenet:ImageNet",
    "imagenet-100": "tasks.imagenet:ImageNet100",
    "synthetic-shared": "tasks.synthetic:SyntheticShared",
    "synthetic-unique": "tasks.synthetic:SyntheticUnique",
}
