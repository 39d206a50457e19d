"""The self-contained HTML page of a study (``segshap cohort report``), in the style of ``report.page``.

Everything is inline (CSS, PNG figures as base64 data URIs, no JavaScript, no network). The tables arrive as
plain rows (lists of dicts, built by ``cohort.report``); every string from them is HTML-escaped.
"""

from __future__ import annotations

import datetime
from html import escape
from pathlib import Path

from SegSHAPLib import __version__
from SegSHAPLib.report.page import CSS, VALUE_MEANINGS, _img, _num

NAME_CLASS = ' class="name"'
METRIC_LABELS = {"abpc": "ABPC", "nabpc": "nABPC", "aopc": "AOPC", "naopc": "nAOPC"}


def _table(head: list[str], rows: list[list[str]], name_columns: int = 1) -> str:
    """A <table> of already formatted (escaped) cells; the first ``name_columns`` columns are left-aligned."""
    def cells(row, tag):
        return "".join(f"<{tag}{NAME_CLASS if i < name_columns else ''}>{c}</{tag}>" for i, c in enumerate(row))

    return (f"<table><thead><tr>{cells(head, 'th')}</tr></thead><tbody>"
            + "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows) + "</tbody></table>")


def faithfulness_section(rows: list[dict], units: list[str], values: list[str], resamples: int, seed: int,
                         confidence: float) -> str:
    """Table I: rows metric x value function, columns unit types; each cell the mean over cases, its bootstrap
    interval and n."""
    cell = {(r["units"], r["value"], r["metric"]): r for r in rows}
    body = []
    for value in values:
        for metric in METRIC_LABELS:
            row = [f"{METRIC_LABELS[metric]}", escape(value)]
            for unit_type in units:
                r = cell.get((unit_type, value, metric))
                row.append("\u2013" if r is None else
                           f'{_num(r["mean"], ".3f")} <span class="small">[{_num(r["ci_low"], ".3f")}, '
                           f'{_num(r["ci_high"], ".3f")}] n={r["n"]}</span>')
            body.append(row)
    return ("<h3>Faithfulness by unit type (Table I layout)</h3>"
            + _table(["metric", "value"] + [escape(u) for u in units], body, 2)
            + f'<p class="meta">Mean over cases [{confidence:.0%} percentile bootstrap interval of the mean: '
              f"{resamples:,} resamples of the cases, numpy seed {seed}] and the number of cases n. Higher is more "
              "faithful. The numbers are in <code>faithfulness_table.csv</code>.</p>")


def curves_section(curves_png: bytes, fractions: int) -> str:
    """The MoRF / LeRF / random figure with how it was made."""
    return ("<h3>Removal curves over cases</h3>" + _img(curves_png, "MoRF, LeRF and random removal curves")
            + '<p class="meta">Each case\'s curve is normalised, s\u0303 = (s \u2212 s_min) / (s(0) \u2212 s_min), '
              f"and interpolated linearly onto {fractions} evenly spaced fractions of units removed; line = median "
              "over cases, band = interquartile range. The dashed random-order curve is the floor a useful "
              "ranking must beat: MoRF should fall below it, LeRF stay above it. Numbers in "
              "<code>curves.csv</code>.</p>")


def cost_section(rows: list[dict]) -> str:
    """Per unit type: M, coalitions, patch forwards against naive, hit rate, seconds."""
    body = [[escape(r["units"]), str(r["explanations"]),
             f'{_num(r["m_median"], ",.0f")} ({r["m_min"]}\u2013{r["m_max"]})', _num(r["coalitions"]),
             f'{_num(r["patch_forwards"])} / {_num(r["naive_patch_forwards"])}', _num(r["hit_rate"], ".0%"),
             _num(r["seconds_per_coalition"], ".2f"), _num(r["seconds_total"], ",.0f")] for r in rows]
    return ("<h3>Cost by unit type</h3>"
            + _table(["units", "explanations", "M: median (range)", "coalitions", "patch forwards / naive",
                      "cache hit rate", "s / coalition", "total s"], body)
            + '<p class="meta">Sums over every finished explanation of the unit type (all cases and value '
              "functions); naive = one full sliding-window prediction per coalition. Hit rate = patch cache hits / "
              "(hits + forwards). Seconds are wall time on the machine that ran the study. <code>cost.csv</code>."
              "</p>")


def paired_section(rows: list[dict]) -> str:
    """The paired tests between unit types, with their p-values and numbers of pairs (or why none ran)."""
    if not rows:
        return ('<h3>Paired comparisons</h3><p class="note">Only one unit type in the study: nothing to '
                "compare.</p>")
    body = [[escape(r["value"]), f'{escape(r["first"])} \u2212 {escape(r["second"])}', str(r["pairs"]),
             _num(r["mean_difference"], "+.3f"), _num(r["statistic"], ".3g"), _num(r["p_value"], ".3g"),
             escape(r["note"])] for r in rows]
    metric = METRIC_LABELS.get(rows[0]["metric"], rows[0]["metric"])
    return (f"<h3>Paired comparisons of {metric} between unit types</h3>"
            + _table(["value", "difference", "pairs", "mean difference", "W", "p", "test"], body, 2)
            + f'<p class="meta">Same cases explained with both unit types; two-sided Wilcoxon signed-rank test '
              f"(scipy.stats.wilcoxon) of the paired {metric}. With fewer than 6 non-zero differences no p below "
              "0.05 is possible, so no test is run and the row says so. <code>paired_tests.csv</code>.</p>")


def caveat_section(rows: list[dict]) -> str:
    """Does the top-ranked unit contain the answer? Coverage of the scoring region and nABPC without the
    ROI-overlapping units."""
    body = [[escape(r["units"]), escape(r["value"]), str(r["n"]), _num(r["region_covered_first_step"], ".0%"),
             _num(r["roi_unit_share"], ".0%"), _num(r["nabpc"], ".3f"),
             f'{_num(r["nabpc_without_roi_units"], ".3f")} (n={r["n_without"]})'] for r in rows]
    return ("<h3>Does the top unit contain the answer? (the paper's caveat, measured)</h3>"
            + _table(["units", "value", "n", "scoring region inside the first MoRF step's units",
                      "units overlapping the ROI", "nABPC", "nABPC without ROI-overlapping units"], body, 2)
            + '<p class="meta">A unit that overlaps the explained component removes part of the answer when it is '
              "masked, so a ranking can score well just by putting it first. The first MoRF step removes the "
              "top-ranked \u22481/K of the units; the third column is the share of the scoring region inside "
              "them. The last column repeats the evaluation with every ROI-overlapping unit kept in place and left "
              "out of the ranking (docs/method.md, section 9): what remains is the faithfulness of the ranking of "
              "the context. Means over cases. <code>roi_caveat.csv</code>.</p>")


def _legend(values: list[str]) -> str:
    meanings = "".join(f"<li>{escape(VALUE_MEANINGS.get(v, v))}</li>" for v in values)
    return ('<div class="legend"><h3 style="margin-top:0">How to read this</h3><ul>'
            "<li>Each case of the study is explained with each unit type and value function; faithfulness removes "
            "units in order of their Shapley value (MoRF: most relevant first; LeRF: least relevant first; random) "
            "and recomputes the score. AOPC is the mean drop of the MoRF curve, ABPC the mean gap LeRF \u2212 MoRF; "
            "the n-forms use curves rescaled to [s_min, s(0)] so cases of different scale can be averaged.</li>"
            f"<li>Value functions in this study:<ul>{meanings}</ul></li></ul></div>")


def write_study_page(out_html: Path, title: str, values: list[str], sections: list[str],
                     facts: dict[str, str]) -> Path:
    """Write the page: header with ``facts`` (label -> text), the legend, then the ``sections`` (HTML from the
    functions above) in one <section>."""
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    extras = "".join(f"<p>{escape(k)}: {escape(v)}</p>" for k, v in facts.items())
    header = (f"<header><h1>{escape(title)}</h1><p>Which unit type and value function give the most faithful "
              "explanation, at what cost: faithfulness and cost over the cases of a SegSHAP study.</p>"
              f"<p>Generated {stamp} by SegSHAP {escape(__version__)}.</p>{extras}</header>")
    body = _legend(values) + "<section>" + "".join(sections) + "</section>"
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}.small{{color:#5b6678;font-size:11px}}</style></head><body>{header}<main>{body}</main>"
            f"<footer><p>SegSHAP {escape(__version__)}</p></footer></body></html>\n")
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(page, encoding="utf-8")
    return out_html
