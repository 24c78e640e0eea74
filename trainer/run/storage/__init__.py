"""What a run keeps on disk: RunDir and the sealed-phase, in-phase and checkpoint-file modules under it."""
