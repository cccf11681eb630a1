use super::*;
use crate::edit::CaptionStyle;
use crate::edit::captions::Preset;

fn options(captions: serde_json::Value) -> JobOptions {
    serde_json::from_value(serde_json::json!({
        "clips": 1, "min_len": 5.0, "max_len": 9.0, "size": {"width": 1080, "height": 1920},
        "mode": "track", "captions": captions, "webhook": null
    }))
    .unwrap()
}

#[test]
fn a_status_name_is_its_serde_name() {
    use JobStatus::*;
    for status in [Waiting, Queued, Running, Succeeded, Failed, Cancelled] {
        assert_eq!(serde_json::to_value(status).unwrap(), status.name());
        assert_eq!(JobStatus::parse(status.name()), Some(status));
    }
}

#[test]
fn stored_caption_options_read_old_switches_and_new_styles() {
    assert_eq!(options(serde_json::json!(true)).captions, CaptionStyle::default());
    assert!(!options(serde_json::json!(false)).captions.enabled);
    let style = CaptionStyle { preset: Some(Preset::Boxed), size: Some(0.06), ..Default::default() };
    let stored = serde_json::to_value(options(serde_json::to_value(&style).unwrap())).unwrap();
    assert_eq!(stored["captions"], serde_json::json!({"enabled": true, "preset": "boxed", "size": 0.06}));
    assert_eq!(options(stored["captions"].clone()).captions, style);
}
