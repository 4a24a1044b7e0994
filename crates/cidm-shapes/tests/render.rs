//! The renderer and the base world: determinism, exact pixels where coverage is known in
//! closed form, placement invariants and captions that name what was drawn.

use cidm_shapes::colour::rgb_distance;
use cidm_shapes::{
    base_sample, Background, Colour, Object, Pattern, Pose, Position, Scene, Shape, ShapesError,
    WorldConfig,
};
use proptest::prelude::*;

const BG: [u8; 3] = [220, 220, 220];

fn plain_background() -> Background {
    Background {
        rgb: BG,
        gradient: [0.0, 0.0],
        noise: 0.0,
        seed: 0,
    }
}

/// An axis-aligned square centred in a 32x32 image with half side `half` pixels.
fn square_scene(half: f32) -> Scene {
    Scene {
        size: 32,
        background: plain_background(),
        objects: vec![Object {
            shape: Shape::Square,
            pattern: Pattern::Solid {
                colour: Colour::Blue,
            },
            // The square's half side is radius / sqrt(2) of the image side.
            pose: Pose {
                x: 0.5,
                y: 0.5,
                radius: half * std::f32::consts::SQRT_2 / 32.0,
                rotation: 0.0,
            },
        }],
    }
}

#[test]
fn square_on_pixel_edges_is_exact() {
    // Half side 8 px around (16, 16): pixels 8..24 are fully covered, the rest not at all.
    let image = square_scene(8.0).render(4).unwrap();
    for (x, y, p) in image.enumerate_pixels() {
        let inside = (8..24).contains(&x) && (8..24).contains(&y);
        let expected = if inside { Colour::Blue.rgb() } else { BG };
        assert_eq!(p.0, expected, "pixel ({x}, {y})");
    }
}

#[test]
fn edge_through_pixel_centres_averages_half_and_half() {
    // Half side 8.5 px: the edges run through the centres of pixels 7 and 24, so 2 of the 4
    // supersample columns fall inside and the pixel is the exact mean of blue and background.
    let image = square_scene(8.5).render(4).unwrap();
    let blue = Colour::Blue.rgb();
    let half: Vec<u8> = (0..3)
        .map(|c| ((blue[c] as f32 + BG[c] as f32) / 2.0).round() as u8)
        .collect();
    assert_eq!(image.get_pixel(7, 16).0.to_vec(), half);
    assert_eq!(image.get_pixel(24, 16).0.to_vec(), half);
    assert_eq!(image.get_pixel(16, 16).0, blue);
    assert_eq!(image.get_pixel(6, 16).0, BG);
}

#[test]
fn bad_scenes_are_errors() {
    let mut scene = square_scene(8.0);
    scene.size = 4;
    assert!(matches!(scene.render(4), Err(ShapesError::Invalid { .. })));
    let scene = square_scene(8.0);
    assert!(matches!(scene.render(0), Err(ShapesError::Invalid { .. })));
    let mut scene = square_scene(8.0);
    scene.objects[0].pose.x = f32::NAN;
    assert!(matches!(scene.render(4), Err(ShapesError::Invalid { .. })));
    let mut scene = square_scene(8.0);
    scene.objects[0].pattern = Pattern::Checkered {
        a: Colour::Red,
        b: Colour::Blue,
        cells: 0,
    };
    assert!(matches!(scene.render(4), Err(ShapesError::Invalid { .. })));
    let config = WorldConfig {
        size: 16,
        ..WorldConfig::default()
    };
    // At 16 px a lone object of radius 0.33 cannot sit beside the middle with a pixel margin.
    assert!(matches!(
        base_sample(&config, 0, 0),
        Err(ShapesError::Invalid { .. })
    ));
}

#[test]
fn palette_is_far_apart_and_far_from_backgrounds() {
    // Nearest-colour quantisation needs distinct colours, and the foreground cut (60 units)
    // needs every colour, even half covered, to stand out from the light backgrounds: the
    // darkest tone a background can have is about (200, 200, 200).
    for (i, &a) in Colour::ALL.iter().enumerate() {
        for &b in &Colour::ALL[i + 1..] {
            assert!(rgb_distance(a.rgb(), b.rgb()) >= 85.0, "{a} vs {b}");
        }
        for tone in [[200, 200, 200], [240, 240, 240]] {
            assert!(rgb_distance(a.rgb(), tone) >= 120.0, "{a} vs {tone:?}");
        }
        assert_eq!(Colour::nearest(a.rgb()), (a, 0.0));
    }
}

