"""The exemplar objectives besides the paper's unrolled one (that lives with its settings in exemplars/mnemonics.py).

`MATCH_LOSSES` maps `exemplars.mnemonics.match` to the `matching` objective's loss builder: every caller (the
selection, `mnemo profile mnemonics --objectives`) picks it here, so a new kind of matching is added once.
"""
from exemplars.objectives.gradient_matching import gradient_matching_loss
from exemplars.objectives.matching import matching_loss

MATCH_LOSSES = {"features": matching_loss, "gradients": gradient_matching_loss}
