//! `cargo xtask report --study DIR`: a study's results as `report.md` with two SVG plots
//! (plotters): accuracy against activated LoRA parameters per input with seed error bars (the
//! paper's Figure 3 Pareto view), and the training loss curves per method (mean over seeds).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use plotters::prelude::*;

use crate::study::{
    RunResult, StudyConfig, Summary, read_json, results, summarize, summary_markdown,
};

/// `report` options.
#[derive(Args, Clone, Debug)]
pub struct ReportArgs {
    /// The study directory (`cargo xtask study --out`).
    #[arg(long)]
    pub study: PathBuf,
}

const COLORS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn plot_err<E: std::error::Error + Send + Sync + 'static>(
    path: &Path,
) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow::anyhow!("drawing {}: {e}", path.display())
}

/// Accuracy (mean over seeds, error bar one std) against activated LoRA parameters per input.
fn pareto(s: &Summary, path: &Path) -> Result<()> {
    let err = plot_err(path);
    let pts: Vec<(String, f64, f64, f64)> = s
        .methods
        .iter()
        .map(|m| {
            (
                m.method.clone(),
                m.activated_params / 1e3,
                m.average.0,
                m.average.1,
            )
        })
        .collect();
    let x_max = pts.iter().map(|p| p.1).fold(1.0, f64::max) * 1.15;
    let y_lo = pts.iter().map(|p| p.2 - p.3).fold(f64::INFINITY, f64::min);
    let y_hi = pts
        .iter()
        .map(|p| p.2 + p.3)
        .fold(f64::NEG_INFINITY, f64::max);
    let pad = ((y_hi - y_lo) * 0.15).max(1.0);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: accuracy vs activated LoRA parameters", s.name),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(-x_max * 0.03..x_max, (y_lo - pad)..(y_hi + pad))
        .map_err(&err)?;
    chart
        .configure_mesh()
        .x_desc("activated LoRA parameters per input (thousands)")
        .y_desc("average accuracy over the test sets (%)")
        .draw()
        .map_err(&err)?;
    for (i, (name, x, y, sd)) in pts.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(std::iter::once(ErrorBar::new_vertical(
                *x,
                y - sd,
                *y,
                y + sd,
                c.filled(),
                10,
            )))
            .map_err(&err)?;
        chart
            .draw_series(std::iter::once(Circle::new((*x, *y), 5, c.filled())))
            .map_err(&err)?
            .label(name.clone())
            .legend(move |(x, y)| Circle::new((x + 8, y), 5, c.filled()));
        chart
            .draw_series(std::iter::once(Text::new(
                name.clone(),
                (*x, *y),
                ("sans-serif", 14).into_font().color(&c),
            )))
            .map_err(&err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(())
}

/// Training loss per step, mean over seeds, one line per trained method.
fn losses(c: &StudyConfig, all: &[RunResult], path: &Path) -> Result<bool> {
    let err = plot_err(path);
    let mut curves: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for m in &c.methods {
        let rs: Vec<&RunResult> = all
            .iter()
            .filter(|r| r.method == m.name && !r.loss.is_empty())
            .collect();
        if rs.is_empty() {
            continue;
        }
        let steps = rs.iter().map(|r| r.loss.len()).min().unwrap_or(0);
        let curve = (0..steps)
            .map(|i| {
                let step = rs[0].loss[i].0 as f64;
                let mean = rs.iter().map(|r| r.loss[i].1).sum::<f64>() / rs.len() as f64;
                (step, mean)
            })
            .collect();
        curves.push((m.name.clone(), curve));
    }
    if curves.is_empty() {
        return Ok(false);
    }
    let x_max = curves
        .iter()
        .flat_map(|(_, c)| c.iter().map(|p| p.0))
        .fold(1.0, f64::max);
    let ys = || curves.iter().flat_map(|(_, c)| c.iter().map(|p| p.1));
    let (y_lo, y_hi) = (
        ys().fold(f64::INFINITY, f64::min),
        ys().fold(f64::NEG_INFINITY, f64::max),
    );
    let pad = ((y_hi - y_lo) * 0.05).max(1e-3);
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(&err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: training loss (mean over seeds)", c.name),
            ("sans-serif", 22),
        )
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..x_max, (y_lo - pad)..(y_hi + pad))
        .map_err(&err)?;
    chart
        .configure_mesh()
        .x_desc("optimizer step")
        .y_desc("loss")
        .draw()
        .map_err(&err)?;
    for (i, (name, curve)) in curves.iter().enumerate() {
        let col = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(curve.iter().copied(), col.stroke_width(2)))
            .map_err(&err)?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(&err)?;
    root.present().map_err(&err)?;
    Ok(true)
}

/// Writes `report.md`, `pareto.svg` and `loss.svg` into the study directory.
pub fn run(a: ReportArgs) -> Result<()> {
    let dir = &a.study;
    let stored = dir.join("study.json");
    let c: StudyConfig = read_json(&stored)?;
    let all = results(&c, dir)?;
    if all.is_empty() {
        bail!(
            "{}: no results yet (run `cargo xtask study` first)",
            dir.display()
        );
    }
    let s = summarize(&c, dir)?;
    pareto(&s, &dir.join("pareto.svg"))?;
    let has_loss = losses(&c, &all, &dir.join("loss.svg"))?;
    let expected = c.methods.len() * c.seeds.len();
    let mut md = format!("# Study report: {}\n\n", c.name);
    md += &format!(
        "Model `{}`; training data `{}` ({}); seeds {:?}; {} of {} runs finished. Accuracy in \
         percent, mean ± sample std over seeds; activated LoRA parameters per input as SPEC \
         defines them (AdaLoRA at its budget, full fine-tuning every weight).\n\n",
        c.model,
        c.train.path.display(),
        c.train
            .n
            .map_or("all".to_string(), |n| format!("{n} examples")),
        c.seeds,
        all.len(),
        expected
    );
    md += &summary_markdown(&s);
    md += "\nPaired comparisons: per problem, right means a score >= 0.5. McNemar's exact test \
           counts the problems only one method gets right; the interval is a percentile \
           bootstrap over problems of the difference of per-problem accuracy averaged over \
           seeds.\n";
    md += "\n## Accuracy vs activated parameters\n\n![accuracy vs activated LoRA parameters](pareto.svg)\n";
    if has_loss {
        md += "\n## Training loss\n\n![training loss](loss.svg)\n";
    }
    md += "\n## Runs\n\n| method | seed | label |";
    let sets: Vec<&String> = s.sets.keys().collect();
    for set in &sets {
        md += &format!(" {set} |");
    }
    md += " average | mean rank | truncated | train s | tok/s |\n|---|---:|---|";
    md += &"---:|".repeat(sets.len() + 5);
    md += "\n";
    for r in &all {
        md += &format!("| {} | {} | {} |", r.method, r.seed, r.label);
        for set in &sets {
            md += &format!(" {:.2} |", r.sets.get(*set).copied().unwrap_or(f64::NAN));
        }
        md += &format!(
            " {:.2} | {:.2} | {} | {:.0} | {:.0} |\n",
            r.average, r.mean_rank, r.truncated, r.timing.train_seconds, r.timing.tokens_per_s
        );
    }
    let out = dir.join("report.md");
    std::fs::write(&out, md).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "report: {} (pareto.svg{})",
        out.display(),
        if has_loss { ", loss.svg" } else { "" }
    );
    Ok(())
}
