"""Every figure the cluster estimate needs, measured on one lent GPU in one prepared run (scripts/gpu_check.sh).

    train      ResNet-18 224 px bf16 training img/s at per-GPU batch 64 and 128, with LwF's teacher and KD and
               without; the engine's set-up time and the first step's (cuDNN's algorithm search)
    epochs     three short epochs through the real epoch loop, each ending in the real in-stage checkpoint:
               each epoch end's cost and the checkpoint's size
    decode     GPU JPEG decode + random-resized crop (DALI where it runs, else torchvision.io.decode_jpeg on the
               device), and the loader's CPU side on 8 threads: reading encoded samples, PIL decode + crop
    herding    the exemplar level's feature pass (ResNet-18 forward of host uint8 images), img/s
    stored     a training batch's round trip through the memory's store and decode on the device (png, lowres
               x1/2), as `exemplars.real_as_stored` shows real images: img/s, and its distance from the host's
    copies     host-to-device bandwidth, pinned and pageable, and through the reused staging buffers
    bank       a full-size ImageNet-1k exemplar bank (20,000 x 3 x 224 x 224 float16, 6 GB) moved to the GPU and
               held there beside a training step: time, peak memory
    syncs      host synchronisations per training step of the real epoch loop
    resume     a short one-GPU glyph `mnemo train` killed mid-phase and resumed, beside an uninterrupted run on
               the GPU and one on the CPU: Ā of each
    mnemonics  one outer step of the unrolled exemplar objective at 224 px (time, peak memory)
    nccl       a two-process NCCL glyph run, where two GPUs exist

    python -m benchmarks.gpu_check [--only NAME ...] [--budget-s 300] [--out FILE]
    python -m benchmarks.gpu_check --smoke     # the same code on CPU at toy sizes (the suite runs it)

Each check runs in a process of its own under its share of the time budget, so a failure or a hang costs only
its own figures, and every figure is written the moment it is measured: a check cut off by its time limit still
returns what it had. `--out` is rewritten after every check. `python -m benchmarks.cluster_estimate --from FILE`
puts the figures into the estimate.
"""
CHECKS = ("train", "epochs", "decode", "herding", "stored", "copies", "bank", "syncs", "resume", "mnemonics", "nccl")
# seconds of each check within the default 5-minute budget (scaled to --budget-s)
BUDGET_S = {"train": 60, "epochs": 25, "decode": 45, "herding": 15, "stored": 5, "copies": 10, "bank": 25,
            "syncs": 20, "resume": 65, "mnemonics": 25, "nccl": 5}
