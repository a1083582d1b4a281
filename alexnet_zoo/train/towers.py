"""The paper's own model parallelism (section 3.2, Figure 2): tower 1 on one GPU, tower 2 on another.

Each tower holds half of every layer's kernels. conv2, conv4 and conv5 read only their own
tower's maps; conv3 and the fully connected layers read both towers', so activations cross
between the devices at exactly those layers: pool2 -> conv3, pool5 -> fc6, fc6 -> fc7 and
fc7 -> fc8. The weights are the grouped model's (``AlexNet`` with ``groups=2``): tower 1 owns the
first half of each tensor's output rows, so :meth:`TwoTowerAlexNet.from_grouped` and
:meth:`TwoTowerAlexNet.grouped_state_dict` convert both ways without any copy of meaning.

One detail goes beyond Figure 2: the grouped model (like Caffe's BVLC AlexNet) normalises LRN
across all 96 / 256 maps, so a channel at a tower's edge sees two channels of the other tower.
To equal it, the towers exchange that two-channel halo before each LRN
(``exchange_lrn_halo=True``, 2 of 48 maps after conv1); ``False`` normalises inside each tower,
as cuda-convnet did, and then equals the grouped model only away from the edges.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnet_zoo.models.alexnet import AlexNet, to_6x6
from alexnet_zoo.models.config import AlexNetConfig
from alexnet_zoo.ops.lrn import local_response_norm
from alexnet_zoo.ops.pooling import max_pool

__all__ = ["TwoTowerAlexNet"]

_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
_POOLED = (0, 1, 4)  # max pooling after conv1, conv2, conv5
_NORMED = (0, 1)  # LRN after conv1, conv2


def _halves(n: int) -> tuple[int, int]:
    return n // 2, n - n // 2


def _to(x: Tensor, device: torch.device | str) -> Tensor:
    """``x`` on ``device``; asynchronous only between CUDA devices, where the stream orders the
    copy. A non-blocking copy to the host (or to/from MPS) can be read before it has landed."""
    device = torch.device(device)
    return x.to(device, non_blocking=x.device.type == "cuda" and device.type == "cuda")


class _Tower(nn.Module):
    """Half of every layer; ``index`` 0 owns the first half of the output channels."""

    def __init__(self, config: AlexNetConfig, index: int) -> None:
        super().__init__()
        chans = (config.in_chans, *config.widths)
        for i in range(5):
            inputs = chans[i] // 2 if config.groups[i] == 2 else chans[i]
            setattr(self, f"conv{i + 1}", nn.Conv2d(inputs, chans[i + 1] // 2, config.kernels[i],
                                                    stride=config.conv1_stride if i == 0 else 1,
                                                    padding=config.paddings[i]))
        self.fc6 = nn.Linear(config.widths[4] * 36, config.hidden // 2)
        self.fc7 = nn.Linear(config.hidden, config.hidden // 2)
        self.fc8 = nn.Linear(config.hidden, _halves(config.num_classes)[index])


class TwoTowerAlexNet(nn.Module):
    """The grouped AlexNet split over two devices (both may be "cpu", for tests)."""

    def __init__(self, config: AlexNetConfig, devices: Sequence[str | torch.device] = ("cuda:0", "cuda:1"), *,
                 exchange_lrn_halo: bool = True) -> None:
        super().__init__()
        if tuple(config.groups) != (1, 2, 1, 2, 2):
            raise ValueError(f"the two-tower split needs the paper's grouping (1, 2, 1, 2, 2), got {config.groups}")
        if config.dropout_placement != "after_relu" or config.num_classes < 2 or config.hidden % 2:
            raise ValueError("the two-tower split needs dropout after the ReLUs, an even fc width and a classifier")
        if len(devices) != 2:
            raise ValueError(f"two devices are needed, one per tower, got {list(devices)}")
        self.config = config
        self.devices = tuple(torch.device(d) for d in devices)
        self.exchange_lrn_halo = exchange_lrn_halo
        self.towers = nn.ModuleList([_Tower(config, i).to(d) for i, d in enumerate(self.devices)])
        self.preprocessing = None

    # -- the grouped layout
    @classmethod
    def from_grouped(cls, model: AlexNet, devices: Sequence[str | torch.device] = ("cuda:0", "cuda:1"), *,
                     exchange_lrn_halo: bool = True) -> TwoTowerAlexNet:
        towers = cls(model.config, devices, exchange_lrn_halo=exchange_lrn_halo)
        towers.load_grouped_state_dict(model.state_dict())
        towers.preprocessing = model.preprocessing
        return towers

    def load_grouped_state_dict(self, state_dict: Mapping[str, Tensor]) -> None:
        """Load ``AlexNet.state_dict()`` tensors: tower t takes its half of each output dimension."""
        expected = {f"{layer}.{leaf}" for layer in _LAYERS for leaf in ("weight", "bias")}
        if set(state_dict) != expected:
            extra, missing = sorted(set(state_dict) - expected), sorted(expected - set(state_dict))
            raise KeyError(f"a grouped AlexNet state dict has exactly {sorted(expected)}; got extra {extra}, "
                           f"missing {missing}")
        with torch.no_grad():
            for key, value in state_dict.items():
                layer, leaf = key.split(".")
                first = _halves(value.shape[0])[0]
                parts = (value[:first], value[first:])
                for tower, part in zip(self.towers, parts):
                    target = getattr(getattr(tower, layer), leaf)
                    if target.shape != part.shape:
                        raise ValueError(f"{key}: a half of shape {tuple(part.shape)} does not fit the tower's "
                                         f"{tuple(target.shape)}")
                    target.copy_(part)

    def grouped_state_dict(self) -> dict[str, Tensor]:
        """The grouped model's state dict (same keys, shapes and order as ``AlexNet``), on the CPU."""
        out: dict[str, Tensor] = {}
        for layer in _LAYERS:
            for leaf in ("weight", "bias"):
                parts = [getattr(getattr(t, layer), leaf).detach().to("cpu") for t in self.towers]
                out[f"{layer}.{leaf}"] = torch.cat(parts)
        return out

    def to_grouped(self) -> AlexNet:
        model = AlexNet(self.config)
        model.load_state_dict(self.grouped_state_dict())
        model.preprocessing = self.preprocessing
        return model

    # -- forward
    def _exchange(self, parts: Sequence[Tensor]) -> list[Tensor]:
        """Every tower gets both towers' maps, tower 1's channels first (the only communication)."""
        return [torch.cat([_to(p, d) for p in parts], 1) for d in self.devices]

    def _lrn(self, parts: list[Tensor]) -> list[Tensor]:
        c = self.config
        args = (c.lrn_size, c.lrn_alpha, c.lrn_beta, c.lrn_k, c.lrn_convention)
        if not self.exchange_lrn_halo:
            return [local_response_norm(p, *args) for p in parts]
        h = c.lrn_size // 2
        left, right = parts
        with_halo = (torch.cat([left, _to(right[:, :h], left.device)], 1),
                     torch.cat([_to(left[:, -h:], right.device), right], 1))
        return [local_response_norm(with_halo[0], *args)[:, :left.shape[1]],
                local_response_norm(with_halo[1], *args)[:, h:]]

    def _dropout(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.config.dropout, training=True) if self.training and self.config.dropout else x

    def forward(self, x: Tensor) -> Tensor:
        """Images (N, 3, H, W) on any device -> logits (N, num_classes) on the first tower's device."""
        if x.dim() != 4 or x.shape[1] != self.config.in_chans:
            raise ValueError(f"TwoTowerAlexNet expects (N, {self.config.in_chans}, H, W) images, got {tuple(x.shape)}")
        parts = [_to(x, d) for d in self.devices]  # conv1: both towers see the image
        for i in range(5):
            if i > 0 and self.config.groups[i] == 1:
                parts = self._exchange(parts)  # conv3 reads both towers
            parts = [F.relu(getattr(t, f"conv{i + 1}")(p)) for t, p in zip(self.towers, parts)]
            if i in _NORMED and self.config.lrn:
                parts = self._lrn(parts)
            if i in _POOLED:
                parts = [max_pool(p, self.config.pool_ceil) for p in parts]
        parts = [to_6x6(p) for p in parts]
        parts = [torch.flatten(p, 1) for p in self._exchange(parts)]  # pool5 -> fc6 reads both
        for name in ("fc6", "fc7"):
            parts = [self._dropout(F.relu(getattr(t, name)(p))) for t, p in zip(self.towers, parts)]
            parts = self._exchange(parts)  # fc6 -> fc7, fc7 -> fc8
        logits = [t.fc8(p) for t, p in zip(self.towers, parts)]
        return torch.cat([_to(p, self.devices[0]) for p in logits], 1)
