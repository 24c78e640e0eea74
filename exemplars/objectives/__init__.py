"""Exemplar objectives: what the optimised selection's pixels minimise (the paper's mnemonics: `unrolled`), one
registered plug-in per module (objectives/base.py says how one plugs in)."""
