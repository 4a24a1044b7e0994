//! Figures: pixels checked against the layouts documented in `cidm::figures` (the expected
//! positions are computed here from those formulas), glyph shapes from the font table, and
//! proptests that any input either draws at the size asked for or is a typed error.

use cidm::figures::font::{self, Direction};
use cidm::figures::{
    grid_layout, image_grid, line_plot, plot_layout, FigureError, ImageGrid, LinePlot, Rect,
    Series, AXIS_COLOUR, BACKGROUND, MISSING_COLOUR, PALETTE,
};
use image::{Rgb, RgbImage};
use proptest::prelude::*;

fn series(name: &str, points: &[(f64, f64)]) -> Series {
    Series {
        name: name.into(),
        points: points.to_vec(),
    }
}

/// Two methods scored after tasks 1..6, on a fixed [0, 1] range.
fn forgetting_plot() -> LinePlot {
    LinePlot {
        title: "T".into(),
        x_label: "task".into(),
        y_label: "score".into(),
        series: vec![
            series(
                "cidm",
                &[
                    (1.0, 0.2),
                    (2.0, 0.2),
                    (3.0, 0.5),
                    (4.0, 0.6),
                    (5.0, 0.7),
                    (6.0, 0.8),
                ],
            ),
            series("lora-m", &[(1.0, 0.9), (6.0, 0.1)]),
        ],
        width: 480,
        height: 360,
        y_range: Some((0.0, 1.0)),
    }
}

/// Pixels that are not the background.
fn inked(image: &RgbImage) -> Vec<(u32, u32)> {
    image
        .enumerate_pixels()
        .filter(|(_, _, p)| **p != BACKGROUND)
        .map(|(x, y, _)| (x, y))
        .collect()
}

#[test]
fn text_size_is_advance_times_chars_less_the_trailing_gap() {
    // 6 font pixels per character, minus the last gap, times the scale; 7 rows high.
    assert_eq!(font::text_size("", 3), (0, 0));
    assert_eq!(font::text_size("abc", 1), (17, 7));
    assert_eq!(font::text_size("abc", 3), (51, 21));
}

#[test]
fn glyphs_have_their_shapes() {
    // '|' is the full middle column; '-' the full middle row; ' ' is blank.
    for column in 0..5 {
        for row in 0..7 {
            assert_eq!(
                font::glyph_pixel('|', column, row),
                column == 2,
                "| {column},{row}"
            );
            assert_eq!(
                font::glyph_pixel('-', column, row),
                row == 3,
                "- {column},{row}"
            );
            assert!(!font::glyph_pixel(' ', column, row));
        }
    }
    // Characters without a glyph are drawn as '?'.
    for column in 0..5 {
        for row in 0..7 {
            assert_eq!(
                font::glyph_pixel('\u{e9}', column, row),
                font::glyph_pixel('?', column, row)
            );
        }
    }
}

#[test]
fn text_draws_only_inside_its_box_and_a_space_draws_nothing() {
    let mut image = RgbImage::from_pixel(100, 40, BACKGROUND);
    font::draw_text(&mut image, 10, 5, " ", 2, AXIS_COLOUR, Direction::Right);
    assert!(inked(&image).is_empty());

    font::draw_text(&mut image, 10, 5, "Ab1", 2, AXIS_COLOUR, Direction::Right);
    let (w, h) = font::text_size("Ab1", 2);
    let ink = inked(&image);
    assert!(ink.len() > 20, "{} pixels drawn", ink.len());
    for (x, y) in ink {
        assert!(
            (10..10 + w).contains(&x) && (5..5 + h).contains(&y),
            "({x}, {y})"
        );
    }
    // The first column of 'A' (rows 1..=6 set, row 0 clear) at scale 2.
    assert_eq!(image[(10, 5)], BACKGROUND);
    assert_eq!(image[(10, 7)], AXIS_COLOUR);
    assert_eq!(image[(11, 18)], AXIS_COLOUR);
}

#[test]
fn upward_text_is_the_upright_text_turned_counter_clockwise() {
    // "-" upright is row 3 of columns 0..5; turned, it is column 3 of rows 4..=0 of the
    // 7-wide, 5-high box.
    let mut image = RgbImage::from_pixel(20, 20, BACKGROUND);
    font::draw_text(&mut image, 2, 3, "-", 1, AXIS_COLOUR, Direction::Up);
    let expected: Vec<(u32, u32)> = (3..8).map(|y| (5, y)).collect();
    let mut ink = inked(&image);
    ink.sort_by_key(|&(x, y)| (x, y));
    assert_eq!(ink, expected);
}

