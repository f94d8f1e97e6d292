"""FactorCL-SSL without its two conditional terms: the ablation that says what they add.

The objective keeps I_NCE(Z_S1; Z_S2) + I_NCE(Z_U1; Z_U1') + I_NCE(Z_U2; Z_U2') - I_CLUB(Z_U1; Z_U2)
and drops -I_CLUB(Z_S1; Z_S2 | X1', X2') and +I_NCE(Z_U1; Z_U2 | X1', X2'). Everything else (heads,
critics, augmented views, hyperparameters and their search) is FactorCL-SSL's, so a difference
between the two rows is what the conditional terms do. The dropped terms are still computed and
logged (and the shared CLUB critic still trained on them) so the histories of both rows read alike;
they move no encoder weight, and only the CLUB term left in the objective is checked.
"""

from __future__ import annotations

from methods.factorcl import CONDITIONAL_TERMS, FactorCLSsl


class FactorCLSslNoCond(FactorCLSsl):
    name = "factorcl-ssl-nocond"
    display_name = "FactorCL-SSL without conditional terms"
    description = "Ablation: FactorCL-SSL with I_CLUB(Z_S1; Z_S2 | views) and I_NCE(Z_U1; Z_U2 | views) dropped."
    objective_terms = {t: s for t, s in FactorCLSsl.objective_terms.items() if t not in CONDITIONAL_TERMS}
    club_terms = tuple(t for t in FactorCLSsl.club_terms if t not in CONDITIONAL_TERMS)
