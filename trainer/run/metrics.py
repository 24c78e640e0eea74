"""RUN/metrics.json and the end-of-run table.

Average incremental accuracy Ā = mean over all N+1 phases of A_i (accuracy of Θ_i on D_{0:i}^test).
Forgetting F = A^Z_0 - A^Z_N, the accuracy on D_0^test of Θ_0 minus that of Θ_N (the paper's Table 1).
All values are percentages.
"""
from __future__ import annotations

from pathlib import Path

from core import atomic


def average_accuracy(phases: list[dict], key: str = "accuracy") -> float | None:
    vals = [p[key] for p in phases if p.get(key) is not None]
    return round(sum(vals) / len(vals), 4) if vals and len(vals) == len(phases) else None


def forgetting(phases: list[dict], key: str = "accuracy_base") -> float | None:
    if not phases or phases[0].get(key) is None or phases[-1].get(key) is None:
        return None
    return round(phases[0][key] - phases[-1][key], 4)


class MetricsLog:
    def __init__(self, total_phases: int):
        self.total_phases = total_phases
        self.phases: list[dict] = []
        self.acc_matrix: list[list[float]] = []
        self.acc_matrix_nme: list[list[float]] = []

    def add(self, record: dict, row: list, row_nme: list | None) -> None:
        self.phases.append(record)
        self.acc_matrix.append(row)
        if row_nme is not None:
            self.acc_matrix_nme.append(row_nme)

    def summary(self) -> dict:
        out = {
            "status": "complete" if len(self.phases) == self.total_phases else "running",
            "phases_done": len(self.phases),
            "phases_total": self.total_phases,
            "average_accuracy": average_accuracy(self.phases),
            "forgetting": forgetting(self.phases),
            "average_accuracy_nme": average_accuracy(self.phases, "accuracy_nme"),
            "forgetting_nme": forgetting(self.phases, "accuracy_base_nme"),
            "average_accuracy_top5": average_accuracy(self.phases, "accuracy_top5"),
            "phases": self.phases,
            "acc_matrix": self.acc_matrix,
        }
        if self.acc_matrix_nme:
            out["acc_matrix_nme"] = self.acc_matrix_nme
        return out

    def write(self, path: Path) -> None:
        atomic.write_json(path, self.summary(), indent=1)

    def state_dict(self) -> dict:
        return {"phases": self.phases, "acc_matrix": self.acc_matrix, "acc_matrix_nme": self.acc_matrix_nme}

    def load_state_dict(self, sd: dict) -> None:
        self.phases, self.acc_matrix = list(sd["phases"]), list(sd["acc_matrix"])
        self.acc_matrix_nme = list(sd.get("acc_matrix_nme", []))

    def table(self) -> str:
        def fmt(v):
            return "   -  " if v is None else f"{v:6.2f}"

        lines = ["phase  classes   CNN acc   NME acc   base acc   old acc   new acc   minutes",
                 "-----  -------   -------   -------   --------   -------   -------   -------"]
        for p in self.phases:
            lines.append(f"{p['phase']:5d}  {p['classes_seen']:7d}    {fmt(p['accuracy'])}    "
                         f"{fmt(p.get('accuracy_nme'))}     {fmt(p['accuracy_base'])}    {fmt(p['accuracy_old'])}"
                         f"    {fmt(p['accuracy_new'])}    {p.get('wall_s', 0) / 60:6.2f}")
        s = self.summary()
        lines.append(f"average incremental accuracy Ā = {fmt(s['average_accuracy'])} %   forgetting F = "
                     f"{fmt(s['forgetting'])} %" + (f"   (NME: Ā = {fmt(s['average_accuracy_nme'])} %, "
                                                    f"F = {fmt(s['forgetting_nme'])} %)"
                                                    if s["average_accuracy_nme"] is not None else ""))
        return "\n".join(lines)
