"""AlexNet: Krizhevsky, Sutskever and Hinton, "ImageNet Classification with Deep Convolutional
Neural Networks", NIPS 2012 - and torchvision's one-tower variant ("One weird trick", 2014).

Layer names are the paper's / Caffe's (conv1..conv5, fc6..fc8), so parameter names read like the
paper and map one-to-one onto BVLC, ONNX and Caffe2 weight files. The two GPUs of the paper are
``groups=2`` on conv2, conv4 and conv5; the weights of tower 1 are the first half of each tensor.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from alexnet_zoo.models.config import ARCHS, PAPER, POOLED_CONVS, AlexNetConfig, arch_of, feature_sizes
from alexnet_zoo.models.pretrained_cfg import FeatureInfo, PretrainedCfg, feature_info
from alexnet_zoo.ops import onednn, winograd
from alexnet_zoo.ops.pooling import max_pool

__all__ = ["LAYERS", "AlexNet", "AlexNetFeatures", "DenseAlexNet", "min_input_size", "to_6x6"]

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8")
_NORMED = (1, 2)  # LRN follows these (when the config has LRN)
# Fast-path batches run conv1..pool5 this many images at a time: conv1's output for 8 images
# (9 MB) stays in L3 for the LRN/pool pass and under glibc's mmap threshold, so it is neither
# page-faulted in afresh on every call nor streamed from DRAM (about 5% at batch 32 on 2 cores).
# The fc layers still see the whole batch: they are bound by reading their weights.
_FEATURE_CHUNK = 8


def min_input_size(config: AlexNetConfig) -> int:
    """The smallest square input side whose pool5 map is at least 1x1."""
    return next(s for s in range(1, 1024) if feature_sizes(config, s)["pool5"] >= 1)


# ---- the network ---------------------------------------------------------------------------------

def to_6x6(x: Tensor) -> Tensor:
    """pool5 as fc6 reads it: torchvision's adaptive pooling, an identity at 224/227, an average elsewhere."""
    return x if x.shape[-2:] == (6, 6) else F.adaptive_avg_pool2d(x, 6)


def _conv(conv: nn.Conv2d, x: Tensor, relu: bool) -> Tensor:
    """The fastest exact way to run ``conv`` (+ ReLU) on this input: Winograd, oneDNN or plain."""
    if winograd.applies(conv, x):
        return winograd.conv2d(conv, x, relu)
    return onednn.conv2d(conv, x, relu)



def check_images(x: Tensor, in_chans: int, min_size: int) -> None:
    """Refuse a batch that is not (N, in_chans, H, W) with H and W large enough to reach pool5
    (the fp32 and the int8 network take the same inputs)."""
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f"AlexNet expects (N, {in_chans}, H, W) images, got shape {tuple(x.shape)}")
    if min(x.shape[-2:]) < min_size:
        raise ValueError(f"AlexNet needs inputs of at least {min_size}x{min_size} "
                         f"pixels to reach pool5, got {tuple(x.shape[-2:])}")

