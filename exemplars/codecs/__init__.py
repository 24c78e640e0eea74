"""How exemplars are stored (`exemplars.codec`): one registered plug-in per module (codecs/base.py says how one
plugs in)."""
