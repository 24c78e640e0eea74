"""Class-incremental methods, one small file each, behind the Strategy interface (base.py)."""
