//! The concept stream: its shape (six concepts, a similar pair, one-token class words),
//! prompts, layouts and the folders it writes.

use cidm_shapes::dataset::{write_base_dataset, write_concept_stream, StreamManifest};
use cidm_shapes::{
    base_dataset, base_sample, ConceptStream, Pattern, Position, ShapesError, WorldConfig,
};
use indicatif::ProgressBar;
use proptest::prelude::*;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::path::Path;

/// The real CLIP BPE (vocabulary and merges from the diffusion crate's tokenizer fixture),
/// applied to one lower-case ASCII word: characters, the last one marked with `</w>`, merged
/// pair by pair in merge-rank order, as CLIP's tokenizer does.
fn clip_bpe(word: &str) -> Vec<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../cidm-diffusion/tests/fixtures/clip-tokenizer");
    let merges = fs::read_to_string(dir.join("merges.txt")).unwrap();
    let ranks: HashMap<(String, String), usize> = merges
        .lines()
        .skip(1)
        .enumerate()
        .filter_map(|(i, l)| {
            let (a, b) = l.split_once(' ')?;
            Some(((a.to_string(), b.to_string()), i))
        })
        .collect();
    let mut parts: Vec<String> = word.chars().map(String::from).collect();
    let last = parts.len() - 1;
    parts[last].push_str("</w>");
    loop {
        let best = (0..parts.len().saturating_sub(1))
            .filter_map(|i| {
                ranks
                    .get(&(parts[i].clone(), parts[i + 1].clone()))
                    .map(|r| (*r, i))
            })
            .min();
        let Some((_, i)) = best else { break };
        let merged = format!("{}{}", parts[i], parts[i + 1]);
        parts.splice(i..i + 2, [merged]);
    }
    let vocab: HashMap<String, u64> =
        serde_json::from_str(&fs::read_to_string(dir.join("vocab.json")).unwrap()).unwrap();
    assert!(parts.iter().all(|p| vocab.contains_key(p)), "{parts:?}");
    parts
}

#[test]
fn bpe_helper_splits_a_rare_word() {
    // Guards the helper itself: a made-up word must come out in several pieces.
    assert!(clip_bpe("zorblax").len() > 1);
}

#[test]
fn default_stream_is_the_benchmark_the_issue_asks_for() {
    let stream = ConceptStream::default();
    stream.validate().unwrap();
    assert!(stream.concepts.len() >= 6);
    assert!((4..=6).contains(&stream.images_per_concept));
    for concept in &stream.concepts {
        // The class word is exactly one CLIP token, so it can initialise the concept token.
        assert_eq!(
            clip_bpe(concept.class_word()),
            vec![format!("{}</w>", concept.class_word())]
        );
        assert_eq!(
            concept.pattern.colours().len(),
            2,
            "{} is two-tone",
            concept.name
        );
        assert_eq!(
            concept.caption(),
            format!("a photo of a <{}> {}", concept.name, concept.class_word())
        );
    }
    // Each concept's look (shape, texture kind, palette) is its own.
    let looks: HashSet<String> = stream
        .concepts
        .iter()
        .map(|c| format!("{:?}{:?}", c.shape, c.pattern))
        .collect();
    assert_eq!(looks.len(), stream.concepts.len());
    // The similar pair: same shape and texture, different palette.
    assert!(!stream.similar.is_empty());
    for [a, b] in &stream.similar {
        let (a, b) = (stream.concept(a).unwrap(), stream.concept(b).unwrap());
        assert_eq!(a.shape, b.shape);
        assert_eq!(
            std::mem::discriminant(&a.pattern),
            std::mem::discriminant(&b.pattern)
        );
        assert_ne!(a.pattern.colours(), b.pattern.colours());
        let same_texture = |p: &Pattern, q: &Pattern| match (p, q) {
            (Pattern::Checkered { cells: x, .. }, Pattern::Checkered { cells: y, .. }) => x == y,
            _ => false,
        };
        assert!(same_texture(&a.pattern, &b.pattern));
    }
}

