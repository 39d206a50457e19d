"""One self-contained HTML report for one or more ``segshap explain`` output folders.

    from SegSHAPLib.report.page import write_report
    write_report([Path("out/fp_organs"), Path("out/dice_hybrid")], Path("report.html"), "Spleen case 01")

The file holds everything inline (CSS, PNG figures as base64 data URIs): no JavaScript, no network, so it can be
mailed or archived as is. The page opens with every explanation's verdict (``report.verdict``: an answer or noise).
Each value function of each folder contributes a section (a folder of several value functions, one per value
function, in summary.json's order): its verdict first (with the fixes and their cost when not converged), the slice
panel, the units ranked by |phi| - or by the lower confidence bound of |phi| when not converged - (table and bar
chart), the MoRF/LeRF curves when ``faithfulness.json`` has them, and the cost of the run. Every string taken
from the folders is HTML-escaped.
"""

from __future__ import annotations

import base64
import datetime
from dataclasses import dataclass
from html import escape
from pathlib import Path

import numpy as np

from SegSHAPLib import __version__
from SegSHAPLib.io.image_io import Volume, read_volume
from SegSHAPLib.report.figures import curves_figure, rank_units, ranked_bar_chart, slice_panel
from SegSHAPLib.report.verdict import Verdict, verdict

VALUE_MEANINGS = {
    "tp": "tp - mean target logit over scoring-region voxels predicted both before and after the perturbation: "
          "evidence that stabilises the segmentation.",
    "dice": "dice - Dice overlap of the perturbed prediction with the original one in the scoring region: "
            "evidence that stabilises the segmentation.",
    "softdice": "softdice - target logit on predicted voxels, counted + where the original prediction has the "
                "target and - where it has not (a smooth Dice): evidence that stabilises the segmentation.",
    "fp": "fp - minus the target logit on scoring-region voxels that become target only under the perturbation: "
          "spurious activation (red units hold it back, blue units drive it).",
}

DATA_ATTRIBUTION = (
    "Sample CT from the TotalSegmentator repository (Apache-2.0). TotalSegmentator dataset: CC BY 4.0, "
    "Wasserthal et al., \u201cTotalSegmentator: Robust Segmentation of 104 Anatomic Structures in CT Images\u201d, "
    "Radiology: Artificial Intelligence 2023.")

CSS = """
body{font-family:-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1d2330;background:#f3f5f8;
     margin:0;line-height:1.45;font-size:14px}
main{max-width:1240px;margin:0 auto;padding:24px 28px 8px}
header{background:#1d2a3a;color:#fff;padding:22px 28px}
header h1{margin:0 0 4px;font-size:24px;font-weight:600}
header p{margin:2px 0;color:#c9d3e0}
h2{font-size:19px;margin:0 0 4px;font-weight:600}
h3{font-size:15px;margin:20px 0 8px;color:#33415a;font-weight:600}
section,.legend{background:#fff;border:1px solid #dde3ea;border-radius:8px;padding:20px 24px;margin:0 0 24px}
.meta{color:#5b6678;font-size:13px;margin:0 0 12px}
.meta span{margin-right:14px;white-space:nowrap}
img{max-width:100%;height:auto;display:block}
.two{display:grid;grid-template-columns:minmax(0,1.1fr) minmax(0,1fr);gap:24px;align-items:start}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{padding:4px 8px;border-bottom:1px solid #e6eaf0;text-align:right;white-space:nowrap}
th{background:#f0f3f7;color:#33415a;font-weight:600}
td.name,th.name{text-align:left;white-space:normal}
td.pos{color:#b2182b;font-weight:600} td.neg{color:#2166ac;font-weight:600}
.share{display:inline-block;height:8px;border-radius:2px;vertical-align:middle;margin-left:6px}
.share.pos{background:#d6604d} .share.neg{background:#4393c3}
tfoot td{color:#5b6678;border-bottom:none}
.cards{display:grid;grid-template-columns:repeat(4,minmax(0,1fr));gap:12px}
.card{background:#f6f8fb;border:1px solid #e1e6ed;border-radius:6px;padding:10px 12px}
.card .big{font-size:20px;font-weight:600;color:#1d2a3a}
.card .small{font-size:12px;color:#5b6678}
.cards+.meta{margin-top:10px}
.note{color:#5b6678;font-style:italic}
.warn{background:#fff6e0;border-left:4px solid #e0a800;padding:6px 10px;color:#5a4500;font-size:13px}
.verdict{border-radius:6px;padding:10px 14px;margin:0 0 14px;font-size:14px}
.verdict.ok{background:#e8f5ec;border-left:5px solid #2e8b57;color:#1d4030}
.verdict.no{background:#fdecea;border-left:5px solid #c0392b;color:#5a1d16}
.verdict b{font-weight:600} .verdict ul{margin:4px 0 0;padding-left:20px}
.verdicts h3{margin-top:0} .verdicts .verdict{margin-bottom:8px}
.legend ul{margin:6px 0;padding-left:20px}
.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;vertical-align:-1px;margin-right:4px}
footer{max-width:1240px;margin:0 auto;padding:4px 28px 28px;color:#5b6678;font-size:12px}
"""


