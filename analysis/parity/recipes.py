"""The recipes both implementations run: one data set, protocol, network, schedule, batch and memory, and per
method the settings that make mnemo's method and the peer's the same method (docs/parity.md says why each is
set as it is).

The schedule is the glyph recipe's (configs/glyphs.yaml): SGD at 0.1, momentum 0.9, weight decay 5e-4, batch
128, 8 epochs in the base phase and 5 in the others, the rate divided by 10 at epochs 5 and 6 (base) and 3 and 4
(others); 20 exemplars per class picked by herding; the CIFAR-style ResNet-32 both implement, at 32 px, or at
16 px for the 62-class default protocol (4x cheaper; FACIL's fixed 8x8 average pool is then made global, what it
computes at 32 px). mnemo's balanced fine-tune (Algorithm 1, step 18 of the mnemonics
paper) and LUCIR's class-balanced fine-tune are off: the peer has neither. Gradients are not clipped, as in the
peer and the papers (the glyph recipe clips at norm 1: implementation `mnemo_clip1` of run.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

PROTOCOLS = {
    # B base classes + N phases, on the first K classes of the seed-1993 order (None: all 62)
    "one_class": {"base_classes": 5, "phases": 5, "num_classes": 10},        # 5 one-class phases
    "many_one_class": {"base_classes": 10, "phases": 10, "num_classes": 20},  # 10 one-class phases
    "default": {"base_classes": 32, "phases": 5, "num_classes": None},        # the glyph default, 6 a phase
}


@dataclass(frozen=True)
class Method:
    mnemo: tuple[str, ...]            # mnemo train overrides
    facil: str                        # FACIL's approach
    facil_args: tuple[str, ...] = ()
    incremental_lr: float | None = None   # the method's own rate of its incremental phases, in both
    facil_incremental_lr: float | None = None   # FACIL's, where its loss is a multiple of mnemo's
    mnemo_only: bool = False          # a mnemo setting FACIL has no counterpart of: mnemo runs it, FACIL does not
    notes: str = ""
    peer_runs: str | None = None      # a mnemo-only variant set beside the peer's runs of this method in the table


METHODS = {
    "lwf": Method(("strategy.name=lwf",), "lwf", ("--lamb", "4"), facil_incremental_lr=0.05,
                  notes="mnemo: 0.5·CE + 0.5·τ²·KD (τ = 2); FACIL: CE + lamb·KD at τ = 2 without τ²: lamb 4 is the "
                        "same ratio and twice the loss, so FACIL's incremental phases run at half the rate"),
    "icarl": Method(("strategy.name=icarl",), "icarl",
                    notes="mnemo: iCaRL's Algorithm 3, per-class sigmoid BCE for classification and distillation, "
                          "summed over classes; FACIL: softmax CE for classification, per-class sigmoid BCE "
                          "distillation (batch mean, summed over old classes); NME in both"),
    "icarl_softmax": Method(("strategy.name=icarl", "strategy.icarl.loss=softmax"), "icarl", mnemo_only=True,
                            peer_runs="icarl",
                            notes="mnemo's iCaRL with the loss of the mnemonics code base's iCaRL (CE + softmax KD, "
                                  "Eq. 5): classification as FACIL's, beside FACIL's iCaRL runs"),
    "bic": Method(("strategy.name=bic",), "bic",
                  notes="stage 2: both the authors' code's (rate 0.1, momentum 0.9, 200 epochs, 0.1·β²/2); the "
                        "validation exemplars: FACIL keeps 2 per class apart from the memory from the phase the class "
                        "arrived, mnemo holds out 2 of the 20 stored ones in each phase"),
    # FACIL's form of the bias stage's split, per_class less its set-apart images: 18 stored + 2 set apart, as FACIL
    "bic_arrival": Method(("strategy.name=bic", "strategy.bic.validation=arrival", "strategy.bic.arrival_per_class=2",
                           "exemplars.per_class=18"), "bic", mnemo_only=True, peer_runs="bic",
                          notes="mnemo's BiC with FACIL's validation split: 2 images a class set apart when it "
                                "arrives, never trained on, 18 stored exemplars a class: which part of the BiC "
                                "difference the split is"),
    "lucir": Method(("strategy.name=lucir", "strategy.lucir.cbf_epochs=0"), "lucir",
                    notes="LUCIR's class-balanced fine-tune off in mnemo: FACIL has none. K hard negatives: 2, or "
                          "the phase's new classes where fewer (mnemo takes min(K, new) itself; FACIL's topk fails)"),
    "lucir_noimprint": Method(("strategy.name=lucir", "strategy.lucir.cbf_epochs=0", "strategy.lucir.imprint=false"),
                              "lucir",
                              notes="mnemo's LUCIR with new-class weights at random, as FACIL's (FACIL does not "
                                    "imprint): which part of the LUCIR difference imprinting is"),
    "lwm": Method(("strategy.name=lwm",), "lwm", ("--beta", "2", "--gamma", "4"), incremental_lr=0.01,
                  notes="β 2, γ 4 (mnemo's defaults); incremental phases at the paper's 0.01; L_D: the paper's "
                        "sigmoid distillation in mnemo, a softmax one at τ = 2 in FACIL"),
    # FACIL's LwM computes no gradient through its attention term, so what it trains on is CE + β·KD(τ = 2):
    # mnemo's LwF at λ = 2/3, λ·CE + (1 - λ)·τ²·KD, is (2/3)·(CE + 2·KD), and at 1.5x LwM's 0.01 it takes FACIL's
    # LwM steps (weight decay aside)
    "lwm_facil_loss": Method(("strategy.name=lwf", "train.kd_lambda=0.6666667"), "lwm", incremental_lr=0.015,
                             mnemo_only=True, peer_runs="lwm",
                             notes="FACIL's LwM objective (CE + 2·KD at τ 2; its L_AD has no gradient) run by mnemo, "
                                   "as its LwF at λ 2/3 and rate 0.015: which part of the LwM difference is the "
                                   "paper's L_D and L_AD against FACIL's"),
    # the product's runs of LwF and LwM end each phase in the mnemonics paper's balanced fine-tune (Algorithm 1,
    # step 18), the glyph recipe's 4 epochs at 0.01; the matched recipe turns it off (FACIL has none)
    "lwf_ft": Method(("strategy.name=lwf", "train.finetune_epochs=4"), "lwf", mnemo_only=True,
                     notes="mnemo's LwF with the balanced fine-tune of its recipes (FACIL has none)"),
    "lwm_ft": Method(("strategy.name=lwm", "train.finetune_epochs=4"), "lwm", incremental_lr=0.01, mnemo_only=True,
                     notes="mnemo's LwM with the balanced fine-tune of its recipes (FACIL has none)"),
}


SIZES = {"one_class": 32, "many_one_class": 32, "default": 16}


@dataclass(frozen=True)
class Recipe:
    protocol: str
    shards: str = "data/glyphs"
    size: int = 0                     # 0: the protocol's (SIZES)
    network: str = "resnet32"
    base_epochs: int = 8
    base_milestones: tuple[int, ...] = (5, 6)
    epochs: int = 5
    milestones: tuple[int, ...] = (3, 4)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    per_class: int = 20
    selection: str = "herding"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.size:
            object.__setattr__(self, "size", SIZES[self.protocol])

    def mnemo_overrides(self, method: str, seed: int, grad_clip: float = 0.0, last_batch: str = "short") -> list[str]:
        """`grad_clip` 0: no gradient clipping, as FACIL (its LwF, BiC and LwM clip at norm 10,000, its LUCIR not at
        all); the glyph recipe clips at 1. `last_batch` short: an epoch ends in a short batch, as FACIL's loader
        (even: mnemo's default, batches of near-equal size)."""
        p = PROTOCOLS[self.protocol]
        m = METHODS[method]
        out = [f"data.shards={self.shards}", f"data.image_size={self.size}", f"model.arch={self.network}",
               f"protocol.base_classes={p['base_classes']}", f"protocol.phases={p['phases']}",
               f"protocol.num_classes={'null' if p['num_classes'] is None else p['num_classes']}",
               f"train.base_epochs={self.base_epochs}", f"train.epochs={self.epochs}",
               f"train.lr_milestones=[{','.join(map(str, self.milestones))}]", f"train.lr={self.lr}",
               f"train.momentum={self.momentum}", f"train.weight_decay={self.weight_decay}",
               f"train.batch_size={self.batch_size}", f"exemplars.per_class={self.per_class}",
               f"exemplars.selection={self.selection}", "train.finetune_epochs=0", f"seed={seed}",
               "logging.tensorboard=false", f"train.grad_clip={grad_clip:g}",
               f"train.last_batch={last_batch}", *m.mnemo]
        if m.incremental_lr is not None:
            out.append(f"train.incremental_lr={m.incremental_lr}")
        return out

    def facil_job(self, method: str, seed: int) -> dict:
        m = METHODS[method]
        p = PROTOCOLS[self.protocol]
        args = list(m.facil_args)
        if m.facil == "lucir":
            new = (p["num_classes"] or 62) - p["base_classes"]
            args += ["--K", str(min(2, new // p["phases"]))]
        return {"shards": self.shards, "preset": "glyphs", "size": self.size, "protocol": PROTOCOLS[self.protocol],
                "method": m.facil, "seed": seed, "network": self.network, "base_epochs": self.base_epochs,
                "base_milestones": list(self.base_milestones), "epochs": self.epochs,
                "milestones": list(self.milestones), "gamma": 0.1, "lr": self.lr,
                "incremental_lr": next(lr for lr in (m.facil_incremental_lr, m.incremental_lr, self.lr)
                                       if lr is not None),
                "momentum": self.momentum, "weight_decay": self.weight_decay, "batch_size": self.batch_size,
                "per_class": self.per_class, "selection": self.selection, "pad": 2, "flip": False,
                "normalize": [[0.5] * 3, [0.5] * 3], "facil_args": args}
