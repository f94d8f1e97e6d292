"""Built-in tasks: registry name -> "module:Class". Adding a task is one file and one line here."""

BUILTIN = {
    "synthetic": "tasks.synthetic:Synthetic",
    "synthetic-shared": "tasks.synthetic:SyntheticShared",
    "synthetic-unique": "tasks.synthetic:SyntheticUnique",
}
