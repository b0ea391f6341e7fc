"""What people see: a live progress panel and the final summary table (rich)."""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table

__all__ = ["live_panel", "summary_table"]


def _latency(figures: dict[str, Any]) -> str:
    lat = figures["renewal_latency_seconds"]
    if lat["p50"] is None:
        return "-"
    return f"p50 {lat['p50']:.2f} s  p99 {lat['p99']:.2f} s  (n={lat['count']})"


def _failures(figures: dict[str, Any]) -> str:
    failures: dict[str, int] = figures["failures"]
    if not failures:
        return "none"
    top = sorted(failures.items(), key=lambda kv: -kv[1])[:6]
    return ", ".join(f"{name} {count}" for name, count in top)


def live_panel(figures: dict[str, Any], elapsed: float, duration: float) -> RenderableType:
    """The live progress view of a running fleet."""
    total = max(figures["devices"], 1)
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("time", f"{elapsed:5.0f} / {duration:.0f} s")
    table.add_row("provisioned", f"{figures['provisioned']} / {figures['devices']} started")
    table.add_row("connected", str(figures["connected"]))
    table.add_row(
        "renewals",
        f"{figures['renewals']} done ({figures['renewals_via_dps']} via DPS), "
        f"{figures['renewals_in_flight']} in flight, {figures['recoveries']} recoveries",
    )
    table.add_row("latency", _latency(figures))
    expiries = figures["expiries"]
    table.add_row("expiries", f"[{'red' if expiries else 'green'}]{expiries}[/]")
    table.add_row("failures", _failures(figures))
    bar = ProgressBar(total=duration, completed=min(elapsed, duration), width=50)
    provisioned = ProgressBar(total=total, completed=figures["provisioned"], width=50)
    return Group(bar, provisioned, table)


def summary_table(figures: dict[str, Any], extra: dict[str, str] | None = None) -> Table:
    """The final summary of a run."""
    table = Table(title="Fleet summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    per = figures["renewals_per_device"]
    rows = [
        ("devices", str(figures["devices"])),
        ("provisioned", str(figures["provisioned"])),
        ("renewals", f"{figures['renewals']} ({figures['renewals_via_dps']} via DPS)"),
        ("renewals per device", f"min {per['min']}  avg {per['avg']}  max {per['max']}"),
        ("recoveries", str(figures["recoveries"])),
        ("renewal latency", _latency(figures)),
        ("expiries", str(figures["expiries"])),
        ("failures", _failures(figures)),
        *(extra or {}).items(),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table