class AlexNet(nn.Module):
    """The 2012 network (or any :class:`AlexNetConfig` variant) with timm's model API.

    ``arch``: the builder name the model is saved and described under (``create_model`` passes
    its own); by default the architecture whose layout ``config`` has, None for a custom variant."""

    def __init__(self, config: AlexNetConfig = PAPER, *, arch: str | None = None) -> None:
        super().__init__()
        if arch is not None and arch not in ARCHS:
            raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHS)}")
        self.config = config
        self._arch = arch if arch is not None else arch_of(config)
        chans = (config.in_chans, *config.widths)
        for i in range(5):
            conv = nn.Conv2d(chans[i], chans[i + 1], config.kernels[i], padding=config.paddings[i],
                             stride=config.conv1_stride if i == 0 else 1, groups=config.groups[i])
            setattr(self, f"conv{i + 1}", conv)
        self.fc6 = nn.Linear(config.widths[4] * 36, config.hidden)
        self.fc7 = nn.Linear(config.hidden, config.hidden)
        self.fc8: nn.Module = self._classifier(config.num_classes)
        self.num_features = config.hidden
        self.min_input_size = min_input_size(config)
        self.preprocessing = None  # set by the builders: how pictures must be prepared for these weights
        self._pretrained_cfg: PretrainedCfg | None = None  # set by the builders
        self.init_weights()

    @property
    def arch(self) -> str | None:
        """The architecture's name ("alexnet", "alexnet_owt"), or None for a custom variant."""
        return self._arch

    # -- timm's descriptions
    @property
    def pretrained_cfg(self) -> PretrainedCfg:
        """The weights' :class:`PretrainedCfg` (the builders set it; a model built directly
        describes its config and ``preprocessing``). A mapping assigned here is taken as the
        recorded ``config.json`` document."""
        if self._pretrained_cfg is None:
            return PretrainedCfg.describe(self.arch, self.config, self.preprocessing)
        return self._pretrained_cfg

    @pretrained_cfg.setter
    def pretrained_cfg(self, cfg: PretrainedCfg | Mapping[str, Any]) -> None:
        if not isinstance(cfg, PretrainedCfg):
            cfg = PretrainedCfg.describe(self.arch, self.config, self.preprocessing, cfg)
        self._pretrained_cfg = cfg

    default_cfg = pretrained_cfg  # timm keeps both names

    @property
    def num_classes(self) -> int:
        """fc8's outputs; 0 when the classifier is removed (``reset_classifier(0)``)."""
        return self.fc8.out_features if isinstance(self.fc8, nn.Linear) else 0

    def get_classifier(self) -> nn.Module:
        """fc8 (an ``nn.Identity`` when removed), as timm returns it."""
        return self.fc8

    @property
    def feature_info(self) -> list[dict[str, Any]]:
        """timm's list of ``{"num_chs", "reduction", "module"}`` for conv1..conv5, fc6, fc7."""
        return feature_info(self.config)

    # -- construction
    def _classifier(self, num_classes: int) -> nn.Module:
        return nn.Linear(self.config.hidden, num_classes) if num_classes > 0 else nn.Identity()

    def init_weights(self) -> None:
        """The paper's initialisation (weights N(0, 0.01); biases 1 in conv2, conv4, conv5, fc6,
        fc7 so ReLUs start with positive inputs, else 0), Caffe's (std 0.005 for fc6/fc7, biases
        0.1 where the paper has 1) or torch's module defaults, as ``config.init`` says. A model
        built on the meta device (to be loaded, ``factory.create_model``) has no values to set;
        initialising meta tensors would only import ``torch._dynamo`` (1.1 s, through torch._refs)."""
        if self.fc7.weight.is_meta:
            return
        scheme = self.config.init
        for name in ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"):
            layer = getattr(self, name)
            if not isinstance(layer, (nn.Conv2d, nn.Linear)):
                continue  # fc8 removed by num_classes=0
            if scheme == "torch":
                layer.reset_parameters()
                continue
            std = 0.005 if scheme == "caffe" and name in ("fc6", "fc7") else 0.01
            positive = name in ("conv2", "conv4", "conv5", "fc6", "fc7")
            nn.init.normal_(layer.weight, 0.0, std)
            nn.init.constant_(layer.bias, (1.0 if scheme == "paper" else 0.1) if positive else 0.0)

    def reset_classifier(self, num_classes: int) -> None:
        """Replace fc8 by a freshly initialised layer with ``num_classes`` outputs (0: no classifier)."""
        self.config = self.config.replace(num_classes=num_classes)
        self.fc8 = self._classifier(num_classes).to(self.fc7.weight.device, self.fc7.weight.dtype)
        if isinstance(self.fc8, nn.Linear) and self.config.init != "torch":
            nn.init.normal_(self.fc8.weight, 0.0, 0.01)
            nn.init.zeros_(self.fc8.bias)

    # -- forward
    def _check_input(self, x: Tensor) -> None:
        check_images(x, self.config.in_chans, self.min_input_size)

    def _lrn_args(self) -> tuple | None:
        c = self.config
        return (c.lrn_size, c.lrn_alpha, c.lrn_beta, c.lrn_k, c.lrn_convention) if c.lrn else None

    def _features_unpooled(self, x: Tensor) -> Tensor:
        """conv1..conv5 and pool5, at whatever spatial size the input gives (dense form uses this)."""
        self._check_input(x)
        ceil, lrn = self.config.pool_ceil, self._lrn_args()
        x = max_pool(_conv(self.conv1, x, relu=True), ceil, lrn)
        x = max_pool(_conv(self.conv2, x, relu=True), ceil, lrn)
        x = _conv(self.conv3, x, relu=True)
        x = _conv(self.conv4, x, relu=True)
        return max_pool(_conv(self.conv5, x, relu=True), ceil)

    def _pool5(self, x: Tensor) -> Tensor:
        """pool5 at the input's own size; on the CPU fast path the batch is converted once (dtype
        first: a third of the cost of both at once) and run in chunks of _FEATURE_CHUNK images."""
        if onednn.applies(x, self.conv1):
            x = x.to(onednn.compute_dtype(x)).contiguous(memory_format=torch.channels_last)
            if x.shape[0] > _FEATURE_CHUNK:
                return torch.cat([self._features_unpooled(part) for part in x.split(_FEATURE_CHUNK)])
        return self._features_unpooled(x)

    def forward_features(self, x: Tensor) -> Tensor:
        """Images (N, 3, H, W) -> the pool5 map (N, 256, 6, 6)."""
        return to_6x6(self._pool5(x))

    def _dropout(self, x: Tensor, where: str) -> Tensor:
        if self.config.dropout_placement != where or not self.training or self.config.dropout == 0:
            return x
        return F.dropout(x, self.config.dropout, training=True)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """pool5 map -> logits, or the fc7 activations (after ReLU) with ``pre_logits=True``."""
        x = torch.flatten(x, 1)
        for fc in (self.fc6, self.fc7):
            x = self._dropout(x, "before_fc")
            x = self._dropout(onednn.linear(fc, x, relu=True), "after_relu")
        if pre_logits or not isinstance(self.fc8, nn.Linear):
            return x
        return onednn.linear(self.fc8, x, relu=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def extract(self, x: Tensor, layers: Iterable[str] = ("conv5", "fc7"), *,
                relu: bool = True) -> dict[str, Tensor]:
        """Named activations: any of conv1..conv5, pool5, fc6, fc7, fc8. Conv and fc layers are
        taken after their ReLU (fc7 is the paper's 4096-d "last hidden layer"), or before it with
        ``relu=False``. Stops after the deepest layer asked for."""
        wanted = tuple(dict.fromkeys(layers))
        unknown = [name for name in wanted if name not in LAYERS]
        if unknown or not wanted:
            raise ValueError(f"unknown layer(s) {unknown or '(none asked)'}; choose from {', '.join(LAYERS)}")
        last = max(LAYERS.index(name) for name in wanted)
        out: dict[str, Tensor] = {}

        def keep(name: str, pre: Tensor) -> Tensor:
            act = F.relu(pre)
            if name in wanted:
                out[name] = act if relu else pre
            return act

        self._check_input(x)
        for i in range(1, 6):
            x = keep(f"conv{i}", _conv(getattr(self, f"conv{i}"), x, relu=False))
            if LAYERS.index(f"conv{i}") == last:
                return out
            if i in POOLED_CONVS:
                x = max_pool(x, self.config.pool_ceil, self._lrn_args() if i in _NORMED else None)
        x = to_6x6(x)
        out.update({"pool5": x} if "pool5" in wanted else {})
        x = torch.flatten(x, 1)
        for name in ("fc6", "fc7"):
            if LAYERS.index(name) > last:
                return out
            x = self._dropout(x, "before_fc")
            x = self._dropout(keep(name, onednn.linear(getattr(self, name), x, relu=False)), "after_relu")
        if last == LAYERS.index("fc8"):
            out["fc8"] = onednn.linear(self.fc8, x, relu=False) if isinstance(self.fc8, nn.Linear) else x
        return out

    def to_dense(self) -> DenseAlexNet:
        """The fully convolutional form sharing these weights (see :class:`DenseAlexNet`)."""
        return DenseAlexNet(self)


class DenseAlexNet(nn.Module):
    """fc6 as a 6x6 convolution, fc7 and fc8 as 1x1 convolutions over pool5 (OverFeat/VGG's
    dense evaluation). On a 227 (or 224) input its 1x1 score map equals the model's logits; on
    larger inputs it slides the whole classifier over the image. Weights are views of the wrapped
    model's, never copies, so the two cannot drift apart."""

    def __init__(self, net: AlexNet) -> None:
        super().__init__()
        if not isinstance(net.fc8, nn.Linear):
            raise ValueError("the dense form needs a classifier: this model has num_classes=0")
        self.net = net

    def forward(self, x: Tensor) -> Tensor:
        """Images (N, 3, H, W) -> class scores (N, num_classes, h, w)."""
        net = self.net
        x = net._pool5(x)
        if min(x.shape[-2:]) < 6:
            raise ValueError(f"dense evaluation needs a pool5 map of at least 6x6, got {tuple(x.shape[-2:])}")
        if not net.training and onednn.applies(x, net.fc6):
            # the same numbers as the convolutions below: fc6..fc8 over every 6x6 window of pool5,
            # keeping their prepacked oneDNN weights (about 1.7x faster on the CPU than F.conv2d,
            # which re-lays out fc6's 151 MB on every call)
            n, c, h, w = x.shape
            windows = F.unfold(x, 6).transpose(1, 2).reshape(-1, c, 6, 6)
            return net.forward_head(windows).view(n, h - 5, w - 5, -1).permute(0, 3, 1, 2)
        fc6 = net.fc6.weight.view(net.fc6.out_features, -1, 6, 6)
        x = F.relu(F.conv2d(x, fc6, net.fc6.bias), inplace=True)
        x = F.relu(F.conv2d(x, net.fc7.weight[:, :, None, None], net.fc7.bias), inplace=True)
        return F.conv2d(x, net.fc8.weight[:, :, None, None], net.fc8.bias)


class AlexNetFeatures(nn.Module):
    """timm's ``features_only`` model (its FeatureListNet): ``forward`` returns the list of the
    chosen layers' activations, from :meth:`AlexNet.extract` on the wrapped model (shared, not
    copied). ``out_indices`` index ``model.feature_info`` (negative from the end); an int n
    takes the last n."""

    def __init__(self, model: AlexNet, out_indices: int | Iterable[int] = (0, 1, 2, 3, 4)) -> None:
        super().__init__()
        info = model.feature_info
        n = len(info)
        if isinstance(out_indices, int):
            out_indices = range(n - out_indices, n) if 0 < out_indices <= n else [n]
        wanted = list(out_indices)
        bad = [i for i in wanted if not -n <= i < n]
        if bad or not wanted:
            raise ValueError(f"out_indices {bad or '(none)'} outside the {n} features "
                             f"({', '.join(d['module'] for d in info)})")
        self.out_indices = tuple(sorted({i % n for i in wanted}))
        self.feature_info = FeatureInfo(info[i] for i in self.out_indices)
        self.model = model

    def forward(self, x: Tensor) -> list[Tensor]:
        names = self.feature_info.module_name()
        out = self.model.extract(x, names)
        return [out[name] for name in names]
