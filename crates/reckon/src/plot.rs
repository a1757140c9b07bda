//! PNG plots (plotters, bitmap backend): learning curves, the depth-sweep heatmap, maze pictures and ARC grids side
//! by side. Text uses DejaVu Sans Mono, embedded in the
//! binary (`assets/fonts`, Bitstream Vera licence) so plots have labels on machines without system fonts.
//! Files are written under a temporary name and renamed, so a plot is never half written.

use std::path::Path;
use std::sync::Once;

use anyhow::{ensure, Context, Result};
use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

const FONT: &[u8] = include_bytes!("../../../assets/fonts/DejaVuSansMono.ttf");
const FAMILY: &str = "sans-serif";

fn register_embedded_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The font is a fixed, valid file: registration cannot fail at run time if it passed once in tests.
            let _ = register_font(FAMILY, style, FONT);
        }
    });
}

/// Viridis-like colour for `v` in [0, 1] (piecewise linear through five of viridis' stops).
fn colour(v: f64) -> RGBColor {
    const STOPS: [(f64, [f64; 3]); 5] = [
        (0.0, [68.0, 1.0, 84.0]),
        (0.25, [59.0, 82.0, 139.0]),
        (0.5, [33.0, 145.0, 140.0]),
        (0.75, [94.0, 201.0, 98.0]),
        (1.0, [253.0, 231.0, 37.0]),
    ];
    let v = if v.is_finite() { v.clamp(0.0, 1.0) } else { 0.0 };
    let i = STOPS.iter().rposition(|(s, _)| *s <= v).unwrap_or(0).min(STOPS.len() - 2);
    let ((s0, c0), (s1, c1)) = (STOPS[i], STOPS[i + 1]);
    let t = (v - s0) / (s1 - s0);
    let mix = |k: usize| (c0[k] + t * (c1[k] - c0[k])).round() as u8;
    RGBColor(mix(0), mix(1), mix(2))
}

