"""Built-in methods: registry name -> "module:Class". Adding a method is one file and one line here."""

BUILTIN = {
    "raw-features": "methods.raw_features:RawFeatures",
    "untrained": "methods.untrained:Untrained",
    "clip": "methods.clip:CLIP",
    "simclr": "methods.simclr:SimCLR",
    "factorcl-sup": "methods.factorcl:FactorCLSup",
    "factorcl-ssl": "methods.factorcl:FactorCLSsl",
    "supcon": "methods.supcon:SupCon",
    "cross-self": "methods.cross_self:CrossSelf",
}