#[test]
fn text_off_the_image_is_clipped_without_panicking() {
    let mut image = RgbImage::from_pixel(8, 8, BACKGROUND);
    font::draw_text(&mut image, -3, -3, "WWW", 4, AXIS_COLOUR, Direction::Right);
    font::draw_text(
        &mut image,
        i64::MAX - 5,
        i64::MIN,
        "x",
        u32::MAX,
        AXIS_COLOUR,
        Direction::Up,
    );
    assert!(!inked(&image).is_empty());
}

#[test]
fn plot_layout_follows_the_documented_margins() {
    let layout = plot_layout(&forgetting_plot()).unwrap();
    // 360 / 240 -> s = 1, t = 7, p = 4. Title band 4 + 14; y ticks "0.0".."1.0" are 17 px
    // wide; the widest name "lora-m" is 35 px.
    assert_eq!(layout.text_scale, 1);
    let expected = Rect {
        left: 4 + (7 + 4) + 17 + 4,
        top: (4 + 14) + 2 * 4,
        right: 479 - (4 + 7 + 2 + 35 + 4),
        bottom: 359 - (4 + (7 + 4) + 7 + 4),
    };
    assert_eq!(layout.plot, expected);
    // Integer x data: half a unit beyond the extremes, one tick per task.
    assert_eq!((layout.x.min, layout.x.max), (0.5, 6.5));
    assert_eq!(layout.x.ticks, vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    assert_eq!(layout.x.labels, vec!["1", "2", "3", "4", "5", "6"]);
    // Span 1 over ~6 ticks: a step of 0.2.
    assert_eq!((layout.y.min, layout.y.max), (0.0, 1.0));
    assert_eq!(
        layout.y.labels,
        vec!["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    );
    for (i, swatch) in layout.legend.iter().enumerate() {
        let top = expected.top + i as i64 * (7 + 2);
        let right = expected.right + 4 + 6;
        assert_eq!(
            *swatch,
            Rect {
                left: expected.right + 4,
                top,
                right,
                bottom: top + 6
            }
        );
    }
}

#[test]
fn plot_points_and_lines_colour_the_mapped_pixels() {
    let plot = forgetting_plot();
    let image = line_plot(&plot).unwrap();
    assert_eq!(image.dimensions(), (480, 360));
    let area = plot_layout(&plot).unwrap().plot;
    // The documented mapping, with x in [0.5, 6.5] and y in [0, 1].
    let pixel = |x: f64, y: f64| {
        let px = area.left as f64 + (x - 0.5) / 6.0 * (area.right - area.left) as f64;
        let py = area.bottom as f64 - y * (area.bottom - area.top) as f64;
        (px.round() as u32, py.round() as u32)
    };
    for (i, s) in plot.series.iter().enumerate() {
        for &(x, y) in &s.points {
            assert_eq!(image[pixel(x, y)], PALETTE[i], "series {i} at ({x}, {y})");
        }
    }
    // The middle of the horizontal segment (1, 0.2)-(2, 0.2) and of lora-m's diagonal.
    assert_eq!(image[pixel(1.5, 0.2)], PALETTE[0]);
    // The diagonal's rounded pixels may sit one off the exact midpoint.
    let (mx, my) = pixel(3.5, 0.5);
    let mut near = (mx - 1..=mx + 1).flat_map(|x| (my - 1..=my + 1).map(move |y| (x, y)));
    assert!(near.any(|p| image[p] == PALETTE[1]));
    // Nothing is drawn at a blank spot of the plot area (between grid lines, off the data).
    assert_eq!(image[pixel(5.5, 0.3)], BACKGROUND);
    // The frame is black on all four sides.
    let (mid_x, mid_y) = (
        (area.left + area.right) as u32 / 2,
        (area.top + area.bottom) as u32 / 2,
    );
    for (x, y) in [
        (area.left as u32, mid_y),
        (area.right as u32, mid_y),
        (mid_x, area.top as u32),
        (mid_x, area.bottom as u32),
    ] {
        assert_eq!(image[(x, y)], AXIS_COLOUR, "frame at ({x}, {y})");
    }
}

#[test]
fn legend_swatches_use_the_palette_and_names_follow_them() {
    let plot = forgetting_plot();
    let layout = plot_layout(&plot).unwrap();
    let image = line_plot(&plot).unwrap();
    for (i, swatch) in layout.legend.iter().enumerate() {
        for y in swatch.top..=swatch.bottom {
            for x in swatch.left..=swatch.right {
                assert_eq!(image[(x as u32, y as u32)], PALETTE[i], "swatch {i}");
            }
        }
        // The name's box starts t + 2 s = 9 px right of the swatch and is inked.
        let (w, h) = font::text_size(&plot.series[i].name, 1);
        let name_x = swatch.left + 9;
        let inked = (swatch.top..swatch.top + i64::from(h))
            .flat_map(|y| (name_x..name_x + i64::from(w)).map(move |x| (x, y)))
            .filter(|&(x, y)| image[(x as u32, y as u32)] == AXIS_COLOUR)
            .count();
        assert!(inked > 10, "name {i}: {inked} pixels");
    }
    // The palette's colours are distinct from each other and from ink and paper.
    for (i, a) in PALETTE.iter().enumerate() {
        assert_ne!(*a, BACKGROUND);
        assert_ne!(*a, AXIS_COLOUR);
        assert!(PALETTE[i + 1..].iter().all(|b| a != b));
    }
}

#[test]
fn a_title_wider_than_the_plot_area_stays_inside_the_image() {
    // 320 x 240: s = 1, p = 4; the title at scale 2 is (26 * 6 - 1) * 2 = 310 px wide, more
    // than the plot area, so centring it there would cut its start.
    let mut plot = forgetting_plot();
    (plot.width, plot.height) = (320, 240);
    plot.title = "Forgetting after each task".into();
    let image = line_plot(&plot).unwrap();
    let band: Vec<u32> = inked(&image)
        .into_iter()
        .filter(|&(_, y)| (4..4 + 14).contains(&y))
        .map(|(x, _)| x)
        .collect();
    assert!(band.len() > 100);
    assert!(
        band.iter().all(|&x| (4..316).contains(&x)),
        "{:?}",
        band.iter().min()
    );
}

#[test]
fn values_outside_a_fixed_range_are_clipped_to_the_frame() {
    let mut plot = forgetting_plot();
    plot.series = vec![series("far", &[(1.0, -1e300), (2.0, 1e300), (3.0, 0.5)])];
    let area = plot_layout(&plot).unwrap().plot;
    let image = line_plot(&plot).unwrap();
    // Data may only colour pixels of the plot area.
    for (x, y, p) in image.enumerate_pixels() {
        if *p == PALETTE[0] && !area.contains(i64::from(x), i64::from(y)) {
            // The legend swatch is the only other place the colour appears.
            let legend = plot_layout(&plot).unwrap().legend[0];
            assert!(legend.contains(i64::from(x), i64::from(y)), "({x}, {y})");
        }
    }
}

#[test]
fn non_integer_x_data_gets_a_padded_range() {
    let mut plot = forgetting_plot();
    plot.series = vec![series("s", &[(0.0, 0.0), (0.5, 1.0), (1.0, 2.0)])];
    plot.y_range = None;
    let layout = plot_layout(&plot).unwrap();
    // 5% of the span beyond each end; ticks every 0.2 (span 1.1 / 6 ~ 0.18 -> 0.2).
    assert!((layout.x.min + 0.05).abs() < 1e-12 && (layout.x.max - 1.05).abs() < 1e-12);
    assert_eq!(
        layout.x.labels,
        vec!["0.0", "0.2", "0.4", "0.6", "0.8", "1.0"]
    );
    assert!((layout.y.min + 0.1).abs() < 1e-12 && (layout.y.max - 2.1).abs() < 1e-12);
}

#[test]
fn plot_errors_are_typed() {
    let base = forgetting_plot();
    let with = |edit: &dyn Fn(&mut LinePlot)| {
        let mut plot = base.clone();
        edit(&mut plot);
        line_plot(&plot).unwrap_err()
    };
    assert_eq!(with(&|p| p.series.clear()), FigureError::NoSeries);
    assert_eq!(
        with(&|p| p.series[1].points.clear()),
        FigureError::EmptySeries {
            name: "lora-m".into()
        }
    );
    let nan = with(&|p| p.series[0].points[2].1 = f64::NAN);
    assert!(
        matches!(nan, FigureError::NonFinite { index: 2, .. }),
        "{nan:?}"
    );
    let inf = with(&|p| p.series[1].points[0].0 = f64::INFINITY);
    assert!(
        matches!(inf, FigureError::NonFinite { index: 0, .. }),
        "{inf:?}"
    );
    assert_eq!(
        with(&|p| p.y_range = Some((1.0, 0.0))),
        FigureError::InvalidRange { min: 1.0, max: 0.0 }
    );
    assert!(matches!(
        with(&|p| p.y_range = Some((0.0, f64::NAN))),
        FigureError::InvalidRange { .. }
    ));
    assert!(matches!(
        with(&|p| p.series[0].points.extend([(1.5e308, 0.5), (-1.5e308, 0.5)])),
        FigureError::RangeOverflow { .. }
    ));
    assert!(matches!(
        with(&|p| (p.width, p.height) = (60, 40)),
        FigureError::TooSmall {
            width: 60,
            height: 40,
            ..
        }
    ));
    assert!(matches!(
        with(&|p| (p.width, p.height) = (0, 0)),
        FigureError::TooSmall { .. }
    ));
    assert!(matches!(
        with(&|p| (p.width, p.height) = (100_000, 100_000)),
        FigureError::TooLarge { .. }
    ));
}

/// A `w` x `h` image whose pixels encode the cell and the position, so that any misplaced
/// pixel shows.
fn coded(w: u32, h: u32, row: u8, column: u8) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([row * 100 + column, x as u8 * 10, y as u8 * 10 + 1])
    })
}