# ------------------------------------------------------------------------------------------- loading
@dataclass
class Explanation:
    """One value function of an explain output folder: summary.json with that value function's keys at the top
    level, its faithfulness (or None) and the output images (its attribution map)."""

    folder: Path
    value: str
    summary: dict
    faithfulness: dict | None
    attribution: Volume
    roi: Volume
    prediction: Volume

    @classmethod
    def read(cls, folder) -> list["Explanation"]:
        """One Explanation per value function of ``folder`` (an ``explain.folder.ExplanationFolder``, passed in: the
        report sits below the explain layer and never reads an output folder itself; an older single-value folder
        gives its one)."""
        summary, faithfulness = folder.finished_summary(), folder.faithfulness()
        roi, prediction = folder.image("roi"), folder.image("prediction")
        explanations = []
        for k, value in enumerate(folder.value_functions(summary)):
            own = {**summary, **folder.value_summary(value, summary)}
            curves = (faithfulness or {}).get("by_value", {}).get(value, faithfulness if k == 0 else None)
            attribution = folder.image("attribution") if k == 0 else read_volume(folder.attribution_path(value))
            explanations.append(cls(folder.path, value, own, curves, attribution, roi, prediction))
        return explanations

    @property
    def target_name(self) -> str:
        """The target as the user named it (e.g. "spleen"), else "label N"."""
        given = str(self.summary["inputs"].get("target", ""))
        return given if given and not given.isdigit() else f"label {self.summary['roi']['target']}"

    @property
    def voxel_ml(self) -> float:
        """Volume of one voxel in ml."""
        return self.attribution.voxel_volume_mm3() / 1000.0


# ------------------------------------------------------------------------------------------- pieces
def _img(png: bytes, alt: str) -> str:
    """An <img> with the PNG inline as a base64 data URI."""
    return f'<img src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}" alt="{escape(alt)}">'


def _num(value, fmt: str = ",") -> str:
    """A number formatted with ``fmt`` ("n/a" for None; -0.0 shown as 0)."""
    return "n/a" if value is None else format(value + 0, fmt)


def section_title(exp: Explanation) -> str:
    """E.g. "Predicted spleen component (228 voxels) - hybrid units - fp value", or "... - organs, zoom into
    liver, stomach cells - ..." for a zoom (plain text). Whether the component is a false positive is not known
    here (no reference), whatever the value function."""
    inputs = exp.summary["inputs"]
    kind = f"Predicted {exp.target_name} component"
    units = (f"organs, zoom into {', '.join(inputs.get('refine_organs') or [])} cells" if inputs.get("refine")
             else f"{inputs.get('units')} units")
    return f"{kind} ({exp.summary['roi']['voxels']:,} voxels) \u2013 {units} \u2013 {exp.value} value"


def _meta(exp: Explanation) -> str:
    """The line under a section title: CT, ROI point, scoring region, budget, seed, v(empty) -> v(full), folder."""
    s, inputs = exp.summary, exp.summary["inputs"]
    items = [("CT", Path(str(inputs.get("ct", "?"))).name), ("ROI point (i, j, k)", s["roi"].get("point_ijk")),
             ("scoring region", inputs.get("score_region")), ("budget", inputs.get("budget")),
             ("seed", inputs.get("seed")),
             ("v(\u2205) \u2192 v(full)", f"{_num(s['base_value'], '.4g')} \u2192 {_num(s['full_value'], '.4g')}"),
             ("folder", exp.folder.name)]
    return '<p class="meta">' + "".join(f"<span><b>{escape(k)}</b> {escape(str(v))}</span>"
                                        for k, v in items if v is not None) + "</p>"


