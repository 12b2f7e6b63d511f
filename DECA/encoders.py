"""DECA's networks with the parameter names of the released `deca_model.tar`.

- `ResnetEncoder(outsize)`: a ResNet-50 backbone (torchvision's layout and names, without `fc`; 7x7 average
  pool, so 224x224 input gives 2048 features) -> Linear(2048, 1024) -> ReLU -> Linear(1024, outsize).
  `E_flame` has outsize 236 (shape 100 | tex 50 | exp 50 | pose 6 | cam 3 | light 27), `E_detail` 128.
- `DetailGenerator`: `D_detail`, latent jaw(3) + exp(50) + detail(128) = 181 -> (1, 256, 256) displacement
  map times 0.01. Its later BatchNorms have eps = 0.8 (the original passes 0.8 as the second positional
  argument), kept so that the weights behave as trained.
Input images: RGB in [0, 1], 224x224, no mean/std normalisation.
"""

from __future__ import annotations

import torch
from torch import nn

CODE_SPLIT = (("shape", 100), ("tex", 50), ("exp", 50), ("pose", 6), ("cam", 3), ("light", 27))
N_DETAIL = 128


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet50(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.c_in = 64
        self.layer1 = self._layer(64, 3, 1)
        self.layer2 = self._layer(128, 4, 2)
        self.layer3 = self._layer(256, 6, 2)
        self.layer4 = self._layer(512, 3, 2)
        self.avgpool = nn.AvgPool2d(7, stride=1)

    def _layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        down = nn.Sequential(nn.Conv2d(self.c_in, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4))
        layers = [Bottleneck(self.c_in, planes, stride, down)]
        self.c_in = planes * 4
        layers += [Bottleneck(self.c_in, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


class ResnetEncoder(nn.Module):
    def __init__(self, outsize: int):
        super().__init__()
        self.encoder = ResNet50()
        self.layers = nn.Sequential(nn.Linear(2048, 1024), nn.ReLU(), nn.Linear(1024, outsize))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(self.encoder(images))


class DetailGenerator(nn.Module):
    def __init__(self, latent_dim: int = 3 + 50 + N_DETAIL, out_scale: float = 0.01):
        super().__init__()
        self.out_scale = out_scale
        self.l1 = nn.Sequential(nn.Linear(latent_dim, 128 * 8 * 8))
        layers: list[nn.Module] = [nn.BatchNorm2d(128)]
        for c_in, c_out in ((128, 128), (128, 64), (64, 64), (64, 32), (32, 16)):
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear"),
                nn.Conv2d(c_in, c_out, 3, 1, 1),
                nn.BatchNorm2d(c_out, 0.8),
                nn.LeakyReLU(0.2, inplace=True),
            ]
        layers += [nn.Conv2d(16, 1, 3, 1, 1), nn.Tanh()]
        self.conv_blocks = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.conv_blocks(self.l1(z).view(-1, 128, 8, 8)) * self.out_scale


def split_code(code: torch.Tensor) -> dict[str, torch.Tensor]:
    """E_flame's 236-d output -> named parameters (DECA's `decompose_code` order); light as (B, 9, 3)."""
    out, start = {}, 0
    for name, n in CODE_SPLIT:
        out[name] = code[:, start : start + n]
        start += n
    out["light"] = out["light"].reshape(-1, 9, 3)
    return out
