"""The report: typed content -> Markdown + results.json in perf/reports/<date>-<commit>/.

The content is built elsewhere (perf.sections); this module only lays it out, so the layout is
unit-tested on content made from recorded tool output.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from perf.machine import MachineInfo, RunInfo
from perf.stats import fmt

REQUIRED_SECTIONS = ("llm", "tts", "stt", "e2e", "ratios")
REPORT_FILE = "report.md"
RESULTS_FILE = "results.json"

_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    title: str = ""


@dataclass
class Section:
    key: str
    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)  # PNG names inside the report folder
    commands: list[str] = field(default_factory=list)
    skipped: str | None = None  # why it was not measured (not selected, a tool not installed)
    failed: str | None = None  # what went wrong while measuring (a crash, a timeout): the run failed


@dataclass(frozen=True)
class Headline:
    """One figure of the summary table, with the bar it is held to (if any)."""

    label: str
    value: float | None
    unit: str
    source: str  # which measurement produced it
    bar_op: str = ""  # "<", "<=", ">", ">=" or "" for no bar
    bar: float | None = None
    digits: int = 1

    @property
    def met(self) -> bool | None:
        if self.value is None or self.bar is None or not self.bar_op:
            return None
        return bool(_OPS[self.bar_op](self.value, self.bar))

    def value_text(self) -> str:
        return fmt(self.value, self.digits, f" {self.unit}" if self.unit else "")

    def bar_text(self) -> str:
        return (
            ""
            if self.bar is None
            else f"{self.bar_op} {fmt(self.bar, self.digits)}{' ' + self.unit if self.unit else ''}"
        )

    def status(self) -> str:
        return {True: "met", False: "MISSED", None: "not measured" if self.value is None and self.bar else ""}[self.met]


@dataclass
class Report:
    run: RunInfo
    machine: MachineInfo
    headlines: list[Headline] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    mode: str = "full"  # "full" or "smoke" (a few requests per measurement: not for comparing)
    durations_s: dict[str, float] = field(default_factory=dict)  # wall time per measurement

    def section(self, key: str) -> Section | None:
        return next((s for s in self.sections if s.key == key), None)


def markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(c) for c in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def headline_table(report: Report) -> str:
    rows = [(h.label, h.value_text(), h.bar_text(), h.status(), h.source) for h in report.headlines]
    return markdown_table(("figure", "value", "bar", "status", "measured by"), rows)


def render_markdown(report: Report) -> str:
    run, machine = report.run, report.machine
    out = [f"# Spark VTuber latency report: {run.date[:10]}, commit {run.commit}", ""]
    if report.mode != "full":
        out += [
            f"> **{report.mode} run**: a few requests per measurement to check the harness; "
            "do not compare these figures.",
            "",
        ]
    out += [
        "## Machine and run",
        "",
        markdown_table(
            ("", ""),
            [
                ("CPU", machine.cpu_model),
                ("cores", str(machine.logical_cores)),
                ("memory", f"{machine.memory_gib:.1f} GiB"),
                ("GPU", machine.gpu),
                ("OS", machine.os),
                ("Python / libc", f"{machine.python} / {machine.glibc}"),
                ("engine target", f"{run.engine.target} ({run.engine.path}, built {run.engine.built_at or 'unknown'})"),
                *[(f"engine: {name}", desc) for name, desc in run.engine.models.items()],
                ("git commit", run.commit),
                ("date (UTC)", run.date),
                ("command", f"`{run.command}`"),
            ],
        ),
        "",
        "## Summary",
        "",
        headline_table(report),
        "",
    ]
    for section in report.sections:
        out += [f"## {section.title}", ""]
        if section.failed:
            out += [f"**Failed:** {section.failed}", ""]
        if section.skipped:
            out += [f"**Skipped:** {section.skipped}", ""]
        for table in section.tables:
            if table.title:
                out += [f"**{table.title}**", ""]
            out += [markdown_table(table.columns, table.rows), ""]
        for plot in section.plots:
            out += [f"![{section.title}]({plot})", ""]
        out += [f"- {note}" for note in section.notes]
        if section.notes:
            out.append("")
    out += ["## Commands", "", "The harness command, then what it ran, section by section:", "", "```", run.command]
    seen = {run.command}
    for section in report.sections:
        for command in section.commands:
            if command not in seen:
                seen.add(command)
                out.append(command)
    out += ["```", ""]
    if report.durations_s:
        out += ["Wall time per measurement: " + ", ".join(f"{k} {v:.0f} s" for k, v in report.durations_s.items()), ""]
    return "\n".join(out)


def summary_text(report: Report) -> str:
    """What `python -m perf` prints: the headline table, plain."""
    width = max((len(h.label) for h in report.headlines), default=10)
    lines = [f"Spark VTuber latency ({report.mode}), commit {report.run.commit}, {report.machine.describe()}"]
    for h in report.headlines:
        bar = f"  bar {h.bar_text()}: {h.status()}" if h.bar is not None else ""
        lines.append(f"  {h.label:<{width}}  {h.value_text():>14}{bar}")
    return "\n".join(lines)


def failures(report: Report) -> list[str]:
    """The measurements that failed: the report is complete, but the run did not succeed."""
    return [f"{s.key}: {s.failed}" for s in report.sections if s.failed]


def write_report(report: Report, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / REPORT_FILE
    path.write_text(render_markdown(report), encoding="utf-8")
    (folder / RESULTS_FILE).write_text(json.dumps(asdict(report), indent=1, default=str), encoding="utf-8")
    return path


def missing_parts(folder: Path) -> list[str]:
    """What a finished report lacks: sections, machine facts, commands, plot files."""
    path = folder / REPORT_FILE
    if not path.is_file():
        return [f"{path} does not exist"]
    text = path.read_text(encoding="utf-8")
    problems = []
    results = (
        json.loads((folder / RESULTS_FILE).read_text(encoding="utf-8")) if (folder / RESULTS_FILE).is_file() else {}
    )
    keys = [s.get("key") for s in results.get("sections", [])]
    problems += [f"section {key!r} missing" for key in REQUIRED_SECTIONS if key not in keys]
    for heading in ("## Machine and run", "## Summary", "## Commands"):
        if heading not in text:
            problems.append(f"heading {heading!r} missing")
    for label in ("| CPU |", "| cores |", "| GPU |", "| engine target |", "| git commit |"):
        if label not in text:
            problems.append(f"machine fact {label.strip('| ')!r} missing")
    for section in results.get("sections", []):
        if not section.get("skipped") and not section.get("failed") and not section.get("commands"):
            problems.append(f"section {section.get('key')!r} names no command")
        for plot in section.get("plots", []):
            if not (folder / plot).is_file():
                problems.append(f"plot {plot} missing")
    return problems