def _panel(exp: Explanation) -> str:
    """The slice panel; the CT comes from inputs.ct (a blank background and a note when it is gone)."""
    ct_path = Path(str(exp.summary["inputs"].get("ct", "")))
    note = ""
    if ct_path.is_file():
        ct = read_volume(ct_path)
    else:
        ct = exp.attribution.with_array(np.full(exp.attribution.shape_zyx, -1024.0, dtype=np.float32))
        note = f'<p class="note">CT not found at {escape(str(ct_path))}: overlay shown without it.</p>'
    png = slice_panel(ct, exp.prediction.array, exp.roi.array, exp.attribution.array, exp.summary["roi"]["target"],
                      target_name=exp.target_name)
    return _img(png, "axial, coronal and sagittal views with the attribution overlay") + note


def std_errors(summary: dict) -> dict[int, float]:
    """Unit id -> standard error of phi from the solver diagnostics ({} when the solver reports none)."""
    errors = summary["solver"].get("diagnostics", {}).get("phi_std_error") or []
    units = summary["units"]
    return {u["id"]: e for u, e in zip(units, errors) if e is not None} if len(errors) == len(units) else {}


def unit_table(units: list[dict], voxel_ml: float, errors: dict[int, float] | None = None,
               judged: Verdict | None = None) -> str:
    """Rank, name, voxels, volume (ml), phi (+- standard error when given) and share of sum |phi|, ranked by
    |phi|, or, for a verdict that is not converged, by its lower bound of |phi| (shown in a column, with "?" after
    a phi whose sign is not settled); a sum row at the bottom."""
    by_id = {u["id"]: u for u in units}
    bounds = {} if judged is None or judged.converged else {u.id: u for u in judged.ranked}
    ranked = [by_id[u.id] for u in judged.ranked] if bounds else rank_units(units)
    total = sum(abs(float(u["shap"])) for u in ranked) or 1.0
    errors = errors or {}
    rows = []
    for rank, unit in enumerate(ranked, start=1):
        phi = float(unit["shap"])
        sign = "pos" if phi >= 0 else "neg"
        share = abs(phi) / total
        error = f"<td>\u00b1{_num(errors.get(unit['id']), '.2g')}</td>" if errors else ""
        bound = bounds.get(unit["id"])
        unsettled = "?" if bound is not None and not bound.sign_settled else ""
        lower = f"<td>{_num(bound.lower_bound, '.3g')}</td>" if bound is not None else ""
        rows.append(f'<tr><td>{rank}</td><td class="name">{escape(str(unit["name"]))}</td>'
                    f'<td>{int(unit["voxels"]):,}</td><td>{int(unit["voxels"]) * voxel_ml:,.1f}</td>'
                    f'<td class="{sign}">{_num(phi, "+.4g")}{unsettled}</td>{error}{lower}<td>{share:.1%}'
                    f'<span class="share {sign}" style="width:{60 * share:.0f}px"></span></td></tr>')
    error_head, error_foot = ("<th>s.e.</th>", "<td></td>") if errors else ("", "")
    bound_head, bound_foot = ("<th>|\u03c6| \u2265 (95%)</th>", "<td></td>") if bounds else ("", "")
    phi_sum = sum(float(u["shap"]) for u in ranked)
    return ('<table><thead><tr><th>rank</th><th class="name">unit</th><th>voxels</th><th>volume (ml)</th>'
            f'<th>\u03c6</th>{error_head}{bound_head}<th>share of \u03a3|\u03c6|</th></tr></thead><tbody>' +
            "".join(rows) +
            f'</tbody><tfoot><tr><td></td><td class="name">\u03a3\u03c6 = v(full) \u2212 v(\u2205)</td><td></td>'
            f'<td></td><td>{_num(phi_sum, "+.4g")}</td>{error_foot}{bound_foot}<td></td></tr></tfoot></table>')


def verdict_box(judged: Verdict) -> str:
    """The verdict as a coloured box: the headline, then (not converged) the settled units and every fix."""
    if judged.converged:
        return f'<div class="verdict ok">{escape(judged.headline)}</div>'
    items = [f"<li>Sign settled (95%): {escape(', '.join(judged.settled) or 'no unit yet')}.</li>"]
    items += [f"<li>Fix: {escape(action.text)}.</li>" for action in judged.actions]
    return f'<div class="verdict no">{escape(judged.headline)}<ul>{"".join(items)}</ul></div>'


