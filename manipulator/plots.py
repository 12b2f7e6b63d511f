"""TensorBoard figures of the manipulator: a validation window edited to every emotion, the mouth-opening
channel and two expression coefficients over time, source vs edited."""

from __future__ import annotations

import numpy as np
import torch

from common.emotions import NEUTRAL
from common.formats import MOUTH_CHANNEL
from manipulator.data import WindowBank
from manipulator.editing import label_style


@torch.no_grad()
def edit_plot(
    nets: dict[str, torch.nn.Module], bank: WindowBank, latent_dim: int, channels=(MOUTH_CHANNEL, 1, 2)
) -> np.ndarray:
    """(H, W, 3) uint8 image: one row per channel, one column per target emotion."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for net in nets.values():
        net.eval()
    neutral = bank.emotions.index(NEUTRAL) if NEUTRAL in bank.emotions else 0
    candidates = bank.by_label[neutral] if len(bank.by_label[neutral]) else np.arange(len(bank))
    window = bank.windows(candidates[len(candidates) // 2 : len(candidates) // 2 + 1])
    fig, axes = plt.subplots(
        len(channels), len(bank.emotions), figsize=(2.2 * len(bank.emotions), 1.6 * len(channels)), squeeze=False
    )
    for col, emotion in enumerate(bank.emotions):
        style = torch.from_numpy(label_style(nets["mapping"], col, latent_dim))[None]
        edited = nets["generator"](window, style)[0].numpy()
        for row, c in enumerate(channels):
            ax = axes[row, col]
            ax.plot(window[0, :, c].numpy(), color="0.5", label="source")
            ax.plot(edited[:, c], color="C3", label="edited")
            ax.set_xticks([])
            if row == 0:
                ax.set_title(emotion, fontsize=8)
            if col == 0:
                ax.set_ylabel("mouth" if c == MOUTH_CHANNEL else f"expr {c}", fontsize=8)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    fig.canvas.draw()
    image = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    for net in nets.values():
        net.train()
    return image
