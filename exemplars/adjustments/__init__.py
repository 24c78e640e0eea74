"""Adjustments of old exemplars (`exemplars.adjust_old`): one registered plug-in per module (adjustments/base.py
says how one plugs in)."""