def _faithfulness(exp: Explanation) -> str:
    """Curves and AOPC/ABPC/nAOPC/nABPC table, or a note saying how to compute them."""
    if exp.faithfulness is None:
        return (f'<p class="note">No faithfulness.json: run <code>segshap evaluate {escape(str(exp.folder))}</code> '
                "to add the MoRF/LeRF curves.</p>")
    f = exp.faithfulness
    rows = [("AOPC", f.get("aopc"), "mean drop of the score when the most relevant units go first (higher = more "
                                    "faithful)"),
            ("ABPC", f.get("abpc"), "mean gap LeRF \u2212 MoRF (higher = ranking separates relevant from irrelevant)"),
            ("nAOPC", f.get("naopc"), "AOPC on curves rescaled to [s_min, s(0)]"),
            ("nABPC", f.get("nabpc"), "ABPC on the rescaled curves"),
            ("s(0)", f.get("s0"), "score with nothing removed"),
            ("s_min", f.get("s_min"), "score with every unit removed"),
            ("steps K", f.get("steps"), "removal steps")]
    table = "".join(f'<tr><td class="name">{escape(k)}</td><td>{escape(_num(v, ".4g"))}</td>'
                    f'<td class="name">{escape(d)}</td></tr>' for k, v, d in rows)
    return (f'<div class="two"><div>{_img(curves_figure(f), "MoRF, LeRF and random removal curves")}</div>'
            f'<div><table><thead><tr><th class="name">metric</th><th>value</th><th class="name">meaning</th></tr>'
            f'</thead><tbody>{table}</tbody></table></div></div>')


def _card(big: str, small: str) -> str:
    """One cost card: a big figure and a caption."""
    return f'<div class="card"><div class="big">{escape(big)}</div><div class="small">{escape(small)}</div></div>'


def cost_cards(summary: dict) -> str:
    """Coalitions, patch forwards against the naive full-volume cost, cache hit rate and wall time."""
    solver, inference, timings = summary["solver"], summary["inference"], summary.get("timings_s", {})
    forwards, naive = inference["patch_forwards"], inference["naive_patch_forwards"]
    ratio = f"{naive / forwards:,.1f}\u00d7 fewer than naive" if forwards else "no network work"
    method = "exact Shapley values" if solver["method"] == "exact" else "sampled (KernelSHAP)"
    control = summary.get("refine", {}).get("control") or {}
    if control.get("used") and solver["method"] != "exact":
        method = (f"sampled, with the exact organ game as control variate (after {control['coalitions']:,} "
                  "measured cell patterns)")
    phases = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if k != "total" and v is not None)
    cards = [_card(f"{solver['coalitions']:,}", f"coalitions, {method}"),
             _card(f"{forwards:,} / {naive:,}", f"network patch forwards / naive full-volume cost ({ratio})"),
             _card(_num(inference.get("hit_rate"), ".0%"),
                   f"patch cache hit rate ({inference.get('patch_cache_hits', 0):,} hits; "
                   f"{inference['patches_in_support']} of {inference['patches_full_grid']} grid patches in support)"),
             _card(f"{_num(timings.get('total'), '.1f')} s", f"wall time ({phases})" if phases else "wall time")]
    return f'<div class="cards">{"".join(cards)}</div>'


DIAGNOSTICS = (("efficiency_residual", "efficiency residual"), ("condition_number", "condition number"),
               ("heldout_mae", "held-out MAE"), ("heldout_r2", "held-out R\u00b2"),
               ("coefficient_change", "relative change of \u03c6 refitted on half of the sampled pairs"))


def solver_diagnostics(solver: dict) -> str:
    """One line of the solver's diagnostics (the verdict above the section says what they mean)."""
    diagnostics = solver.get("diagnostics", {})
    shown = [f"{label} {_num(diagnostics[key], '.3g')}" for key, label in DIAGNOSTICS if key in diagnostics]
    forecast = diagnostics.get("coalitions_needed_forecast")
    if diagnostics.get("converged") is False and forecast:
        shown.append(f"about {forecast:,} coalitions forecast to converge")
    return f'<p class="meta">Solver diagnostics: {escape("; ".join(shown))}</p>' if shown else ""


def explanation_section(exp: Explanation) -> str:
    """One <section> for one value function of one explain output folder: the verdict leads."""
    summary = exp.summary
    judged = verdict(summary, exp.value)
    table = unit_table(summary["units"], exp.voxel_ml, std_errors(summary), judged)
    order = "|Shapley value|" if judged.converged else "lower 95% bound of |\u03c6|"
    z = summary["solver"].get("diagnostics", {}).get("confidence_z", 0.0)
    chart = _img(ranked_bar_chart(summary["units"], ranked_ids=None if judged.converged else
                                  [u.id for u in judged.ranked], ranked_by=order,
                                  half_widths=None if judged.converged else
                                  {u.id: z * u.std_error for u in judged.ranked if u.std_error}),
                 f"units ranked by {order}")
    return (f"<section><h2>{escape(section_title(exp))}</h2>{verdict_box(judged)}{_meta(exp)}{_panel(exp)}"
            f'<h3>Units ranked by {escape(order)}</h3><div class="two"><div>{table}</div><div>{chart}</div></div>'
            f"<h3>Faithfulness (MoRF / LeRF)</h3>{_faithfulness(exp)}"
            f"<h3>Cost</h3>{cost_cards(summary)}{solver_diagnostics(summary['solver'])}</section>")


