"""FactorCL-SSL with conditional terms dropped: the ablations that say what each term adds.

FactorCL-SSL's objective is

    I_NCE(Z_S1; Z_S2) - I_CLUB(Z_S1; Z_S2 | X1', X2')                               shared parts
  + I_NCE(Z_U1; Z_U1') + I_NCE(Z_U2; Z_U2') - I_CLUB(Z_U1; Z_U2) + I_NCE(Z_U1; Z_U2 | X1', X2')   unique parts

and each class below drops one or both of its two conditional terms. Everything else (heads, critics,
augmented views, hyperparameters and their search) is FactorCL-SSL's, so on the same seeds and
hyperparameters a difference between two rows is what the dropped terms do. A dropped term is still
computed and logged (and its critic still trained) so the histories of all rows read alike; it moves no
encoder weight, and only the CLUB terms left in the objective are checked.
"""

from __future__ import annotations

from methods.factorcl import FactorCLSsl


def _without(*dropped: str) -> tuple[dict[str, int], tuple[str, ...]]:
    """FactorCL-SSL's objective terms and checked CLUB terms with `dropped` taken out."""
    return ({t: s for t, s in FactorCLSsl.objective_terms.items() if t not in dropped},
            tuple(t for t in FactorCLSsl.club_terms if t not in dropped))


class FactorCLSslNoCond(FactorCLSsl):
    name = "factorcl-ssl-nocond"
    display_name = "FactorCL-SSL without conditional terms"
    description = "Ablation: FactorCL-SSL with I_CLUB(Z_S1; Z_S2 | views) and I_NCE(Z_U1; Z_U2 | views) dropped."
    objective_terms, club_terms = _without("shared_club_given_y", "unique_nce_given_y")


class FactorCLSslNoSharedCond(FactorCLSsl):
    name = "factorcl-ssl-no-shared-cond"
    display_name = "FactorCL-SSL without its shared conditional term"
    description = "Ablation: FactorCL-SSL with I_CLUB(Z_S1; Z_S2 | views) dropped, I_NCE(Z_U1; Z_U2 | views) kept."
    objective_terms, club_terms = _without("shared_club_given_y")


class FactorCLSslNoUniqueCond(FactorCLSsl):
    name = "factorcl-ssl-no-unique-cond"
    display_name = "FactorCL-SSL without its unique conditional term"
    description = "Ablation: FactorCL-SSL with I_NCE(Z_U1; Z_U2 | views) dropped, I_CLUB(Z_S1; Z_S2 | views) kept."
    objective_terms, club_terms = _without("unique_nce_given_y")
