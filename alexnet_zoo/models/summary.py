"""The layer table of an AlexNet variant: output shape, parameters and multiply-adds per layer,
computed from its config (the tables people draw by hand for this network, made exact)."""

from __future__ import annotations

from dataclasses import dataclass

from alexnet_zoo.models.config import AlexNetConfig, feature_sizes

__all__ = ["LayerRow", "format_table", "summarize"]


@dataclass(frozen=True)
class LayerRow:
    name: str
    kind: str
    shape: tuple[int, ...]  # per image: (C, H, W) or (features,)
    params: int
    macs: int  # multiply-accumulates per image


def summarize(config: AlexNetConfig, input_size: int | None = None) -> list[LayerRow]:
    """One row per layer of ``config``'s network on a square ``input_size`` input (default: the
    config's own). Raises ValueError if the input is too small to reach pool5."""
    size = input_size or config.input_size
    sizes = feature_sizes(config, size)
    if sizes["pool5"] < 1:
        raise ValueError(f"a {size}x{size} input is too small for this network: pool5 would be empty")
    rows = [LayerRow("data", "input", (config.in_chans, size, size), 0, 0)]
    chans = (config.in_chans, *config.widths)
    for i in range(1, 6):
        side, cin, cout, k, g = sizes[f"conv{i}"], chans[i - 1], chans[i], config.kernels[i - 1], config.groups[i - 1]
        weights = cout * (cin // g) * k * k
        label = f"{k}x{k}" + (f"/{config.conv1_stride}" if i == 1 else "") + (f" g{g}" if g > 1 else "")
        rows.append(LayerRow(f"conv{i}", f"conv {label}", (cout, side, side), weights + cout, weights * side * side))
        rows.append(LayerRow(f"relu{i}", "relu", (cout, side, side), 0, 0))
        if config.lrn and i in (1, 2):
            rows.append(LayerRow(f"norm{i}", f"lrn n={config.lrn_size} ({config.lrn_convention})",
                                 (cout, side, side), 0, 0))
        if i in (1, 2, 5):
            pooled = sizes[f"pool{i}"]
            rows.append(LayerRow(f"pool{i}", "maxpool 3x3/2" + (" ceil" if config.pool_ceil else ""),
                                 (cout, pooled, pooled), 0, 0))
    if sizes["pool5"] != 6:
        rows.append(LayerRow("pool5_6x6", "adaptive avgpool", (config.widths[4], 6, 6), 0, 0))
    fcs = [("fc6", config.widths[4] * 36, config.hidden), ("fc7", config.hidden, config.hidden)]
    if config.num_classes:
        fcs.append(("fc8", config.hidden, config.num_classes))
    for name, fin, fout in fcs:
        if name != "fc8" and config.dropout and config.dropout_placement == "before_fc":
            rows.append(LayerRow(f"drop{name[2:]}", f"dropout {config.dropout}", (fin,), 0, 0))
        rows.append(LayerRow(name, "linear", (fout,), fin * fout + fout, fin * fout))
        if name != "fc8":
            rows.append(LayerRow(f"relu{name[2:]}", "relu", (fout,), 0, 0))
            if config.dropout and config.dropout_placement == "after_relu":
                rows.append(LayerRow(f"drop{name[2:]}", f"dropout {config.dropout}", (fout,), 0, 0))
    return rows


def format_table(rows: list[LayerRow]) -> str:
    """A fixed-width text table with a totals line."""
    header = f"{'layer':<10} {'type':<26} {'output':>16} {'params':>12} {'mult-adds':>15}"
    lines = [header, "-" * len(header)]
    for r in rows:
        shape = "x".join(str(d) for d in r.shape)
        lines.append(f"{r.name:<10} {r.kind:<26} {shape:>16} {r.params:>12,} {r.macs:>15,}")
    lines.append("-" * len(header))
    total_params, total_macs = sum(r.params for r in rows), sum(r.macs for r in rows)
    lines.append(f"{'total':<10} {'':<26} {'':>16} {total_params:>12,} {total_macs:>15,}")
    lines.append(f"{total_params / 1e6:.2f} M parameters, {total_macs / 1e9:.3f} G multiply-adds per image")
    return "\n".join(lines)
