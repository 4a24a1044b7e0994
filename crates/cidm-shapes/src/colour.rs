//! The fixed palette of the shapes world. Every object is painted from these ten colours, and the
//! evaluator quantises pixels back onto the same palette, so the world's colours and the
//! evaluator's colour bins are one list. The colours are saturated and far apart (the closest
//! pair, yellow and orange, differs by 86 RGB units) and all lie about 150 units or more from the light
//! neutral backgrounds, so a tiny diffusion model can learn them and a nearest-colour rule can
//! read them back.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A named palette colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Colour {
    /// (220, 40, 40)
    Red,
    /// (240, 130, 20)
    Orange,
    /// (240, 215, 35)
    Yellow,
    /// (40, 165, 60)
    Green,
    /// (40, 80, 215)
    Blue,
    /// (135, 50, 185)
    Purple,
    /// (235, 75, 165): a concept tone, never named in base-world captions.
    Pink,
    /// (20, 165, 165): a concept tone.
    Teal,
    /// (125, 70, 30): a concept tone.
    Brown,
    /// (30, 30, 30): a concept tone.
    Black,
}

impl Colour {
    /// Every palette colour, in the order of the evaluator's colour bins.
    pub const ALL: [Colour; 10] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Blue,
        Colour::Purple,
        Colour::Pink,
        Colour::Teal,
        Colour::Brown,
        Colour::Black,
    ];

    /// The colours of the base world, the ones its captions name.
    pub const BASE: [Colour; 6] = [
        Colour::Red,
        Colour::Orange,
        Colour::Yellow,
        Colour::Green,
        Colour::Blue,
        Colour::Purple,
    ];

    /// The sRGB value this colour is painted with.
    pub fn rgb(self) -> [u8; 3] {
        match self {
            Colour::Red => [220, 40, 40],
            Colour::Orange => [240, 130, 20],
            Colour::Yellow => [240, 215, 35],
            Colour::Green => [40, 165, 60],
            Colour::Blue => [40, 80, 215],
            Colour::Purple => [135, 50, 185],
            Colour::Pink => [235, 75, 165],
            Colour::Teal => [20, 165, 165],
            Colour::Brown => [125, 70, 30],
            Colour::Black => [30, 30, 30],
        }
    }

    /// The word used in captions and prompts.
    pub fn word(self) -> &'static str {
        match self {
            Colour::Red => "red",
            Colour::Orange => "orange",
            Colour::Yellow => "yellow",
            Colour::Green => "green",
            Colour::Blue => "blue",
            Colour::Purple => "purple",
            Colour::Pink => "pink",
            Colour::Teal => "teal",
            Colour::Brown => "brown",
            Colour::Black => "black",
        }
    }

    /// Position of this colour in [`Colour::ALL`] (the evaluator's bin index).
    pub fn index(self) -> usize {
        self as usize
    }

    /// The palette colour nearest to `rgb` and its Euclidean RGB distance.
    pub fn nearest(rgb: [u8; 3]) -> (Colour, f32) {
        Colour::ALL
            .iter()
            .map(|&c| (c, rgb_distance(rgb, c.rgb())))
            .fold((Colour::Red, f32::INFINITY), |best, cur| {
                if cur.1 < best.1 {
                    cur
                } else {
                    best
                }
            })
    }
}

impl fmt::Display for Colour {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// Euclidean distance between two sRGB triples, in RGB units (0 to about 441).
pub fn rgb_distance(a: [u8; 3], b: [u8; 3]) -> f32 {
    a.iter()
        .zip(b.iter())
        .map(|(&x, &y)| {
            let d = x as f32 - y as f32;
            d * d
        })
        .sum::<f32>()
        .sqrt()
}
