"""PNG plots for the report (matplotlib, headless Agg backend). Each returns the file name."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from perf.parsers import LLMLoad
from perf.stats import Distribution


def _save(fig: plt.Figure, folder: Path, name: str) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(folder / name, dpi=110)
    plt.close(fig)
    return name


def _p50(d: Distribution | None) -> float:
    return d.p50 if d else float("nan")


def _p95(d: Distribution | None) -> float:
    return d.p95 if d else float("nan")


def llm_plot(loads: Sequence[LLMLoad], folder: Path) -> str:
    levels = [str(load.concurrency) for load in loads]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.4))
    left.plot(levels, [_p50(load.ttft_ms) for load in loads], marker="o", label="TTFT p50")
    left.plot(levels, [_p95(load.ttft_ms) for load in loads], marker="o", linestyle="--", label="TTFT p95")
    left.plot(levels, [_p50(load.itl_ms) for load in loads], marker="s", label="inter-token p50")
    left.set(xlabel="concurrent streams", ylabel="ms", title="LLM latency")
    left.legend()
    right.bar(levels, [load.output_tokens_per_s or float("nan") for load in loads], color="tab:green")
    right.set(xlabel="concurrent streams", ylabel="output tokens/s (all streams)", title="LLM throughput")
    return _save(fig, folder, "llm.png")


def grouped_bars(
    title: str,
    ylabel: str,
    groups: Sequence[str],
    series: Mapping[str, Sequence[float | None]],
    folder: Path,
    name: str,
    bar: float | None = None,
) -> str:
    """One group per label, one bar per series; an optional horizontal bar line (the target)."""
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    width = 0.8 / max(1, len(series))
    for i, (label, values) in enumerate(series.items()):
        xs = [g + i * width for g in range(len(groups))]
        ax.bar(xs, [float("nan") if v is None else v for v in values], width=width, label=label)
    ax.set_xticks([g + width * (len(series) - 1) / 2 for g in range(len(groups))], list(groups))
    if bar is not None:
        ax.axhline(bar, color="tab:red", linestyle=":", label=f"bar {bar:g}")
    ax.set(title=title, ylabel=ylabel)
    ax.legend(fontsize="small")
    return _save(fig, folder, name)


def cdf_plot(
    title: str, samples: Mapping[str, Sequence[float]], folder: Path, name: str, bar: float | None = None
) -> str:
    fig, ax = plt.subplots(figsize=(6.4, 3.4))
    for label, values in samples.items():
        data = sorted(values)
        if data:
            ax.step(
                data, [(i + 1) / len(data) for i in range(len(data))], where="post", label=f"{label} (n={len(data)})"
            )
    if bar is not None:
        ax.axvline(bar, color="tab:red", linestyle=":", label=f"bar {bar:g} ms")
    ax.set(title=title, xlabel="ms from chat message", ylabel="fraction of turns")
    ax.legend(fontsize="small")
    return _save(fig, folder, name)


def over_turns(title: str, series: Mapping[str, Sequence[tuple[float, float]]], folder: Path, name: str) -> str:
    """One panel per series (turn number -> value): how a long stream ages."""
    fig, axes = plt.subplots(len(series), 1, figsize=(6.4, 1.9 * len(series)), sharex=True, squeeze=False)
    for ax, (label, points) in zip(axes[:, 0], series.items(), strict=True):
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", linestyle="", markersize=3)
        ax.set_ylabel(label, fontsize="small")
    axes[0, 0].set_title(title)
    axes[-1, 0].set_xlabel("turn")
    return _save(fig, folder, name)
