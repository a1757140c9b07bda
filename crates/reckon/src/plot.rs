//! PNG plots (plotters, bitmap backend): the depth-sweep heatmap and maze pictures. Text uses DejaVu Sans Mono, embedded in the
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
}
