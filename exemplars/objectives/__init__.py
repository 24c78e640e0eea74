"""Exemplar objectives: what the mnemonics selection's pixels minimise, one registered plug-in per module
(objectives/base.py says how one plugs in)."""