#[test]
fn eval_prompts_and_layouts_name_their_concepts() {
    let stream = ConceptStream::default();
    let star = stream.concept("star1").unwrap();
    let prompts = star.eval_prompts();
    assert_eq!(prompts.len(), 1 + Position::ALL.len());
    assert_eq!(prompts[0].text, "a <star1> star");
    assert_eq!(prompts[1].text, "a <star1> star on the left");
    assert_eq!(prompts[5].text, "a <star1> star in the center");
    assert!(prompts
        .iter()
        .all(|p| p.concept == "star1" && p.shape == star.shape));
    assert!(!stream.layouts.is_empty());
    for layout in &stream.layouts {
        assert_eq!(layout.regions.len(), 2);
        let (a, b) = (layout.regions[0].bbox, layout.regions[1].bbox);
        // The two boxes do not overlap.
        assert!(a.x1 <= b.x0 || b.x1 <= a.x0 || a.y1 <= b.y0 || b.y1 <= a.y0);
        for region in &layout.regions {
            let concept = stream.concept(&region.concept).unwrap();
            assert!(layout.prompt.contains(&region.prompt));
            assert_eq!(region.prompt, concept.prompt(None));
        }
    }
    assert!(matches!(
        stream.concept("dog1"),
        Err(ShapesError::UnknownConcept(_))
    ));
    let mut broken = stream.clone();
    broken.layouts[0].regions[0].concept = "dog1".into();
    assert!(matches!(
        broken.validate(),
        Err(ShapesError::UnknownConcept(_))
    ));
    let mut broken = stream.clone();
    broken.concepts[1].name = "star1".into();
    assert!(matches!(
        broken.validate(),
        Err(ShapesError::Invalid { .. })
    ));
}

#[test]
fn stream_folder_holds_images_captions_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let stream = ConceptStream::default();
    let config = WorldConfig::default();
    let manifest =
        write_concept_stream(dir.path(), &stream, &config, 3, &ProgressBar::hidden()).unwrap();
    assert_eq!(StreamManifest::read(dir.path()).unwrap(), manifest);
    for concept in &stream.concepts {
        let rendered = stream.render(&concept.name, &config, 3).unwrap();
        assert_eq!(rendered.len(), stream.images_per_concept);
        for (i, expected) in rendered.iter().enumerate() {
            let folder = dir.path().join(&concept.name);
            let png = image::open(folder.join(format!("{i:02}.png")))
                .unwrap()
                .to_rgb8();
            assert_eq!(&png, expected, "PNG is lossless");
            let caption = fs::read_to_string(folder.join(format!("{i:02}.txt"))).unwrap();
            assert_eq!(caption, concept.caption());
        }
        let files = fs::read_dir(dir.path().join(&concept.name))
            .unwrap()
            .count();
        assert_eq!(files, 2 * stream.images_per_concept);
    }
}

#[test]
fn base_folder_matches_the_samples() {
    let dir = tempfile::tempdir().unwrap();
    let config = WorldConfig::default();
    write_base_dataset(dir.path(), &config, 11, 6, &ProgressBar::hidden()).unwrap();
    for i in 0..6u64 {
        let sample = base_sample(&config, 11, i).unwrap();
        let caption = fs::read_to_string(dir.path().join(format!("{i:05}.txt"))).unwrap();
        assert_eq!(caption, sample.caption);
        let png = image::open(dir.path().join(format!("{i:05}.png")))
            .unwrap()
            .to_rgb8();
        assert_eq!(png, sample.render(&config).unwrap());
    }
    assert!(dir.path().join("world.json").exists());
    let in_memory = base_dataset(&config, 11, 6).unwrap();
    assert_eq!(in_memory[5], base_sample(&config, 11, 5).unwrap());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn concept_poses_vary_and_stay_inside(seed in any::<u64>()) {
        let stream = ConceptStream::default();
        let config = WorldConfig::default();
        for concept in &stream.concepts {
            let samples = stream.samples(&concept.name, &config, seed).unwrap();
            let poses: Vec<_> = samples.iter().map(|s| s.scene.objects[0].pose).collect();
            for p in &poses {
                prop_assert!(p.is_inside());
                prop_assert!(p.radius >= config.concept_radius[0] && p.radius <= config.concept_radius[1]);
                prop_assert!(p.rotation.abs() <= config.concept_rotation_deg.to_radians() + 1e-6);
            }
            // No two images of a concept share a pose.
            for (i, a) in poses.iter().enumerate() {
                for b in &poses[i + 1..] {
                    prop_assert!(a != b);
                }
            }
            prop_assert_eq!(samples, stream.samples(&concept.name, &config, seed).unwrap());
        }
    }
}
