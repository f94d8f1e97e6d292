"""Publishing: figures, the static web page and the per-pair history they are drawn from. Imports no torch."""

FIGURES_DIR = "figures"  # under a results folder: every drawn figure
