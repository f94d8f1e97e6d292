"""Built-in methods: registry name -> "module:Class". Adding a method is one file and one line here."""

BUILTIN = {
    "raw-features": "methods.raw_features:RawFeatures",
    "untrained": "methods.untrained:Untrained",
    "clip": "methods.clip:CLIP",
    "simclr": "methods.simclr:SimCLR",
    "clip-guided-simclr": "methods.clip_guided_simclr:ClipGuidedSimCLR",
    "cgs-add-new-positive": "methods.clip_guided_simclr:AddNewPositive",
    "cgs-oracle-add-new-positive": "methods.clip_guided_simclr:OracleAddNewPositive",
    "cgs-group-oracle-add-new-positive": "methods.clip_guided_simclr:GroupOracleAddNewPositive",
    "cgs-image-guide-add-new-positive": "methods.clip_guided_simclr:ImageGuideAddNewPositive",
    "cgs-drop-false-negative": "methods.clip_guided_simclr:DropFalseNegative",
    "cgs-drop-easy-negative": "methods.clip_guided_simclr:DropEasyNegative",
    "cgs-drop-false-positive": "methods.clip_guided_simclr:DropFalsePositive",
    "factorcl-sup": "methods.factorcl:FactorCLSup",
    "factorcl-ssl": "methods.factorcl:FactorCLSsl",
    "factorcl-ssl-nocond": "methods.factorcl_ablations:FactorCLSslNoCond",
    "factorcl-ssl-no-shared-cond": "methods.factorcl_ablations:FactorCLSslNoSharedCond",
    "factorcl-ssl-no-unique-cond": "methods.factorcl_ablations:FactorCLSslNoUniqueCond",
    "supcon": "methods.supcon:SupCon",
    "cross-self": "methods.cross_self:CrossSelf",
}