#[test]
fn position_rule_names_the_larger_offset() {
    assert_eq!(Position::of_point(0.2, 0.45), Position::Left);
    assert_eq!(Position::of_point(0.8, 0.6), Position::Right);
    assert_eq!(Position::of_point(0.45, 0.1), Position::Top);
    assert_eq!(Position::of_point(0.55, 0.9), Position::Bottom);
    assert_eq!(Position::of_point(0.55, 0.47), Position::Center);
}

#[test]
fn shapes_stay_inside_their_circle() {
    // Every shape lies in the unit disc (the pose radius is its circumscribed radius) and
    // covers the origin-centred disc of radius 0.3 except the ring, which excludes it.
    for shape in Shape::ALL {
        for i in 0..64 {
            for j in 0..64 {
                let (u, v) = (i as f32 / 21.0 - 1.5, j as f32 / 21.0 - 1.5);
                let r = (u * u + v * v).sqrt();
                if r > 1.0 + 1e-6 {
                    assert!(!shape.contains(u, v), "{shape} at ({u}, {v})");
                }
                if r < 0.3 {
                    assert_eq!(
                        shape.contains(u, v),
                        shape != Shape::Ring,
                        "{shape} at ({u}, {v})"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn renders_are_deterministic_per_seed(seed in any::<u64>(), index in 0u64..10_000) {
        let config = WorldConfig::default();
        let a = base_sample(&config, seed, index).unwrap();
        let b = base_sample(&config, seed, index).unwrap();
        prop_assert_eq!(&a, &b);
        prop_assert_eq!(a.render(&config).unwrap(), b.render(&config).unwrap());
    }

    #[test]
    fn objects_stay_inside_and_apart(seed in any::<u64>(), index in 0u64..10_000, size in prop::sample::select(vec![32u32, 48, 64])) {
        let config = WorldConfig { size, ..WorldConfig::default() };
        let sample = base_sample(&config, seed, index).unwrap();
        let margin = 1.0 / size as f32;
        prop_assert!(!sample.scene.objects.is_empty() && sample.scene.objects.len() <= 2);
        for o in &sample.scene.objects {
            let p = o.pose;
            prop_assert!(p.x - p.radius >= margin - 1e-6 && p.x + p.radius <= 1.0 - margin + 1e-6, "{:?}", p);
            prop_assert!(p.y - p.radius >= margin - 1e-6 && p.y + p.radius <= 1.0 - margin + 1e-6, "{:?}", p);
        }
        if let [a, b] = sample.scene.objects.as_slice() {
            let gap = (a.pose.x - b.pose.x).hypot(a.pose.y - b.pose.y) - a.pose.radius - b.pose.radius;
            prop_assert!(gap >= 2.0 * margin - 1e-6, "objects {} px apart", gap * size as f32);
        }
    }

    #[test]
    fn captions_name_what_was_drawn(seed in any::<u64>(), index in 0u64..10_000) {
        let config = WorldConfig::default();
        let sample = base_sample(&config, seed, index).unwrap();
        let phrases: Vec<&str> = sample.caption.split(" and ").collect();
        prop_assert_eq!(phrases.len(), sample.scene.objects.len());
        for ((phrase, item), object) in phrases.iter().zip(&sample.items).zip(&sample.scene.objects) {
            // The caption's words are the drawn object's shape, colour and position.
            prop_assert_eq!(object.shape, item.shape);
            prop_assert_eq!(object.pattern, Pattern::Solid { colour: item.colour });
            prop_assert_eq!(object.pose.position(), item.position);
            let article = if item.colour == Colour::Orange { "an" } else { "a" };
            let expected = format!("{article} {} {} {}", item.colour.word(), item.shape.word(), item.position.phrase());
            prop_assert_eq!(*phrase, expected.as_str());
            prop_assert!(Colour::BASE.contains(&item.colour));
        }
    }
}
