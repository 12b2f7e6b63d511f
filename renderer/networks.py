"""Head2Head-style renderer networks (NED's renderer): a sequential generator over a window of conditioning
frames plus its own previous outputs, and multi-scale PatchGAN discriminators returning their features.

Generator: two encoders (conditioning of `n_frames_g` frames, 9 channels each: NMFC, eye gaze, shape; and the
previous `n_frames_g - 1` generated frames), each 7x7 conv -> `n_down` stride-2 convs -> ResBlocks, summed,
then ResBlocks -> `n_down` transposed convs -> 7x7 conv -> tanh. InstanceNorm (no affine), reflection padding.
The output is composited with the face mask: background forced to -1, as NED does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

COND_CHANNELS = 9  # NMFC (3) + eye gaze (3) + shape (3); the mask channel is used for compositing only


@dataclass(frozen=True)
class RendererSize:
    ngf: int  # generator base width
    n_down: int  # stride-2 stages
    n_res_enc: int  # ResBlocks per encoder branch
    n_res_dec: int  # ResBlocks after the branches are summed
    ndf: int  # discriminator base width
    ndf_max: int  # discriminator width cap
    n_layers_d: int
    num_d: int  # scales of the image discriminator


SIZES = {
    # NED's: n_blocks 9 (5 per encoder, 4 after), its NLayerDiscriminator doubles up to 512 (renderer.ned)
    "ned": RendererSize(ngf=64, n_down=3, n_res_enc=5, n_res_dec=4, ndf=64, ndf_max=512, n_layers_d=3, num_d=2),
    "small": RendererSize(ngf=32, n_down=3, n_res_enc=2, n_res_dec=2, ndf=32, ndf_max=64, n_layers_d=3, num_d=2),
    "tiny": RendererSize(ngf=16, n_down=2, n_res_enc=1, n_res_dec=1, ndf=16, ndf_max=32, n_layers_d=2, num_d=1),
}


class ResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.ReflectionPad2d(1),
            nn.Conv2d(c, c, 3),
            nn.InstanceNorm2d(c),
            nn.ReLU(True),
            nn.ReflectionPad2d(1),
            nn.Conv2d(c, c, 3),
            nn.InstanceNorm2d(c),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def _encoder(c_in: int, size: RendererSize) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.ReflectionPad2d(3),
        nn.Conv2d(c_in, size.ngf, 7),
        nn.InstanceNorm2d(size.ngf),
        nn.ReLU(True),
    ]
    c = size.ngf
    for _ in range(size.n_down):
        layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * c), nn.ReLU(True)]
        c *= 2
    layers += [ResBlock(c) for _ in range(size.n_res_enc)]
    return nn.Sequential(*layers)


class Generator(nn.Module):
    def __init__(self, size: RendererSize, n_frames_g: int = 3):
        super().__init__()
        self.n_frames_g = n_frames_g
        self.cond_encoder = _encoder(COND_CHANNELS * n_frames_g, size)
        self.prev_encoder = _encoder(3 * (n_frames_g - 1), size)
        c = size.ngf * 2**size.n_down
        layers: list[nn.Module] = [ResBlock(c) for _ in range(size.n_res_dec)]
        for _ in range(size.n_down):
            layers += [
                nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                nn.InstanceNorm2d(c // 2),
                nn.ReLU(True),
            ]
            c //= 2
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(c, 3, 7), nn.Tanh()]
        self.decoder = nn.Sequential(*layers)

    def forward(self, cond: torch.Tensor, prev: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """cond (B, 9*n, H, W) in [0, 1]; prev (B, 3*(n-1), H, W) in [-1, 1]; mask (B, 1, H, W) in [0, 1].

        Returns the composited frame (B, 3, H, W): y * mask - (1 - mask).
        """
        y = self.decoder(self.cond_encoder(cond) + self.prev_encoder(prev))
        return y * mask - (1.0 - mask)


class PatchDiscriminator(nn.Module):
    """PatchGAN (kernel 4) returning every layer's output; the last is the patch score map."""

    def __init__(self, c_in: int, ndf: int, ndf_max: int, n_layers: int):
        super().__init__()
        blocks = [nn.Sequential(nn.Conv2d(c_in, ndf, 4, stride=2, padding=2), nn.LeakyReLU(0.2, True))]
        c = ndf
        for i in range(1, n_layers + 1):
            c_next = min(c * 2, ndf_max)
            stride = 2 if i < n_layers else 1
            blocks.append(
                nn.Sequential(
                    nn.Conv2d(c, c_next, 4, stride=stride, padding=2),
                    nn.InstanceNorm2d(c_next),
                    nn.LeakyReLU(0.2, True),
                )
            )
            c = c_next
        blocks.append(nn.Sequential(nn.Conv2d(c, 1, 4, stride=1, padding=2)))
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return feats


class MultiscaleDiscriminator(nn.Module):
    """`num_d` PatchGANs on the input and its 2x, 4x, ... average-pooled copies."""

    def __init__(self, c_in: int, size: RendererSize, num_d: int | None = None):
        super().__init__()
        n = size.num_d if num_d is None else num_d
        self.scales = nn.ModuleList(PatchDiscriminator(c_in, size.ndf, size.ndf_max, size.n_layers_d) for _ in range(n))
        self.down = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        out = []
        for i, d in enumerate(self.scales):
            if i:
                x = self.down(x)
            out.append(d(x))
        return out


def build_renderer(size: str, n_frames_g: int, mouth_d: bool, eyes_d: bool) -> dict[str, nn.Module]:
    s = SIZES[size]
    nets: dict[str, nn.Module] = {
        "generator": Generator(s, n_frames_g),
        "disc_image": MultiscaleDiscriminator(COND_CHANNELS + 3, s),
    }
    if mouth_d:
        nets["disc_mouth"] = MultiscaleDiscriminator(COND_CHANNELS + 3, s)
    if eyes_d:
        nets["disc_eyes"] = MultiscaleDiscriminator(COND_CHANNELS + 3, s)
    return nets