fn sample_grid() -> ImageGrid {
    let cells = (0..2u8)
        .map(|r| {
            (0..3u8)
                .map(|c| ((r, c) != (1, 1)).then(|| coded(4, 3, r, c)))
                .collect()
        })
        .collect();
    ImageGrid {
        title: Some("grid".into()),
        row_labels: vec!["a".into(), "bb".into()],
        column_labels: vec!["x".into(), "y".into(), "a very long label".into()],
        cells,
        scale: 5,
    }
}

#[test]
fn grid_cells_hold_the_upscaled_images_at_their_documented_positions() {
    let grid = sample_grid();
    let layout = grid_layout(&grid).unwrap();
    let image = image_grid(&grid).unwrap();
    // Cells 20x15 -> s = 1, t = 7, g = 4; title band 4 + 14, column labels 7 + 4, row
    // labels "bb" (11 px) + 4.
    let origin = |r: u32, c: u32| (4 + 15 + c * (20 + 4), 18 + 4 + 11 + r * (15 + 4));
    assert_eq!(layout.cell_size, (20, 15));
    assert_eq!(layout.size, (4 + 15 + 3 * 24, 18 + 4 + 11 + 2 * 19));
    assert_eq!(image.dimensions(), layout.size);
    for r in 0..2u32 {
        for c in 0..3u32 {
            let (ox, oy) = origin(r, c);
            assert_eq!(layout.cell(r as usize, c as usize), Some((ox, oy)));
            for y in 0..15 {
                for x in 0..20 {
                    let expected = match &grid.cells[r as usize][c as usize] {
                        Some(source) => source[(x / 5, y / 5)],
                        None => MISSING_COLOUR,
                    };
                    assert_eq!(
                        image[(ox + x, oy + y)],
                        expected,
                        "cell ({r}, {c}) at ({x}, {y})"
                    );
                }
            }
        }
    }
    assert_eq!(layout.cell(2, 0), None);
    // Row labels are drawn in the row label band beside their row.
    for r in 0..2u32 {
        let (_, oy) = origin(r, 0);
        let ink = (oy..oy + 15)
            .flat_map(|y| (4..15).map(move |x| (x, y)))
            .filter(|&p| image[p] == AXIS_COLOUR)
            .count();
        assert!(ink > 3, "row label {r}: {ink} pixels");
    }
    // Column labels are cut to the cell width (20 px fits 3 characters): nothing is drawn
    // above the gaps between columns.
    for c in 0..2u32 {
        let (ox, _) = origin(0, c);
        for x in ox + 20..ox + 24 {
            for y in 22..29 {
                assert_eq!(
                    image[(x, y)],
                    BACKGROUND,
                    "gap after column {c} at ({x}, {y})"
                );
            }
        }
    }
}

