//! Parsing of `PROMPT@x0,y0,x1,y1` region specs and their typed errors.

use cidm_regions::{parse_regions, BoundingBox, RegionError, RegionSpec, MAX_REGIONS};

#[test]
fn parses_the_command_line_form() {
    let spec: RegionSpec = "a <dog1> dog@0.0,0.0,0.5,1.0".parse().unwrap();
    assert_eq!(spec.prompt, "a <dog1> dog");
    assert_eq!(spec.bbox.coords(), [0.0, 0.0, 0.5, 1.0]);
    // The last `@` separates the box; spaces around numbers are allowed.
    let spec: RegionSpec = "mail@home @ 0.25, 0.5 ,1,0.75".parse().unwrap();
    assert_eq!(spec.prompt, "mail@home");
    assert_eq!(spec.bbox.coords(), [0.25, 0.5, 1.0, 0.75]);
    // Display round-trips.
    let again: RegionSpec = spec.to_string().parse().unwrap();
    assert_eq!(again, spec);
}

#[test]
fn malformed_specs_are_typed_errors() {
    let err = |s: &str| s.parse::<RegionSpec>().unwrap_err();
    assert!(matches!(err("a dog"), RegionError::MissingBox(_)));
    assert!(matches!(err("  @0,0,1,1"), RegionError::EmptyPrompt(_)));
    assert!(matches!(
        err("a dog@0,0,1"),
        RegionError::BoxArity { found: 3, .. }
    ));
    assert!(matches!(err("a dog@0,0,one,1"), RegionError::Number(_)));
    assert!(matches!(
        err("a dog@0,0,1.5,1"),
        RegionError::OutOfRange { name: "x1", .. }
    ));
    assert!(matches!(
        err("a dog@-0.1,0,1,1"),
        RegionError::OutOfRange { name: "x0", .. }
    ));
    assert!(matches!(
        err("a dog@0,NaN,1,1"),
        RegionError::OutOfRange { name: "y0", .. }
    ));
    assert!(matches!(
        err("a dog@0.6,0,0.4,1"),
        RegionError::Inverted { axis: 'x', .. }
    ));
    assert!(matches!(
        err("a dog@0,0.5,1,0.5"),
        RegionError::EmptyBox { axis: 'y', .. }
    ));
}

#[test]
fn more_regions_than_the_limit_is_an_error() {
    let specs = vec!["a@0,0,1,1"; MAX_REGIONS + 1];
    assert!(matches!(
        parse_regions(&specs, MAX_REGIONS),
        Err(RegionError::TooManyRegions { found: 9, limit: 8 })
    ));
    assert_eq!(
        parse_regions(&specs[..MAX_REGIONS], MAX_REGIONS)
            .unwrap()
            .len(),
        8
    );
}

#[test]
fn boxes_deserialize_with_validation() {
    let ok: BoundingBox = serde_json::from_str("[0.0, 0.1, 0.5, 1.0]").unwrap();
    assert_eq!(ok.coords(), [0.0, 0.1, 0.5, 1.0]);
    assert!(serde_json::from_str::<BoundingBox>("[0.5, 0.1, 0.4, 1.0]").is_err());
}
