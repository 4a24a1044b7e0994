//! R1's invariants and errors, and the config's defaults and serde form.

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use cidm_continual::{orthogonal_regularizer, ContinualConfig, Error, R1Form, R2Variant};

type B = Flex;

fn matrix(values: &[f32], shape: [usize; 2]) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(values.to_vec(), shape), &Default::default())
}

#[test]
fn subspace_form_is_zero_for_orthogonal_subspaces_and_positive_otherwise() {
    let old = vec![vec![matrix(&[1.0, 0.0, 0.0], [3, 1])]];
    let orthogonal = [matrix(&[0.0, 2.0, 0.0], [3, 1])];
    let overlapping = [matrix(&[1.0, 2.0, 0.0], [3, 1])];
    let value = |new: &[Tensor<B, 2>]| {
        orthogonal_regularizer(R1Form::Subspace, &old, new)
            .expect("r1")
            .into_data()
            .to_vec::<f32>()
            .expect("f32")[0]
    };
    assert_eq!(value(&orthogonal), 0.0);
    assert!(value(&overlapping) > 0.0);
}

#[test]
fn r1_rejects_missing_tasks_and_mismatched_shapes() {
    let new = [matrix(&[1.0; 6], [3, 2])];
    assert!(matches!(
        orthogonal_regularizer(R1Form::Subspace, &[], &new),
        Err(Error::NoOldTasks)
    ));
    let wrong_width = vec![vec![matrix(&[1.0; 4], [2, 2])]];
    assert!(orthogonal_regularizer(R1Form::Subspace, &wrong_width, &new).is_err());
    let other_rank = vec![vec![matrix(&[1.0; 3], [3, 1])]];
    assert!(orthogonal_regularizer(R1Form::Subspace, &other_rank, &new).is_ok());
    assert!(orthogonal_regularizer(R1Form::PaperLiteral, &other_rank, &new).is_err());
    let missing_layer = vec![vec![]];
    assert!(orthogonal_regularizer(R1Form::Subspace, &missing_layer, &new).is_err());
}

#[test]
fn config_defaults_and_serde_round_trip() {
    let config = ContinualConfig::default();
    assert_eq!((config.gamma1, config.gamma2), (0.1, 1.0));
    assert_eq!(config.r1_form, R1Form::Subspace);
    assert_eq!(config.r2_variant, R2Variant::Exact);
    assert_eq!(config.token_init_sigma, 0.013);
    assert_eq!(config.token_norm_threshold, Some(0.55));
    config.validate().expect("defaults are valid");

    let json = r#"{"r1_form": "released_code", "r2_variant": {"kind": "factorised", "rank": 8}}"#;
    let parsed: ContinualConfig = serde_json::from_str(json).expect("parse");
    assert_eq!(parsed.r1_form, R1Form::ReleasedCode);
    assert_eq!(parsed.r2_variant, R2Variant::Factorised { rank: 8 });
    let back: ContinualConfig =
        serde_json::from_str(&serde_json::to_string(&parsed).expect("json")).expect("parse");
    assert_eq!(back, parsed);
    assert!(serde_json::from_str::<ContinualConfig>(r#"{"gamma3": 1}"#).is_err());

    let bad = ContinualConfig {
        gamma1: -1.0,
        ..ContinualConfig::default()
    };
    assert!(bad.validate().is_err());
}
