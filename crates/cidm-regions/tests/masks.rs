//! Box masks (proptest): at any grid, every masked cell lies inside the box (and the
//! positions the core attends from are exactly the masked cells), and the mask is
//! non-empty exactly when the box contains at least one whole cell, checked against a brute
//! force over all cells.

use cidm_regions::{box_cells, box_mask, box_positions, BoundingBox};
use proptest::prelude::*;

/// Float slack of the cell rounding (the masks allow 1e-9 cells).
const SLACK: f64 = 1e-8;

fn bbox() -> impl Strategy<Value = BoundingBox> {
    (0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0)
        .prop_filter_map("non-empty box", |(a, b, c, d)| {
            BoundingBox::new(a.min(c), b.min(d), a.max(c), b.max(d)).ok()
        })
}

proptest! {
    #[test]
    fn masks_lie_inside_the_box(b in bbox(), h in 1usize..70, w in 1usize..70) {
        let [x0, y0, x1, y1] = b.coords();
        let mask = box_mask(&b, [h, w]);
        for r in 0..h {
            for c in 0..w {
                if mask[r * w + c] == 1.0 {
                    prop_assert!(c as f64 / w as f64 >= x0 - SLACK && (c + 1) as f64 / w as f64 <= x1 + SLACK);
                    prop_assert!(r as f64 / h as f64 >= y0 - SLACK && (r + 1) as f64 / h as f64 <= y1 + SLACK);
                }
            }
        }
        // A cell strictly inside the box (by more than the slack) is always masked.
        for r in 0..h {
            for c in 0..w {
                let inside = c as f64 / w as f64 >= x0 + SLACK && (c + 1) as f64 / w as f64 <= x1 - SLACK
                    && r as f64 / h as f64 >= y0 + SLACK && (r + 1) as f64 / h as f64 <= y1 - SLACK;
                if inside {
                    prop_assert_eq!(mask[r * w + c], 1.0);
                }
            }
        }
        let (rows, cols) = box_cells(&b, [h, w]);
        let count = mask.iter().filter(|&&m| m == 1.0).count();
        prop_assert_eq!(count, rows.len() * cols.len());
        let masked: Vec<usize> = (0..h * w).filter(|&i| mask[i] == 1.0).collect();
        prop_assert_eq!(box_positions(&b, [h, w]), masked);
    }

    /// A box spanning at least one whole cell on both axes has a non-empty mask.
    #[test]
    fn masks_are_non_empty_when_the_box_spans_a_cell(
        h in 1usize..70, w in 1usize..70, r in 0usize..70, c in 0usize..70,
        grow in (0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0, 0.0f64..1.0),
    ) {
        let (r, c) = (r % h, c % w);
        // The cell [c/w, (c+1)/w] x [r/h, (r+1)/h], grown by random amounts within [0, 1].
        let x0 = c as f64 / w as f64 * (1.0 - grow.0);
        let y0 = r as f64 / h as f64 * (1.0 - grow.1);
        let x1 = (c + 1) as f64 / w as f64 + (1.0 - (c + 1) as f64 / w as f64) * grow.2;
        let y1 = (r + 1) as f64 / h as f64 + (1.0 - (r + 1) as f64 / h as f64) * grow.3;
        let b = BoundingBox::new(x0, y0, x1.min(1.0), y1.min(1.0)).unwrap();
        let mask = box_mask(&b, [h, w]);
        prop_assert_eq!(mask[r * w + c], 1.0);
    }
}

#[test]
fn start_rounds_up_and_end_rounds_down() {
    let b = BoundingBox::new(0.1, 0.0, 0.75, 0.3).unwrap();
    // x: 0.1 * 8 = 0.8 -> 1, 0.75 * 8 = 6 -> 6; y: 0 -> 0, 0.3 * 10 = 3.0000000000000004 -> 3.
    assert_eq!(box_cells(&b, [10, 8]), (0..3, 1..6));
    // Less than a cell wide at 4x4: empty.
    let thin = BoundingBox::new(0.3, 0.0, 0.45, 1.0).unwrap();
    assert!(box_cells(&thin, [4, 4]).1.is_empty());
}
