"""The report of one audit run: the audit (what, when, against which baseline,
which rules), the run, and what fired (a table, and per fired metric the
baseline and the new value of every layer with their intervals), or why the run
failed. Its inputs are the API's answers as plain dicts (``GET
/v1/audits/{id}``, a row of ``.../runs`` or ``.../alerts``) and, when at hand, the
two result documents."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any
from urllib.parse import urlsplit

from analysis.reporting import figures as fg
from analysis.reporting import tables as tb
from analysis.reporting.document import Section, config_text, dl, page

_OPERATORS = {
    "relative_change": "|new − base| / |base| >",
    "abs_change": "|new − base| >",
    "above": "new >",
    "below": "new <",
}
_PENDING = ("pending", "running")


def _target(audit: dict[str, Any]) -> str:
    if audit.get("series_id"):
        return f"the latest checkpoint of series {audit['series_id']}"
    return f"model {audit.get('model_id')}"


def _schedule(schedule: dict[str, Any]) -> str:
    if "cron" in schedule:
        return f"cron {schedule['cron']} (UTC)"
    return f"every {schedule['interval_s']} s"


def _baseline(baseline: Any) -> str:
    if isinstance(baseline, dict):
        return f"analysis {baseline['analysis_id']}"
    return {"first": "the first run's analysis", "previous": "the previous run's"}.get(
        str(baseline), str(baseline)
    )


def _audit(audit: dict[str, Any]) -> str:
    hook = audit.get("webhook_url")
    facts = {
        "name": audit["name"],
        "id": audit["id"],
        "status": audit.get("status"),
        "analyses": _target(audit),
        "dataset": audit.get("dataset_id"),
        "schedule": _schedule(audit["schedule"]),
        "baseline": _baseline(audit["baseline"]),
        # the host only: a webhook's path may carry its secret
        "webhook": f"to {urlsplit(hook).hostname}" if hook else None,
        "next run": audit.get("next_run_at"),
        "created": audit.get("created_at"),
    }
    head = ["#", "metric", "estimator", "layers", "fires when", "intervals apart"]
    body = [
        [
            str(k),
            escape(r["metric"]),
            escape(r["estimator"]),
            escape(r["layers"]),
            escape(
                f"{_OPERATORS.get(r['operator'], r['operator'])} {r['threshold']:g}"
            ),
            "required" if r.get("require_no_overlap") else "",
        ]
        for k, r in enumerate(audit["rules"])
    ]
    return (
        dl(facts)
        + "<h3>Rules</h3>"
        + tb.table(head, body)
        + "<h3>Analysis config</h3>"
        + f"<pre>{escape(config_text(audit.get('config') or {}))}</pre>"
    )


def _run(run: dict[str, Any]) -> str:
    status = run["status"]
    cls = {"alert": "alert", "error": "alert", "pass": "pass"}.get(status, "")
    facts = {
        "id": run["id"],
        "scheduled for": run.get("scheduled_for"),
        "analysis": run.get("analysis_id") or "none yet",
        "baseline analysis": run.get("baseline_analysis_id") or "none",
        "created": run.get("created_at"),
        "finished": run.get("finished_at"),
    }
    delivery = run.get("delivery")
    if delivery:
        facts["webhook delivery"] = (
            f"{delivery['status']} after {delivery['attempts']} attempt(s)"
        )
    return f'<p>status: <span class="{cls}">{escape(status)}</span></p>' + dl(facts)


def _layer_rows(result: dict[str, Any] | None, metric: str, est: str) -> dict[str, Any]:
    """Per layer name, the first row of (metric, estimator) in a result."""
    if not result:
        return {}
    return {
        layer["name"]: m
        for layer in result["layers"]
        for m in [fg.rows(layer, metric).get(est)]
        if m is not None
    }


def _fired_table(
    fired: Sequence[dict[str, Any]],
    result: dict[str, Any] | None,
    baseline: dict[str, Any] | None,
    notes: tb.Notes,
) -> str:
    head = [
        "layer",
        "rule",
        "metric",
        "estimator",
        "baseline value",
        "new value",
        "fires when",
        "change",
        "intervals overlap",
    ]
    body = []
    for f in fired:
        new = _layer_rows(result, f["metric"], f["estimator"]).get(f["layer"])
        old = _layer_rows(baseline, f["metric"], f["estimator"]).get(f["layer"])
        new = new or {"value": f["new_value"]}
        old = old or {"value": f["baseline_value"], "reason": "no baseline value"}
        overlap = f.get("intervals_overlap")
        body.append(
            [
                escape(f["layer"]),
                str(f["rule"]),
                escape(f["metric"]),
                escape(f["estimator"]),
                tb.cell(old, notes),
                tb.cell(new, notes),
                escape(
                    f"{_OPERATORS.get(f['operator'], f['operator'])} {f['threshold']:g}"
                ),
                "" if f.get("change") is None else f"{f['change']:+.3g}",
                {None: "unknown", True: "yes", False: "no"}[overlap],
            ]
        )
    return tb.table(head, body)


def fired_figure(
    fired: Sequence[dict[str, Any]],
    result: dict[str, Any] | None,
    baseline: dict[str, Any] | None,
) -> Any:
    """One metric and estimator: baseline and new value of every layer with their
    intervals as error bars (the fired rows' values alone when the results are
    not given); fired layers shaded red; the threshold of an ``above``/``below``
    rule dashed."""
    metric, est = fired[0]["metric"], fired[0]["estimator"]
    new_rows = _layer_rows(result, metric, est)
    old_rows = _layer_rows(baseline, metric, est)
    names = list(new_rows) or list(dict.fromkeys(f["layer"] for f in fired))
    for f in fired:  # a fired row always has a place
        new_rows.setdefault(f["layer"], {"value": f["new_value"]})
        old_rows.setdefault(f["layer"], {"value": f["baseline_value"]})
        if f["layer"] not in names:
            names.append(f["layer"])
    fig = fg.new_figure(max(6.0, 0.3 * len(names) + 2.5), 3.2)
    ax = fig.add_subplot()
    xs = list(range(len(names)))
    for rows, label, colour, shift in (
        (old_rows, "baseline", "0.45", -0.12),
        (new_rows, "new", "tab:blue", 0.12),
    ):
        ms = [rows.get(n) for n in names]
        vals = [fg._value(m) for m in ms]
        errs = [fg._err(m, v) or [[0.0], [0.0]] for m, v in zip(ms, vals, strict=True)]
        ax.errorbar(
            [x + shift for x in xs],
            vals,
            yerr=[[e[0][0] for e in errs], [e[1][0] for e in errs]],
            fmt="o",
            ms=4,
            capsize=2,
            color=colour,
            label=label,
        )
    for f in fired:
        i = names.index(f["layer"])
        ax.axvspan(i - 0.4, i + 0.4, color=fg.NECK_COLOUR, alpha=0.12, lw=0)
        if f["operator"] in ("above", "below"):
            ax.hlines(f["threshold"], i - 0.4, i + 0.4, colors=fg.NECK_COLOUR, ls="--")
    ax.set_xticks(xs)
    ax.set_xticklabels(names, rotation=60, ha="right", fontsize=7)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_xlabel("layer (input to output; red: fired)")
    ax.set_ylabel(f"{metric} ({est}, as measured)")
    ax.legend(fontsize=7, loc="best")
    return fig


def _outcome(
    run: dict[str, Any],
    result: dict[str, Any] | None,
    baseline: dict[str, Any] | None,
    notes: tb.Notes,
) -> list[Section]:
    status, fired = run["status"], run.get("fired") or []
    if run.get("error"):
        err = run["error"]
        text = (
            f'<p class="alert">{escape(str(err.get("code", "error")))}: '
            f"{escape(str(err.get('message', '')))}</p>"
        )
        problems = err.get("problems") or []
        if problems:
            text += (
                "<ul>" + "".join(f"<li>{escape(p)}</li>" for p in problems) + "</ul>"
            )
        return [("outcome", "Why the run failed", text)]
    if status in _PENDING:
        return [("outcome", "Outcome", f'<p class="note">the run is {status}</p>')]
    if not fired:
        return [("outcome", "Outcome", '<p class="pass">no rule fired</p>')]
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for f in fired:
        groups.setdefault((f["metric"], f["estimator"]), []).append(f)
    pictures = []
    for k, ((metric, est), rows) in enumerate(groups.items()):
        pictures.append(f"<h3>{escape(metric)}: {escape(est)}</h3>")
        fig = fired_figure(rows, result, baseline)
        pictures.append(fg.embed(fig, f"fired-{k}", alt=f"{metric} {est} per layer"))
    if result is None:
        pictures.append(
            '<p class="note">the result documents were not given: only the fired '
            "layers are drawn, without intervals</p>"
        )
    return [
        ("outcome", "What fired", _fired_table(fired, result, baseline, notes)),
        ("pictures", "Baseline and new value per layer", "".join(pictures)),
    ]


def render_audit_html(
    audit: dict[str, Any],
    run: dict[str, Any],
    result: dict[str, Any] | None = None,
    baseline: dict[str, Any] | None = None,
) -> str:
    """The report of one audit run as one self-contained HTML page.

    Parameters
    ----------
    audit:
        ``GET /v1/audits/{id}`` (``AuditPublic`` as JSON).
    run:
        One row of ``GET /v1/audits/{id}/runs`` (or of ``.../alerts``, which adds
        the webhook delivery).
    result, baseline:
        The result documents of the run's analysis and of its baseline analysis
        (``GET /v1/analyses/{id}/results``); with them the pictures show every
        layer and the intervals.

    Returns
    -------
    str
        The page. Sections: the audit with its rules, the run, what fired (a table
        and a picture per fired metric) or why the run failed.

    Example
    -------
    >>> html = render_audit_html(audit, run, new, base)  # doctest: +SKIP
    """
    notes = tb.Notes()
    sections: list[Section] = [
        ("audit", "The audit", _audit(audit)),
        ("run", "The run", _run(run)),
        *_outcome(run, result, baseline, notes),
    ]
    lead = (
        f"audit {audit['name']}, run scheduled for {run.get('scheduled_for')}: "
        f"{run['status']}"
    )
    return page(f"audit {audit['name']}", lead, sections, notes)
