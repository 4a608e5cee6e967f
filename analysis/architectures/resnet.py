"""ResNet with torchvision-style ``Bottleneck`` blocks (He et al. 2016, "v1.5").

The module tree and state-dict keys are those of ``torchvision.models.resnet50``
(``conv1, bn1, relu, maxpool, layer1..layer4, avgpool, fc``; blocks with
``conv1..3, bn1..3, relu, downsample.0/1``), so its weights load unchanged. As in
torchvision, one in-place ``relu`` module is called three times per block and
``out += identity`` adds in place: capture code must copy what it records.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from analysis.architectures import parse_config, register_architecture
from contract.architectures import ResNetConfig


class Bottleneck(nn.Module):
    """1x1 reduce -> 3x3 (stride here) -> 1x1 expand by 4, plus the identity.

    ``conv2`` runs at ``planes`` channels, 4x fewer than the block's output: the
    channel bottleneck the block is named after.
    """

    expansion = 4

    def __init__(
        self,
        inplanes: int,
        planes: int,
        stride: int = 1,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.downsample is not None:
            identity = self.downsample(x)
        out += identity
        return self.relu(out)


class ResNet(nn.Module):
    """Stem (``conv1, bn1, relu, maxpool``), stages ``layer1..layerN``, ``avgpool``
    and ``fc``. Input ``(B, in_channels, H, W)``, output ``(B, num_classes)``.

    ``small_input`` swaps the 7x7/2 stem and the max-pool for a 3x3/1 conv and an
    identity (for 32x32 or 8x8 images); the parameter names stay the same.
    """

    def __init__(self, cfg: ResNetConfig) -> None:
        super().__init__()
        self.config = cfg
        w = cfg.stem_width
        if cfg.small_input:
            self.conv1 = nn.Conv2d(cfg.in_channels, w, 3, padding=1, bias=False)
        else:
            self.conv1 = nn.Conv2d(cfg.in_channels, w, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool: nn.Module = (
            nn.Identity() if cfg.small_input else nn.MaxPool2d(3, stride=2, padding=1)
        )
        inplanes = w
        for i, (depth, planes) in enumerate(zip(cfg.layers, cfg.widths, strict=True)):
            stage, inplanes = _stage(inplanes, planes, depth, stride=1 if i == 0 else 2)
            self.add_module(f"layer{i + 1}", stage)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(inplanes, cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(len(self.config.layers)):
            x = getattr(self, f"layer{i + 1}")(x)
        x = torch.flatten(self.avgpool(x), 1)  # (B, C)
        return self.fc(x)


def _stage(
    inplanes: int, planes: int, depth: int, stride: int
) -> tuple[nn.Sequential, int]:
    out = planes * Bottleneck.expansion
    downsample = None
    if stride != 1 or inplanes != out:
        downsample = nn.Sequential(
            nn.Conv2d(inplanes, out, 1, stride=stride, bias=False),
            nn.BatchNorm2d(out),
        )
    blocks = [Bottleneck(inplanes, planes, stride, downsample)]
    blocks += [Bottleneck(out, planes) for _ in range(depth - 1)]
    return nn.Sequential(*blocks), out


@register_architecture("resnet")
def build_resnet(config: dict[str, Any]) -> ResNet:
    """Build a :class:`ResNet`; the defaults are ResNet-50 (25,557,032 parameters).

    Config keys (defaults):

    - ``in_channels`` (3): image channels.
    - ``num_classes`` (1000): width of ``fc``.
    - ``layers`` ([3, 4, 6, 3]): blocks per stage (ResNet-101: [3, 4, 23, 3]).
    - ``widths`` ([64, 128, 256, 512]): base width per stage; a stage outputs 4x.
    - ``stem_width`` (64): channels of the stem conv.
    - ``small_input`` (False): 3x3 stem without max-pool, for 32x32 or smaller.
    """
    return ResNet(parse_config("resnet", ResNetConfig, config))
