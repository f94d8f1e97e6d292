"""Publishing: figures, the static web page and the per-pair history they are drawn from. Imports no torch."""