/// A heatmap of `values[row][col]` (fractions in [0, 1], printed as percentages in the cells; colours scaled
/// from 0 to the largest value), rows labelled by `row_labels` top to bottom and columns by `col_labels`.
pub fn heatmap(
    path: &Path,
    title: &str,
    row_axis: &str,
    col_axis: &str,
    row_labels: &[usize],
    col_labels: &[usize],
    values: &[Vec<f64>],
) -> Result<()> {
    ensure!(!row_labels.is_empty() && !col_labels.is_empty(), "heatmap: no cells");
    ensure!(
        values.len() == row_labels.len() && values.iter().all(|r| r.len() == col_labels.len()),
        "heatmap: table shape"
    );
    register_embedded_font();
    let (cell_w, cell_h, left, top, right, bottom) = (90i32, 44i32, 110i32, 70i32, 30i32, 30i32);
    // Monospace at 16 px is about 10 px per character.
    let width = ((left + right + cell_w * col_labels.len() as i32) as u32).max(title.chars().count() as u32 * 10 + 20);
    let height = (top + bottom + cell_h * row_labels.len() as i32) as u32;
    let name = path.file_name().and_then(|n| n.to_str()).context("heatmap: the path has no file name")?;
    let tmp = path.with_file_name(format!(".{name}.tmp-{}.png", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, (width.max(420), height)).into_drawing_area();
        // Colours span 0 to the best cell, so small solve rates stay distinguishable; cells print the values.
        let best = values.iter().flatten().copied().filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(1e-9);
        let draw = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e:?}", path.display());
        root.fill(&WHITE).map_err(draw)?;
        let text = |size: f64| (FAMILY, size).into_font().color(&BLACK);
        root.draw_text(title, &text(16.0), (10, 12)).map_err(draw)?;
        root.draw_text(col_axis, &text(14.0), (left, top - 40)).map_err(draw)?;
        root.draw_text(row_axis, &text(14.0), (6, top - 22)).map_err(draw)?;
        for (j, l) in col_labels.iter().enumerate() {
            root.draw_text(&l.to_string(), &text(14.0), (left + j as i32 * cell_w + cell_w / 2 - 8, top - 20))
                .map_err(draw)?;
        }
        for (i, (h, row)) in row_labels.iter().zip(values).enumerate() {
            let y = top + i as i32 * cell_h;
            root.draw_text(&h.to_string(), &text(14.0), (left - 50, y + cell_h / 2 - 7)).map_err(draw)?;
            for (j, &v) in row.iter().enumerate() {
                let x = left + j as i32 * cell_w;
                let shade = v / best;
                root.draw(&Rectangle::new([(x, y), (x + cell_w - 2, y + cell_h - 2)], colour(shade).filled()))
                    .map_err(draw)?;
                let ink = if shade > 0.6 { BLACK } else { WHITE };
                let label = format!("{:.1}", 100.0 * v);
                root.draw_text(
                    &label,
                    &(FAMILY, 14.0).into_font().color(&ink),
                    (x + cell_w / 2 - 18, y + cell_h / 2 - 7),
                )
                .map_err(draw)?;
            }
        }
        root.present().map_err(draw)?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Colour of a maze token (`# SGo` → 1..5): walls dark, open cells white, the path orange, S green, G red; PAD
/// and unknown tokens grey.
fn maze_colour(token: u8) -> RGBColor {
    match token {
        1 => RGBColor(40, 40, 48),
        2 => RGBColor(250, 250, 250),
        3 => RGBColor(30, 160, 70),
        4 => RGBColor(210, 40, 40),
        5 => RGBColor(245, 150, 30),
        _ => RGBColor(150, 150, 150),
    }
}

/// Pixels per maze cell.
pub const MAZE_CELL_PX: u32 = 16;

/// A picture of one maze (`tokens`, row-major `height`×`width`, the maze task's tokens) under a title line:
/// walls, open cells, S, G and, where the tokens carry one, the path. Written atomically.
pub fn maze_png(path: &Path, title: &str, width: usize, height: usize, tokens: &[u8]) -> Result<()> {
    ensure!(
        width > 0 && tokens.len() == width * height,
        "maze picture: {} tokens for a {width}x{height} maze",
        tokens.len()
    );
    register_embedded_font();
    let (top, margin) = (28u32, 8u32);
    let grid_w = width as u32 * MAZE_CELL_PX;
    let size = (
        (grid_w + 2 * margin).max(title.chars().count() as u32 * 8 + 2 * margin),
        top + height as u32 * MAZE_CELL_PX + margin,
    );
    let name = path.file_name().and_then(|n| n.to_str()).context("maze picture: the path has no file name")?;
    let tmp = path.with_file_name(format!(".{name}.tmp-{}.png", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, size).into_drawing_area();
        let draw = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e:?}", path.display());
        root.fill(&WHITE).map_err(draw)?;
        root.draw_text(title, &(FAMILY, 13.0).into_font().color(&BLACK), (margin as i32, 8)).map_err(draw)?;
        let c = MAZE_CELL_PX as i32;
        for (i, &t) in tokens.iter().enumerate() {
            let (x, y) = (margin as i32 + (i % width) as i32 * c, top as i32 + (i / width) as i32 * c);
            root.draw(&Rectangle::new([(x, y), (x + c - 1, y + c - 1)], maze_colour(t).filled())).map_err(draw)?;
        }
        // A thin frame: outside the grid counts as wall.
        let frame =
            [(margin as i32 - 1, top as i32 - 1), (margin as i32 + width as i32 * c, top as i32 + height as i32 * c)];
        root.draw(&Rectangle::new(frame, BLACK.stroke_width(1))).map_err(draw)?;
        root.present().map_err(draw)?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One line of a [`line_chart`]: its legend name and its points.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// Distinct line colours (Tableau 10's first six).
const LINE_COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// Lines over a shared x axis (e.g. metrics against the training step), with axis labels and a legend; the y
/// range covers every finite point (from 0 when `from_zero`). Written atomically.
pub fn line_chart(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    from_zero: bool,
) -> Result<()> {
    let finite = || series.iter().flat_map(|s| s.points.iter()).filter(|(x, y)| x.is_finite() && y.is_finite());
    ensure!(finite().next().is_some(), "line chart {title:?}: no points");
    let (x0, x1) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(x, _)| (a.min(x), b.max(x)));
    let (y0, y1) = finite().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &(_, y)| (a.min(y), b.max(y)));
    let y0 = if from_zero { y0.min(0.0) } else { y0 };
    let pad = |a: f64, b: f64| if b > a { (a, b) } else { (a - 0.5, a + 0.5) };
    let ((x0, x1), (y0, y1)) = (pad(x0, x1), pad(y0, y1 + 0.05 * (y1 - y0).abs()));
    register_embedded_font();
    let name = path.file_name().and_then(|n| n.to_str()).context("line chart: the path has no file name")?;
    let tmp = path.with_file_name(format!(".{name}.tmp-{}.png", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, (760, 440)).into_drawing_area();
        let draw = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e:?}", path.display());
        root.fill(&WHITE).map_err(draw)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(x0..x1, y0..y1)
            .map_err(draw)?;
        chart
            .configure_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .label_style((FAMILY, 12))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(draw)?;
        for (i, s) in series.iter().enumerate() {
            let colour = LINE_COLOURS[i % LINE_COLOURS.len()];
            let points = s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite());
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(draw)?
                .label(s.name.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(180, 180, 180))
            .label_font((FAMILY, 12))
            .draw()
            .map_err(draw)?;
        root.present().map_err(draw)?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// Bars of `values` labelled by `labels` (e.g. a histogram's buckets), heights from 0, each bar's value printed
/// above it. Written atomically.
pub fn bar_chart(path: &Path, title: &str, x_label: &str, y_label: &str, bars: &[(String, f64)]) -> Result<()> {
    ensure!(!bars.is_empty(), "bar chart {title:?}: no bars");
    register_embedded_font();
    let top = bars.iter().map(|(_, v)| *v).filter(|v| v.is_finite()).fold(0.0f64, f64::max).max(1e-9) * 1.1;
    let name = path.file_name().and_then(|n| n.to_str()).context("bar chart: the path has no file name")?;
    let tmp = path.with_file_name(format!(".{name}.tmp-{}.png", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, (760, 440)).into_drawing_area();
        let draw = |e: DrawingAreaErrorKind<_>| anyhow::anyhow!("drawing {}: {e:?}", path.display());
        root.fill(&WHITE).map_err(draw)?;
        let n = bars.len();
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 16))
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n as f64, 0f64..top)
            .map_err(draw)?;
        let labels: Vec<String> = bars.iter().map(|(l, _)| l.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_desc(x_label)
            .y_desc(y_label)
            .x_labels(n.min(24))
            .x_label_formatter(&|x| labels.get(x.floor() as usize).cloned().unwrap_or_default())
            .label_style((FAMILY, 12))
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(draw)?;
        let bar =
            |i: usize, v: f64| Rectangle::new([(i as f64 + 0.1, 0.0), (i as f64 + 0.9, v)], LINE_COLOURS[0].filled());
        chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| bar(i, *v))).map_err(draw)?;
        let value = |i: usize, v: f64| {
            Text::new(format!("{v}"), (i as f64 + 0.35, v + top * 0.02), (FAMILY, 12).into_font().color(&BLACK))
        };
        chart.draw_series(bars.iter().enumerate().map(|(i, (_, v))| value(i, *v))).map_err(draw)?;
        root.present().map_err(draw)?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// One grid of an ARC picture, under its caption (`None`: the model drew no grid).
