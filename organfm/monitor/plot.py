"""``health.png``: one panel per monitor signal over steps (the verdict in the title)."""
from __future__ import annotations

import io
from typing import Any

__all__ = ["plot_health"]

# (signal, panel title, reference line drawn from the record: None or a key)
_PANELS = (
    ("knn", "monitor kNN accuracy", "knn_majority"),
    ("teacher_entropy", "teacher entropy (per sample / batch mean) vs ln K", "log_k"),
    ("distance", "distance from initial weights", None),
    ("embed_std_ratio", "embedding std x sqrt(d) (collapse -> 0)", None),
    ("rankme", "effective rank (RankMe)", None),
    ("alignment", "alignment (lower: positives closer)", None),
    ("uniformity", "uniformity (0: collapsed)", None),
    ("masked_loss", "masked loss vs per-volume mean", "mean_baseline_loss"),
    ("organ_entropy", "organ-attention entropy", None),
)


def plot_health(records: list[dict[str, Any]], *, title: str = "") -> bytes | None:
    """PNG bytes of the monitor curves, or None when there is nothing to draw."""
    panels = [p for p in _PANELS if any(p[0] in r for r in records)]
    if not records or not panels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.0 * rows), squeeze=False)
    for ax, (key, name, ref) in zip(axes.flat, panels):
        pts = [(r["step"], r[key]) for r in records if key in r]
        ax.plot([s for s, _ in pts], [v for _, v in pts], marker="o", ms=3, label=key)
        if key == "teacher_entropy":
            pts = [(r["step"], r["teacher_batch_entropy"]) for r in records if "teacher_batch_entropy" in r]
            ax.plot([s for s, _ in pts], [v for _, v in pts], marker="s", ms=3, label="batch mean")
        if ref is not None:
            refs = [(r["step"], r[ref]) for r in records if ref in r]
            if refs:
                ax.plot([s for s, _ in refs], [v for _, v in refs], ls="--", color="grey", label=ref)
        if key == "organ_entropy" and "organ_entropy" in records[0]:
            ax.axhline(records[0]["organ_entropy"], ls="--", color="grey", label="step 0 (fresh init)")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle(f"training health: {title}", fontsize=11)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()