#[test]
fn grids_without_labels_start_at_the_gap() {
    let mut grid = sample_grid();
    grid.title = None;
    grid.row_labels.clear();
    grid.column_labels.clear();
    grid.scale = 1;
    let layout = grid_layout(&grid).unwrap();
    assert_eq!(layout.cell(0, 0), Some((4, 4)));
    assert_eq!(layout.size, (4 + 3 * (4 + 4), 4 + 2 * (3 + 4)));
    let image = image_grid(&grid).unwrap();
    assert_eq!(image[(4, 4)], grid.cells[0][0].as_ref().unwrap()[(0, 0)]);
    assert_eq!(image[(0, 0)], BACKGROUND);
}

#[test]
fn grid_errors_are_typed() {
    let base = sample_grid();
    let with = |edit: &dyn Fn(&mut ImageGrid)| {
        let mut grid = base.clone();
        edit(&mut grid);
        image_grid(&grid).unwrap_err()
    };
    assert_eq!(with(&|g| g.cells.clear()), FigureError::EmptyGrid);
    assert_eq!(
        with(&|g| g.cells = vec![vec![], vec![]]),
        FigureError::EmptyGrid
    );
    assert_eq!(
        with(&|g| {
            g.cells[1].pop();
        }),
        FigureError::RaggedRows {
            row: 1,
            len: 2,
            expected: 3
        }
    );
    assert_eq!(
        with(&|g| g.cells[1][2] = Some(coded(3, 4, 1, 2))),
        FigureError::ImageSize {
            row: 1,
            column: 2,
            width: 3,
            height: 4,
            expected_width: 4,
            expected_height: 3,
        }
    );
    assert_eq!(
        with(&|g| g.row_labels.push("c".into())),
        FigureError::LabelCount {
            which: "row",
            count: 3,
            expected: 2
        }
    );
    assert_eq!(
        with(&|g| {
            g.column_labels.pop();
        }),
        FigureError::LabelCount {
            which: "column",
            count: 2,
            expected: 3
        }
    );
    assert_eq!(with(&|g| g.scale = 0), FigureError::ZeroScale);
    assert_eq!(
        with(&|g| g.cells.iter_mut().flatten().for_each(|c| *c = None)),
        FigureError::NoImages
    );
    assert_eq!(
        with(&|g| g
            .cells
            .iter_mut()
            .flatten()
            .for_each(|c| *c = Some(RgbImage::new(0, 3)))),
        FigureError::EmptyImage {
            width: 0,
            height: 3
        }
    );
    assert!(matches!(
        with(&|g| g.scale = u32::MAX),
        FigureError::TooLarge { .. }
    ));
}