pub struct ArcPanel {
    pub caption: String,
    pub grid: Option<reckon_data::arc::ArcGrid>,
}

/// Geometry of an ARC picture: pixels per cell (the largest grid about 240 px wide), the title band, the
/// caption band, the margin and the gap between panels.
struct ArcLayout {
    cell: i32,
    top: i32,
    caption: i32,
    margin: i32,
    gap: i32,
}

impl ArcLayout {
    fn new(panels: &[ArcPanel]) -> Self {
        let side = panels.iter().filter_map(|p| p.grid.as_ref()).map(|g| g.height().max(g.width())).max().unwrap_or(1);
        ArcLayout { cell: (240 / side as i32).clamp(8, 24), top: 28, caption: 20, margin: 10, gap: 18 }
    }

    /// Width of panel `p` in pixels (at least its caption's).
    fn panel_width(&self, p: &ArcPanel) -> i32 {
        let grid = p.grid.as_ref().map_or(4 * self.cell, |g| g.width() as i32 * self.cell);
        grid.max(p.caption.chars().count() as i32 * 8)
    }

    /// The top-left pixel of panel `k`'s grid.
    fn origin(&self, panels: &[ArcPanel], k: usize) -> (i32, i32) {
        let x = self.margin + panels[..k].iter().map(|p| self.panel_width(p) + self.gap).sum::<i32>();
        (x, self.top + self.caption)
    }

