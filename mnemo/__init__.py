"""mnemo: class-incremental learning at ImageNet scale with mnemonics exemplars."""
__version__ = "0.1.0"