#[test]
fn figures_save_as_png_and_read_back_identical() {
    let image = line_plot(&forgetting_plot()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("forgetting.png");
    cidm::images::save_rgb_png(&image, &path).unwrap();
    let read = image::open(&path).unwrap().to_rgb8();
    assert_eq!(read, image);
}

fn any_series() -> impl Strategy<Value = Series> {
    let point = prop_oneof![
        (-1e3f64..1e3, -1e3f64..1e3),
        ((-20i32..20).prop_map(f64::from), -1e6f64..1e6),
        (Just(3.0), Just(0.25)),
    ];
    ("\\PC{0,12}", prop::collection::vec(point, 1..8))
        .prop_map(|(name, points)| Series { name, points })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn line_plots_draw_at_the_size_asked_or_fail_typed(
        series in prop::collection::vec(any_series(), 1..10),
        title in "\\PC{0,20}",
        x_label in "[ -~]{0,15}",
        y_label in "[ -~]{0,15}",
        width in 0u32..700,
        height in 0u32..500,
        y_range in prop::option::of((-2.0f64..2.0, -2.0f64..2.0)),
    ) {
        let plot = LinePlot { title, x_label, y_label, series, width, height, y_range };
        match line_plot(&plot) {
            Ok(image) => prop_assert_eq!(image.dimensions(), (width, height)),
            Err(FigureError::TooSmall { .. }) => {}
            Err(FigureError::InvalidRange { min, max }) => prop_assert!(min >= max),
            Err(other) => prop_assert!(false, "unexpected {other:?}"),
        }
    }

    #[test]
    fn image_grids_draw_at_their_layout_size(
        rows in 1usize..4,
        columns in 1usize..4,
        (w, h) in (1u32..9, 1u32..9),
        scale in 1u32..6,
        missing in prop::collection::vec(any::<bool>(), 16),
        title in prop::option::of("\\PC{0,30}"),
        labels in any::<bool>(),
    ) {
        let cells: Vec<Vec<Option<RgbImage>>> = (0..rows)
            .map(|r| {
                (0..columns)
                    .map(|c| (!missing[r * 4 + c]).then(|| coded(w, h, r as u8, c as u8)))
                    .collect()
            })
            .collect();
        let label = |n: usize| if labels { (0..n).map(|i| "l".repeat(i * 5)).collect() } else { vec![] };
        let grid = ImageGrid {
            title,
            row_labels: label(rows),
            column_labels: label(columns),
            cells,
            scale,
        };
        let any_image = grid.cells.iter().flatten().any(Option::is_some);
        match image_grid(&grid) {
            Ok(image) => {
                let layout = grid_layout(&grid).unwrap();
                prop_assert_eq!(image.dimensions(), layout.size);
                let (x, y) = layout.cell(rows - 1, columns - 1).unwrap();
                prop_assert!(x + w * scale <= layout.size.0 && y + h * scale <= layout.size.1);
            }
            Err(error) => prop_assert!(!any_image && error == FigureError::NoImages, "{error:?}"),
        }
    }
}