    fn size(&self, panels: &[ArcPanel], title: &str) -> (u32, u32) {
        let (x, _) = self.origin(panels, panels.len());
        let tallest = panels.iter().filter_map(|p| p.grid.as_ref()).map(|g| g.height() as i32).max().unwrap_or(4);
        let width = (x - self.gap + self.margin).max(title.chars().count() as i32 * 8 + 2 * self.margin);
        (width as u32, (self.top + self.caption + tallest * self.cell + self.margin) as u32)
    }
}

/// ARC grids side by side in the ARC colours (e.g. input, target, prediction), each under its caption, with
/// a title line; thin grey lines between cells. Written atomically.
pub fn arc_png(path: &Path, title: &str, panels: &[ArcPanel]) -> Result<()> {
    ensure!(!panels.is_empty(), "ARC picture: no grids");
    register_embedded_font();
    let layout = ArcLayout::new(panels);
    let name = path.file_name().and_then(|n| n.to_str()).context("ARC picture: the path has no file name")?;
    let tmp = path.with_file_name(format!(".{name}.tmp-{}.png", std::process::id()));
    {
        let root = BitMapBackend::new(&tmp, layout.size(panels, title)).into_drawing_area();
        draw_arc(&root, &layout, title, panels).map_err(|e| anyhow::anyhow!("drawing {}: {e}", path.display()))?;
        root.present().map_err(|e| anyhow::anyhow!("writing {}: {e:?}", path.display()))?;
    }
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

fn draw_arc<DB: DrawingBackend>(
    root: &DrawingArea<DB, plotters::coord::Shift>,
    layout: &ArcLayout,
    title: &str,
    panels: &[ArcPanel],
) -> std::result::Result<(), String> {
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| format!("{e:?}");
    root.fill(&WHITE).map_err(err)?;
    let font = (FAMILY, 13.0).into_font().color(&BLACK);
    root.draw_text(title, &font, (layout.margin, 8)).map_err(err)?;
    let c = layout.cell;
    for (k, panel) in panels.iter().enumerate() {
        let (x0, y0) = layout.origin(panels, k);
        root.draw_text(&panel.caption, &font, (x0, y0 - layout.caption + 3)).map_err(err)?;
        let Some(grid) = &panel.grid else {
            root.draw_text("(no grid)", &font, (x0, y0 + 4)).map_err(err)?;
            continue;
        };
        let (h, w) = (grid.height() as i32, grid.width() as i32);
        root.draw(&Rectangle::new([(x0, y0), (x0 + w * c, y0 + h * c)], RGBColor(85, 85, 85).filled())).map_err(err)?;
        for (i, &colour) in grid.cells().iter().enumerate() {
            let (x, y) = (x0 + (i as i32 % w) * c, y0 + (i as i32 / w) * c);
            let (r, g, b) = reckon_data::arc::ARC_PALETTE[colour as usize];
            root.draw(&Rectangle::new([(x + 1, y + 1), (x + c - 1, y + c - 1)], RGBColor(r, g, b).filled()))
                .map_err(err)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colour_scale_runs_from_dark_purple_to_yellow() {
        assert_eq!(colour(0.0), RGBColor(68, 1, 84));
        assert_eq!(colour(1.0), RGBColor(253, 231, 37));
        assert_eq!(colour(f64::NAN), colour(0.0));
        assert_eq!(colour(0.5), RGBColor(33, 145, 140));
    }

    #[test]
    fn heatmap_writes_a_png_with_one_cell_per_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sweep.png");
        heatmap(&path, "t", "H", "L", &[2, 4, 8], &[1, 4], &[vec![0.0, 0.1], vec![0.5, 0.6], vec![0.9, 1.0]]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        // Width and height in the IHDR chunk: 110 + 30 + 2·90 = 320 → at least 420; 70 + 30 + 3·44 = 232.
        let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((w, h), (420, 232));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "no temporary file left");
        let err = heatmap(&path, "t", "H", "L", &[2], &[1, 4], &[vec![0.0]]).unwrap_err();
        assert!(err.to_string().contains("shape"), "{err}");
    }

    #[test]
    fn maze_png_paints_one_square_per_cell() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("maze.png");
        let tokens = [3, 5, 2, 1, 5, 1, 2, 5, 4];
        maze_png(&path, "m", 3, 3, &tokens).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!(h, 28 + 3 * MAZE_CELL_PX + 8);
        assert_ne!(maze_colour(5), maze_colour(2), "the path stands out from open cells");
        let err = maze_png(&path, "m", 3, 3, &tokens[..8]).unwrap_err();
        assert!(err.to_string().contains("8 tokens for a 3x3 maze"), "{err}");
    }

    #[test]
    fn arc_png_paints_every_cell_of_every_panel_in_the_arc_colours() {
        use reckon_data::arc::{ArcGrid, ARC_PALETTE};
        let panels = vec![
            ArcPanel { caption: "input".into(), grid: Some(ArcGrid::new(2, 3, vec![0, 1, 2, 3, 4, 5])) },
            ArcPanel { caption: "target".into(), grid: Some(ArcGrid::new(3, 2, vec![6, 7, 8, 9, 0, 1])) },
            ArcPanel { caption: "prediction".into(), grid: None },
        ];
        let layout = ArcLayout::new(&panels);
        let (w, h) = layout.size(&panels, "t");
        let mut pixels = vec![0u8; (w * h * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut pixels, (w, h)).into_drawing_area();
            register_embedded_font();
            draw_arc(&root, &layout, "t", &panels).unwrap();
            root.present().unwrap();
        }
        let at = |x: i32, y: i32| {
            let i = ((y as u32 * w + x as u32) * 3) as usize;
            (pixels[i], pixels[i + 1], pixels[i + 2])
        };
        for (k, panel) in panels.iter().enumerate().take(2) {
            let grid = panel.grid.as_ref().unwrap();
            let (x0, y0) = layout.origin(&panels, k);
            for (i, &colour) in grid.cells().iter().enumerate() {
                let (r, c) = ((i / grid.width()) as i32, (i % grid.width()) as i32);
                let centre = (x0 + c * layout.cell + layout.cell / 2, y0 + r * layout.cell + layout.cell / 2);
                assert_eq!(at(centre.0, centre.1), ARC_PALETTE[colour as usize], "panel {k} cell {i}");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("arc.png");
        arc_png(&path, "t", &panels).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), w);
        assert!(arc_png(&path, "t", &[]).is_err());
    }

    #[test]
    fn line_chart_writes_a_png_and_refuses_an_empty_chart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lines.png");
        let series = vec![
            Series { name: "loss".into(), points: vec![(1.0, 2.0), (2.0, 1.5), (3.0, f64::NAN), (4.0, 0.5)] },
            Series { name: "flat".into(), points: vec![(1.0, 1.0), (4.0, 1.0)] },
        ];
        line_chart(&path, "t", "step", "value", &series, true).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 760);
        let empty = vec![Series { name: "none".into(), points: vec![(1.0, f64::NAN)] }];
        assert!(line_chart(&path, "t", "x", "y", &empty, false).unwrap_err().to_string().contains("no points"));
    }

    #[test]
    fn bar_chart_writes_a_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bars.png");
        bar_chart(&path, "t", "steps", "puzzles", &[("1".into(), 3.0), ("2".into(), 7.0), ("4".into(), 0.0)]).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[1..4], b"PNG");
        assert!(bar_chart(&path, "t", "x", "y", &[]).is_err());
    }
}
