"""The ``synthetic_pairs`` source: RaSD's online FIFO of synthetic image/label pairs; no image file is read.

Sized by ``data.synthetic_dim`` (2 or 3), ``data.synthetic_size`` and ``data.synthetic_refresh``; the label
count is the method's (``source_keys = ("num_labels",)``). Samples are a function of (``trainer.seed``,
rank, step), so a resumed run rebuilds its buffer exactly (``organfm.synthesis.SyntheticBuffer``).
"""
from __future__ import annotations

from organfm.batches import BatchSource, SourceContext, register_batch_source

__all__: list[str] = []


@register_batch_source("synthetic_pairs")
def synthetic_pairs_source(ctx: SourceContext) -> BatchSource:
    """Batches ``{"image": (B,1,*S) in [0,1], "label_map": int64 (B,1,*S), "index": (B,)}``."""
    from organfm.synthesis import RaSDPairs, SyntheticBuffer

    data, num_labels = ctx.data, ctx.options.get("num_labels")
    if data.source != "synthetic":
        raise ValueError(f"this method pretrains on synthetic image/label pairs only: data must be 'synthetic', "
                         f"not {data.source!r}")
    if data.synthetic_dim not in (2, 3):
        raise ValueError(f"data.synthetic_dim must be 2 or 3, got {data.synthetic_dim}")
    if num_labels is None or num_labels < 2:
        raise ValueError(f"method.num_labels must be >= 2, got {num_labels}")
    if not ctx.steps_per_epoch or ctx.steps_per_epoch < 1:
        raise ValueError(f"an endless synthetic source needs trainer.steps_per_epoch >= 1, got {ctx.steps_per_epoch}")
    # rank 0 draws the stream that `organfm synth --seed` writes; other ranks draw their own
    pairs = RaSDPairs((data.synthetic_size,) * data.synthetic_dim, num_labels=num_labels, seed=ctx.seed,
                      stream="rasd" if ctx.rank == 0 else f"rasd/rank{ctx.rank}")
    buffer = SyntheticBuffer(pairs, batch_size=ctx.batch_size, start_step=ctx.start_batch,
                             refresh=data.synthetic_refresh, num_workers=ctx.num_workers)
    # synthetic images are already in [0, 1] and fed without normalisation
    contract = {"input_size": [1] + [data.synthetic_size] * data.synthetic_dim, "mean": [0.0], "std": [1.0],
                "organs": [], "intensity": {"mode": "minmax", "window": None,
                                            "note": "intensities scaled to [0, 1], fed without normalisation"}}
    def monitor(n: int) -> dict:
        """Fixed pairs of the monitor stream; in 2D, the kNN images are the embedded synthetic organs (8 organ
        classes, never trained on: RaSD sees no organ), fed as the contract says (no normalisation)."""
        import torch

        from organfm.batches.monitor import MONITOR_SEED, clean_images, monitor_indices

        probe = RaSDPairs((data.synthetic_size,) * data.synthetic_dim, num_labels=num_labels, seed=MONITOR_SEED,
                          stream="monitor")
        with torch.random.fork_rng(devices=[]):
            pairs = [probe[i] for i in range(min(n, 64))]
        batch = {"image": torch.stack([p["image"] for p in pairs]),
                 "label_map": torch.stack([p["label_map"] for p in pairs])}
        if data.synthetic_dim == 2:
            from organfm.synthesis import SyntheticOrgans

            organs = SyntheticOrgans(num_organs=8, images_per_organ=max(1, n // 8 + 1), size=data.synthetic_size,
                                     seed=MONITOR_SEED)
            images, labels = clean_images(organs, monitor_indices(len(organs), n), size=data.synthetic_size,
                                          mean=0.0, std=1.0)
            batch["monitor_input"], batch["monitor_label"] = images, labels
        else:
            batch["monitor_input"] = batch["image"]
        return batch

    return BatchSource(batches=buffer, steps_per_epoch=ctx.steps_per_epoch, contract=contract,
                       backbone_kwargs={"spatial_dims": data.synthetic_dim},
                       summary=lambda steps: buffer.summary(),
                       num_items=lambda steps: buffer.num_samples(steps * ctx.accumulate), monitor=monitor,
                       input_sizes={"data.synthetic_size": data.synthetic_size})