def verdicts_overview(explanations: list[Explanation]) -> str:
    """The page's first box: each explanation's title and verdict headline (and its cheapest fix)."""
    rows = "".join(f'<div class="verdict {"ok" if v.converged else "no"}"><b>{escape(section_title(e))}</b><br>'
                   f"{escape(v.headline)}{escape(f' Fix: {v.actions[0].text}.') if v.actions else ''}</div>"
                   for e, v in ((e, verdict(e.summary, e.value)) for e in explanations))
    return f'<div class="legend verdicts"><h3>Verdicts</h3>{rows}</div>'


def _legend(values: list[str]) -> str:
    """"How to read this": colours, units, and the value functions used in this report."""
    meanings = "".join(f"<li>{escape(VALUE_MEANINGS.get(v, v))}</li>" for v in dict.fromkeys(values))
    return ("<div class=\"legend\"><h3 style=\"margin-top:0\">How to read this</h3><ul>"
            "<li><span class=\"swatch\" style=\"background:#d6604d\"></span><b>Red</b> units support the value: "
            "keeping their image content raises the score. <span class=\"swatch\" style=\"background:#4393c3\">"
            "</span><b>Blue</b> units oppose it: removing them (replacing their voxels as the explanation's removal operator does: by default the mask "
            "value, air; or a blurred copy of the CT, or the unit's mean) would raise the score. "
            "Colour intensity is |\u03c6| on a range symmetric around 0; voxels outside every unit are left "
            "uncoloured.</li>"
            "<li>A unit is an organ (TotalSegmentator) or a supervoxel. Its Shapley value \u03c6 is its average "
            "marginal effect on the value function over coalitions of kept units; the \u03c6 add up to "
            "v(full) \u2212 v(\u2205), the score with every unit kept minus the score with every unit removed.</li>"
            "<li><span class=\"swatch\" style=\"background:#ffd000\"></span>yellow outline: the model's prediction "
            "of the target class; <span class=\"swatch\" style=\"background:#00e05a\"></span>green outline: the "
            "explained component (ROI).</li>"
            f"<li>Value functions in this report:<ul>{meanings}</ul></li>"
            "<li>Faithfulness: removing units in order of relevance (MoRF) should make the score fall fast, in "
            "reverse order (LeRF) slowly; AOPC and ABPC summarise that gap.</li></ul></div>")


def _header(title: str, extra: dict | None) -> str:
    stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    extras = "".join(f"<p>{escape(str(k))}: {escape(str(v))}</p>" for k, v in (extra or {}).items())
    return (f"<header><h1>{escape(title)}</h1><p>SegSHAP explains an nnU-Net 3D CT segmentation with Shapley values "
            "over interpretable units (organs or supervoxels): how much each unit's image content moves a score "
            f"computed on the clicked component.</p><p>Generated {stamp} by SegSHAP {escape(__version__)}.</p>"
            f"{extras}</header>")


def _footer() -> str:
    return f"<footer><p>{escape(DATA_ATTRIBUTION)}</p><p>SegSHAP {escape(__version__)}</p></footer>"


# ------------------------------------------------------------------------------------------- entry point
def write_report(folders: list, out_html: Path, title: str, extra: dict | None = None) -> Path:
    """Write one self-contained HTML report of the given explain output folders (``ExplanationFolder``s);
    return its path.

    extra: optional key -> value pairs shown in the header (e.g. {"total wall time": "312 s"}).
    """
    explanations = [e for folder in folders for e in Explanation.read(folder)]
    values = [e.value for e in explanations]
    body = verdicts_overview(explanations) + _legend(values) + "".join(explanation_section(e) for e in explanations)
    page = (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{CSS}</style></head><body>{_header(title, extra)}<main>{body}</main>{_footer()}</body></html>\n")
    out_html = Path(out_html)
    out_html.parent.mkdir(parents=True, exist_ok=True)
    out_html.write_text(page, encoding="utf-8")
    return out_html
